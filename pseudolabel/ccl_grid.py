"""The grid union-find behind ``ccl.connected_components`` (MWSIS Eq. 4's CCL; see ``ccl``'s docstring for why
and how it equals scipy's connected components on the strict-< radius graph).

``grid_components(pts, radius, ndim)``: (n, ndim) float64 points -> (n,) int64 component labels numbered in
order of first appearance. Cells of side r/sqrt(d): the points of one cell are all closer than r, so a cell is
united in O(m); two cells up to 2 apart per axis are united at their first point pair closer than r, skipped
when already in one set or when their bounding boxes are r or more apart.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["grid_components"]

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
def grid_components(pts, radius, ndim):
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
