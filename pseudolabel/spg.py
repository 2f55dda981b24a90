"""SPG - Spatial-based Pseudo label Generation: 3D point labels from 2D boxes (MWSIS Sec. 3.3, Eq. 3-4).

Pipeline per frame (paper Fig. 4; authors' code spec ``method.md`` §4):

1. Eligible points (:mod:`.points`, ``PointSetConfig``): TOP LiDAR, at least one camera projection, strictly
   inside the range ``[-80, -80, -2, 80, 80, 4]`` (mmdet3d ``in_range_3d``), and (the authors' converter drops
   them) outside Waymo's no-label zone. Others get semantic IGNORE and instance 0.
2. Frustum association (:mod:`.frustum`): every (point, box) pair.
3. DCS ring segments (:mod:`.dcs`) over the eligible points (the authors' training loader; ``dcs_points``
   selects the offline generator's set, which also holds out-of-image points).
4. Eq. 3, per segment s: ``prop = |points of s outside ALL boxes| / |points of s|``; prop > 0.5 ->
   background, prop < 0.1 -> foreground, otherwise ignore; a segment entirely inside boxes is foreground.
   The label is a function of the segment only, so it is computed once per segment with two bincounts
   instead of the authors' boxes x segments loop with full-array masks (their hotspot, §13).
5. Eq. 4: per box, single-link CCL (:mod:`.ccl`) over its foreground points, keep the largest cluster.
   Foreground points in no kept cluster become background (as the authors do).
6. Output ``semantic`` int8 in {-1 ignore, 0..C-1, C = BACKGROUND} and ``instance`` int32, 0 = none, else
   (index of the box in the frame's box list) + 1.

Paper vs authors' code (the paper is the default, ``SPGConfig.authors()`` gives the code's values):
foreground threshold 0.1 vs 0.05; background ``prop > 0.5`` vs ``prop >= 0.5``; overlaps.

**Overlaps** (a point in the boxes of several objects, e.g. a pedestrian in front of or behind a car).
The authors cluster every box independently and let the box processed last win (camera order, then box
order). That fails when a box's largest cluster *is* another object: an enclosing car box keeps the
pedestrian in front of it, or a pedestrian box keeps the front of the car hiding it, and the outcome
depends on the box order. Our default (``exclusive=True``) runs Eq. 4 twice: first independently per box,
then again with the boxes taking their cluster in turn, **largest independent cluster first**, taken
points being withdrawn from the other objects' boxes (boxes sharing an ``object_id``, one object seen by
two cameras, may share points). Points still kept by several boxes (same-object boxes only, then) go to
``overlap="last"``, the highest box index, like the authors; ``overlap="nearest"`` (the box whose kept
cluster's median range is nearest the point's range) is offered. On the occlusion scenes of
``tests/pseudolabel/test_spg.py`` (``_overlap_scenes``, seeds 11-14, 40 scenes x 2 box orders) point accuracy on
objects was: authors 0.80 mean / 0.22 worst, "nearest" alone 0.78 / 0.37, exclusive largest-first
0.91 / 0.77 (mean per-object IoU 0.64 -> 0.84); "fewest candidate points first" was worse (0.74).
Cost: a second CCL pass.

Bugs of the authors' code we do not reproduce: the second-projection ``u1 < y2`` test (fixed in
:mod:`.frustum`); the numpy CCL variants that never record a second claimant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np
from numba import njit

from ..data.frame import BACKGROUND, IGNORE, TOP_LIDAR, Boxes2D, Points
from .ccl import CCL_RADII, largest_component_per_box
from .dcs import point_segments, range_image, ring_segments
from .frustum import Claims, associate
from .points import PointSetConfig, in_range

__all__ = ["SPGConfig", "segment_refinement", "resolve_overlaps", "spg_labels", "ccl_labels",
           "spg_frame", "ccl_frame", "frame_claims", "frame_segments", "frustum_frame"]

PAPER_POINTS = PointSetConfig()  # the paper's point set: the default of every frame function


@dataclass(frozen=True)
class SPGConfig:
    """SPG (MWSIS §3.3, Eq. 3-4): Eq. 3 thresholds, the CCL radii of Eq. 4 and the DCS settings (Appendix A.1).
    Which points are labelled is ``points.PointSetConfig``. Paper values by default; ``SPGConfig.authors()``
    gives the authors' code where it differs (method.md §1).
    """
    fg_thresh: float = field(default=0.1, metadata={"range": (0.0, 1.0)})  # Eq. 3: prop < 0.1 -> foreground (authors' code: 0.05)
    bg_thresh: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # Eq. 3: prop > 0.5 -> background
    bg_inclusive: bool = False  # authors' code: prop >= 0.5 -> background
    radii: tuple[float, ...] = field(default=CCL_RADII, metadata={"range": (0.0, None), "length": 3})  # vehicle, pedestrian, cyclist (authors: same)
    ccl_mode: Literal["xy", "xyz"] = "xy"  # authors: XY distance; "xyz" available
    dcs_variant: Literal["authors", "union_find"] = "authors"  # or "union_find" (with azimuth wrap-around)
    dcs_rel_thresh: float = field(default=0.0048, metadata={"range": (0.0, None)})  # authors: 0.24 / 50
    dcs_window_scale: float = field(default=500.0, metadata={"range": (0.0, None)})  # authors: window int(clip(500 / row_max, 12, 50) / 2)
    dcs_window_min: float = field(default=12.0, metadata={"range": (1.0, None)})
    dcs_window_max: float = field(default=50.0, metadata={"range": (1.0, None)})
    dcs_points: Literal["eligible", "in_range", "top"] = "eligible"  # "eligible" (authors' loader) | "in_range" (their offline tool) | "top"
    exclusive: bool = True  # ours: boxes take clusters in turn, largest cluster first (authors: False)
    overlap: Literal["last", "nearest"] = "last"  # points kept by several boxes: "last" (authors) | "nearest" (range-based)

    @classmethod
    def authors(cls, **kw) -> "SPGConfig":
        """The released code's values where they differ from the paper."""
        return cls(**{"fg_thresh": 0.05, "bg_inclusive": True, "exclusive": False, "overlap": "last", **kw})

    def dcs_kwargs(self) -> dict:
        return dict(variant=self.dcs_variant, rel_thresh=self.dcs_rel_thresh, window_scale=self.dcs_window_scale,
                    window_min=self.dcs_window_min, window_max=self.dcs_window_max)


