"""Plain-Python DCS (Depth Clustering Segment), the authors' rule: test oracle and benchmark baseline.

Deliberately written as straightforward loops over rows and columns, following the step list of spec
``method.md`` §3 literally (parent table ``E`` with flat index ``ret * W + col``, parent pointers followed to
the root at the end), and independently of the numba kernel in :mod:`mwsis.pseudolabel.dcs`. Slow by
design (seconds per 2x64x2650 frame); never use it in a pipeline.

``ring_segments_union_find_reference`` is the oracle of the union-find variant: it lists every edge of the
same predicate and window (with azimuth wrap-around) and hands them to scipy's connected components.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ring_segments_reference", "ring_segments_rescan", "ring_segments_union_find_reference", "row_params"]


def row_params(row_ranges: np.ndarray, rel_thresh: float = 0.0048, window_scale: float = 500.0,
               window_min: float = 12.0, window_max: float = 50.0) -> tuple[float, int]:
    """(connect threshold in metres, look-back window W) of one row, from the row's maximum range."""
    max_dist = float(row_ranges[row_ranges > 0].max())  # empties (<= 0, NaN) never count
    kernel = min(max(window_scale / max_dist, window_min), window_max)
    return rel_thresh * max_dist, int(kernel / 2)


def ring_segments_reference(ranges: np.ndarray, rel_thresh: float = 0.0048, window_scale: float = 500.0,
                            window_min: float = 12.0, window_max: float = 50.0) -> np.ndarray:
    """Authors' DCS on ``ranges`` (R<=2, M, W) float (<= 0 empty) -> int32 ids, -1 where empty."""
    ranges = np.asarray(ranges, np.float32)
    n_ret, n_rows, width = ranges.shape
    out = np.full(ranges.shape, -1, np.int32)
    next_id = 0
    for row in range(n_rows):
        rng = [[float(ranges[ret, row, col]) for col in range(width)] for ret in range(n_ret)]
        exists = [[rng[ret][col] > 0 for col in range(width)] for ret in range(n_ret)]
        if not any(any(e) for e in exists):
            continue
        thr, win = row_params(ranges[:, row, :], rel_thresh, window_scale, window_min, window_max)

        def connected(a: float, b: float) -> bool:
            return abs(a - b) < thr

        parent = list(range(n_ret * width))  # flat index ret * width + col
        for i in range(width):
            if exists[0][i]:
                for j in range(1, win):
                    if i - j < 0:
                        break
                    k = i - j
                    if exists[0][k] and connected(rng[0][i], rng[0][k]):
                        parent[i] = parent[k]
                        break
                    if n_ret > 1 and exists[1][k] and connected(rng[0][i], rng[1][k]):
                        parent[i] = parent[width + k]
                        break
            if n_ret > 1 and exists[1][i]:
                for j in range(0, win):
                    if i - j < 0:
                        break
                    k = i - j
                    if exists[0][k] and connected(rng[1][i], rng[0][k]):
                        parent[width + i] = parent[k]
                        break
                    if j != 0 and exists[1][k] and connected(rng[1][i], rng[1][k]):
                        parent[width + i] = parent[width + k]
                        break
        # Roots get ids in (column, first return before second) order; the counter runs over the frame.
        root_id = {}
        for col in range(width):
            for ret in range(n_ret):
                flat = ret * width + col
                if exists[ret][col] and parent[flat] == flat:
                    root_id[flat] = next_id
                    next_id += 1
        for ret in range(n_ret):
            for col in range(width):
                if exists[ret][col]:
                    node = ret * width + col
                    while parent[node] != node:
                        node = parent[node]
                    out[ret, row, col] = root_id[node]
    return out


