"""Training infrastructure shared by the 2D and 3D trainers (written once, used by both).

* configs: dataclasses with the paper's defaults, a YAML file, then ``--set a.b=value`` overrides;
* a run directory with a snapshot of the resolved config, versions and git commit;
* atomic checkpoints every epoch and ``--resume`` from the newest one; on SIGUSR1/SIGTERM or ``RUN/PREEMPT``
  a mid-epoch checkpoint at the next step boundary, then exit status 75 (the SLURM script requeues on USR1);
* (``distributed.py``: DDP ranks and preemption; ``cscs_exchange.py``: the CSCS round of each epoch)
* a long-format CSV metrics log (step, epoch, name, value);
* seeding, bf16 autocast on CUDA, DDP when launched by torchrun.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.store import StoreError, atomic_path, write_bytes_atomic
from .distributed import DistInfo, Preemption, barrier, init_distributed, pick_device

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- config
# One config system for stages and trainers lives in config.py; re-exported here because the trainers,
# the benchmarks and the tests import these names from ``training``.
from .config import apply_overrides, config_to_dict, flatten_dict, load_config  # noqa: E402,F401


# --------------------------------------------------------------------------------------------- run dir


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def snapshot_run(run: Path, cfg: Any, extra: dict | None = None) -> None:
    """Write ``config.yaml`` (resolved config) and ``run.json`` (versions, commit, command) into ``run``."""
    import yaml

    run.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=True).encode())
    versions = {"mwsis": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    with contextlib.suppress(ImportError):
        import spconv

        versions["spconv"] = getattr(spconv, "__version__", "?")
    info = {"versions": versions, "git_commit": git_commit(), "argv": sys.argv, "host": platform.node(),
            "cuda": torch.cuda.is_available(), **(extra or {})}
    write_bytes_atomic(run / "run.json", (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------------------------- checkpoints

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"


def save_checkpoint(run: Path, state: dict, name: str) -> Path:
    """Atomically write ``state`` as ``checkpoints/<name>.pt`` and point ``latest.json`` at it."""
    dest = run / CHECKPOINTS / f"{name}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(dest, buf.getvalue())
    write_bytes_atomic(run / CHECKPOINTS / LATEST, json.dumps({"checkpoint": dest.name}).encode())
    return dest


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    try:
        path = run / CHECKPOINTS / json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as e:
        raise StoreError(f"{pointer}: corrupt ({e})") from e
    if not path.exists():
        raise StoreError(f"{pointer}: points at missing {path.name}")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise StoreError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- metrics


class MetricsLog:
    """Appends ``step,epoch,name,value`` rows to ``metrics.csv`` (long format: new metrics need no header change)."""

    def __init__(self, run: Path, enabled: bool = True):
        self.path = run / "metrics.csv"
        self.enabled = enabled
        if enabled and not self.path.exists():
            run.mkdir(parents=True, exist_ok=True)
            self.path.write_text("step,epoch,name,value\n")

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in values.items():
                w.writerow([step, epoch, k, f"{float(v):.6g}"])

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the log has one row per step."""
        if not self.enabled or not self.path.exists():
            return
        rows = self.path.read_text().splitlines()
        # a run killed mid-write can leave a partial last row: keep only whole rows (step,epoch,name,value)
        keep = [rows[0]] + [r for r in rows[1:] if len(r.split(",")) == 4 and r.split(",", 1)[0].isdigit()
                            and int(r.split(",", 1)[0]) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(keep) + "\n")


def read_metrics(run: Path) -> list[dict]:
    with open(Path(run) / "metrics.csv") as f:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "name": r["name"], "value": float(r["value"])}
                for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------ devices and DDP


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))  # only for third-party code; ours uses explicit Generators


