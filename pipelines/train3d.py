"""The 3D trainer (``mwsis train-3d``): SparseUNet + vote head on pseudo labels, EMA teacher, PVC loop.

MWSIS §3.3, §3.5, §4.2: AdamW with a one-cycle schedule (max lr 1e-3), gradient clipping at 10, an EMA
teacher that is evaluated and that feeds PVC. The PVC loop is the pipeline's own code path: at the
scheduled epochs the teacher's predictions go to ``predictions/3d/round=<epoch>/``, the ``pvc`` stage
votes over the newest rounds into ``labels/pvc/``, and training continues on those labels.
Checkpoints are written every epoch, and mid-epoch when the run is preempted (``training.fit``);
``resume`` continues from the newest one and gives the same weights as an uninterrupted run (data order
and augmentation are seeded by (seed, epoch, step)). Under DDP each rank exports and votes its own shards.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..crossmodal.cscs import cscs_point_loss
from ..pseudolabel.pvc import PVCConfig
from ..pseudolabel.spg import SPGConfig
from ..train3d.augment import AugmentConfig, augment_frame
from ..train3d.ema import EMAConfig, EMATeacher
from ..train3d.infer import InferConfig
from ..train3d.losses import LossConfig, segmentor_loss
from ..train3d.model import SegmentorConfig, VoteSegmentor, make_batch
from ..data.label_store import check_label_shards
from .samples3d import GROUND_TRUTH, iter_samples
from .cscs_exchange import epoch_round, round_resolver
from .distributed import barrier
from .training import autocast, fit, load_run_teacher, setup_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PVCLoopConfig(PVCConfig):
    """When the 3D trainer votes (MWSIS §3.3; the vote itself is ``PVCConfig``'s)."""

    enabled: bool = True
    start_epoch: int | None = None  # E_s; None = half the epochs (authors: 12 of 24, method.md §5)
    every: int = 1  # export + vote every K epochs from E_s on


@dataclass(frozen=True)
class CSCS2DConfig:
    """CSCS 2D → 3D (MWSIS Eq. 5-6): BCE between the 2D teacher's projected mask probabilities and the
    student's per-class sigmoids; active from ``start_step`` with a linear warm-up."""

    round: str | int | None = None  # "latest" or a round number of predictions/2d; None = off
    weight: float = 2.0  # alpha_6
    start_step: int = 0
    warmup_steps: int = 100


@dataclass(frozen=True)
class Train3DConfig:
    labels: str = "spg"  # labels/<stage> to train on: spg | ccl | sam | pvc | frustum, or gt (full supervision)
    epochs: int = field(default=24, metadata={"range": (1, None)})  # MWSIS §4.2
    frames_per_step: int = field(default=2, metadata={"range": (1, None)})  # per process; authors: 2 per GPU on 4 GPUs (batch 8)
    max_lr: float = field(default=0.001, metadata={"range": (0.0, None)})  # one-cycle maximum (MWSIS §4.2)
    weight_decay: float = 0.01  # AdamW default in the authors' config
    pct_start: float = field(default=0.4, metadata={"range": (0.0, 1.0)})  # one-cycle warm-up fraction (mmdet3d cyclic policy)
    clip_grad: float = 10.0
    seed: int = 0
    max_steps_per_epoch: int | None = None  # for quick runs and tests
    device: str | None = None  # default: CUDA when available
    # spconv's CPU path runs hundreds of small matrix products per step; OpenMP threads make them slower,
    # badly so on a busy machine (measured: first step 9-50 s with 2 threads under load, 0.1 s with 1)
    cpu_threads: int = field(default=1, metadata={"range": (1, None)})
    model: SegmentorConfig = field(default_factory=SegmentorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    # the points trained on and evaluated (point range, NLZ: SPG's eligibility rule) and RSC's ring segments;
    # keep it equal to the stages' spg section (the kitti preset moves both)
    spg: SPGConfig = field(default_factory=SPGConfig)
    pvc: PVCLoopConfig = field(default_factory=PVCLoopConfig)
    cscs: CSCS2DConfig = field(default_factory=CSCS2DConfig)


def _sample_dict(s) -> dict:
    d = {"xyz": s.xyz, "intensity": s.intensity, "elongation": s.elongation,
         "semantic": s.semantic.astype(np.int64), "instance": s.instance.astype(np.int64)}
    if s.cscs_2d is not None:
        d["cscs"] = s.cscs_2d
    return d


def _batches(ds, labels, positions, cfg: Train3DConfig, epoch: int, cscs_round, skipped: set | None = None):
    rng = np.random.default_rng([cfg.seed, epoch, 0])
    buf = []
    for s in iter_samples(ds, labels, positions, rng, cfg.spg, cscs_round, skipped):
        buf.append(s)
        if len(buf) == cfg.frames_per_step:
            yield buf
            buf = []
    if buf:
        yield buf


def train_step(model, teacher, opt, sched, samples, cfg: Train3DConfig, step: int, epoch: int,
               device: torch.device) -> dict[str, float]:
    rng = np.random.default_rng([cfg.seed, epoch, step + 1])
    frames = [augment_frame(_sample_dict(s), rng, cfg.augment) for s in samples]
    batch = make_batch(frames, device)
    model.train()
    with autocast(device):
        out = model(batch)
    out = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
    losses = segmentor_loss(out, batch.xyz, batch.semantic, batch.instance, batch.batch_idx, cfg.loss)
    if cfg.cscs.round is not None and step >= cfg.cscs.start_step and all("cscs" in f for f in frames):
        targets = torch.as_tensor(np.concatenate([f["cscs"] for f in frames]), dtype=torch.float32, device=device)
        ramp = min(1.0, (step - cfg.cscs.start_step + 1) / max(cfg.cscs.warmup_steps, 1))
        losses["loss_cscs"] = cfg.cscs.weight * ramp * cscs_point_loss(out["sem_logits"], targets, out.get("valid"))
        losses["loss"] = losses["loss"] + losses["loss_cscs"]
    if not torch.isfinite(losses["loss"]):
        raise FloatingPointError(f"step {step}: non-finite loss {float(losses['loss'])} (frames "
                                 f"{[s.frame_id for s in samples]})")
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
    opt.step()
    sched.step()
    momentum = teacher.update(model.module if hasattr(model, "module") else model, step)
    return {**{k: float(v.detach()) for k, v in losses.items()}, "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0],
            "ema_momentum": momentum}


def _pvc_due(cfg: Train3DConfig, epoch: int) -> bool:
    """After finishing ``epoch`` (0-based): is a PVC round due?"""
    if not cfg.pvc.enabled or cfg.labels == GROUND_TRUTH:  # full supervision: nothing to correct
        return False
    start = cfg.epochs // 2 if cfg.pvc.start_epoch is None else cfg.pvc.start_epoch
    done = epoch + 1
    return done >= start and (done - start) % max(cfg.pvc.every, 1) == 0 and done < cfg.epochs


def run_pvc_round(data: Path, teacher: torch.nn.Module, cfg: Train3DConfig, rnd: int, base: str,
                  device: torch.device, positions: list[int] | None = None) -> None:
    """Export teacher predictions as round ``rnd`` and run the ``pvc`` stage (the CLI's code path) on the
    shards at ``positions`` (all by default). Under DDP each rank does its own shards: a shard's vote reads
    only that shard's rounds, and the rank trains only on its shards' labels (no rank waits on another)."""
    from .predict3d import export_predictions
    from .runner import run_stages

    export_predictions(data, teacher, cfg.infer, rnd, device, info={"round": rnd, "base": base}, show_progress=False,
                       spg_cfg=cfg.spg,
                       positions=positions)
    vote = {f.name: getattr(cfg.pvc, f.name) for f in fields(PVCConfig)}
    res = run_stages(data, ["pvc"], {"pvc": {"base": base, **vote}}, shard_positions=positions, show_progress=False)
    failed = [r for r in res if r.status == "failed"]
    if failed:
        raise RuntimeError(f"PVC round {rnd} failed: {failed[0].shard}: {failed[0].error}")


def train_3d(data: Path | str, out: Path | str, cfg: Train3DConfig, resume: bool = False,
             show_progress: bool = True, stop_after_epoch: int | None = None, overwrite: bool = False) -> dict:
    """Train; returns a summary. Writes config/run snapshot, metrics.csv and checkpoints into ``out``.

    ``stop_after_epoch`` ends this process after that epoch's checkpoint (as a preempted job would);
    a later ``resume=True`` run continues the same schedule. ``overwrite`` moves an existing run aside.
    The labels are checked (present, checksums) before anything is written to ``out``.
    """
    data, run = Path(data), Path(out)
    dist, device, ds, positions = setup_run(data, cfg.device, cfg.cpu_threads, cfg.seed)
    if cfg.labels != GROUND_TRUTH:  # before anything is written to ``out``
        check_label_shards(ds, cfg.labels, positions)
    skipped: set[str] = set()  # frames without usable points: warned about once each, counted in the summary
    frames = sum(ds.manifest.shards[p].frames for p in positions)
    steps_per_epoch = math.ceil(frames / cfg.frames_per_step)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    model = VoteSegmentor(cfg.model).to(device)
    teacher = EMATeacher(model, cfg.ema)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=max(cfg.epochs * steps_per_epoch, 1),
                                                pct_start=cfg.pct_start)
    ddp_model = model
    if dist.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    # CSCS 2D -> 3D: "latest" is re-resolved at each epoch start (a 2D job running beside this one exports new
    # rounds, see train2d's export.every); the round each epoch used is kept in state["cscs_rounds"]
    resolve = round_resolver(ds, "2d", cfg.cscs.round) if cfg.cscs.round is not None else None

    def batches(epoch, state):
        rnd = epoch_round(state, epoch, resolve, dist) if resolve else None
        return _batches(ds, state["labels"], positions, cfg, epoch, rnd, skipped)

    def step(samples, state):
        out = train_step(ddp_model, teacher, opt, sched, samples, cfg, state["step"], state["epoch"], device)
        if resolve:
            rnd = state["cscs_rounds"][state["epoch"]]
            out["cscs_round"] = -1 if rnd is None else rnd
        return out

    def after_epoch(epoch, state):
        if _pvc_due(cfg, epoch):
            run_pvc_round(data, teacher.model, cfg, epoch + 1, cfg.labels, device, positions)
            barrier(dist)  # every rank has voted on its shards: all train on labels/pvc from here on
            state["labels"] = "pvc"
            state["pvc_rounds"].append(epoch + 1)

    state = {"epoch": 0, "step": 0, "labels": cfg.labels, "pvc_rounds": []}
    res = fit(run, cfg, {"model": model, "teacher": teacher.model, "optimizer": opt, "scheduler": sched}, state,
              batches, step, steps_per_epoch, cfg.epochs, dist, "train-3d", after_epoch, resume, show_progress,
              stop_after_epoch, {"data": str(data), "kind": "train-3d"}, overwrite)
    state, last = res["state"], res["last"]
    summary = {"epochs": cfg.epochs, "steps": state["step"], "seconds": res["seconds"], "device": str(device),
               "labels": state["labels"], "pvc_rounds": state["pvc_rounds"], "preempted": res["preempted"],
               "last": last, "skipped_frames": len(skipped)}
    if skipped:
        log.warning("train-3d: %d frames without usable points were skipped (first: %s)", len(skipped),
                    sorted(skipped)[0])
    if "cscs_rounds" in state:
        summary["cscs_rounds"] = state["cscs_rounds"]
    log.info("train-3d: %d steps on %s in %.1f s, final loss %.4f", state["step"], device, summary["seconds"],
             last.get("loss", float("nan")))
    return summary


def load_teacher(run: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Train3DConfig]:
    """The EMA teacher of a run's newest checkpoint (the weights MWSIS evaluates), with the run's config."""
    return load_run_teacher(Path(run), Train3DConfig, lambda c: VoteSegmentor(c.model), device, "train-3d")
