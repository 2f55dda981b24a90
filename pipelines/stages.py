"""The pseudo-label stage graph (MWSIS §3.3 and the SAM baseline of §4.3).

Each stage is a pure per-frame function from a ``Frame`` (plus the labels of the stages it depends on)
to ``FrameLabels``; ``runner.py`` schedules them over shards. Stages and what they write:

    frustum   every point inside a 2D box takes the box's class          (Tab. 4, "2D Box", no module)
    ccl       frustum + largest CCL cluster per box (Eq. 4 alone)        (Tab. 4, "CCL")
    dcs       DCS ring-segment ids, column ``segment``                   (§3.3, Appendix A.1)
    spg       Eq. 3 on the dcs segments, then Eq. 4            needs dcs  (Tab. 4, "CCL + SPG")
    sam       SAM masks from box prompts, lifted to points, largest CCL cluster per box (Tab. 2/4 "SAM")

Configs are per section of ``StagesConfig``: the 3D stages share ``spg`` (``SPGConfig``: eligibility,
thresholds, radii, DCS settings), ``sam`` adds ``SAMConfig``, ``pvc`` is ``PVCStageConfig``. Presets and
``--set`` resolve through ``pipelines/config.py``. A stage's output shard records the sections it uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from ..data.frame import Frame
from ..data.schema.labels import FrameLabels, LabelMasks
from ..pseudolabel.frustum import Claims
from ..pseudolabel.spg import (SPGConfig, frame_eligible, ccl_frame, ccl_labels, frame_segments, frustum_frame,
                               spg_frame)


@dataclass(frozen=True)
class SAMConfig:
    """SAM box prompts. ``checkpoint``: a local vit_h/l/b file, or "tiny" for a tiny randomly initialised
    SAM (tests and plumbing checks only: its masks are meaningless). None skips the stage."""

    checkpoint: str | None = None
    model_type: Literal["auto", "vit_h", "vit_l", "vit_b"] = "auto"  # vit_h | vit_l | vit_b | auto (from the weights)
    batch_size: int = field(default=64, metadata={"range": (1, None)})  # boxes per predict_torch call
    device: str | None = None  # default: CUDA when available


@dataclass(frozen=True)
class StageSpec:
    name: str
    label_frame: Callable[[Frame, dict, dict, Any], FrameLabels]
    sections: tuple[str, ...] = ("spg",)
    depends: tuple[str, ...] = ()
    needs_images: bool = False
    setup: Callable[[dict], Any] | None = None  # per process, e.g. load a model once
    skip_reason: Callable[[dict], str | None] | None = None
    doc: str = ""
    # dependencies that depend on the config (e.g. PVC's base labels); default: ``depends``
    depends_fn: Callable[[dict], tuple[str, ...]] | None = None
    # prediction shards the stage reads: (dataset root, cfg) -> {name: (source, round)}; each frame's
    # probabilities arrive in ``deps[name]`` and the shard checksums join the stage's recorded inputs
    predictions_fn: Callable[[Any, dict], dict[str, tuple[str, int]]] | None = None

    def dependencies(self, cfg: dict) -> tuple[str, ...]:
        return self.depends_fn(cfg) if self.depends_fn else self.depends


@dataclass(frozen=True)
class PVCStageConfig:
    """PVC as a stage (MWSIS §3.3): vote over the newest ``history`` rounds of 3D teacher predictions."""

    base: str = "spg"  # the labels the vote corrects
    history: int = field(default=4, metadata={"range": (1, None)})  # N_his
    tau_low: float = field(default=0.4, metadata={"range": (0.0, 1.0)})  # max prob below -> background vote
    tau_high: float = field(default=0.6, metadata={"range": (0.0, 1.0)})  # max prob at or above -> class vote; between -> no vote
    min_agree: int | None = None  # T_h: rounds that must agree; None = all available rounds


@dataclass(frozen=True)
class StagesConfig:
    """Every stage's config in one object: the ``stages`` section of a config file (``pipelines/config.py``),
    so ``--set spg.fg_thresh=0.05`` goes through the same ``apply_overrides`` as the trainers' keys."""

    spg: SPGConfig = field(default_factory=SPGConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)
    pvc: PVCStageConfig = field(default_factory=PVCStageConfig)


