"""Training and inference samples of the 3D branch, read shard by shard (memory stays bounded).

A sample holds the points the 3D model sees — the authors' set: TOP LiDAR, both returns, projected into a
camera, inside the point range (``pseudolabel.points.PointSetConfig``) — with their pseudo labels from
``labels/<stage>/`` and, when asked, the CSCS 2D→3D targets from ``predictions/2d/round=R/``.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Iterator

import numpy as np

from ...data.frame import Frame
from ...data.label_store import LabelShard
from ...data.prediction_store import PredictionShard
from ...data.store import Dataset, ShardError
from ...pseudolabel.points import PointSetConfig
from .sample_order import prediction_row, shuffled_shards

log = logging.getLogger(__name__)


@dataclass
class Sample3D:
    frame_id: str
    point_index: np.ndarray  # (n,) int64 index of each sample point in the frame's points
    xyz: np.ndarray  # (n, 3) float32
    intensity: np.ndarray  # (n,) float32
    elongation: np.ndarray  # (n,) float32
    semantic: np.ndarray | None = None  # (n,) int8 pseudo label: -1 ignore, 0..C-1, C background
    instance: np.ndarray | None = None  # (n,) int32, 0 none
    gt_semantic: np.ndarray | None = None
    gt_instance: np.ndarray | None = None
    cscs_2d: np.ndarray | None = None  # (n, 2, C) float32 2D teacher probabilities per projection (NaN = none)
    centre_offset: np.ndarray | None = None  # (n, 3) float32 to the labels' instance centre (NaN: its mean)
    num_points: int = 0  # points in the whole frame

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def frame_sample(frame: Frame, labels=None, points: PointSetConfig = PointSetConfig(),
                 cscs_2d: np.ndarray | None = None) -> Sample3D:
    """Select the model's points of ``frame`` (``points.eligible``) and attach labels (``FrameLabels``) when
    given."""
    keep = np.flatnonzero(points.eligible(frame.points))
    if not len(keep):
        raise ValueError(f"frame {frame.frame_id}: no points in range and seen by a camera")
    p = frame.points
    s = Sample3D(frame.frame_id, keep, p.xyz[keep].astype(np.float32), p.intensity[keep].astype(np.float32),
                 p.elongation[keep].astype(np.float32), num_points=len(p))
    if labels is not None:
        if labels.frame_id != frame.frame_id or labels.semantic is None or labels.semantic.shape[0] != len(p):
            raise ShardError("labels", f"frame {frame.frame_id}: labels of frame {labels.frame_id} with "
                                       f"{None if labels.semantic is None else labels.semantic.shape[0]} points do not "
                                       f"match the frame's {len(p)} points (mismatched label shard; rerun the stage)")
        s.semantic = labels.semantic[keep]
        s.instance = labels.instance[keep] if labels.instance is not None else np.zeros(len(keep), np.int32)
        centre = getattr(labels, "centre", None)  # scored labels (TWIST): a target centre per instance
        if centre is not None and len(centre):
            k = s.instance.astype(np.int64)
            given = np.where((k > 0)[:, None], np.asarray(centre, np.float32)[np.clip(k - 1, 0, len(centre) - 1)],
                             np.nan)
            s.centre_offset = (given - s.xyz).astype(np.float32)
    if frame.gt.point_semantic is not None and frame.gt.point_instance is not None:
        s.gt_semantic, s.gt_instance = frame.gt.point_semantic[keep], frame.gt.point_instance[keep]
    if cscs_2d is not None:  # (n, 2 projections, C): the loss's form decides how the two combine
        s.cscs_2d = cscs_2d[keep].astype(np.float32)
    return s


GROUND_TRUTH = "gt"  # label source: the frames' own per-point ground truth (full supervision, MWSIS Tab. 1 "Full")


@dataclass(frozen=True)
class _GTLabels:
    """The ``FrameLabels`` fields a sample needs, taken from a frame's ground truth."""

    frame_id: str
    semantic: np.ndarray
    instance: np.ndarray


def gt_labels(frame: Frame, shard_path) -> _GTLabels:
    """Per-point ground truth of ``frame`` as training labels; a clear error when the frame has none."""
    gt = frame.gt
    if gt.point_semantic is None or gt.point_instance is None:
        missing = [n for n in ("point_semantic", "point_instance") if getattr(gt, n) is None]
        raise ShardError(shard_path, f"frame {frame.frame_id}: --labels gt needs per-point ground truth, but the "
                                     f"frame has no {' / '.join(missing)} (train on pseudo labels instead, e.g. spg)")
    return _GTLabels(frame.frame_id, gt.point_semantic, gt.point_instance)


def iter_samples(ds: Dataset, labels: str | None, positions: list[int], rng: np.random.Generator | None = None,
                 points: PointSetConfig = PointSetConfig(), cscs_round: int | None = None,
                 skipped: set | None = None, gt_frames: frozenset[str] = frozenset(),
                 only: frozenset[str] | None = None) -> Iterator[Sample3D]:
    """Samples of the given shards; with ``rng`` the shard order and the frame order within each shard are
    shuffled (whole-dataset shuffles would need every shard open at once). ``labels`` names a label stage,
    or :data:`GROUND_TRUTH` for the frames' own ground truth. With ``skipped`` given, a frame without
    points the model can use (none in range and seen by a camera) is left out, warned about once, and its
    id added to the set; without it, such a frame is an error. Frames in ``gt_frames`` (TWIST's fully
    labelled subset) take their ground truth whatever ``labels`` says; with ``only``, the other frames are
    left out."""
    for info, shard, rows in shuffled_shards(ds, positions, rng):
        lab = LabelShard(ds, labels, info.name) if labels and labels != GROUND_TRUTH else None
        pred = PredictionShard(ds, "2d", cscs_round, info.name) if cscs_round is not None else None
        if lab is not None and len(lab) != len(shard):
            raise ShardError(lab.path, f"{len(lab)} frames, frame shard {info.path} has {len(shard)} (mismatched shard)")
        for i in rows:
            if only is not None and info.frame_ids[int(i)] not in only:
                continue
            frame = shard.frame(int(i), images=False)
            if skipped is not None and not points.eligible(frame.points).any():
                if frame.frame_id not in skipped:
                    log.warning("%s: frame %s has no points in range and seen by a camera; skipped",
                                ds.root / info.path, frame.frame_id)
                skipped.add(frame.frame_id)
                continue
            targets = prediction_row(pred, int(i), frame.frame_id) if pred is not None else None
            full = labels == GROUND_TRUTH or frame.frame_id in gt_frames
            frame_labels = gt_labels(frame, info.path) if full else lab.labels(int(i)) if lab else None
            yield frame_sample(frame, frame_labels, points, targets)
