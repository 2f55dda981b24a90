"""The pseudo-label stage graph (MWSIS §3.3 and the SAM baseline of §4.3).

Each stage is a pure per-frame function from a ``Frame`` (plus the labels of the stages it depends on)
to ``FrameLabels``; ``runner.py`` schedules them over shards. Stages and what they write:

    frustum   every point inside a 2D box takes the box's class          (Tab. 4, "2D Box", no module)
    ccl       frustum + largest CCL cluster per box (Eq. 4 alone)        (Tab. 4, "CCL")
    dcs       DCS ring-segment ids, column ``segment``                   (§3.3, Appendix A.1)
    spg       Eq. 3 on the dcs segments, then Eq. 4            needs dcs  (Tab. 4, "CCL + SPG")
    sam       SAM masks from box prompts, lifted to points, largest CCL cluster per box (Tab. 2/4 "SAM")

Configs are per section of ``StagesConfig``: the 3D stages share ``points`` (``PointSetConfig``: which points
are labelled; the same section the 3D trainer and evaluation read) and ``spg`` (``SPGConfig``: thresholds,
radii, DCS settings), ``sam`` adds ``SAMConfig``, ``pvc`` is ``PVCStageConfig``. Presets and ``--set``
resolve through ``pipelines/config.py``. A stage's output shard records the sections it uses.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ...data.frame import Frame
from ...data.schema import IMAGE_COLUMNS, LABELLING_COLUMNS
from ...data.schema.labels import FrameLabels, LabelMasks
from ...pseudolabel.clicks3d import Clicks3DConfig, clicks3d_labels
from ...pseudolabel.points import PointSetConfig
from ...pseudolabel.pvc import PVCConfig, pvc_vote
from ...pseudolabel.sam import SAMConfig, sam_frame, sam_predictor
from ...pseudolabel.spg import SPGConfig, ccl_frame, frame_claims, frame_segments, frustum_frame, spg_frame


@dataclass(frozen=True)
class StageSpec:
    name: str
    label_frame: Callable[[Frame, dict, dict, Any], FrameLabels]
    sections: tuple[str, ...] = ("points", "spg")
    depends: tuple[str, ...] = ()
    # the frame columns the stage reads (a fused pass decodes their union once per frame)
    columns: tuple[str, ...] = LABELLING_COLUMNS
    setup: Callable[[dict], Any] | None = None  # per process, e.g. load a model once
    skip_reason: Callable[[dict], str | None] | None = None
    doc: str = ""
    # dependencies that depend on the config (e.g. PVC's base labels); default: ``depends``
    depends_fn: Callable[[dict], tuple[str, ...]] | None = None
    # prediction shards the stage reads: (dataset root, cfg) -> {name: (source, round)}; each frame's
    # probabilities arrive in ``deps[name]`` and the shard checksums join the stage's recorded inputs
    predictions_fn: Callable[[Any, dict], dict[str, tuple[str, int]]] | None = None
    # the click set the stage reads (cfg -> source, or None: none): each frame's ``Clicks2D`` arrives in
    # ``deps["clicks"]`` and the click shard's checksum joins the recorded inputs
    clicks_fn: Callable[[dict], str | None] | None = None

    def dependencies(self, cfg: dict) -> tuple[str, ...]:
        return self.depends_fn(cfg) if self.depends_fn else self.depends


@dataclass(frozen=True)
class PVCStageConfig(PVCConfig):
    """PVC as a stage (MWSIS §3.3): the vote over the newest ``history`` rounds of 3D teacher predictions,
    correcting the labels of stage ``base``."""

    base: str = "spg"  # the labels the vote corrects


@dataclass(frozen=True)
class StagesConfig:
    """Every stage's config in one object: the ``stages`` section of a config file (``pipelines/config.py``),
    so ``--set spg.fg_thresh=0.05`` goes through the same ``apply_overrides`` as the trainers' keys."""

    points: PointSetConfig = field(default_factory=PointSetConfig)
    spg: SPGConfig = field(default_factory=SPGConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)
    pvc: PVCStageConfig = field(default_factory=PVCStageConfig)
    clicks3d: Clicks3DConfig = field(default_factory=Clicks3DConfig)

    @classmethod
    def resolve(cls, overrides: "StagesConfig | dict[str, dict] | None" = None) -> "StagesConfig":
        """The one resolved config of a run: a ``StagesConfig`` as it is, or {section: {field: value}} (a
        config file's ``stages`` section, a shard's recorded config; JSON lists -> tuples) over the defaults."""
        from ..config import ConfigError, apply_overrides, flatten_dict, moved_keys

        if isinstance(overrides, StagesConfig):
            return overrides
        try:  # moved_keys: shards record the point set inside ``spg`` (see ``record``)
            given = {k: v for k, v in (overrides or {}).items() if v}
            return apply_overrides(cls(), moved_keys(flatten_dict(given), cls))
        except ConfigError as e:
            raise ValueError(f"stage config: {e}") from e

    def sections(self, names: tuple[str, ...]) -> dict[str, Any]:
        """{section: config object} of the sections a stage reads (``StageSpec.sections``)."""
        return {s: getattr(self, s) for s in names}

    def record(self, names: tuple[str, ...]) -> dict[str, dict]:
        """Those sections as plain JSON values: what a stage's output shard records (the file boundary).

        The point set is recorded inside ``spg``, where it was before it became a config of its own, so
        that shards stay byte-identical and current across the move (``need_camera`` only when off: it did
        not exist then). ``resolve`` reads it back from there (``config.MOVED``)."""
        rec = {s: asdict(getattr(self, s)) for s in names if s != "points"}
        if "sam" in rec and rec["sam"]["prompts"] == "boxes":  # box prompts record what they did before clicks
            del rec["sam"]["prompts"], rec["sam"]["clicks"]
        if "points" in names:
            if "spg" not in rec:
                raise ValueError(f"sections {names}: the point set is recorded inside 'spg', which is missing")
            rec["spg"].update(point_range=self.points.point_range, drop_nlz=self.points.drop_nlz,
                              **({} if self.points.need_camera else {"need_camera": False}))
        return json.loads(json.dumps(rec))