def segment_refinement(segment_id: np.ndarray, in_any_box: np.ndarray, fg_thresh: float = 0.1,
                       bg_thresh: float = 0.5, bg_inclusive: bool = False) -> np.ndarray:
    """Eq. 3 per point: int8 1 foreground, 0 background, -1 ignore (also where ``segment_id < 0``).

    ``prop`` of a segment is over all points carrying that id (the DCS point set); points of segments that
    lie entirely inside boxes are foreground whatever the thresholds.
    """
    seg = np.asarray(segment_id, np.int64)
    has = seg >= 0
    n_seg = int(seg.max()) + 1 if has.any() else 0
    total = np.bincount(seg[has], minlength=n_seg)
    outside = np.bincount(seg[has & ~in_any_box], minlength=n_seg)
    prop = outside / np.maximum(total, 1)
    is_bg = prop >= bg_thresh if bg_inclusive else prop > bg_thresh
    lab = np.where(is_bg, 0, np.where(prop < fg_thresh, 1, -1)).astype(np.int8)
    lab[outside == 0] = 1
    out = np.full(seg.shape[0], -1, np.int8)
    out[has] = lab[seg[has]]
    return out


@njit(cache=True)
def _pick_min_cost(point, box, cost, n):
    """Per point (pairs sorted by point): the box of least cost, ties to the higher box index; -1 if none."""
    win = np.full(n, -1, np.int64)
    best = np.empty(n)
    for t in range(point.shape[0]):
        p = point[t]
        if win[p] < 0 or cost[t] < best[p] or (cost[t] == best[p] and box[t] > win[p]):
            win[p] = box[t]
            best[p] = cost[t]
    return win


