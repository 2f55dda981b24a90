"""The 2D trainer (``mwsis train-2d``): BoxInst (CondInst) + IPG from 2D boxes, with CSCS 3D → 2D.

MWSIS §3.2, §3.4, §4.2: SGD (lr 0.01, momentum 0.9, weight decay 1e-4) with a linear warm-up and the
1x-style steps at 2/3 and 11/12 of training; the paper's multi-scale resize, flip and padding; an EMA
teacher whose per-box masks (IPG, Eq. 1-2) self-supervise the student; optional SAM masks as pseudo
masks; optional CSCS 3D → 2D from ``predictions/3d/round=R``. The epoch loop, checkpoints, resume,
metrics and run snapshot are ``training.fit`` — the same code as the 3D trainer.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Literal
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.label_store import check_label_shards
from ...train2d.config import Model2DConfig
from ...train2d.ipg import ipg_active, pseudo_mask_iou
from ...train2d.model import build_model, param_groups
from ...train2d.sim import sim_teacher_outputs
from ...train2d.sim_copypaste import PasteBank, bank_batch, paste_batch
from ...train2d.sim_prototypes import PrototypeBank
from ...train2d.transforms import collate
from ...train3d.ema import EMAConfig
from .samples2d import check_click_inputs, iter_camera_samples, prepare_sample
from .cscs_exchange import CSCSRoundHook
from .distributed import barrier
from .trainer import Hook, Trainer
from .run import autocast, load_run_teacher, warn_emulated_bf16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Export2DConfig:
    """CSCS exchange with a 3D job running beside this one: every ``every`` epochs the EMA teacher's
    predictions go to ``predictions/2d/round=<epochs done>/`` (as ``mwsis predict-2d``), for the 3D job's
    ``cscs.round: latest``. 0 = off (the default): export with ``mwsis predict-2d`` after training."""

    every: int = 0


@dataclass(frozen=True)
class Train2DConfig:
    epochs: int = field(default=24, metadata={"range": (1, None)})  # MWSIS §4.2 (24e)
    images_per_step: int = field(default=2, metadata={"range": (1, None)})  # per process
    lr: float = field(default=0.01, metadata={"range": (0.0, None)})  # SGD, MWSIS §4.2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500  # linear warm-up from lr * warmup_factor
    warmup_factor: float = 0.001
    lr_steps: tuple[float, ...] = field(default=(2 / 3, 11 / 12), metadata={"range": (0.0, 1.0)})  # fractions of training where lr drops 10x (mmdet 1x)
    clip_grad: float | None = None
    # optimiser: SGD as MWSIS §4.2 / the authors; "adamw" for short random-init runs (configs/cpu-bench.yaml)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    norm_decay: bool = False  # authors: weight decay 0 on every norm layer (method.md §10 "Optimisers")
    bias_decay: bool = True  # authors (mmdet default) decay biases; False: no decay on any 1-D parameter
    controller_lr_mult: float = 1.0  # CondInst controller lr factor (BoxInstModel.param_groups)
    seed: int = 0
    max_steps_per_epoch: int | None = None
    train_short_sides: tuple[int, ...] | None = None  # None: the paper's multi-scale set (train2d.transforms)
    max_long_side: int | None = None
    test_scale: tuple[int, int] | None = None  # (long, short) at inference; None: the paper's (1333, 800)
    flip_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    # (h, w) original pixels: train on object-centric crops of the full-resolution images (train2d.crop), a
    # CPU-regime option; None = whole images, as the paper. Inference always sees whole images.
    train_crop: tuple[int, int] | None = field(default=None, metadata={"range": (32, None), "length": 2})
    crop_class_balance: bool = True  # draw the crop's class uniformly among those in the image
    pseudo_masks: Literal["sam"] | None = None  # "sam": SAM box-prompt masks from labels/sam as pseudo masks
    # mask supervision: "boxes" = BoxInst's box losses (the weak setting); "gt" = CondInst's dice loss on the
    # true instance masks (full supervision, the upper-bound row of MWSIS Tab. 1 and 5)
    masks: Literal["boxes", "gt"] = "boxes"
    cscs_3d: str | int | None = None  # "latest" or a round of predictions/3d: CSCS 3D -> 2D
    backbone_weights: str | None = None  # ImageNet weights file; None = random init
    device: str | None = None
    cpu_threads: int = field(default=2, metadata={"range": (1, None)})
    cpu_bf16: bool = False  # bf16 autocast on CPU too (fp32 by default: see run.autocast)
    # every N steps (0 = off) log the EMA teacher's pseudo-mask IoU against the true masks (``pseudo_iou``,
    # and ``pseudo_iou_crowded`` over boxes overlapping another box of their class): a diagnostic of
    # IPG/SIM in experiments, reading the dataset's true masks (not used for training)
    track_pseudo_iou: int = field(default=0, metadata={"range": (0, None)})
    model: Model2DConfig = field(default_factory=Model2DConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    export: Export2DConfig = field(default_factory=Export2DConfig)

    def __post_init__(self):
        if self.model.cscs.affinity_weight > 0 and self.cscs_3d is None:
            raise ValueError("model.cscs.affinity_weight needs cscs_3d (the round of predictions/3d and "
                             "predictions/3dfeat to read: predict-3d --features)")
        if self.model.sim.enabled and (self.masks == "gt" or self.pseudo_masks == "sam"):
            raise ValueError("model.sim corrects the EMA teacher's instance masks: it does not apply with "
                             "masks: gt (true masks) or pseudo_masks: sam")
        if self.model.wise.enabled:
            box_only = {"masks: gt": self.masks == "gt", "pseudo_masks: sam": self.pseudo_masks == "sam",
                        "cscs_3d": self.cscs_3d is not None, "train_crop": self.train_crop is not None,
                        "track_pseudo_iou": self.track_pseudo_iou > 0, "export.every": self.export.every > 0}
            if any(box_only.values()):
                raise ValueError("model.wise learns from clicks and their proposals; it does not combine with "
                                 + ", ".join(k for k, on in box_only.items() if on))


def sam_teacher_outputs(targets: list[dict], images: torch.Tensor, stride: int = 4) -> dict:
    """SAM masks as IPG-style pseudo maps (per image (K, H/4, W/4) in {0, 1}, valid where a mask exists)."""
    maps, valid = rle_target_maps(targets, "sam_masks", images, stride)
    return {"pseudo_masks": maps, "pseudo_valid": valid}


def rle_target_maps(targets: list[dict], key: str, images: torch.Tensor, stride: int = 4):
    """Per image, the RLE masks under ``targets[i][key]`` mapped onto the padded network input at ``stride``:
    ((K, H/stride, W/stride) binary maps, (K,) bool valid where an RLE exists)."""
    from pycocotools import mask as mask_utils

    h4, w4 = images.shape[-2] // stride, images.shape[-1] // stride
    maps, valid = [], []
    for t in targets:
        rles = t.get(key) or []
        m = torch.zeros(len(rles), h4, w4)
        v = torch.zeros(len(rles), dtype=torch.bool)
        for k, rle in enumerate(rles):
            if rle is None:
                continue
            full = torch.as_tensor(mask_utils.decode(rle).astype(np.float32))
            mapped = _map_mask(full, t["transform"])
            m[k] = F.interpolate(mapped[None, None], size=(h4, w4), mode="bilinear", align_corners=False)[0, 0]
            v[k] = True
        maps.append((m > 0.5).float().to(images.device))
        valid.append(v.to(images.device))
    return maps, valid


def _map_mask(mask: torch.Tensor, tf) -> torch.Tensor:
    """An original-resolution mask through resize, flip and padding onto the padded canvas."""
    h1, w1 = tf.resized_size
    m = F.interpolate(mask[None, None], size=(h1, w1), mode="bilinear", align_corners=False)[0, 0]
    if tf.flip:
        m = m.flip(-1)
    hp, wp = tf.padded_size
    top, left = tf.pad_offset
    return F.pad(m, (left, wp - w1 - left, top, hp - h1 - top))


def lr_lambda(cfg: Train2DConfig, total_steps: int):
    steps = [int(f * total_steps) for f in cfg.lr_steps]

    def f(it: int) -> float:
        warm = 1.0 if it >= cfg.warmup_iters else cfg.warmup_factor + (1 - cfg.warmup_factor) * it / cfg.warmup_iters
        return warm * 0.1 ** sum(it >= s for s in steps)

    return f


def make_optimizer(model: torch.nn.Module, cfg: Train2DConfig) -> torch.optim.Optimizer:
    """SGD (momentum, the paper) or AdamW over ``train2d.model.param_groups``: norm layers without weight decay
    unless ``norm_decay`` (the authors' ``norm_decay_mult=0``), the controller at ``controller_lr_mult``."""
    if cfg.norm_decay and cfg.bias_decay and cfg.controller_lr_mult == 1.0:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    else:
        groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.controller_lr_mult, norm_decay=cfg.norm_decay,
                              bias_decay=cfg.bias_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', not {cfg.optimizer!r}")


class ExportHook(Hook):
    """CSCS exchange with a 3D job beside this one: every ``export.every`` epochs the EMA teacher's predictions
    go to ``predictions/2d/round=<epochs done>/`` (each rank its own shards; the round is complete for the 3D
    job's reader once all have written)."""

    def after_epoch(self, trainer: "Train2DTrainer", epoch: int) -> None:
        every = trainer.cfg.export.every
        if every > 0 and (epoch + 1) % every == 0:
            from ..predict.predict2d import export_predictions_2d

            export_predictions_2d(trainer.data, trainer.teacher.model, trainer.cfg, epoch + 1, trainer.device,
                                  positions=trainer.positions, show_progress=False,
                                  info={"run": str(trainer.run.resolve()), "round": epoch + 1})
            barrier(trainer.dist)
            trainer.state.setdefault("export_rounds", []).append(epoch + 1)


class DiagnosticsHook(Hook):
    """Logs what ``run_step`` measured beside the losses (``trainer.step_diagnostics``) with the step."""

    def after_step(self, trainer, metrics: dict[str, float]) -> None:
        metrics.update(trainer.step_diagnostics)
        trainer.step_diagnostics = {}


def pseudo_iou_metrics(teacher_out: dict, targets: list[dict], images: torch.Tensor, tau_high: float) -> dict:
    """Mean IoU of the teacher's pseudo masks (> tau_high) with the true masks, over all boxes with both and
    over the crowded ones (``pseudo_ious``); NaN where there is none."""
    iou, crowd = pseudo_ious(teacher_out, targets, images, tau_high)
    mean = lambda x: float(x.mean()) if len(x) else float("nan")  # noqa: E731
    return {"pseudo_iou": mean(iou), "pseudo_iou_crowded": mean(iou[crowd])}


def pseudo_ious(teacher_out: dict, targets: list[dict], images: torch.Tensor, tau_high: float):
    """Per box with a pseudo mask and a true mask (pasted ones excluded): (IoU (N,), crowded (N,) bool),
    ``ipg.pseudo_mask_iou`` against the true masks (``gt_masks`` RLEs) minus pasted pixels."""
    gt, gt_valid = rle_target_maps(targets, "gt_masks", images)
    ious, crowded = [], []
    for m, v, g, gv, t in zip(teacher_out["pseudo_masks"], teacher_out["pseudo_valid"], gt, gt_valid, targets):
        if "occluded" in t:
            g = g * ~t["occluded"].to(g.device)
        iou, crowd = pseudo_mask_iou(m.float(), g, t["boxes"].float().reshape(-1, 4), t["classes"].reshape(-1),
                                     tau_high)
        keep = v.to(iou.device) & gv.to(iou.device)
        if "pasted" in t:  # pasted objects have no true mask; occluded pixels are not the object's any more
            keep = keep & ~t["pasted"].to(iou.device)
        ious.append(iou[keep]), crowded.append(crowd[keep])
    return torch.cat(ious), torch.cat(crowded)


class Train2DTrainer(Trainer):
    """The 2D branch (MWSIS §3.2): ``BoxInstModel`` on each camera image with boxes, BoxInst's box losses (or
    the true masks with ``masks: gt``), IPG from the EMA teacher, CSCS 3D -> 2D when ``cscs_3d`` is set; or
    ``WISEModel`` on each camera image with clicks (``model.wise``)."""

    kind = "train-2d"

    def check_inputs(self) -> None:
        warn_emulated_bf16(self.device, self.cfg.cpu_bf16)
        if self.cfg.pseudo_masks == "sam":
            check_label_shards(self.ds, "sam", self.positions)
        if self.cfg.model.wise.enabled:
            check_click_inputs(self.ds, self.positions, self.cfg.model.wise)

    def num_steps_per_epoch(self) -> int:
        cameras = len(self.ds.manifest.sensors.get("cameras", [])) or 1
        images = cameras * sum(self.ds.manifest.shards[p].frames for p in self.positions)  # upper bound
        return math.ceil(images / self.cfg.images_per_step)

    def build_model(self) -> torch.nn.Module:
        model_cfg = self.cfg.model
        if self.cfg.backbone_weights:
            model_cfg = replace(model_cfg, backbone=replace(model_cfg.backbone, weights_path=self.cfg.backbone_weights))
        sc = model_cfg.sim
        # SIM's prototypes (and copy-paste's instance bank) live beside the model, one per rank, checkpointed
        self.sim_bank = PrototypeBank(model_cfg.num_classes, sc.num_prototypes, model_cfg.condinst.mask_channels,
                                      self.cfg.seed) if sc.enabled else None
        self.paste_bank = PasteBank(sc.copy_paste.bank) if sc.copy_paste.enabled else None
        self.step_diagnostics: dict[str, float] = {}
        return build_model(model_cfg)

    def parts(self) -> dict:
        extra = {"sim_prototypes": self.sim_bank, "sim_paste_bank": self.paste_bank}
        return {**super().parts(), **{k: v for k, v in extra.items() if v is not None}}

    def build_optimizer(self):
        opt = make_optimizer(self.model, self.cfg)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.cfg, self.total_steps))

    def default_hooks(self) -> list[Hook]:
        # CSCS 3D -> 2D: "latest" is re-resolved at each epoch start (a 3D job beside this one writes a round at
        # each PVC epoch); the round each epoch used is kept in state["cscs_rounds"]
        cscs = [CSCSRoundHook(self.ds, "3d", self.cfg.cscs_3d)] if self.cfg.cscs_3d else []
        return [*cscs, ExportHook(), DiagnosticsHook()]

    def batches(self, epoch: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        buf = []
        for s in iter_camera_samples(self.ds, self.positions, rng, sam=cfg.pseudo_masks == "sam",
                                     cscs_round=self.cscs_round,
                                     gt_masks=cfg.masks == "gt" or cfg.track_pseudo_iou > 0,
                                     features=cfg.model.cscs.affinity_weight > 0,
                                     wise=cfg.model.wise if cfg.model.wise.enabled else None):
            buf.append(prepare_sample(s, cfg, rng, train=True))
            if len(buf) == cfg.images_per_step:
                yield buf
                buf = []
        if buf:
            yield buf

    def run_step(self, samples) -> dict[str, torch.Tensor]:
        cfg, device = self.cfg, self.device
        images, targets = collate(samples)
        it = self.state["step"]
        # the pseudo masks feed only the IPG/SIM loss: skip the teacher forward without it and before its
        # warm-up, except at the steps that track their quality
        active = cfg.model.ipg.enabled and ipg_active(it, cfg.model.ipg.warmup_iters)
        if self.paste_bank is not None and active:  # SIM's copy-paste, on the CPU batch
            images, targets = paste_batch(images, targets, self.paste_bank, cfg.model,
                                          np.random.default_rng([cfg.seed, it, self.dist.rank, 2]))
        images = images.to(device)
        for t in targets:
            t["boxes"], t["classes"] = t["boxes"].to(device), t["classes"].to(device)
            if "image_rgb" in t:
                t["image_rgb"] = t["image_rgb"].to(device)
        if cfg.masks == "gt":
            for t, m in zip(targets, rle_target_maps(targets, "gt_masks", images)[0]):
                t["mask_targets"] = m
        if cfg.model.wise.enabled:  # each click's proposal at the outputs' stride (WISE's E-Net pairs)
            for t, m in zip(targets, rle_target_maps(targets, "proposals", images)[0]):
                t["proposal_maps"] = m
        track = cfg.track_pseudo_iou > 0 and it % cfg.track_pseudo_iou == 0
        teacher_out = self.teacher_outputs(images, targets, update=active) if active or track else None
        if track:
            self.step_diagnostics = pseudo_iou_metrics(teacher_out, targets, images, cfg.model.ipg.tau_high)
        if self.paste_bank is not None and active:
            bank_batch(self.paste_bank, self.model.input_rgb(images, targets), targets, teacher_out, cfg.model)
        self.ddp_model.train()
        with autocast(device, cfg.cpu_bf16):
            return self.ddp_model(images, targets, teacher_outputs=teacher_out, iteration=it)

    @torch.no_grad()
    def teacher_outputs(self, images: torch.Tensor, targets: list[dict], update: bool) -> dict:
        """The EMA teacher's pseudo masks: SAM's, SIM's corrected maps (``update``: move the prototypes), or
        IPG's instance maps."""
        if self.cfg.pseudo_masks == "sam":
            return sam_teacher_outputs(targets, images)
        if self.sim_bank is not None:
            return sim_teacher_outputs(self.teacher.model, self.sim_bank, images, targets, self.cfg.model, update)
        return self.teacher.model.ipg_teacher_outputs(images, targets)

    def summary(self, res: dict) -> dict:
        out = super().summary(res)
        for key in ("cscs_rounds", "export_rounds"):
            if key in self.state:
                out[key] = self.state[key]
        log.info("train-2d: %d steps on %s in %.1f s, final loss %.4f", out["steps"], self.device, out["seconds"],
                 out["last"].get("loss", float("nan")))
        return out


def train_2d(data: Path | str, out: Path | str, cfg: Train2DConfig, resume: bool = False, show_progress: bool = True,
             stop_after_epoch: int | None = None, overwrite: bool = False, hooks: tuple[Hook, ...] = ()) -> dict:
    """Train; returns a summary. ``resume`` continues the run in ``out``; ``overwrite`` moves it aside.
    SAM labels (``pseudo_masks="sam"``) are checked before anything is written to ``out``. ``hooks`` run after
    the built-in ones (CSCS round, export)."""
    return Train2DTrainer(data, out, cfg, hooks).train(resume, overwrite, show_progress, stop_after_epoch)


def load_teacher_2d(run: Path | str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Train2DConfig]:
    """The EMA teacher of a 2D run's newest checkpoint (``BoxInstModel``, or ``WISEModel`` for a clicks run),
    with the run's config."""
    return load_run_teacher(Path(run), Train2DConfig, lambda c: build_model(c.model), device, "train-2d")