def stage_overrides(cfg: StagesConfig) -> dict[str, dict]:
    """A resolved ``StagesConfig`` as the runner's {section: {field: value}} (every field, plain JSON values)."""
    from .config import config_to_dict

    return config_to_dict(cfg)


def build_configs(sections: tuple[str, ...], overrides: dict[str, dict]) -> dict:
    """Config objects of ``sections`` with ``overrides`` ({section: {field: value}}; JSON lists -> tuples)."""
    from .config import ConfigError, apply_overrides

    try:
        cfg = apply_overrides(StagesConfig(), {s: v for s, v in overrides.items() if v})
    except ConfigError as e:
        raise ValueError(f"stage config: {e}") from e
    return {s: getattr(cfg, s) for s in sections}


def _sizes(frame: Frame) -> dict[int, tuple[int, int]]:
    return {c.camera_id: (c.width, c.height) for c in frame.cameras}


def one_instance_per_object(instance: np.ndarray, object_id: np.ndarray) -> np.ndarray:
    """Give boxes that share an ``object_id`` (one object seen by several cameras) one instance id: that of
    the object's first box. The authors keep one instance per box, which splits such objects in two."""
    if not len(object_id):
        return instance
    _, first = np.unique(object_id, return_index=True)
    canon = np.zeros(len(object_id) + 1, np.int32)
    canon[1:] = first[np.unique(object_id, return_inverse=True)[1]] + 1
    return canon[instance]


def _labels(frame: Frame, sem, inst, **extra) -> FrameLabels:
    return FrameLabels(frame.frame_id, semantic=sem, instance=one_instance_per_object(inst, frame.boxes2d.object_id),
                       **extra)


def _frustum(frame, deps, cfg, ctx):
    return _labels(frame, *frustum_frame(frame.points, frame.boxes2d, _sizes(frame), cfg["spg"]))


def _ccl(frame, deps, cfg, ctx):
    return _labels(frame, *ccl_frame(frame.points, frame.boxes2d, _sizes(frame), cfg["spg"]))


def _dcs(frame, deps, cfg, ctx):
    return FrameLabels(frame.frame_id, segment=frame_segments(frame.points, cfg["spg"], frame.range_image_shape))


def _spg(frame, deps, cfg, ctx):
    seg = deps["dcs"].segment
    if seg is None or seg.shape[0] != len(frame.points):
        raise ValueError(f"labels/dcs: segment ids missing or of wrong length for {len(frame.points)} points")
    sem, inst, _ = spg_frame(frame.points, frame.boxes2d, _sizes(frame), cfg["spg"], segment_id=seg)
    return _labels(frame, sem, inst, segment=seg)


def _sam_setup(cfg):
    from ..pseudolabel.sam_prompt import build_sam, make_predictor, tiny_sam

    c = cfg["sam"]
    sam = tiny_sam(seed=0) if c.checkpoint == "tiny" else build_sam(c.checkpoint, c.model_type, c.device)
    return make_predictor(sam)


def _sam_skip(cfg):
    return None if cfg["sam"].checkpoint else "no SAM checkpoint given (--sam-checkpoint PATH or SAM_CHECKPOINT=PATH)"


