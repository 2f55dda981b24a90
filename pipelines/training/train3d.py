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

import itertools
import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...pseudolabel.points import PointSetConfig
from ...pseudolabel.pvc import PVCConfig
from ...pseudolabel.twist_update import labelled_subset
from ...pseudolabel.spg import SPGConfig
from ...train3d.augment import AugmentConfig, augment_frame
from ...train3d.ema import EMAConfig
from ...train3d.infer import InferConfig
from ...train3d.losses import LossConfig
from ...train3d.model import SegmentorConfig, VoteSegmentor, make_batch
from ...train3d.twist import RecorrectionConfig, RecorrectionNet
from ...data.label_store import check_label_shards
from .samples3d import GROUND_TRUTH, iter_samples
from .cscs_exchange import CSCSRoundHook
from .twist_round import TwistHook
from .distributed import barrier
from .trainer import Hook, Trainer
from .run import autocast, latest_checkpoint, load_checkpoint, load_run_teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PVCLoopConfig(PVCConfig):
    """When the 3D trainer votes (MWSIS §3.3; the vote itself is ``PVCConfig``'s)."""

    enabled: bool = True
    start_epoch: int | None = None  # E_s; None = half the epochs (authors: 12 of 24, method.md §5)
    every: int = 1  # export + vote every K epochs from E_s on
    # also export the teacher's point features (predictions/3dfeat, same round): a 2D job beside this one
    # reads them for Joint 2D-3D WSSS's feature correlation (model.cscs.affinity_weight)
    export_features: bool = False


@dataclass(frozen=True)
class CSCS2DConfig:
    """CSCS 2D → 3D (MWSIS Eq. 5-6): BCE between the 2D teacher's projected mask probabilities and the
    student's per-class sigmoids; active from ``start_step`` with a linear warm-up."""

    round: str | int | None = None  # "latest" or a round number of predictions/2d; None = off
    weight: float = 2.0  # alpha_6
    start_step: int = 0
    warmup_steps: int = 100
    # "soft": MWSIS's Eq. 5 against the 2D teacher's probabilities; "argmax": the hard label of Joint 2D-3D
    # WSSS (seeds/001 Eq. 5-7) over the classes with a box in the camera, background below
    # ``background_below`` (ours: the paper's indoor scenes have no background)
    form: Literal["soft", "argmax"] = "soft"
    confidence_weighting: bool = False  # each point weighted by the teacher's max score (seeds/001 Eq. 6)
    background_below: float = field(default=0.5, metadata={"range": (0.0, 1.0)})