def ring_segments_union_find_reference(ranges: np.ndarray, rel_thresh: float = 0.0048,
                                       window_scale: float = 500.0, window_min: float = 12.0,
                                       window_max: float = 50.0, wrap: bool = True) -> np.ndarray:
    """Union-find DCS oracle: components of the window graph (edges listed explicitly, scipy CC).

    Edges of a row: any two points whose columns are 1..W-1 apart (cyclically when ``wrap``), any returns,
    plus first-second return in the same column; connected when ``|r1 - r2| < thr``. Ids are numbered by
    first appearance in (row, column, return) order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ranges = np.asarray(ranges, np.float32)
    n_ret, n_rows, width = ranges.shape
    out = np.full(ranges.shape, -1, np.int32)
    next_id = 0
    for row in range(n_rows):
        r = ranges[:, row, :]
        if not (r > 0).any():
            continue
        thr, win = row_params(r, rel_thresh, window_scale, window_min, window_max)
        nodes = [(col, ret) for col in range(width) for ret in range(n_ret) if r[ret, col] > 0]
        index = {node: n for n, node in enumerate(nodes)}  # scan order
        src, dst = [], []
        for (col, ret), a in index.items():
            for d in range(0, win):
                k = col - d
                if k < 0:
                    if not wrap:
                        break
                    k += width
                if d > 0 and k == col:
                    break  # wrapped all the way round
                for ret2 in range(n_ret):
                    if d == 0 and ret2 >= ret:
                        continue  # same column: only first-second
                    b = index.get((k, ret2))
                    if b is not None and abs(float(r[ret, col]) - float(r[ret2, k])) < thr:
                        src.append(a)
                        dst.append(b)
        g = coo_matrix((np.ones(len(src)), (src, dst)), shape=(len(nodes), len(nodes)))
        _, lab = connected_components(g, directed=False)
        # scipy numbers components by first node, and nodes are in scan order: ids are first-appearance.
        for (col, ret), a in index.items():
            out[ret, row, col] = next_id + lab[a]
        next_id += int(lab.max()) + 1
    return out


def ring_segments_rescan(ranges: np.ndarray, rel_thresh: float = 0.0048, window_scale: float = 500.0,
                         window_min: float = 12.0, window_max: float = 50.0) -> np.ndarray:
    """The same rule in the authors' implementation style (method.md §3, "Performance"): a row is a list
    of points, and every predicate call fetches its two points by rescanning the row with boolean masks.
    Benchmark baseline only: it shows what the released code costs per frame."""
    ranges = np.asarray(ranges, np.float32)
    n_ret, n_rows, width = ranges.shape
    out = np.full(ranges.shape, -1, np.int32)
    next_id = 0
    for row in range(n_rows):
        ret_of, col_of = np.nonzero(ranges[:, row, :] > 0)
        if not len(col_of):
            continue
        rng_of = ranges[ret_of, row, col_of]
        thr, win = row_params(ranges[:, row, :], rel_thresh, window_scale, window_min, window_max)

        def fetch(ret: int, col: int):
            hit = (ret_of == ret) & (col_of == col)  # the rescan the authors do for every lookup
            return float(rng_of[hit][0]) if hit.any() else None

        parent = np.arange(n_ret * width)
        for i in range(width):
            for ret in range(n_ret):
                here = fetch(ret, i)
                if here is None:
                    continue
                for j in range(0 if ret == 1 else 1, win):
                    if i - j < 0:
                        break
                    first = fetch(0, i - j)
                    if first is not None and abs(here - first) < thr:
                        parent[ret * width + i] = parent[i - j]
                        break
                    second = fetch(1, i - j) if n_ret > 1 and not (ret == 1 and j == 0) else None
                    if second is not None and abs(here - second) < thr:
                        parent[ret * width + i] = parent[width + i - j]
                        break
        roots: dict[int, int] = {}
        for col in range(width):
            for ret in range(n_ret):
                flat = ret * width + col
                if ranges[ret, row, col] > 0 and parent[flat] == flat:
                    roots[flat] = next_id
                    next_id += 1
        for ret, col in zip(ret_of, col_of):
            node = ret * width + col
            while parent[node] != node:
                node = parent[node]
            out[ret, row, col] = roots[node]
    return out