def one_instance_per_object(instance: np.ndarray, object_id: np.ndarray) -> np.ndarray:
    """Give boxes that share an ``object_id`` (one object seen by several cameras) one instance id: that of
    the object's first box. The authors keep one instance per box, which splits such objects in two."""
    if not len(object_id):
        return instance
    _, first = np.unique(object_id, return_index=True)
    canon = np.zeros(len(object_id) + 1, np.int32)
    canon[1:] = first[np.unique(object_id, return_inverse=True)[1]] + 1
    return canon[instance]


SHARED = "shared"  # the key of ``FrameShared`` in a stage's ``deps``


class FrameShared:
    """What several stages compute alike on one frame (the eligible points, their association with the 2D
    boxes), made once per frame and point set. The runner gives every stage of a fused pass the same one
    (``deps[SHARED]``); stage by stage each stage gets its own. Per frame, not global: nothing outlives it."""

    def __init__(self, frame: Frame):
        self.frame = frame
        self._eligible: dict = {}
        self._claims: dict = {}

    def eligible(self, point_set: PointSetConfig) -> np.ndarray:
        if point_set not in self._eligible:
            self._eligible[point_set] = point_set.eligible(self.frame.points)
        return self._eligible[point_set]

    def claims(self, point_set: PointSetConfig):
        if point_set not in self._claims:
            f = self.frame
            self._claims[point_set] = frame_claims(f.points, f.boxes2d, f.image_sizes, self.eligible(point_set))
        return self._claims[point_set]

    def given(self, point_set: PointSetConfig) -> dict:
        """The keyword arguments ``frustum_frame``, ``ccl_frame`` and ``spg_frame`` take them as."""
        return {"eligible": self.eligible(point_set), "claims": self.claims(point_set)}


def _shared(frame: Frame, deps: dict) -> FrameShared:
    return deps.get(SHARED) or FrameShared(frame)


def _labels(frame: Frame, sem, inst, **extra) -> FrameLabels:
    return FrameLabels(frame.frame_id, semantic=sem, instance=one_instance_per_object(inst, frame.boxes2d.object_id),
                       **extra)