@dataclass(frozen=True)
class TwistConfig:
    """TWIST (Chu et al., CVPR 2023; extensions.md §3) in the 3D trainer (``twist_round.py``): the fully
    labelled subset, a seeded fraction ``label_fraction`` of all frames (``twist_update.labelled_subset``) or
    the frames named in ``label_frames``, trains on its ground truth (the resolved list is in ``run.json``);
    from ``start_epoch`` on, every ``every`` epochs, a round relabels the other frames from the teacher's
    proposals that Ψ is certain of. Exclusive with PVC (both rewrite the labels the trainer reads)."""

    enabled: bool = False
    label_fraction: float = field(default=0.05, metadata={"range": (0.0, 1.0)})  # rho
    label_frames: tuple[str, ...] | None = None  # explicit frame ids instead of the fraction
    subset_seed: int = 0  # the same frames for every training seed, so seeds compare
    start_epoch: int | None = None  # None = half the epochs (as PVC's E_s)
    every: int = field(default=1, metadata={"range": (1, None)})
    certainty_thresh: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # keep v̂ > 0.5 (TWIST)
    sem_iou_thresh: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # L_sem only above (TWIST)
    mutation: tuple[float, ...] = field(default=(0.7, 1.3), metadata={"length": 2, "range": (0.0, None)})
    uncovered: Literal["ignore", "keep"] = "ignore"  # points in no kept proposal; "keep": their current labels
    # the update of the other frames (TWIST's ablation, Tab. 5): "recorrected" = B + C (TWIST), "proposals" =
    # C alone (every proposal, the teacher's class), "naive" = per-point thresholds 0.4 / 0.6
    update: Literal["recorrected", "proposals", "naive"] = "recorrected"
    psi: RecorrectionConfig = field(default_factory=RecorrectionConfig)
    psi_lr: float = field(default=0.003, metadata={"range": (0.0, None)})  # AdamW (TWIST: SGD 0.005, 10k steps)
    psi_steps: int = field(default=200, metadata={"range": (0, None)})  # per round
    psi_batch: int = field(default=64, metadata={"range": (1, None)})  # proposals per step
    # MWSIS Fig. 7 ("few full labels"): train on the labelled frames alone (from scratch, or fine-tuning a
    # box-supervised run given as init_weights)
    labelled_only: bool = False
    # with labelled_only: each epoch cycles the labelled frames for as many steps as an epoch over every
    # frame takes, so that a few-label run trains as many steps as the rows it is compared with
    match_full_steps: bool = False


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
    init_weights: str | None = None  # a run directory (its newest checkpoint) or checkpoint file: start from its model
    model: SegmentorConfig = field(default_factory=SegmentorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    # the points trained on, predicted and evaluated: a config file's shared `points` section, the one the
    # stages label (the kitti preset moves it once for all)
    points: PointSetConfig = field(default_factory=PointSetConfig)
    spg: SPGConfig = field(default_factory=SPGConfig)  # its DCS settings give RSC's ring segments (eval-3d --rsc)
    pvc: PVCLoopConfig = field(default_factory=PVCLoopConfig)
    cscs: CSCS2DConfig = field(default_factory=CSCS2DConfig)
    twist: TwistConfig = field(default_factory=TwistConfig)


def _sample_dict(s) -> dict:
    d = {"xyz": s.xyz, "intensity": s.intensity, "elongation": s.elongation,
         "semantic": s.semantic.astype(np.int64), "instance": s.instance.astype(np.int64)}
    if s.cscs_2d is not None:
        d["cscs"] = s.cscs_2d
    if s.centre_offset is not None:
        d["centre_offset"] = s.centre_offset
    return d


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
    from ..predict.predict3d import export_predictions
    from ..labels.runner import run_stages
    from ..labels.stages import PVCStageConfig, StagesConfig

    export_predictions(data, teacher, cfg.infer, rnd, device, info={"round": rnd, "base": base}, show_progress=False,
                       points=cfg.points, positions=positions, features=cfg.pvc.export_features)
    vote = {f.name: getattr(cfg.pvc, f.name) for f in fields(PVCConfig)}
    stages = StagesConfig(pvc=PVCStageConfig(base=base, **vote))
    res = run_stages(data, ["pvc"], stages, shard_positions=positions, show_progress=False)
    failed = [r for r in res if r.status == "failed"]
    if failed:
        raise RuntimeError(f"PVC round {rnd} failed: {failed[0].shard}: {failed[0].error}")


class PVCHook(Hook):
    """MWSIS §3.3 in the loop: from ``pvc.start_epoch`` on, every ``pvc.every`` epochs, export the EMA teacher's
    predictions as a round and run the ``pvc`` stage over this rank's shards; training continues on
    ``labels/pvc``. Under DDP every rank votes on its own shards, then all wait for each other."""

    def after_epoch(self, trainer: "Train3DTrainer", epoch: int) -> None:
        if _pvc_due(trainer.cfg, epoch):
            run_pvc_round(trainer.data, trainer.teacher.model, trainer.cfg, epoch + 1, trainer.cfg.labels,
                          trainer.device, trainer.positions)
            barrier(trainer.dist)  # every rank has voted on its shards: all train on labels/pvc from here on
            trainer.state["labels"] = "pvc"
            trainer.state["pvc_rounds"].append(epoch + 1)


class Train3DTrainer(Trainer):
    """The 3D branch (MWSIS §3.5): ``VoteSegmentor`` on the label stage ``cfg.labels`` (or the ground truth),
    one-cycle AdamW, with the PVC rounds and, when ``cscs.round`` is set, CSCS 2D -> 3D (Eq. 6)."""

    kind = "train-3d"

    def __init__(self, data, out, cfg: Train3DConfig, hooks=()):
        self.skipped: set[str] = set()  # frames without usable points: warned about once each, counted in the summary
        super().__init__(data, out, cfg, hooks)
        if cfg.twist.enabled:  # Ψ and its optimizer live beside the model, in every checkpoint
            self.psi = RecorrectionNet(self.model.conv_seg.in_features, cfg.twist.psi).to(self.device)
            self.psi_optimizer = torch.optim.AdamW(self.psi.parameters(), lr=cfg.twist.psi_lr)

    def check_inputs(self) -> None:
        if self.cfg.twist.enabled and self.cfg.pvc.enabled:
            raise ValueError("twist.enabled and pvc.enabled: TWIST rounds and PVC both rewrite the labels the "
                             "trainer reads; set pvc.enabled=false")
        if self.cfg.labels != GROUND_TRUTH:
            check_label_shards(self.ds, self.cfg.labels, self.positions)

    def num_steps_per_epoch(self) -> int:
        if self.cfg.twist.enabled and self.cfg.twist.labelled_only and not self.cfg.twist.match_full_steps:
            mine = set(self.positions)
            frames = sum(self.ds.locate(f)[0] in mine for f in self._labelled_frames())
        else:
            frames = sum(self.ds.manifest.shards[p].frames for p in self.positions)
        return math.ceil(frames / self.cfg.frames_per_step)

    def build_model(self) -> torch.nn.Module:
        model = VoteSegmentor(self.cfg.model, self.cfg.loss)
        if self.cfg.init_weights:  # e.g. a box-supervised run to fine-tune on the labelled frames
            path = Path(self.cfg.init_weights)
            ckpt = latest_checkpoint(path) if path.is_dir() else path
            if ckpt is None:
                raise ValueError(f"init_weights: {path} holds no checkpoint")
            model.load_state_dict(load_checkpoint(ckpt)["model"])
        return model

    def build_optimizer(self):
        cfg = self.cfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=max(self.total_steps, 1),
                                                        pct_start=cfg.pct_start)

    def initial_state(self) -> dict:
        return {"labels": self.cfg.labels, "pvc_rounds": [], "labelled_frames": self._labelled_frames()}

    def _labelled_frames(self) -> list[str]:
        """TWIST's fully labelled frames, resolved over the whole dataset (every rank the same list)."""
        t = self.cfg.twist
        if not t.enabled:
            return []
        if t.label_frames is not None:
            unknown = sorted(set(t.label_frames) - set(self.ds.frame_ids))
            if unknown:
                raise ValueError(f"twist.label_frames: {len(unknown)} frame id(s) not in {self.ds.root}, e.g. "
                                 f"{unknown[0]!r}")
            return [f for f in self.ds.frame_ids if f in set(t.label_frames)]
        return labelled_subset(self.ds.frame_ids, t.label_fraction, t.subset_seed)

    def default_hooks(self) -> list[Hook]:
        # CSCS 2D -> 3D: "latest" is re-resolved at each epoch start (a 2D job beside this one exports new rounds,
        # see train2d's export.every); the round each epoch used is kept in state["cscs_rounds"]
        cscs = [CSCSRoundHook(self.ds, "2d", self.cfg.cscs.round)] if self.cfg.cscs.round is not None else []
        return [*cscs, PVCHook(), TwistHook()]

    def parts(self) -> dict:
        if not self.cfg.twist.enabled:
            return super().parts()
        return {**super().parts(), "psi": self.psi, "psi_optimizer": self.psi_optimizer}

    def batches(self, epoch: int):
        gt_frames = frozenset(self.state.get("labelled_frames", ()))
        only = gt_frames if self.cfg.twist.enabled and self.cfg.twist.labelled_only else None
        cycle = only is not None and self.cfg.twist.match_full_steps  # the trainer stops at steps_per_epoch
        for n in itertools.count():
            rng = np.random.default_rng([self.cfg.seed, epoch, 0] + ([n] if n else []))
            buf, any_sample = [], False
            for s in iter_samples(self.ds, self.state["labels"], self.positions, rng, self.cfg.points,
                                  self.cscs_round, self.skipped, gt_frames, only):
                buf.append(s)
                any_sample = True
                if len(buf) == self.cfg.frames_per_step:
                    yield buf
                    buf = []
            if buf:
                yield buf
            if not cycle or not any_sample:
                return

    def run_step(self, samples) -> dict[str, torch.Tensor]:
        cfg, step = self.cfg, self.state["step"]
        rng = np.random.default_rng([cfg.seed, self.state["epoch"], step + 1])
        frames = [augment_frame(_sample_dict(s), rng, cfg.augment, offset_keys=("centre_offset",)) for s in samples]
        batch = make_batch(frames, self.device)
        targets, weight, cc = None, 0.0, cfg.cscs
        if cc.round is not None and step >= cc.start_step and all("cscs" in f for f in frames):
            targets = torch.as_tensor(np.concatenate([f["cscs"] for f in frames]), dtype=torch.float32, device=self.device)
            weight = cc.weight * min(1.0, (step - cc.start_step + 1) / max(cc.warmup_steps, 1))
        self.ddp_model.train()
        with autocast(self.device):
            return self.ddp_model(batch, targets, weight, cscs_form=cc.form,
                                  confidence_weighting=cc.confidence_weighting, background_below=cc.background_below)

    def describe(self, samples) -> str:
        return f" (frames {[s.frame_id for s in samples]})"

    def run_record(self) -> dict:
        return {"labelled_frames": self.state["labelled_frames"]} if self.state.get("labelled_frames") else {}

    def summary(self, res: dict) -> dict:
        out = {**super().summary(res), "labels": self.state["labels"], "pvc_rounds": self.state["pvc_rounds"],
               "skipped_frames": len(self.skipped)}
        if self.skipped:
            log.warning("train-3d: %d frames without usable points were skipped (first: %s)", len(self.skipped),
                        sorted(self.skipped)[0])
        if "cscs_rounds" in self.state:
            out["cscs_rounds"] = self.state["cscs_rounds"]
        if self.state.get("labelled_frames"):
            out["labelled_frames"] = self.state["labelled_frames"]
        if self.state.get("twist_rounds"):
            out["twist_rounds"] = self.state["twist_rounds"]
            out["twist_quality"] = self.state.get("twist_quality", {})
        log.info("train-3d: %d steps on %s in %.1f s, final loss %.4f", out["steps"], self.device, out["seconds"],
                 out["last"].get("loss", float("nan")))
        return out


def train_3d(data: Path | str, out: Path | str, cfg: Train3DConfig, resume: bool = False,
             show_progress: bool = True, stop_after_epoch: int | None = None, overwrite: bool = False,
             hooks: tuple[Hook, ...] = ()) -> dict:
    """Train; returns a summary. Writes config/run snapshot, metrics.csv and checkpoints into ``out``.

    ``stop_after_epoch`` ends this process after that epoch's checkpoint (as a preempted job would);
    a later ``resume=True`` run continues the same schedule. ``overwrite`` moves an existing run aside.
    The labels are checked (present, checksums) before anything is written to ``out``. ``hooks`` run after
    the built-in ones (CSCS round, PVC).
    """
    return Train3DTrainer(data, out, cfg, hooks).train(resume, overwrite, show_progress, stop_after_epoch)


def load_teacher(run: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Train3DConfig]:
    """The EMA teacher of a run's newest checkpoint (the weights MWSIS evaluates), with the run's config."""
    return load_run_teacher(Path(run), Train3DConfig, lambda c: VoteSegmentor(c.model), device, "train-3d")
