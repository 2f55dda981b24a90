"""One training loop for both trainers, with hooks (detectron2's ``SimpleTrainer`` + ``HookBase``).

``Trainer`` owns what the 2D and the 3D trainer share: DDP, device and seed (``setup_run``), the EMA teacher,
the step (sum the model's losses, backward, clip, optimizer, schedule, teacher update), checkpoints every
epoch, ``--resume``, preemption (a mid-epoch checkpoint at the next step boundary, then exit), metrics.csv
and the progress bar. A subclass says what differs, with one ``run_step``:

    build_model()       the model; in training mode it returns its weighted losses (torchvision's contract)
    build_optimizer()   (optimizer, scheduler) for ``self.total_steps``
    batches(epoch)      the epoch's batches, seeded by (seed, epoch) so that a resumed epoch replays them
    run_step(batch)     forward: {loss name: tensor}; the trainer sums them

Methods around the loop are ``Hook``s: the PVC rounds and the 2D export after an epoch, the CSCS round an
epoch reads before it (``cscs_exchange.CSCSRoundHook``). New methods are hooks or model options, not loops.
"""
from __future__ import annotations

import abc
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ...data.store import StoreError
from ...train3d.ema import EMATeacher
from .distributed import DistInfo, Preemption, barrier
from .run import (CHECKPOINTS, LATEST, MetricsLog, config_to_dict, latest_checkpoint, load_checkpoint,
                       save_checkpoint, setup_run, snapshot_run)

log = logging.getLogger(__name__)


