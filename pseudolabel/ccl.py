"""Single-link connected components of a point cloud, and the largest component per 2D box (MWSIS Eq. 4).

Paper (Sec. 3.3): "apply the CCL to all pseudo foreground points within the 2D boxes ... obtain the maximum
cluster" (Eq. 4, ``P'_{fg,b} = Max(CCL(P_{fg,b}))``). Authors' code (spec ``method.md`` §2): two points are
adjacent when their **XY** distance is **strictly below** a per-class radius - vehicle 0.6 m, pedestrian
0.1 m, cyclist 0.4 m - and the largest component is kept, a tie going to the smallest component label
(scipy labels components in order of their first point, so: the component holding the lowest-index point).

What we do differently, deliberately:

* No dense N x N distance matrix (the authors' hotspot, ``method.md`` §13, O(n^2) memory per box). We run a
  union-find in numba over a uniform grid of cells of side r/sqrt(d) (d = 2 for XY, 3 for XYZ): the
  points of one cell are all closer than r, so a cell is united in O(m); two cells up to 2 apart per axis
  are united at the first point pair closer than r, skipped when already in one set or when their
  bounding boxes are r or more apart. Dense LiDAR boxes (hundreds of points per cell) thus cost about
  O(n) instead of O(m^2) per cell. The partition equals ``scipy.sparse.csgraph.connected_components`` on
  the strict-< radius graph with distances ``sqrt(sum(d_i^2))`` in float64 (the ``cdist`` formula; the
  cell and bounding-box shortcuts are checked in that same arithmetic), and labels are numbered in order
  of first appearance, which is also scipy's numbering.
* ``mode="xyz"`` (3D distance) is offered besides the authors' ``"xy"``.
* All boxes are processed in one compiled call over claims grouped by box (a stable argsort), instead of a
  full-array mask per box.
* Optional exclusive selection (``exclusive_order``): boxes take their largest cluster in turn and taken
  points leave the other objects' boxes; :mod:`.spg` uses it to resolve overlapping boxes.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .ccl_grid import grid_components
from .frustum import Claims

__all__ = ["CCL_RADII", "connected_components", "largest_component_per_box"]

# Per-class single-link radii in metres (vehicle, pedestrian, cyclist); authors' mwsis.py:1728.
CCL_RADII: tuple[float, float, float] = (0.6, 0.1, 0.4)
_MODES = {"xy": 2, "xyz": 3}


@njit(cache=True)
def _group_by_box(box, sel, n_boxes):
    """Pairs ``sel`` grouped by box, ascending within a box (a stable counting sort), and group starts."""
    ptr = np.zeros(n_boxes + 1, np.int64)
    for t in sel:
        ptr[box[t] + 1] += 1
    for k in range(n_boxes):
        ptr[k + 1] += ptr[k]
    fill = ptr[:-1].copy()
    order = np.empty(sel.shape[0], np.int64)
    for t in sel:
        order[fill[box[t]]] = t
        fill[box[t]] += 1
    return order, ptr


@njit(cache=True)
def _largest_per_group(xyz, point, order, ptr, group_radius, ndim, visit, exclusive, owner, n_pairs):
    """(keep, ok): keep[t] over all ``n_pairs`` pairs, pair t = ``order[...]`` of a group, its point
    ``point[t]`` being in its group's largest component; ok is False (and nothing done) when a grouped
    point has a non-finite coordinate among the first ``ndim``.

    Groups (``order[ptr[g]:ptr[g + 1]]``) are processed in ``visit`` order. With ``exclusive``, a point
    kept by a group of owner o is no longer available to groups of another owner (owners: e.g. object
    ids, so one object's boxes in two cameras may share points).
    """
    keep = np.zeros(n_pairs, np.bool_)
    for t in order:
        for d in range(ndim):
            if not np.isfinite(xyz[point[t], d]):
                return keep, False
    taken = np.full(xyz.shape[0], -1, np.int64) if exclusive else np.empty(0, np.int64)
    sel = np.empty(order.shape[0], np.int64)
    pts = np.empty((order.shape[0], 3))
    for g in visit:
        a, b = ptr[g], ptr[g + 1]
        n = 0
        for u in range(a, b):
            t = order[u]
            if not exclusive or taken[point[t]] < 0 or taken[point[t]] == owner[g]:
                sel[n] = t
                for d in range(ndim):
                    pts[n, d] = xyz[point[t], d]
                n += 1
        if n == 0:
            continue
        lab = grid_components(pts[:n], group_radius[g], ndim)
        counts = np.zeros(n, np.int64)
        for s in range(n):
            counts[lab[s]] += 1
        best = np.argmax(counts)  # first maximum: the tie goes to the smallest label, as the authors
        for s in range(n):
            if lab[s] == best:
                keep[sel[s]] = True
                if exclusive:
                    taken[point[sel[s]]] = owner[g]
    return keep, True


def _ndim(mode: str) -> int:
    if mode not in _MODES:
        raise ValueError(f"mode must be 'xy' or 'xyz', got {mode!r}")
    return _MODES[mode]


def connected_components(xyz: np.ndarray, radius: float, mode: str = "xy") -> np.ndarray:
    """(N,) int32 component labels 0..C-1 (numbered by first point) of the graph ``dist < radius``.

    ``mode="xy"`` uses x, y only (the authors' choice); ``"xyz"`` the 3D distance. ``radius <= 0`` makes
    every point its own component. Coordinates must be finite.
    """
    pts = np.asarray(xyz, np.float64)
    if pts.ndim != 2:
        raise ValueError(f"xyz must be (N, 2 or 3), got shape {pts.shape}")
    pts = np.ascontiguousarray(pts)
    ndim = _ndim(mode)
    if pts.shape[1] < ndim:
        raise ValueError(f"mode {mode!r} needs {ndim} coordinates, got {pts.shape[1]}")
    if pts.shape[1] < 3:
        pts = np.concatenate([pts, np.zeros((len(pts), 3 - pts.shape[1]))], axis=1)
    if not np.isfinite(pts[:, :ndim]).all():
        raise ValueError("coordinates must be finite")
    return grid_components(pts, float(radius), ndim)


def largest_component_per_box(xyz: np.ndarray, claims: Claims, box_class: np.ndarray,
                              radii: tuple[float, ...] = CCL_RADII, mode: str = "xy",
                              pair_mask: np.ndarray | None = None, exclusive_order: np.ndarray | None = None,
                              box_owner: np.ndarray | None = None) -> np.ndarray:
    """(P,) bool over ``claims`` pairs: the pair's point is in the largest component of its box.

    For each box, the claimed points (restricted to ``pair_mask`` when given, e.g. SPG foreground) are
    clustered with the radius of the box's class (``radii[box_class[k]]``) and the largest component is
    kept; a tie goes to the component containing the lowest point index. Pairs outside ``pair_mask`` are
    never kept.

    exclusive_order: optional (K,) permutation of the boxes. Boxes are then processed in that order and
    points kept by one box are withdrawn from the later boxes (except boxes with the same ``box_owner``,
    e.g. one object's boxes in two cameras), so each point ends in at most one owner's cluster.
    """
    ndim = _ndim(mode)
    xyz = np.asarray(xyz)
    if xyz.dtype != np.float32:  # float32 (the usual point dtype) is widened per point in the kernel
        xyz = xyz.astype(np.float64, copy=False)
    xyz = np.ascontiguousarray(xyz).reshape(-1, 3)
    box_class = np.asarray(box_class).reshape(-1).astype(np.int64)
    if box_class.shape[0] != claims.n_boxes:
        raise ValueError(f"{box_class.shape[0]} box classes for {claims.n_boxes} boxes")
    radii_arr = np.asarray(radii, np.float64)
    if box_class.size and (box_class.min() < 0 or box_class.max() >= radii_arr.size):
        raise ValueError(f"box classes must lie in 0..{radii_arr.size - 1}")
    sel = np.arange(len(claims)) if pair_mask is None else np.flatnonzero(pair_mask)
    if sel.size == 0:
        return np.zeros(len(claims), bool)
    # Group the selected pairs by box, stably, so points stay in ascending order within a box (which
    # makes the label numbering, hence the tie-break, the same as running on the box's points alone).
    order, ptr = _group_by_box(np.asarray(claims.box, np.int64), sel.astype(np.int64, copy=False), claims.n_boxes)
    group_radius = radii_arr[box_class] if claims.n_boxes else np.zeros(0)
    exclusive = exclusive_order is not None
    visit = np.arange(claims.n_boxes) if not exclusive else np.asarray(exclusive_order, np.int64)
    if exclusive and not np.array_equal(np.sort(visit), np.arange(claims.n_boxes)):
        raise ValueError("exclusive_order must be a permutation of the boxes")
    # dense owner ids >= 0 (the kernel uses -1 for "not taken")
    owner = (np.arange(claims.n_boxes) if box_owner is None
             else np.unique(np.asarray(box_owner).reshape(-1), return_inverse=True)[1].astype(np.int64))
    keep, ok = _largest_per_group(xyz, np.asarray(claims.point, np.int64), order, ptr, group_radius, ndim,
                                  visit, exclusive, owner, len(claims))
    if not ok:
        raise ValueError("claimed points must have finite coordinates")
    return keep