def resolve_overlaps(kept: Claims, rng: np.ndarray, rule: str = "nearest") -> np.ndarray:
    """(N,) int64 winning box per point among ``kept`` pairs, -1 where none.

    "last": the highest box index (authors). "nearest": the box whose kept points' median ``rng`` is
    closest to the point's ``rng``; ties to the higher index.
    """
    if rule == "last":
        cost = np.zeros(len(kept))
    elif rule == "nearest":
        r = np.asarray(rng, np.float64)
        pr = r[kept.point]
        order = np.lexsort((pr, kept.box))  # by box, then range
        cnt = kept.box_counts
        start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        med = np.zeros(kept.n_boxes)
        has = cnt > 0
        lo = order[start[has] + (cnt[has] - 1) // 2]
        hi = order[start[has] + cnt[has] // 2]
        med[has] = 0.5 * (pr[lo] + pr[hi])
        cost = np.abs(pr - med[kept.box])
    else:
        raise ValueError(f"overlap rule must be 'nearest' or 'last', got {rule!r}")
    return _pick_min_cost(kept.point, kept.box.astype(np.int64), cost, kept.n_points)


def _select_clusters(xyz, claims: Claims, box_class, candidate, cfg: SPGConfig, box_owner) -> np.ndarray:
    """Eq. 4: (P,) keep mask of the largest cluster per box (exclusive selection when ``cfg.exclusive``)."""
    keep = largest_component_per_box(xyz, claims, box_class, cfg.radii, cfg.ccl_mode, pair_mask=candidate)
    if not cfg.exclusive or claims.n_boxes < 2:
        return keep
    # Second pass: boxes take their cluster in turn, the largest independent cluster first (most likely
    # the box's own object); taken points are withdrawn from the other objects' boxes.
    size = np.bincount(claims.box[keep], minlength=claims.n_boxes)
    order = np.argsort(-size, kind="stable")
    return largest_component_per_box(xyz, claims, box_class, cfg.radii, cfg.ccl_mode, pair_mask=candidate,
                                     exclusive_order=order, box_owner=box_owner)


def _assemble(eligible, claims, box_class, keep, rng, rule, point_label=None):
    n = eligible.shape[0]
    semantic = np.full(n, IGNORE, np.int8)
    semantic[eligible] = BACKGROUND
    if point_label is not None:
        # In-box points whose segment is "ignore" stay ignored; "background" ones are background already.
        in_box = claims.in_any_box(n) & eligible
        semantic[in_box & (point_label < 0)] = IGNORE
    winner = resolve_overlaps(claims.select(keep), rng, rule)
    instance = np.zeros(n, np.int32)
    won = winner >= 0
    semantic[won] = np.asarray(box_class, np.int8)[winner[won]]
    instance[won] = winner[won] + 1
    return semantic, instance


def _check(claims: Claims, eligible: np.ndarray):
    if claims.n_points != eligible.shape[0]:
        raise ValueError(f"claims are over {claims.n_points} points, eligible over {eligible.shape[0]}")
    if len(claims) and not eligible[claims.point].all():
        raise ValueError("claims hold non-eligible points: associate(..., valid=eligible)")


def spg_labels(xyz: np.ndarray, segment_id: np.ndarray, claims: Claims, box_class: np.ndarray,
               eligible: np.ndarray, rng: np.ndarray | None = None, cfg: SPGConfig = SPGConfig(),
               box_owner: np.ndarray | None = None):
    """Eq. 3 then Eq. 4 on arrays -> (semantic int8 (N,), instance int32 (N,)).

    segment_id: (N,) DCS id per point, -1 where the point took no part in DCS. claims: association over
    the eligible points only. rng: (N,) range used by the "nearest" overlap rule (default: |xyz|).
    box_owner: (K,) object id per box for ``cfg.exclusive`` (boxes of one object may share points);
    default: every box is its own object.
    """
    eligible = np.asarray(eligible, bool)
    _check(claims, eligible)
    rng = np.linalg.norm(xyz, axis=1) if rng is None else rng
    ref = segment_refinement(segment_id, claims.in_any_box(eligible.shape[0]), cfg.fg_thresh, cfg.bg_thresh,
                             cfg.bg_inclusive)
    keep = _select_clusters(xyz, claims, box_class, ref[claims.point] == 1, cfg, box_owner)
    return _assemble(eligible, claims, box_class, keep, rng, cfg.overlap, ref)


def ccl_labels(xyz: np.ndarray, claims: Claims, box_class: np.ndarray, eligible: np.ndarray,
               rng: np.ndarray | None = None, cfg: SPGConfig = SPGConfig(), box_owner: np.ndarray | None = None):
    """Baseline (paper Tab. 4 "CCL" row): frustum + largest CCL cluster per box, no DCS refinement."""
    eligible = np.asarray(eligible, bool)
    _check(claims, eligible)
    rng = np.linalg.norm(xyz, axis=1) if rng is None else rng
    keep = _select_clusters(xyz, claims, box_class, None, cfg, box_owner)
    return _assemble(eligible, claims, box_class, keep, rng, cfg.overlap)


def frame_claims(points: Points, boxes2d: Boxes2D, image_sizes: Mapping[int, tuple[int, int]],
                 eligible: np.ndarray) -> Claims:
    """Associate the eligible points with the frame's boxes; ``image_sizes`` maps camera id -> (w, h)."""
    cams = np.asarray(boxes2d.camera_id).astype(np.int64)
    missing = sorted({int(c) for c in cams} - {int(c) for c in image_sizes})
    if missing:
        raise KeyError(f"no image size for camera(s) {missing}")
    wh = np.array([image_sizes[int(c)] for c in cams], np.float64).reshape(-1, 2)
    return associate(points.cam_id, points.cam_uv, cams, boxes2d.xyxy, wh, valid=eligible)


def frame_segments(points: Points, cfg: SPGConfig = SPGConfig(),
                   range_image_shape: tuple[int, int] | None = None,
                   point_set: PointSetConfig = PAPER_POINTS, eligible: np.ndarray | None = None) -> np.ndarray:
    """DCS ring-segment id per point (int32 (N,), -1 outside the DCS point set ``cfg.dcs_points``: the
    ``point_set``'s eligible points, or its range and NLZ filter alone, or every TOP point).

    range_image_shape: (M, W) of the TOP range image (``Frame.range_image_shape``); inferred from the
    points when omitted, which is fine for the authors' DCS but may cut the wrap-around of "union_find".
    ``eligible``: ``point_set.eligible(points)`` when the caller has it already.
    """
    if cfg.dcs_points == "eligible":
        dcs_set = point_set.eligible(points) if eligible is None else eligible
    elif cfg.dcs_points in ("in_range", "top"):
        dcs_set = points.laser_id == TOP_LIDAR
        if cfg.dcs_points == "in_range":
            dcs_set = dcs_set & in_range(points.xyz, point_set.point_range)
        if point_set.drop_nlz:
            dcs_set = dcs_set & ~points.nlz
    else:
        raise ValueError(f"dcs_points must be 'eligible', 'in_range' or 'top', got {cfg.dcs_points!r}")
    segment_id = np.full(len(points), -1, np.int32)
    if dcs_set.any():
        ret, row, col = (np.asarray(a, np.int64)[dcs_set] for a in (points.return_index, points.row, points.col))
        shape = range_image_shape or (int(row.max()) + 1, int(col.max()) + 1)
        ranges = range_image(points.range[dcs_set], ret, row, col, shape)
        ids = ring_segments(ranges, **cfg.dcs_kwargs())
        segment_id[dcs_set] = point_segments(ids, ret, row, col)
    return segment_id


def spg_frame(points: Points, boxes2d: Boxes2D, image_sizes: Mapping[int, tuple[int, int]],
              cfg: SPGConfig = SPGConfig(), range_image_shape: tuple[int, int] | None = None,
              segment_id: np.ndarray | None = None, point_set: PointSetConfig = PAPER_POINTS,
              eligible: np.ndarray | None = None, claims: Claims | None = None):
    """SPG on one frame -> (semantic int8 (N,), instance int32 (N,), segment_id int32 (N,)), N = all points;
    points outside ``point_set`` are ignored (-1, instance 0).

    ``segment_id`` (from ``frame_segments``, e.g. the ``dcs`` stage's output) is computed when omitted;
    ``eligible`` (``point_set.eligible``) and ``claims`` (``frame_claims`` over them) too.
    """
    eligible = point_set.eligible(points) if eligible is None else eligible
    if segment_id is None:
        segment_id = frame_segments(points, cfg, range_image_shape, point_set, eligible)
    claims = frame_claims(points, boxes2d, image_sizes, eligible) if claims is None else claims
    semantic, instance = spg_labels(points.xyz, segment_id, claims, boxes2d.class_id, eligible, points.range, cfg,
                                    box_owner=boxes2d.object_id)
    return semantic, instance, segment_id


def frustum_frame(points: Points, boxes2d: Boxes2D, image_sizes: Mapping[int, tuple[int, int]],
                  cfg: SPGConfig = SPGConfig(), point_set: PointSetConfig = PAPER_POINTS,
                  eligible: np.ndarray | None = None, claims: Claims | None = None):
    """Raw frustum labels (paper Tab. 4, first "2D Box" row): every point in a box takes that box's class.

    A point in several boxes takes the highest box index (the authors' "last box wins"); eligible points
    in no box are background, non-eligible ones ignored. ``eligible`` / ``claims``: as in ``spg_frame``.
    """
    eligible = point_set.eligible(points) if eligible is None else eligible
    claims = frame_claims(points, boxes2d, image_sizes, eligible) if claims is None else claims
    semantic = np.where(eligible, BACKGROUND, IGNORE).astype(np.int8)
    instance = np.zeros(len(points), np.int32)
    if len(claims):
        last = np.r_[claims.point[1:] != claims.point[:-1], True]  # pairs are sorted by (point, box)
        pts, box = claims.point[last], claims.box[last]
        semantic[pts] = np.asarray(boxes2d.class_id)[box]
        instance[pts] = box + 1
    return semantic, instance


def ccl_frame(points: Points, boxes2d: Boxes2D, image_sizes: Mapping[int, tuple[int, int]],
              cfg: SPGConfig = SPGConfig(), point_set: PointSetConfig = PAPER_POINTS,
              eligible: np.ndarray | None = None, claims: Claims | None = None):
    """The CCL baseline on one frame -> (semantic, instance); ``cfg``'s radii and overlap rules.
    ``eligible`` / ``claims``: as in ``spg_frame``."""
    eligible = point_set.eligible(points) if eligible is None else eligible
    claims = frame_claims(points, boxes2d, image_sizes, eligible) if claims is None else claims
    return ccl_labels(points.xyz, claims, boxes2d.class_id, eligible, points.range, cfg, box_owner=boxes2d.object_id)
