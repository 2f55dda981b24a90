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

from .frustum import Claims

__all__ = ["CCL_RADII", "connected_components", "largest_component_per_box"]

# Per-class single-link radii in metres (vehicle, pedestrian, cyclist); authors' mwsis.py:1728.
CCL_RADII: tuple[float, float, float] = (0.6, 0.1, 0.4)
_MODES = {"xy": 2, "xyz": 3}
_MAX_CELLS = 1 << 20  # cells per axis at most, so that the linear cell key fits in int64 in 3D


@njit(cache=True, inline="always")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(cache=True, inline="always")
def _dist(sp, p, q, ndim):
    # the cdist formula, summed in axis order: every comparison with the radius below uses exactly it
    acc = 0.0
    for d in range(ndim):
        diff = sp[p, d] - sp[q, d]
        acc += diff * diff
    return np.sqrt(acc)


@njit(cache=True, inline="always")
def _gap_point_box(sp, p, bmin, bmax, b, ndim):
    """Lower bound, in the same float arithmetic as ``_dist``, of the distance from point p to cell b."""
    acc = 0.0
    for d in range(ndim):
        x = sp[p, d]
        g = 0.0
        if x < bmin[b, d]:
            g = bmin[b, d] - x
        elif x > bmax[b, d]:
            g = x - bmax[b, d]
        acc += g * g
    return np.sqrt(acc)


@njit(cache=True, inline="always")
def _gap_box_box(bmin, bmax, a, b, ndim):
    acc = 0.0
    for d in range(ndim):
        g = 0.0
        if bmax[a, d] < bmin[b, d]:
            g = bmin[b, d] - bmax[a, d]
        elif bmax[b, d] < bmin[a, d]:
            g = bmin[a, d] - bmax[b, d]
        acc += g * g
    return np.sqrt(acc)