def _sam(frame, deps, cfg, predictor):
    """One set_image per camera, all its boxes batched; masks lifted to points, then Eq. 4 per box."""
    from ..pseudolabel.sam_prompt import lift_masks_to_points, masks_to_rle, segment_boxes

    b = frame.boxes2d
    cam_ids, box_idx, scores, rles, point_l, box_l = [], [], [], [], [], []
    eligible = frame_eligible(frame.points, cfg["spg"])
    for cam in frame.cameras:
        idx = np.flatnonzero(b.camera_id == cam.camera_id)
        if not len(idx):
            continue
        masks, sc = segment_boxes(predictor, cam.image(), b.xyxy[idx], batch_size=cfg["sam"].batch_size)
        lifted = lift_masks_to_points(frame.points.cam_id, frame.points.cam_uv, np.full(len(idx), cam.camera_id),
                                      masks, (cam.width, cam.height), valid=eligible)
        point_l.append(lifted.point)
        box_l.append(idx[lifted.box].astype(np.int32))  # mask k of this camera -> frame box index
        cam_ids.append(np.full(len(idx), cam.camera_id, np.int8))
        box_idx.append(idx.astype(np.int32))
        scores.append(sc.astype(np.float32))
        rles += masks_to_rle(masks)
    point = np.concatenate(point_l) if point_l else np.zeros(0, np.int64)
    box = np.concatenate(box_l) if box_l else np.zeros(0, np.int32)
    order = np.lexsort((box, point))
    claims = Claims(point[order], box[order], len(frame.points), len(b))
    sem, inst = ccl_labels(frame.points.xyz, claims, b.class_id, eligible, frame.points.range, cfg["spg"],
                           box_owner=b.object_id)
    cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
    box_index = cat(box_idx, np.int32)
    masks2d = LabelMasks(cat(cam_ids, np.int8), box_index, b.class_id[box_index].astype(np.int8),
                         cat(scores, np.float32), rles)
    return _labels(frame, sem, inst, masks2d=masks2d)


def _pvc_rounds(root, cfg) -> dict[str, tuple[str, int]]:
    from ..data.prediction_store import list_rounds

    rounds = list_rounds(root, "3d")[-cfg["pvc"].history:]
    if not rounds:
        raise ValueError(f"{root}/predictions/3d: no rounds of 3D teacher predictions (run `mwsis predict-3d`)")
    return {f"round={r}": ("3d", r) for r in rounds}


def _pvc(frame, deps, cfg, ctx):
    from ..pseudolabel.pvc import pvc_vote

    c = cfg["pvc"]
    base = deps[c.base]
    if base.semantic is None:
        raise ValueError(f"labels/{c.base} has no per-point semantic labels to correct")
    names = sorted((k for k in deps if k.startswith("round=")), key=lambda k: int(k.split("=")[1]))
    history = np.stack([deps[k].astype(np.float32) for k in names])
    if history.shape[1] != len(frame.points):
        raise ValueError(f"predictions hold {history.shape[1]} points, the frame {len(frame.points)} (mismatched shards)")
    sem, inst = pvc_vote(history, base.semantic, base.instance, tau_low=c.tau_low, tau_high=c.tau_high,
                         min_agree=c.min_agree)
    return FrameLabels(frame.frame_id, semantic=sem, instance=inst)


STAGES: dict[str, StageSpec] = {s.name: s for s in [
    StageSpec("frustum", _frustum, doc="points inside 2D boxes take the box class (no correction)"),
    StageSpec("ccl", _ccl, doc="frustum + largest CCL cluster per box (Eq. 4)"),
    StageSpec("dcs", _dcs, doc="DCS ring-segment ids on the TOP range image"),
    StageSpec("spg", _spg, depends=("dcs",), doc="Eq. 3 ring-segment proportions, then Eq. 4"),
    StageSpec("sam", _sam, sections=("spg", "sam"), needs_images=True, setup=_sam_setup, skip_reason=_sam_skip,
              doc="SAM box-prompt masks lifted to points + largest CCL cluster"),
    StageSpec("pvc", _pvc, sections=("pvc",), depends_fn=lambda cfg: (cfg["pvc"].base,), predictions_fn=_pvc_rounds,
              doc="vote over the newest 3D teacher prediction rounds, correcting the base labels"),
]}


def resolve_order(stages: list[str]) -> list[str]:
    """``stages`` plus their dependencies, dependencies first, in registry order."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise KeyError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    need: set[str] = set()

    def add(s):
        if s not in need:
            need.add(s)
            for d in STAGES[s].depends:  # static dependencies; config-dependent ones must exist already
                add(d)

    for s in stages:
        add(s)
    return [s for s in STAGES if s in need]
