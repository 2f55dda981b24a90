"""Range-image rows and columns for a KITTI scan, which has no ring field (``data_formats.md`` §E.4).

KITTI stores an HDL-64E sweep ring after ring, top beam first; within a ring the azimuth ``atan2(y, x)``
grows (counter-clockwise) through one revolution that starts at a *seam* (straight ahead in KITTI's
files). Elevation binning is no substitute: the beams are unevenly spaced and each laser's apparent
elevation moves with range, so fixed bins matched the true rings for 13.6 % of the points (§E.4).

Approach 1 of §E.4, made independent of where the seam is:

1. **Sweep angle.** Unwrap the azimuth along file order into a monotone sweep angle ``u``: each step is
   taken as forward motion in ``[-back_tol, 2 pi - back_tol)``, so small backward jitter cancels and the
   +40 -> -40 deg gap of an FOV-cropped scan counts as +280 deg, not as a step back.
2. **Seam.** A new ring starts each time ``u`` passes ``seam + 2 pi k``. The seam is the phase at which
   the elevation staircase steps down: the one that minimises the within-ring elevation variance
   (a 1 deg grid, then 0.05 deg). So a ring seam at 0 (KITTI), 137 deg or anywhere works, and a
   cropped scan whose seam lies in the crop gap gives the same rings for every phase in the gap.
   2b. Each cut then moves to the elevation change point within ``window_deg`` of it if that is a
   clear (5 sigma) improvement, so rings whose own seams differ by a few degrees still split exactly
   where the beam changes. 2c. A ring whose seam lies more than ``back_tol`` behind its predecessor's
   passes the global seam twice; the sliver this leaves (a short 'ring' at its neighbour's elevation)
   is merged back.
3. **Rows.** Rings with no return (sky) vanish, so ring k is not laser k. The rings are placed on the
   64 rows by matching their median elevations, in order, to a reference table (a monotone
   assignment, dynamic programming); with all 64 rings present this is the identity.
4. **Columns** come from the azimuth, Waymo convention (§B.3 with an identity extrinsic):
   ``col = floor(W (pi - az) / 2 pi)``, column 0 rearward, the centre column straight ahead. A point
   whose column is already taken by a ring neighbour moves to a free adjacent column, so (row, col)
   stays one point per pixel for ``Frame.range_image`` and DCS.

Known limits (§E.4 pitfalls): a shuffled or augmented cloud has lost its order; two rings merge when
one ring's last return and the next ring's first return lie less than a revolution apart although
the seam region between them is empty in both (a very sparse ring).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * np.pi


def hdl64e_inclinations(n: int = 64) -> np.ndarray:
    """(n,) nominal HDL-64E beam elevations in radians, row order (row 0 highest): +2.0 to -24.8 deg,
    about 1/3 deg apart at the top and 1/2 deg at the bottom (§E.4 sensor facts). The real sensor has
    two blocks of 32 lasers with a per-unit calibration; this smooth curve (the ``kitti`` synthetic
    preset's) is only used to place rings on rows when fewer than ``n`` rings have returns."""
    s = np.linspace(0.0, 1.0, n)
    frac = 0.8 * s + 0.2 * s * s
    return np.radians(2.0 - 26.8 * frac)


@dataclass
class RingRecovery:
    """Per-point ring/row/column plus what was found (for reports and tests)."""

    ring: np.ndarray  # (N,) int32, 0.. in file order (rings with no returns are skipped)
    row: np.ndarray  # (N,) int16, range-image row (0 = highest beam)
    col: np.ndarray  # (N,) int16
    inclinations: np.ndarray  # (M,) float32 radians: median elevation per row (reference-filled if empty)
    seam: float  # radians, the estimated azimuth where rings start
    rings: int  # number of rings found
    non_monotone: int  # rings whose median elevation is not below the previous ring's (should be 0)
    moved: int  # points moved one column to a free neighbour
    shared: int  # points still sharing a (row, col) pixel with another point


def sweep_angle(az: np.ndarray, back_tol: float) -> np.ndarray:
    """Unwrapped sweep angle (radians, float64) along file order; see step 1 of the module docstring."""
    d = np.mod(np.diff(az.astype(np.float64)) + back_tol, TWO_PI) - back_tol
    u = np.empty(az.shape[0], np.float64)
    u[0] = az[0]
    np.cumsum(d, out=u[1:])
    u[1:] += az[0]
    # a monotone version for the ring cuts: a backward-jittered point stays in the ring it follows
    return np.maximum.accumulate(u)


def _cuts(u: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """(P, K) indices where ``u`` passes ``phase + 2 pi k`` (k covering the whole sweep) for each phase."""
    k = np.arange(np.floor(u[0] / TWO_PI) - 1, np.ceil(u[-1] / TWO_PI) + 2)
    return np.searchsorted(u, phases[:, None] + TWO_PI * k[None, :], side="left")


def _ring_sse(cuts: np.ndarray, c0: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Total within-ring weighted elevation variance (sum of squares) for each row of ``cuts``."""
    w = np.diff(c0[cuts], axis=1)
    s1 = np.diff(c1[cuts], axis=1)
    s2 = np.diff(c2[cuts], axis=1)
    return np.where(w > 0, s2 - s1 * s1 / np.maximum(w, 1e-12), 0.0).sum(axis=1)


def estimate_seam(u: np.ndarray, elev: np.ndarray, weight: np.ndarray) -> float:
    """The seam phase (radians in [0, 2 pi)) minimising within-ring elevation variance (step 2)."""
    c0 = np.concatenate([[0.0], np.cumsum(weight)])
    c1 = np.concatenate([[0.0], np.cumsum(weight * elev)])
    c2 = np.concatenate([[0.0], np.cumsum(weight * elev * elev)])
    coarse = np.radians(np.arange(0.0, 360.0, 1.0))
    cost = _ring_sse(_cuts(u, coarse), c0, c1, c2)
    # ties (a cropped scan's empty sector) give identical rings; take the middle of the first tied run
    best = np.flatnonzero(cost <= cost.min() * (1 + 1e-9) + 1e-15)
    run = best[: np.argmax(np.diff(np.concatenate([best, [best[-1] + 2]])) > 1) + 1]
    phase = coarse[run[len(run) // 2]]
    fine = phase + np.radians(np.arange(-1.0, 1.0001, 0.05))
    cost = _ring_sse(_cuts(u, fine), c0, c1, c2)
    return float(np.mod(fine[int(np.argmin(cost))], TWO_PI))


def anchor_rows(ring_elev: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rows (strictly increasing) for rings of descending elevation, minimising the summed absolute
    difference to ``reference`` (step 3). More rings than rows (a split ring) share rows."""
    k, m = len(ring_elev), len(reference)
    if k == m:
        return np.arange(k)
    if k > m:
        return np.maximum.accumulate(np.argmin(np.abs(ring_elev[:, None] - reference[None]), axis=1))
    cost = np.abs(ring_elev[:, None] - reference[None, :])
    total = np.full((k, m), np.inf)
    back = np.zeros((k, m), np.int64)
    total[0] = cost[0]
    for i in range(1, k):
        prev = total[i - 1]
        best = np.minimum.accumulate(prev)  # best[j] = min over rows <= j
        arg = np.zeros(m, np.int64)
        for j in range(1, m):
            arg[j] = arg[j - 1] if prev[arg[j - 1]] <= prev[j] else j
        total[i, 1:] = cost[i, 1:] + best[:-1]
        back[i, 1:] = arg[:-1]
    rows = np.empty(k, np.int64)
    rows[-1] = int(np.argmin(total[-1]))
    for i in range(k - 1, 0, -1):
        rows[i - 1] = back[i, rows[i]]
    return rows


def azimuth_columns(az: np.ndarray, width: int) -> np.ndarray:
    """Waymo column convention (§B.3, identity extrinsic): column 0 at +pi (rear), clockwise."""
    c = np.floor(width * (np.pi - az.astype(np.float64)) / TWO_PI).astype(np.int64)
    return np.mod(c, width)


def separate_columns(row: np.ndarray, col: np.ndarray, az: np.ndarray, width: int) -> tuple[np.ndarray, int, int]:
    """Move a point that shares its (row, col) to the free adjacent column on its side of the pixel
    centre (then the other side); returns (columns, moved, still shared)."""
    key = row.astype(np.int64) * width + col
    order = np.argsort(key, kind="stable")
    dup = np.zeros(len(key), bool)
    dup[order[1:]] = key[order[1:]] == key[order[:-1]]
    if not dup.any():
        return col, 0, 0
    col = col.copy()
    taken = set(key.tolist())
    frac = width * (np.pi - az.astype(np.float64)) / TWO_PI
    moved = shared = 0
    for i in np.flatnonzero(dup):
        side = 1 if frac[i] - np.floor(frac[i]) >= 0.5 else -1
        for step in (side, -side):
            c = (col[i] + step) % width
            k = int(row[i]) * width + c
            if k not in taken:
                taken.add(k)
                col[i] = c
                moved += 1
                break
        else:
            shared += 1
    return col, moved, shared


def refine_cuts(cuts: np.ndarray, elev: np.ndarray, weight: np.ndarray, half_window: int,
                min_gain: float) -> np.ndarray:
    """Move each ring cut (index of a ring's first point) to the elevation change point within
    ``half_window`` points of it, when that lowers the two-ring elevation sum of squares by more than
    ``min_gain`` (step 2b). Rings whose seams differ by a few degrees then split where the beam changes,
    and the extra cut such a ring makes where it passes the global seam again merges back into the
    true one (duplicates are dropped)."""
    c0 = np.concatenate([[0.0], np.cumsum(weight)])
    c1 = np.concatenate([[0.0], np.cumsum(weight * elev)])
    c2 = np.concatenate([[0.0], np.cumsum(weight * elev * elev)])

    def sse(a, b):  # weighted sum of squares of points a..b-1 (arrays of bounds)
        w, s1, s2 = c0[b] - c0[a], c1[b] - c1[a], c2[b] - c2[a]
        return np.where(w > 0, s2 - s1 * s1 / np.maximum(w, 1e-12), 0.0)

    n = len(elev)
    out = cuts.copy()
    for i, c in enumerate(cuts):
        # never cross the neighbouring cuts: a window holds one ring boundary
        lo = max(int(cuts[i - 1]) + 1 if i else 1, int(c) - half_window)
        hi = min(int(cuts[i + 1]) - 1 if i + 1 < len(cuts) else n - 1, int(c) + half_window)
        if hi <= lo:
            continue
        a = max(lo - half_window, int(cuts[i - 1]) if i else 0)
        b = min(hi + half_window, int(cuts[i + 1]) if i + 1 < len(cuts) else n)
        s = np.arange(lo, hi + 1)
        cost = sse(np.full_like(s, a), s) + sse(s, np.full_like(s, b))
        here = sse(np.array([a]), np.array([c]))[0] + sse(np.array([c]), np.array([b]))[0]
        j = int(np.argmin(cost))
        if here - cost[j] > min_gain:
            out[i] = s[j]
    return np.unique(out)


def ring_elevations(cuts: np.ndarray, elev: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Median elevation of each ring (of its far points when it has any)."""
    bounds = np.concatenate([[0], cuts, [len(elev)]])
    out = np.empty(len(bounds) - 1)
    for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        e, f = elev[a:b], far[a:b]
        out[r] = np.median(e[f]) if f.any() else np.median(e)
    return out


def merge_slivers(cuts: np.ndarray, u: np.ndarray, elev: np.ndarray, far: np.ndarray, max_span: float,
                  reference: np.ndarray) -> np.ndarray:
    """Drop the cut between a sliver (a 'ring' sweeping less than ``max_span``) and the neighbour whose
    elevation it shares (within a third of the local beam spacing). Slivers appear when ring seams
    differ by more than the backward tolerance: the ring passes the global seam a second time."""
    spacing = np.abs(np.diff(reference))
    while len(cuts):
        bounds = np.concatenate([[0], cuts, [len(elev)]])
        med = ring_elevations(cuts, elev, far)
        span = u[bounds[1:] - 1] - u[bounds[:-1]]
        best = None
        for r in np.argsort(span):
            if span[r] >= max_span:
                break
            tol = spacing[min(int(np.argmin(np.abs(reference - med[r]))), len(spacing) - 1)] / 3
            for nb in (r - 1, r + 1):
                if 0 <= nb < len(med) and abs(med[nb] - med[r]) < tol:
                    best = min(r, nb)  # the cut between r and nb is cuts[min(r, nb)]
                    break
            if best is not None:
                break
        if best is None:
            return cuts
        cuts = np.delete(cuts, best)
    return cuts


def recover_rings(xyz: np.ndarray, width: int = 2048, reference: np.ndarray | None = None,
                  back_tol_deg: float = 5.0, min_range: float = 3.0, window_deg: float = 15.0) -> RingRecovery:
    """Rows and columns of a scan in KITTI file order (§E.4, module docstring).

    ``reference``: nominal beam elevations in row order (default :func:`hdl64e_inclinations`, 64 rows);
    its length is the number of rows M. Elevations for the seam search and the per-ring medians use
    points beyond ``min_range`` metres (near returns carry the lasers' mounting offsets), all points
    when a ring has none that far. ``window_deg``: how far (in sweep angle, converted to points) a
    ring cut may move to the elevation change point.
    """
    reference = hdl64e_inclinations() if reference is None else np.asarray(reference, np.float64)
    n = xyz.shape[0]
    x, y, z = (xyz[:, i].astype(np.float64) for i in range(3))
    az = np.arctan2(y, x)
    rxy = np.hypot(x, y)
    elev = np.arctan2(z, rxy)
    far = np.hypot(rxy, z) > min_range
    weight = np.where(far, 1.0, 1e-3)
    u = sweep_angle(az, np.radians(back_tol_deg))
    seam = estimate_seam(u, elev, weight) if n > 1 else 0.0
    cuts = np.unique(_cuts(u, np.array([seam]))[0])
    cuts = cuts[(cuts > 0) & (cuts < n)]
    if len(cuts):
        # noise floor of the elevation within a ring: a cut moves only for a clear (5 sigma) gain
        bounds = np.concatenate([[0], cuts, [n]])
        var = [np.var(elev[a:b][far[a:b]]) for a, b in zip(bounds[:-1], bounds[1:]) if far[a:b].sum() > 10]
        sigma2 = float(np.median(var)) if var else 0.0
        per_deg = n / (360.0 * (len(cuts) + 1))
        cuts = refine_cuts(cuts, elev, weight, max(4, int(round(window_deg * per_deg))), 25.0 * sigma2 + 1e-12)
        cuts = merge_slivers(cuts, u, elev, far, np.radians(window_deg), reference)
    ring = np.searchsorted(cuts, np.arange(n), side="right")
    k = len(cuts) + 1
    ring_elev = ring_elevations(cuts, elev, far)
    rows = anchor_rows(ring_elev, reference)
    row = rows[ring]
    m = len(reference)
    incl = reference.copy()
    if k:
        # empty rows: the reference shifted by the offset its nearest found rows show
        resid = np.interp(np.arange(m), rows, ring_elev - reference[rows])
        incl = reference + resid
        incl[rows] = ring_elev
    col, moved, shared = separate_columns(row, azimuth_columns(az, width), az, width)
    return RingRecovery(ring.astype(np.int32), row.astype(np.int16), col.astype(np.int16), incl.astype(np.float32),
                        seam, k, int((np.diff(ring_elev) >= 0).sum()), moved, shared)
