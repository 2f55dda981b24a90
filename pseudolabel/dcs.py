"""DCS - Depth Clustering Segment: ring segments of the LiDAR range image (MWSIS Sec. 3.3 "SPG", App. A.1).

Paper: "traverse each row and record the depth of each column. If the depth changes smoothly, the current
point belongs to the same ring segment. Otherwise, it belongs to a different ring segment."

``variant="authors"`` reproduces the released code exactly (spec ``method.md`` §3): per row,
``max_dist`` = the row's largest range over both returns, look-back window
``W = int(clip(500 / max_dist, 12, 50) / 2)`` (6..25 columns), two points connected when
``|r1 - r2| < 0.0048 * max_dist`` (written ``0.24 * max_dist / 50`` there). Scanning columns left to right,
a first return looks back j = 1..W-1 columns and attaches to the *nearest* connected point (first return
of that column before its second return); a second return looks back j = 0..W-1 (j = 0: only the first
return of its own column). It is **not** a union-find: a point never merges two existing segments (columns
100/101/102 at 20.0/20.5/20.25 m with a 60 m row maximum give ids A, B, B), and there is no azimuth
wrap-around. Ids are frame-global, given to roots in (row, column, first-return-first) order.

``variant="union_find"`` is our alternative: the connected components of the same predicate and window
(every pair of points 1..W-1 columns apart, plus the two returns of a column), **with** wrap-around between
column W-1 and column 0, ids numbered by first appearance in the same scan order.

Differences from the authors' code, deliberate: one numba pass per row over a dense (R, M, W) range image
instead of pure Python with a boolean rescan of the row for each comparison (their hotspot, §13); ids are
consecutive over real points (the authors' counter may also number empty cells; the partition is the
same); a NaN range counts as empty. ``tests/pseudolabel/dcs_reference.py`` is the plain-Python oracle.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["DCS_DEFAULTS", "ring_segments", "range_image", "point_segments"]

# The authors' constants (transforms_3d.py:2288-2500): relative threshold 0.24/50, window 10/max*50 in [12, 50].
DCS_DEFAULTS = dict(rel_thresh=0.0048, window_scale=500.0, window_min=12.0, window_max=50.0)


@njit(cache=True, inline="always")
def _row_params(ranges, m, rel_thresh, window_scale, window_min, window_max, window):
    """(threshold, window) of row m from its largest range; threshold < 0 marks an empty row."""
    max_dist = 0.0
    for ret in range(ranges.shape[0]):
        for c in range(ranges.shape[2]):
            v = np.float64(ranges[ret, m, c])
            if v > max_dist:
                max_dist = v
    if max_dist <= 0.0:
        return -1.0, 0
    if window >= 0:
        return rel_thresh * max_dist, window
    kernel = min(max(window_scale / max_dist, window_min), window_max)
    return rel_thresh * max_dist, int(kernel / 2)


@njit(cache=True)
def _dcs_authors(ranges, rel_thresh, window_scale, window_min, window_max, window):
    n_ret, n_rows, width = ranges.shape
    out = np.full(ranges.shape, -1, np.int32)
    root = np.empty(n_ret * width, np.int64)  # root flat index (ret * width + col), fully compressed
    ids = np.empty(n_ret * width, np.int32)
    next_id = 0
    for m in range(n_rows):
        thr, win = _row_params(ranges, m, rel_thresh, window_scale, window_min, window_max, window)
        if thr < 0:
            continue
        r0, r1 = ranges[0, m], ranges[n_ret - 1, m]  # the row's first and second returns
        o0, o1 = out[0, m], out[n_ret - 1, m]
        # One pass: a point's root is decided when the scan reaches it, and roots come in (column,
        # first-return-first) order, so each root takes the next id at once and a member its root's.
        for i in range(width):
            a = np.float64(r0[i])
            if a > 0:
                f = i
                for k in range(i - 1, max(i - win + 1, 0) - 1, -1):  # j = 1..W-1, no wrap-around
                    b = np.float64(r0[k])
                    if b > 0 and abs(a - b) < thr:
                        f = root[k]
                        break
                    if n_ret > 1:
                        b = np.float64(r1[k])
                        if b > 0 and abs(a - b) < thr:
                            f = root[width + k]
                            break
                root[i] = f
                if f == i:
                    ids[i] = next_id
                    next_id += 1
                o0[i] = ids[f]
            if n_ret > 1:
                a = np.float64(r1[i])
                if a > 0:
                    f = width + i
                    for k in range(i, max(i - win + 1, 0) - 1, -1):  # j = 0..W-1
                        b = np.float64(r0[k])
                        if b > 0 and abs(a - b) < thr:
                            f = root[k]
                            break
                        if k < i:  # j = 0: only the first return of its own column
                            b = np.float64(r1[k])
                            if b > 0 and abs(a - b) < thr:
                                f = root[width + k]
                                break
                    root[width + i] = f
                    if f == width + i:
                        ids[f] = next_id
                        next_id += 1
                    o1[i] = ids[f]
    return out


@njit(cache=True, inline="always")
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True)
def _dcs_union_find(ranges, rel_thresh, window_scale, window_min, window_max, window, wrap):
    n_ret, n_rows, width = ranges.shape
    out = np.full(ranges.shape, -1, np.int32)
    parent = np.empty(n_ret * width, np.int64)
    ids = np.empty(n_ret * width, np.int32)
    next_id = 0
    for m in range(n_rows):
        thr, win = _row_params(ranges, m, rel_thresh, window_scale, window_min, window_max, window)
        if thr < 0:
            continue
        for f in range(n_ret * width):
            parent[f] = f
            ids[f] = -1
        for i in range(width):
            for ret in range(n_ret):
                a = np.float64(ranges[ret, m, i])
                if not a > 0:
                    continue
                f = ret * width + i
                ra = _find(parent, f)  # only this loop's unions move f's root, so track it here
                for j in range(0, win):
                    k = i - j
                    if k < 0:
                        if not wrap:
                            break
                        k += width
                    if j > 0 and k == i:
                        break  # the window went all the way round a very narrow image
                    for ret2 in range(n_ret):
                        if j == 0 and ret2 >= ret:
                            continue  # same column: only second return to first return
                        b = np.float64(ranges[ret2, m, k])
                        if b > 0 and abs(a - b) < thr:
                            rb = _find(parent, ret2 * width + k)
                            if ra < rb:
                                parent[rb] = ra
                            elif rb < ra:
                                parent[ra] = rb
                                ra = rb
        for i in range(width):
            for ret in range(n_ret):
                if ranges[ret, m, i] > 0:
                    r = _find(parent, ret * width + i)
                    if ids[r] < 0:
                        ids[r] = next_id
                        next_id += 1
                    out[ret, m, i] = ids[r]
    return out


def ring_segments(ranges: np.ndarray, *, variant: str = "authors", rel_thresh: float = 0.0048,
                  window_scale: float = 500.0, window_min: float = 12.0, window_max: float = 50.0,
                  window: int | None = None, wrap: bool = True) -> np.ndarray:
    """Ring-segment ids of a range image.

    ranges: (R, M, W) float (R = 1 or 2 returns, M rows, W columns); ``<= 0`` or NaN = empty cell.
    variant: ``"authors"`` (nearest-predecessor attach, no wrap-around) or ``"union_find"``.
    rel_thresh: connect when ``|r1 - r2| < rel_thresh * row_max_range`` (authors 0.24/50 = 0.0048).
    window_scale/min/max: look-back ``W = int(clip(window_scale / row_max, window_min, window_max) / 2)``;
    ``window`` overrides it with a fixed W. wrap: azimuth wrap-around, union-find variant only.
    Returns (R, M, W) int32 ids, frame-global, -1 where empty.
    """
    r = np.ascontiguousarray(ranges, dtype=np.float32)
    if r.ndim != 3 or r.shape[0] not in (1, 2):
        raise ValueError(f"ranges must be (R<=2, M, W), got shape {r.shape}")
    w = -1 if window is None else int(window)
    args = (float(rel_thresh), float(window_scale), float(window_min), float(window_max), w)
    if variant == "authors":
        return _dcs_authors(r, *args)
    if variant == "union_find":
        return _dcs_union_find(r, *args, bool(wrap))
    raise ValueError(f"variant must be 'authors' or 'union_find', got {variant!r}")


def range_image(values: np.ndarray, return_index: np.ndarray, row: np.ndarray, col: np.ndarray,
                shape: tuple[int, int], n_returns: int = 2) -> np.ndarray:
    """Scatter per-point ``values`` (ranges) into a dense (n_returns, M, W) float32 image, 0 where empty."""
    out = np.zeros((n_returns, *shape), np.float32)
    out[np.asarray(return_index, np.int64), np.asarray(row, np.int64), np.asarray(col, np.int64)] = values
    return out


def point_segments(ids: np.ndarray, return_index: np.ndarray, row: np.ndarray, col: np.ndarray,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """(N,) int32 segment id of each point, read from the (R, M, W) id image; -1 where not ``valid``."""
    ret = np.asarray(return_index, np.int64)
    rr = np.asarray(row, np.int64)
    cc = np.asarray(col, np.int64)
    ok = (ret >= 0) & (ret < ids.shape[0]) & (rr >= 0) & (rr < ids.shape[1]) & (cc >= 0) & (cc < ids.shape[2])
    if valid is not None:
        ok &= np.asarray(valid, bool)
    out = np.full(ret.shape[0], -1, np.int32)
    out[ok] = ids[ret[ok], rr[ok], cc[ok]]
    return out