class Hook:
    """Called at the loop's boundaries; every method is optional. ``trainer.state`` is checkpointed: a hook
    that must survive a resume keeps what it needs there."""

    def before_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """Before the epoch's batches are drawn (also when a resumed run replays a started epoch)."""

    def after_step(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """After the optimizer step; entries added to ``metrics`` are logged with the step's."""

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After the epoch's last step, before its checkpoint."""


class Trainer(abc.ABC):
    """See the module docstring. ``kind`` names the run (``run.json``, the progress bar, error messages).
    A subclass that leaves out one of the abstract methods fails at construction, naming it."""

    kind = "train"

    def __init__(self, data: Path | str, out: Path | str, cfg: Any, hooks: Iterable[Hook] = ()):
        self.data, self.run, self.cfg = Path(data), Path(out), cfg
        self.cscs_round: int | None = None  # the other modality's round this epoch reads (``CSCSRoundHook``)
        self.dist, self.device, self.ds, self.positions = self.setup()
        self.check_inputs()  # before anything is written to ``out``
        self.steps_per_epoch = max(1, self.num_steps_per_epoch())
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.model = self.build_model().to(self.device)
        self.teacher = EMATeacher(self.model, cfg.ema)
        self.optimizer, self.scheduler = self.build_optimizer()
        self.ddp_model = self.model
        if self.dist.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.state: dict = {"epoch": 0, "step": 0, **self.initial_state()}
        self.hooks = [*self.default_hooks(), *hooks]

    # ------------------------------------------------------------------ what a subclass says
    def setup(self) -> tuple[DistInfo, torch.device, Any, list[int]]:
        """(dist, device, dataset, this rank's shard positions): ``training.setup_run``."""
        return setup_run(self.data, self.cfg.device, self.cfg.cpu_threads, self.cfg.seed)

    def check_inputs(self) -> None:
        """Raise on inputs that cannot train (missing labels, bad checksums)."""

    @abc.abstractmethod
    def num_steps_per_epoch(self) -> int:
        """Steps an epoch would take over this rank's shards (before ``max_steps_per_epoch``)."""

    @abc.abstractmethod
    def build_model(self) -> torch.nn.Module:
        """The student; in training mode ``model(...)`` returns its weighted losses."""

    @abc.abstractmethod
    def build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """(optimizer over ``self.model``, scheduler stepped once per step over ``self.total_steps``)."""

    def initial_state(self) -> dict:
        return {}

    def default_hooks(self) -> list[Hook]:
        return []

    @abc.abstractmethod
    def batches(self, epoch: int) -> Iterator:
        """The epoch's batches, the same each time for a given (seed, epoch): a resumed epoch replays them."""

    @abc.abstractmethod
    def run_step(self, batch) -> dict[str, torch.Tensor]:
        """Forward one batch in training mode: {loss name: weighted scalar tensor}; the trainer sums them."""

    def describe(self, batch) -> str:
        """Appended to a non-finite-loss error, e.g. the batch's frame ids."""
        return ""

    def run_record(self) -> dict:
        """What the subclass adds to ``run.json`` once the state is resolved (e.g. TWIST's labelled frames)."""
        return {}

    def summary(self, res: dict) -> dict:
        return {"epochs": self.cfg.epochs, "steps": self.state["step"], "seconds": res["seconds"],
                "device": str(self.device), "preempted": res["preempted"], "last": res["last"]}

    # ------------------------------------------------------------------ the step
    def step(self, batch) -> dict[str, float]:
        it = self.state["step"]
        losses = self.run_step(batch)
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {it}: non-finite loss {float(loss)}{self.describe(batch)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        out = {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}
        if self.cfg.clip_grad:
            out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad))
        self.optimizer.step()
        self.scheduler.step()
        momentum = self.teacher.update(self.model, it)
        out.update(lr=self.scheduler.get_last_lr()[0], ema_momentum=momentum)
        for h in self.hooks:
            h.after_step(self, out)
        return out

    # ------------------------------------------------------------------ the loop
    def parts(self) -> dict[str, Any]:
        """What a checkpoint holds besides ``state``."""
        return {"model": self.model, "teacher": self.teacher.model, "optimizer": self.optimizer,
                "scheduler": self.scheduler}

    def train(self, resume: bool = False, overwrite: bool = False, show_progress: bool = True,
              stop_after_epoch: int | None = None) -> dict:
        """Run the epochs; returns ``summary``. ``resume`` continues from the newest checkpoint; ``overwrite``
        moves a run already in ``out`` aside (``claim_run_dir``); ``stop_after_epoch`` ends early, as a
        preempted job would.

        Preemption (``Preemption``): at the next step boundary the run writes a mid-epoch checkpoint whose
        ``state["batch"]`` counts the epoch's batches done, and returns with ``preempted`` set. Resuming from it
        replays the epoch's batch stream without training on the first ``batch`` batches, so a preempted and
        resumed run ends with the same weights as an uninterrupted one.
        """
        if self.dist.is_main:
            claim_run_dir(self.run, self.kind, resume, overwrite)
        barrier(self.dist)
        with _run_lock(self.run, self.dist):
            res = self._train(resume, show_progress, stop_after_epoch)
        return self.summary(res)

    def _resume(self) -> Path | None:
        ckpt = latest_checkpoint(self.run)
        if ckpt is None:
            return None
        saved = load_checkpoint(ckpt)
        for name, part in self.parts().items():
            part.load_state_dict(saved[name])
        self.state.clear()
        self.state.update(saved["state"])
        if "torch_rng" in saved:  # models that draw from torch's global generator continue identically
            torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        return ckpt

    def _checkpoint(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run, {**{n: p.state_dict() for n, p in self.parts().items()}, "state": dict(self.state),
                                       "config": config_to_dict(self.cfg), "torch_rng": torch.get_rng_state(),
                                       # dropout/sampling on the GPU draws from the CUDA generators, kept per device
                                       "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                            name)
        barrier(self.dist)  # no rank exits (or reads the checkpoint) before rank 0 has written it

    def _epoch_stream(self, epoch: int, ckpt: Path | None) -> tuple[Iterator, int]:
        for h in self.hooks:
            h.before_epoch(self, epoch)
        done = self.state.get("batch", 0)  # > 0 only when resuming from a mid-epoch checkpoint
        stream = iter(self.batches(epoch))
        if done:
            rng = torch.get_rng_state()  # the checkpoint's; replaying batches must not move it
            for _ in range(done):
                if next(stream, None) is None:
                    raise StoreError(f"{ckpt}: epoch {epoch + 1} has fewer than {done} batches now "
                                     "(dataset changed since the checkpoint?)")
            torch.set_rng_state(rng)
        return stream, done

    def _train(self, resume: bool, show_progress: bool, stop_after_epoch: int | None) -> dict:
        from ..progress import progress_bar

        dist, cfg, state = self.dist, self.cfg, self.state
        metrics = MetricsLog(self.run, enabled=dist.is_main)
        self.steps_per_epoch = _min_over_ranks(self.steps_per_epoch, dist)
        ckpt = self._resume() if resume else None
        # rows after the checkpoint (or all rows, starting over) were logged by a run that was killed or replaced
        metrics.truncate_after(state["step"])
        if dist.is_main:
            snapshot_run(self.run, cfg, {"resumed_from": None if ckpt is None else ckpt.name, "kind": self.kind,
                                         "data": str(self.data), **self.run_record()})
        t0, last = time.time(), {}
        done_ = lambda preempted: {"last": last, "seconds": time.time() - t0, "preempted": preempted}  # noqa: E731
        with Preemption(self.run, dist) as preempt:
            for epoch in range(state["epoch"], cfg.epochs):
                stream, done = self._epoch_stream(epoch, ckpt)
                with progress_bar(total=self.steps_per_epoch, initial=done, unit="step",
                                  desc=f"{self.kind} epoch {epoch + 1}/{cfg.epochs}",
                                  enabled=show_progress and dist.is_main) as bar:
                    for i in range(done, self.steps_per_epoch):
                        batch = next(stream, None)
                        if batch is None:
                            break
                        last = self.step(batch)
                        state["step"] += 1
                        state["batch"] = i + 1
                        metrics.log(state["step"], epoch, last)
                        bar.set_postfix(loss=f"{last.get('loss', float('nan')):.3f}")
                        bar.update(1)
                        if i + 1 < self.steps_per_epoch and preempt.requested():
                            self._checkpoint(f"step-{state['step']:08d}")
                            preempt.acknowledge()
                            return done_(True)
                state.pop("batch", None)
                state["epoch"] = epoch + 1
                for h in self.hooks:
                    h.after_epoch(self, epoch)
                self._checkpoint(f"epoch-{epoch + 1:04d}")
                if epoch + 1 < cfg.epochs and preempt.requested():  # asked during the last step or a hook
                    preempt.acknowledge()
                    return done_(True)
                if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                    break
        return done_(False)


def claim_run_dir(run: Path, kind: str, resume: bool, overwrite: bool) -> Path | None:
    """Make ``run`` safe to write: a missing or empty directory (or one with only ``slurm/``) is fine; one
    that holds files needs ``resume`` (and must be a ``kind`` run) or ``overwrite``, which renames it to
    ``<run>.old-<time>`` instead of deleting anything. Returns where an old run was moved, else None."""
    from ..slurm.train import SLURM_DIR

    run = Path(run)
    # RUN/slurm/ (job scripts and logs) exists before a SLURM job's first start: not a run yet
    if not run.exists() or not any(p.name != SLURM_DIR for p in run.iterdir()):
        return None
    try:
        found = json.loads((run / "run.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        # a run killed before it wrote run.json holds only run files: still ours to resume
        own = {"metrics.csv", "config.yaml", "run.json", CHECKPOINTS, SLURM_DIR}
        found = kind if all(p.name in own or p.name.startswith(".") for p in run.iterdir()) else None
    what = f"a {found} run" if found else "files that are not a training run"
    if overwrite:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = run.with_name(f"{run.name}.old-{stamp}"), 1
        while dest.exists():
            dest, n = run.with_name(f"{run.name}.old-{stamp}-{n}"), n + 1
        run.rename(dest)
        log.warning("%s: moved the previous run aside to %s (--overwrite)", run, dest)
        return dest
    if resume and found == kind:
        return None
    if resume:
        raise StoreError(f"{run}: --resume needs a {kind} run here, but it holds {what}; choose another --out")
    newest = None
    with contextlib.suppress(StoreError):
        newest = latest_checkpoint(run)
    has = f" (newest checkpoint {newest.name})" if newest is not None else ""
    raise StoreError(f"{run}: already holds {what}{has}; pass --resume to continue it, or --overwrite to move "
                     f"it aside to {run.name}.old-<time> and start afresh")


@contextlib.contextmanager
def _run_lock(run: Path, dist: DistInfo):
    """One job per run directory: a second trainer on the same ``--out`` (two SLURM jobs by mistake) waits
    instead of interleaving its checkpoints and metrics rows. Under the lock no other writer of the run exists,
    so temp files in ``checkpoints/`` are a killed writer's leftovers (a checkpoint can be ~100 MB): remove them."""
    from ...data.locks import exclusive_lock
    from ...data.store import TEMP_SUFFIX

    if not dist.is_main:
        yield
        return
    pointer = run / CHECKPOINTS / LATEST
    with exclusive_lock(pointer, f"training run {run}"):
        for tmp in (run / CHECKPOINTS).glob(f".*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
        yield


def _min_over_ranks(n: int, dist: DistInfo) -> int:
    """Every rank must run the same number of steps (DDP's all-reduce would hang on the rank with more)."""
    if dist.world_size <= 1:
        return n
    import torch.distributed as tdist

    device = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([n], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return int(t.item())
