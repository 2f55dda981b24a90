"""Single-link connected components of a point cloud, and the largest component per 2D box (MWSIS Eq. 4).

Paper (Sec. 3.3): "apply the CCL to all pseudo foreground points within the 2D boxes ... obtain the maximum
cluster" (Eq. 4, ``P'_{fg,b} = Max(CCL(P_{fg,b}))``). Authors' code (spec ``method.md`` §2): two points are
adjacent when their **XY** distance is **strictly below** a per-class radius - vehicle 0.6 m, pedestrian
0.1 m, cyclist 0.4 m - and the largest component is kept, a tie going to the smallest component label
(scipy labels components in order of their first point, so: the component holding the lowest-index point).

What we do differently, deliberately:

* No dense N x N distance matrix (the authors' hotspot, ``method.md`` §13, O(n^2) memory per box). We run a
  union-find over a uniform grid of cell size >= radius in numba; only pairs in neighbouring cells are
  tested. The partition equals ``scipy.sparse.csgraph.connected_components`` on the strict-< radius graph
  with distances ``sqrt(sum(d_i^2))`` in float64 (the ``cdist`` formula), and labels are numbered in order
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

from .frustum import Claims

__all__ = ["CCL_RADII", "connected_components", "largest_component_per_box"]

# Per-class single-link radii in metres (vehicle, pedestrian, cyclist); authors' mwsis.py:1728.
CCL_RADII: tuple[float, float, float] = (0.6, 0.1, 0.4)
_MODES = {"xy": 2, "xyz": 3}


@njit(cache=True, inline="always")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(cache=True)
def _ccl_kernel(pts, radius, ndim):
    """Component labels (first-appearance order) of ``pts`` (n, >=ndim) float64 under dist < radius."""
    n = pts.shape[0]
    labels = np.empty(n, np.int32)
    parent = np.arange(n)
    if n > 1 and radius > 0:
        lo = np.empty(3)
        ext = 0.0
        big = 0.0
        for d in range(ndim):
            lo[d] = pts[:, d].min()
            hi = pts[:, d].max()
            ext = max(ext, hi - lo[d])
            big = max(big, abs(hi), abs(lo[d]))
        # Cells a little larger than the radius so that rounding in the cell index can never put two
        # points closer than the radius more than one cell apart; at most ~2^20 cells per axis so the
        # linear cell key fits in int64.
        cell = max(radius * (1.0 + 1e-7) + 1e-12 * big, ext / 1048576.0)
        dims = np.ones(3, np.int64)
        ci = np.zeros((n, 3), np.int64)
        for i in range(n):
            for d in range(ndim):
                ci[i, d] = np.int64(np.floor((pts[i, d] - lo[d]) / cell))
        for d in range(ndim):
            dims[d] = ci[:, d].max() + 1
        key = (ci[:, 0] * dims[1] + ci[:, 1]) * dims[2] + ci[:, 2]
        order = np.argsort(key, kind="mergesort")
        skey = key[order]
        # Unique cells (sorted) and their point ranges in `order`.
        n_cells = 1
        for i in range(1, n):
            if skey[i] != skey[i - 1]:
                n_cells += 1
        ukey = np.empty(n_cells, np.int64)
        start = np.empty(n_cells + 1, np.int64)
        c = 0
        ukey[0] = skey[0]
        start[0] = 0
        for i in range(1, n):
            if skey[i] != skey[i - 1]:
                c += 1
                ukey[c] = skey[i]
                start[c] = i
        start[n_cells] = n
        # Half of the neighbourhood (lexicographically positive offsets): each cell pair is visited once.
        offs = np.zeros((13, 3), np.int64)
        n_off = 0
        for dx in range(-1, 2):
            for dy in range(-1, 2):
                for dz in range(-1, 2):
                    positive = dx > 0 or (dx == 0 and (dy > 0 or (dy == 0 and dz > 0)))
                    if (ndim == 2 and dz != 0) or not positive:
                        continue
                    offs[n_off, 0] = dx
                    offs[n_off, 1] = dy
                    offs[n_off, 2] = dz
                    n_off += 1
        r = radius
        for a in range(n_cells):
            i0 = order[start[a]]
            ax, ay, az = ci[i0, 0], ci[i0, 1], ci[i0, 2]
            for o in range(-1, n_off):
                if o < 0:
                    b = a
                else:
                    bx, by, bz = ax + offs[o, 0], ay + offs[o, 1], az + offs[o, 2]
                    if bx < 0 or by < 0 or bz < 0 or bx >= dims[0] or by >= dims[1] or bz >= dims[2]:
                        continue
                    kb = (bx * dims[1] + by) * dims[2] + bz
                    b = np.searchsorted(ukey, kb)
                    if b >= n_cells or ukey[b] != kb:
                        continue
                for s in range(start[a], start[a + 1]):
                    p = order[s]
                    t0 = s + 1 if b == a else start[b]
                    for t in range(t0, start[b + 1]):
                        q = order[t]
                        rp = _find(parent, p)
                        rq = _find(parent, q)
                        if rp == rq:
                            continue  # already connected: skip the distance
                        acc = 0.0
                        for d in range(ndim):
                            diff = pts[p, d] - pts[q, d]
                            acc += diff * diff
                        if np.sqrt(acc) < r:
                            if rp < rq:
                                parent[rq] = rp
                            else:
                                parent[rp] = rq
    # Roots are the smallest index of their component, so a root is seen before its members.
    nxt = 0
    for i in range(n):
        root = _find(parent, i)
        if root == i:
            labels[i] = nxt
            nxt += 1
        else:
            labels[i] = labels[root]
    return labels


@njit(cache=True)
def _largest_per_group(xyz, idx, ptr, group_radius, ndim, visit, exclusive, owner):
    """keep[t] for t over the grouped pairs: point ``idx[t]`` is in its group's largest component.

    Groups are processed in ``visit`` order. With ``exclusive``, a point kept by a group of owner o is no
    longer available to groups of another owner (owners: e.g. object ids, so one object's boxes in two
    cameras may share points).
    """
    keep = np.zeros(idx.shape[0], np.bool_)
    taken = np.full(xyz.shape[0], -1, np.int64) if exclusive else np.empty(0, np.int64)
    sel = np.empty(idx.shape[0], np.int64)
    for g in visit:
        a, b = ptr[g], ptr[g + 1]
        n = 0
        for t in range(a, b):
            if not exclusive or taken[idx[t]] < 0 or taken[idx[t]] == owner[g]:
                sel[n] = t
                n += 1
        if n == 0:
            continue
        pts = np.empty((n, 3))
        for s in range(n):
            for d in range(3):
                pts[s, d] = xyz[idx[sel[s]], d]
        lab = _ccl_kernel(pts, group_radius[g], ndim)
        counts = np.zeros(lab.max() + 1, np.int64)
        for s in range(n):
            counts[lab[s]] += 1
        best = np.argmax(counts)  # first maximum: the tie goes to the smallest label, as the authors
        for s in range(n):
            if lab[s] == best:
                keep[sel[s]] = True
                if exclusive:
                    taken[idx[sel[s]]] = owner[g]
    return keep


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
    return _ccl_kernel(pts, float(radius), ndim)


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
    xyz = np.ascontiguousarray(xyz, dtype=np.float64).reshape(-1, 3)
    box_class = np.asarray(box_class).reshape(-1).astype(np.int64)
    if box_class.shape[0] != claims.n_boxes:
        raise ValueError(f"{box_class.shape[0]} box classes for {claims.n_boxes} boxes")
    radii_arr = np.asarray(radii, np.float64)
    if box_class.size and (box_class.min() < 0 or box_class.max() >= radii_arr.size):
        raise ValueError(f"box classes must lie in 0..{radii_arr.size - 1}")
    keep = np.zeros(len(claims), bool)
    sel = np.arange(len(claims)) if pair_mask is None else np.flatnonzero(pair_mask)
    if sel.size == 0:
        return keep
    # Group the selected pairs by box; stable, so points stay in ascending order within a box (which
    # makes the label numbering, hence the tie-break, the same as running on the box's points alone).
    boxes = claims.box[sel]
    order = sel[np.argsort(boxes, kind="stable")]
    ptr = np.zeros(claims.n_boxes + 1, np.int64)
    np.cumsum(np.bincount(boxes, minlength=claims.n_boxes), out=ptr[1:])
    group_radius = radii_arr[box_class] if claims.n_boxes else np.zeros(0)
    exclusive = exclusive_order is not None
    visit = np.arange(claims.n_boxes) if not exclusive else np.asarray(exclusive_order, np.int64)
    if exclusive and not np.array_equal(np.sort(visit), np.arange(claims.n_boxes)):
        raise ValueError("exclusive_order must be a permutation of the boxes")
    # dense owner ids >= 0 (the kernel uses -1 for "not taken")
    owner = (np.arange(claims.n_boxes) if box_owner is None
             else np.unique(np.asarray(box_owner).reshape(-1), return_inverse=True)[1].astype(np.int64))
    points = claims.point[order]
    if not np.isfinite(xyz[points, :ndim]).all():
        raise ValueError("claimed points must have finite coordinates")
    kept = _largest_per_group(xyz, points, ptr, group_radius, ndim, visit, exclusive, owner)
    keep[order] = kept
    return keep