def autocast(device: torch.device):
    """bf16 autocast on CUDA (MWSIS trains in mixed precision); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup_run(data: Path, device_name: str | None, cpu_threads: int, seed: int):
    """What both trainers do first: join DDP if launched so, pick the device, set CPU threads, seed, open the
    dataset and take this rank's shards (r, r + W, ...). Returns (dist, device, dataset, shard positions)."""
    from ..data.store import open_dataset

    dist = init_distributed()
    device = pick_device(dist, device_name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    seed_everything(seed)
    ds = open_dataset(data)
    return dist, device, ds, list(range(dist.rank, ds.num_shards, dist.world_size))


# ------------------------------------------------------------------------------------- the epoch loop


def _checkpoint(run: Path, cfg: Any, parts: dict[str, Any], state: dict, name: str, dist: DistInfo) -> None:
    if dist.is_main:
        save_checkpoint(run, {**{n: p.state_dict() for n, p in parts.items()}, "state": dict(state),
                              "config": config_to_dict(cfg), "torch_rng": torch.get_rng_state(),
                              # dropout/sampling on the GPU draws from the CUDA generators, kept per device
                              "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                        name)
    barrier(dist)  # no rank exits (or reads the checkpoint) before rank 0 has written it


def fit(run: Path, cfg: Any, parts: dict[str, Any], state: dict, batches, step, steps_per_epoch: int,
        epochs: int, dist: DistInfo, desc: str, after_epoch=None, resume: bool = False,
        show_progress: bool = True, stop_after_epoch: int | None = None, extra_snapshot: dict | None = None,
        overwrite: bool = False) -> dict:
    """The epoch loop both trainers share.

    ``parts``: name -> object with ``state_dict``/``load_state_dict`` (model, teacher, optimizer, scheduler),
    all checkpointed every epoch with ``state`` (``epoch`` and ``step`` are kept up to date here; trainers add
    their own keys). ``batches(epoch, state)`` yields batches; ``step(batch, state)`` trains on one and returns
    scalar metrics (logged to metrics.csv); ``after_epoch(epoch, state)`` runs before the checkpoint (e.g. PVC).
    ``resume`` continues from the newest checkpoint; ``stop_after_epoch`` ends early, as a preempted job would.

    Preemption (``Preemption``): at the next step boundary the run writes a mid-epoch checkpoint whose
    ``state["batch"]`` counts the epoch's batches done, and returns with ``preempted`` set. Resuming from it
    replays the epoch's batch stream (seeded by (seed, epoch)) without training on the first ``batch``
    batches, so a preempted and resumed run ends with the same weights as an uninterrupted one.

    A run directory that already holds files is left alone unless ``resume`` (same kind of run) or
    ``overwrite`` (it is moved aside first): see ``claim_run_dir``. Callers check their inputs before this.
    """
    if dist.is_main:
        claim_run_dir(run, desc, resume, overwrite)
    barrier(dist)
    with _run_lock(run, dist):
        return _fit(run, cfg, parts, state, batches, step, steps_per_epoch, epochs, dist, desc, after_epoch, resume,
                    show_progress, stop_after_epoch, extra_snapshot)


def claim_run_dir(run: Path, kind: str, resume: bool, overwrite: bool) -> Path | None:
    """Make ``run`` safe to write: a missing or empty directory (or one with only ``slurm/``) is fine; one
    that holds files needs
    ``resume`` (and must be a ``kind`` run) or ``overwrite``, which renames it to ``<run>.old-<time>``
    instead of deleting anything. Returns where an old run was moved, else None."""
    import time

    from .slurm_train import SLURM_DIR

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
    from ..data.locks import exclusive_lock
    from ..data.store import TEMP_SUFFIX

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


def _fit(run, cfg, parts, state, batches, step, steps_per_epoch, epochs, dist, desc, after_epoch, resume,
         show_progress, stop_after_epoch, extra_snapshot) -> dict:
    import time

    from .progress import progress_bar

    metrics = MetricsLog(run, enabled=dist.is_main)
    steps_per_epoch = _min_over_ranks(steps_per_epoch, dist)
    ckpt = latest_checkpoint(run) if resume else None
    if ckpt is not None:
        saved = load_checkpoint(ckpt)
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        state.clear()
        state.update(saved["state"])
        if "torch_rng" in saved:  # models that draw from torch's global generator continue identically
            torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
    # rows after the checkpoint (or all rows, starting over) were logged by a run that was killed or replaced
    metrics.truncate_after(state["step"])
    if dist.is_main:
        snapshot_run(run, cfg, {"resumed_from": None if ckpt is None else ckpt.name, "kind": desc,
                                **(extra_snapshot or {})})
    t0 = time.time()
    last: dict = {}
    with Preemption(run, dist) as preempt:
        for epoch in range(state["epoch"], epochs):
            done = state.get("batch", 0)  # > 0 only when resuming from a mid-epoch checkpoint
            stream = iter(batches(epoch, state))
            if done:
                rng = torch.get_rng_state()  # the checkpoint's; replaying batches must not move it
                for _ in range(done):
                    if next(stream, None) is None:
                        raise StoreError(f"{ckpt}: epoch {epoch + 1} has fewer than {done} batches now "
                                         "(dataset changed since the checkpoint?)")
                torch.set_rng_state(rng)
            with progress_bar(total=steps_per_epoch, initial=done, unit="step", desc=f"{desc} epoch {epoch + 1}/{epochs}",
                              enabled=show_progress and dist.is_main) as bar:
                for i in range(done, steps_per_epoch):
                    batch = next(stream, None)
                    if batch is None:
                        break
                    last = step(batch, state)
                    state["step"] += 1
                    state["batch"] = i + 1
                    metrics.log(state["step"], epoch, last)
                    bar.set_postfix(loss=f"{last.get('loss', float('nan')):.3f}")
                    bar.update(1)
                    if i + 1 < steps_per_epoch and preempt.requested():
                        _checkpoint(run, cfg, parts, state, f"step-{state['step']:08d}", dist)
                        preempt.acknowledge()
                        return {"state": state, "last": last, "seconds": time.time() - t0, "preempted": True}
            state.pop("batch", None)
            state["epoch"] = epoch + 1
            if after_epoch is not None:
                after_epoch(epoch, state)
            _checkpoint(run, cfg, parts, state, f"epoch-{epoch + 1:04d}", dist)
            if epoch + 1 < epochs and preempt.requested():  # asked during the last step or after_epoch
                preempt.acknowledge()
                return {"state": state, "last": last, "seconds": time.time() - t0, "preempted": True}
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    return {"state": state, "last": last, "seconds": time.time() - t0, "preempted": False}


def load_run_teacher(run: Path, config_cls, build_model, device: torch.device | str = "cpu", kind: str = "train"):
    """(EMA teacher in eval mode, run config) from a run's newest checkpoint; ``build_model(cfg)`` makes the
    empty model. The teacher is what MWSIS evaluates and what exports predictions."""
    ckpt = latest_checkpoint(Path(run))
    if ckpt is None:
        raise StoreError(f"{run}: no checkpoint (train with `mwsis {kind} --out {run}` first)")
    saved = load_checkpoint(ckpt, device)
    cfg = apply_overrides(config_cls(), flatten_dict(saved["config"]))
    model = build_model(cfg).to(device)
    model.load_state_dict(saved["teacher"])
    model.eval()
    return model, cfg