def _frustum(frame, deps, cfg, ctx):
    given = _shared(frame, deps).given(cfg["points"])
    return _labels(frame, *frustum_frame(frame.points, frame.boxes2d, frame.image_sizes, cfg["spg"], cfg["points"],
                                         **given))


def _ccl(frame, deps, cfg, ctx):
    given = _shared(frame, deps).given(cfg["points"])
    return _labels(frame, *ccl_frame(frame.points, frame.boxes2d, frame.image_sizes, cfg["spg"], cfg["points"],
                                     **given))


def _dcs(frame, deps, cfg, ctx):
    eligible = _shared(frame, deps).eligible(cfg["points"]) if cfg["spg"].dcs_points == "eligible" else None
    return FrameLabels(frame.frame_id, segment=frame_segments(frame.points, cfg["spg"], frame.range_image_shape,
                                                              cfg["points"], eligible))


def _spg(frame, deps, cfg, ctx):
    seg = deps["dcs"].segment
    if seg is None or seg.shape[0] != len(frame.points):
        raise ValueError(f"labels/dcs: segment ids missing or of wrong length for {len(frame.points)} points")
    sem, inst, _ = spg_frame(frame.points, frame.boxes2d, frame.image_sizes, cfg["spg"], segment_id=seg,
                             point_set=cfg["points"], **_shared(frame, deps).given(cfg["points"]))
    return _labels(frame, sem, inst, segment=seg)


def _clicks3d(frame, deps, cfg, ctx):
    seg = deps["dcs"].segment
    if seg is None or seg.shape[0] != len(frame.points):
        raise ValueError(f"labels/dcs: segment ids missing or of wrong length for {len(frame.points)} points")
    eligible = _shared(frame, deps).eligible(cfg["points"])
    sem, inst = clicks3d_labels(frame.points, deps["clicks"], eligible, seg, cfg["clicks3d"])
    return FrameLabels(frame.frame_id, semantic=sem, instance=inst, segment=seg)  # instance: click index + 1


def _sam_setup(cfg):
    return sam_predictor(cfg["sam"])


def _sam_skip(cfg):
    return None if cfg["sam"].checkpoint else "no SAM checkpoint given (--sam-checkpoint PATH or SAM_CHECKPOINT=PATH)"


def _sam(frame, deps, cfg, predictor):
    sc = cfg["sam"]
    r = sam_frame(frame.points, frame.boxes2d, frame.cameras, predictor, cfg["spg"], sc.batch_size, cfg["points"],
                  deps.get("clicks"), sc.prompts)
    if sc.prompts == "clicks":  # masks and instances per click (box_index: the click index)
        c = deps["clicks"]
        masks2d = LabelMasks(r.camera_id, r.box_index, c.class_id[r.box_index].astype(np.int8), r.score, r.rles)
        return FrameLabels(frame.frame_id, semantic=r.semantic, instance=r.instance, masks2d=masks2d)
    masks2d = LabelMasks(r.camera_id, r.box_index, frame.boxes2d.class_id[r.box_index].astype(np.int8), r.score, r.rles)
    return _labels(frame, r.semantic, r.instance, masks2d=masks2d)


def _pvc_rounds(root, cfg) -> dict[str, tuple[str, int]]:
    from ...data.prediction_store import list_rounds

    rounds = list_rounds(root, "3d")[-cfg["pvc"].history:]
    if not rounds:
        raise ValueError(f"{root}/predictions/3d: no rounds of 3D teacher predictions (run `mwsis predict-3d`)")
    return {f"round={r}": ("3d", r) for r in rounds}


def _pvc(frame, deps, cfg, ctx):
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
    StageSpec("clicks3d", _clicks3d, sections=("points", "spg", "clicks3d"), depends=("dcs",),
              clicks_fn=lambda cfg: cfg["clicks3d"].source,
              doc="one click per object: seed points, ground removal, 3D growth, ring segments (issue 17)"),
    StageSpec("sam", _sam, sections=("points", "spg", "sam"), columns=LABELLING_COLUMNS + IMAGE_COLUMNS,
              setup=_sam_setup, skip_reason=_sam_skip,
              clicks_fn=lambda cfg: None if cfg["sam"].prompts == "boxes" else cfg["sam"].clicks,
              doc="SAM box-prompt (or click-prompt) masks lifted to points + largest CCL cluster"),
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