@njit(cache=True)
def _ccl_kernel(pts, radius, ndim):
    """Component labels (first-appearance order) of ``pts`` (n, >=ndim) float64 under dist < radius.

    Grid of cells of side r/sqrt(ndim) (a hair less): any two points of one cell are closer than r, so a
    cell is united in O(m) - checked on the cell's actual bounding box, in the same float arithmetic as
    the distance, so rounding can never merge points that are not adjacent (a cell failing the check,
    e.g. with huge coordinates, falls back to testing its pairs). Two points closer than r are at most 2
    cells apart per axis; for such a pair of cells that are not yet in one set, the point pairs are
    scanned until the first one closer than r. Immediate neighbours are visited before the cells two
    apart, which are then mostly joined already. Points stay finite (callers check).
    """
    n = pts.shape[0]
    labels = np.empty(n, np.int32)
    if n == 0:
        return labels
    if n == 1 or not radius > 0:
        for i in range(n):
            labels[i] = i
        return labels
    r = radius
    # --- cell of every point -------------------------------------------------------------------------
    lo = np.zeros(3)
    ext = 0.0
    for d in range(ndim):
        mn = pts[0, d]
        mx = mn
        for i in range(1, n):
            v = pts[i, d]
            if v < mn:
                mn = v
            elif v > mx:
                mx = v
        lo[d] = mn
        ext = max(ext, mx - mn)
    cell = max(r / np.sqrt(ndim) * (1.0 - 1e-9), ext / _MAX_CELLS)
    dims = np.ones(3, np.int64)
    ci = np.zeros((n, 3), np.int64)
    for i in range(n):
        for d in range(ndim):
            v = (pts[i, d] - lo[d]) / cell
            if not v >= 0.0:  # NaN from inf / inf (huge spans): any cell is correct, only slower
                v = 0.0
            elif v > _MAX_CELLS:
                v = float(_MAX_CELLS)
            c = np.int64(v)
            ci[i, d] = c
            if c >= dims[d]:
                dims[d] = c + 1
    key = np.empty(n, np.int64)
    for i in range(n):
        key[i] = (ci[i, 0] * dims[1] + ci[i, 1]) * dims[2] + ci[i, 2]
    n_keys = dims[0] * dims[1] * dims[2]
    if n_keys <= 4 * n + 1024:  # a compact grid: counting sort, O(n + cells)
        count = np.zeros(n_keys + 1, np.int64)
        for i in range(n):
            count[key[i] + 1] += 1
        for k in range(n_keys):
            count[k + 1] += count[k]
        order = np.empty(n, np.int64)
        for i in range(n):
            order[count[key[i]]] = i
            count[key[i]] += 1
    else:
        order = np.argsort(key)
    # --- points sorted by cell; cells: key, coordinates, point range, bounding box ---------------------
    sp = np.empty((n, 3))
    n_cells = 1
    prev = key[order[0]]
    for s in range(n):
        i = order[s]
        for d in range(3):
            sp[s, d] = pts[i, d] if d < ndim else 0.0
        if key[i] != prev:
            n_cells += 1
            prev = key[i]
    ukey = np.empty(n_cells, np.int64)
    cc = np.empty((n_cells, 3), np.int64)
    start = np.empty(n_cells + 1, np.int64)
    bmin = np.empty((n_cells, 3))
    bmax = np.empty((n_cells, 3))
    c = -1
    prev = -1
    for s in range(n):
        i = order[s]
        if c < 0 or key[i] != prev:
            c += 1
            prev = key[i]
            ukey[c] = prev
            start[c] = s
            for d in range(3):
                cc[c, d] = ci[i, d]
                bmin[c, d] = sp[s, d]
                bmax[c, d] = sp[s, d]
        else:
            for d in range(ndim):
                v = sp[s, d]
                if v < bmin[c, d]:
                    bmin[c, d] = v
                elif v > bmax[c, d]:
                    bmax[c, d] = v
    start[n_cells] = n
    # --- union-find over sorted positions; solid cells are united at once -----------------------------
    parent = np.arange(n)
    solid = np.empty(n_cells, np.bool_)
    for a in range(n_cells):
        acc = 0.0
        for d in range(ndim):
            diff = bmax[a, d] - bmin[a, d]
            acc += diff * diff
        solid[a] = np.sqrt(acc) < r  # >= every pair's computed distance (monotone rounding)
        s0, s1 = start[a], start[a + 1]
        if solid[a]:
            for s in range(s0 + 1, s1):
                parent[s] = s0
        else:
            for p in range(s0, s1):
                for q in range(p + 1, s1):
                    rp = _find(parent, p)
                    rq = _find(parent, q)
                    if rp != rq and _dist(sp, p, q, ndim) < r:
                        parent[rq] = rp
    # --- neighbouring cells: rows (dx, dy, dz range) of the positive half of the 5^ndim block ----------
    kz = 2 if ndim == 3 else 0
    rows = np.empty((13, 4), np.int64)
    n_rows = 0
    for dx in range(0, 3):
        for dy in range(-2, 3):
            if dx == 0 and dy < 0:
                continue
            z0 = 1 if (dx == 0 and dy == 0) else -kz
            if z0 > kz:
                continue
            rows[n_rows, 0] = dx
            rows[n_rows, 1] = dy
            rows[n_rows, 2] = z0
            rows[n_rows, 3] = kz
            n_rows += 1
    for near in (True, False):
        for j in range(n_rows):
            dx, dy, z0, z1 = rows[j, 0], rows[j, 1], rows[j, 2], rows[j, 3]
            if near and (dx > 1 or dy > 1 or dy < -1):
                continue
            ptr = 0  # target keys grow with a: a merge-like walk, no binary search
            for a in range(n_cells):
                bx = cc[a, 0] + dx
                by = cc[a, 1] + dy
                if bx >= dims[0] or by < 0 or by >= dims[1]:
                    continue
                az = cc[a, 2]
                bz0 = max(az + z0, 0)
                bz1 = min(az + z1, dims[2] - 1)
                if bz0 > bz1:
                    continue
                base = (bx * dims[1] + by) * dims[2]
                klo = base + bz0
                khi = base + bz1
                while ptr < n_cells and ukey[ptr] < klo:
                    ptr += 1
                b = ptr
                while b < n_cells and ukey[b] <= khi:
                    dz = cc[b, 2] - az
                    is_near = dx <= 1 and -1 <= dy <= 1 and -1 <= dz <= 1
                    if is_near != near:
                        b += 1
                        continue
                    if solid[a] and solid[b]:
                        ra = _find(parent, start[a])
                        rb = _find(parent, start[b])
                        if ra != rb and _gap_box_box(bmin, bmax, a, b, ndim) < r:
                            done = False
                            for p in range(start[a], start[a + 1]):
                                if _gap_point_box(sp, p, bmin, bmax, b, ndim) >= r:
                                    continue
                                for q in range(start[b], start[b + 1]):
                                    if _dist(sp, p, q, ndim) < r:
                                        parent[rb] = ra
                                        done = True
                                        break
                                if done:
                                    break
                    elif _gap_box_box(bmin, bmax, a, b, ndim) < r:
                        for p in range(start[a], start[a + 1]):
                            if _gap_point_box(sp, p, bmin, bmax, b, ndim) >= r:
                                continue
                            for q in range(start[b], start[b + 1]):
                                rp = _find(parent, p)
                                rq = _find(parent, q)
                                if rp != rq and _dist(sp, p, q, ndim) < r:
                                    parent[rq] = rp
                    b += 1
    # --- labels numbered by first appearance in input order (scipy's numbering) ----------------------
    pos = np.empty(n, np.int64)
    for s in range(n):
        pos[order[s]] = s
    root_label = np.full(n, -1, np.int32)
    nxt = 0
    for i in range(n):
        root = _find(parent, pos[i])
        if root_label[root] < 0:
            root_label[root] = nxt
            nxt += 1
        labels[i] = root_label[root]
    return labels


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
        lab = _ccl_kernel(pts[:n], group_radius[g], ndim)
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
