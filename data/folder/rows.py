"""Range-image rows and columns of a point cloud from any spinning LiDAR (issue 18; ``data_formats.md`` §E.4
generalised from KITTI's 64 beams to any beam count).

DCS and SPG work on the range image, so every point needs a row (beam) and a column (azimuth bin). In order
of preference:

1. **ring column** (``ring`` in the point file): row = ring, or ``beams - 1 - ring`` when ring 0 is the
   lowest beam. Exact; most drivers (Velodyne, Ouster, Hesai, Livox spinning heads) publish it.
2. **beam inclinations** (``lidar.inclinations_deg`` in the calibration): row = the beam whose inclination is
   nearest the point's elevation seen from the sensor. Exact for a sensor without per-beam mounting offsets
   beyond a few metres; near returns of real sensors can land one beam off.
3. **scan order**: the points are in firing order, ring after ring, as KITTI's files
   (:func:`mwsis.data.kitti.rings.recover_rings`, with the beam count from ``dataset.yaml``), the sensor
   spinning either way (a clockwise sweep is mirrored for the recovery).

None works for a cloud that lost its order (shuffled, voxel-filtered, merged from several LiDARs or sweeps)
and has no ring column or inclinations: scan-order recovery then finds far more rings than beams, and the
reader stops with an error saying so instead of inventing rows.

Columns are the Waymo convention in the LiDAR frame (column 0 rearward, clockwise; ``rings.azimuth_columns``);
a point whose pixel is already taken by a neighbour of the same return moves to a free adjacent column.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kitti.rings import azimuth_columns, recover_rings, separate_columns, sweep_angle

FAR = 3.0  # metres: elevations of nearer points carry the lasers' mounting offsets


@dataclass
class Rows:
    row: np.ndarray  # (N,) int16
    col: np.ndarray  # (N,) int16
    inclinations: np.ndarray  # (M,) float32 radians, row 0 highest
    method: str  # "ring", "inclinations" or "scan order"
    moved: int  # points moved to a free adjacent column
    shared: int  # points still sharing a pixel (the later one overwrites it in the range image)


class RowRecoveryError(ValueError):
    """No row recovery can work on this cloud; the message says why and what to provide."""


def _elevation(xyz: np.ndarray) -> np.ndarray:
    return np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))


def group_medians(group: np.ndarray, elev: np.ndarray, far: np.ndarray, m: int) -> np.ndarray:
    """(m,) median elevation of each group id 0..m-1 (of its far points when it has any; NaN when empty).
    One sort instead of a full-array mask per group."""
    med = np.full(m, np.nan)
    # far points first within each group, so a group's far points are one leading run of its slice
    order = np.lexsort((~far, group))
    g, e, f = group[order], elev[order], far[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(g)]])):
        n_far = int(f[a:b].sum())
        med[g[a]] = np.median(e[a:a + n_far] if n_far else e[a:b])
    return med


def _row_medians(row: np.ndarray, elev: np.ndarray, far: np.ndarray, m: int) -> np.ndarray:
    """Median elevation per row (``group_medians``), extrapolated over empty rows."""
    med = group_medians(row, elev, far, m)
    have = np.flatnonzero(np.isfinite(med))
    if len(have) == 0:
        return np.zeros(m)
    if len(have) == 1:
        return np.full(m, med[have[0]])
    # extrapolate linearly from the nearest two known rows at each end
    x = np.arange(m)
    out = np.interp(x, have, med[have])
    lo, hi = have[:2], have[-2:]
    slope_lo = (med[lo[1]] - med[lo[0]]) / (lo[1] - lo[0])
    slope_hi = (med[hi[1]] - med[hi[0]]) / (hi[1] - hi[0])
    out[x < have[0]] = med[have[0]] + slope_lo * (x[x < have[0]] - have[0])
    out[x > have[-1]] = med[have[-1]] + slope_hi * (x[x > have[-1]] - have[-1])
    return out


def _columns(xyz: np.ndarray, row: np.ndarray, ret: np.ndarray, width: int) -> tuple[np.ndarray, int, int]:
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    col = azimuth_columns(az, width)
    moved = shared = 0
    for r in np.unique(ret):  # the two returns of one pulse share a pixel by design
        sel = np.flatnonzero(ret == r)
        c, m, s = separate_columns(row[sel], col[sel], az[sel], width)
        col[sel] = c
        moved, shared = moved + m, shared + s
    return col, moved, shared


def recover_rows(xyz_lidar: np.ndarray, width: int, ring: np.ndarray | None = None, ret: np.ndarray | None = None,
                 inclinations: np.ndarray | None = None, beams: int | None = None,
                 ring_order: str = "top_first") -> Rows:
    """Rows and columns of one LiDAR's points (module docstring for the order of methods).

    Args:
        xyz_lidar: (N, 3) points in the LiDAR's own frame (the sensor at the origin).
        width: range-image columns W.
        ring: (N,) integer ring index per point, or None.
        ret: (N,) return index (0 first, 1 second), or None for single-return clouds.
        inclinations: (M,) beam elevations in radians, highest first, or None.
        beams: the sensor's beam count (rows M) when known; required for scan-order recovery.
        ring_order: "top_first" (ring 0 is the highest beam) or "bottom_first".

    Raises:
        RowRecoveryError: rings outside ``0..beams-1``, or a cloud no method can order.
    """
    xyz = np.asarray(xyz_lidar, np.float64)
    n = xyz.shape[0]
    ret = np.zeros(n, np.int64) if ret is None else np.asarray(ret, np.int64)
    elev = _elevation(xyz)
    far = np.linalg.norm(xyz, axis=1) > FAR
    if ring is not None:
        ring = np.asarray(ring)
        if np.any(ring != np.round(ring)) or ring.min() < 0:
            raise RowRecoveryError("ring: values must be non-negative integers")
        ring = ring.astype(np.int64)
        m = beams or (len(inclinations) if inclinations is not None else int(ring.max()) + 1)
        if ring.max() >= m:
            raise RowRecoveryError(f"ring: value {int(ring.max())} but the sensor has {m} beams (points.beams or "
                                   "the calibration's inclinations)")
        row = ring if ring_order == "top_first" else m - 1 - ring
        incl = inclinations if inclinations is not None else _row_medians(row, elev, far, m)
        method = "ring"
    elif inclinations is not None:
        incl = np.asarray(inclinations, np.float64)
        if beams is not None and beams != len(incl):
            raise RowRecoveryError(f"points.beams is {beams} but the calibration lists {len(incl)} inclinations")
        # nearest beam: the inclinations decrease, so search the reversed (increasing) table
        asc = incl[::-1]
        k = np.clip(np.searchsorted(asc, elev), 1, len(asc) - 1)
        nearer_low = (elev - asc[k - 1]) < (asc[k] - elev)
        row = len(incl) - 1 - np.where(nearer_low, k - 1, k)
        method = "inclinations"
    else:
        if beams is None:
            raise RowRecoveryError("no ring column and no beam inclinations: rows can only come from scan order, "
                                   "which needs the sensor's beam count (points.beams in dataset.yaml)")
        if (ret > 0).any():
            raise RowRecoveryError("scan-order recovery reads one return per pulse; give a ring column or "
                                   "inclinations for multi-return clouds")
        # sensors spin either way: a clockwise sweep (azimuth falling in file order) is mirrored (y -> -y) for
        # the recovery, which follows a counter-clockwise one; columns come from the true azimuth below
        az = np.arctan2(xyz[:, 1], xyz[:, 0])
        step = np.mod(np.diff(az) + np.pi, 2 * np.pi) - np.pi
        mirrored = np.median(step) < 0 if len(step) else False
        scan = xyz * np.array([1.0, -1.0, 1.0]) if mirrored else xyz
        # a cloud in firing order sweeps about one revolution per beam; a shuffled one about one per two points
        az = -az if mirrored else az
        turns = int((sweep_angle(az, np.radians(5.0))[-1] - az[0]) / (2 * np.pi)) + 1
        rec = None
        if turns <= 1.25 * beams + 1:
            top, bottom = np.percentile(elev[far] if far.any() else elev, [99.5, 0.5])
            rec = recover_rings(scan, width, np.linspace(top, bottom, beams))
        if rec is None or rec.rings > 1.25 * beams or rec.non_monotone > max(2, 0.1 * rec.rings):
            found = turns if rec is None else rec.rings
            raise RowRecoveryError(
                f"the points are not in scan order: {found} rings found for {beams} beams"
                + ("" if rec is None else f" ({rec.non_monotone} out of elevation order)")
                + ". A shuffled, filtered or merged cloud has lost its order; give a ring column (points.columns: "
                "ring) or the beam inclinations (lidar.inclinations_deg)")
        if mirrored:
            col, moved, shared = _columns(xyz, rec.row.astype(np.int64), ret, width)
            return Rows(rec.row, col.astype(np.int16), rec.inclinations.astype(np.float32), "scan order", moved,
                        shared)
        return Rows(rec.row, rec.col, rec.inclinations.astype(np.float32), "scan order", rec.moved, rec.shared)
    col, moved, shared = _columns(xyz, row, ret, width)
    return Rows(row.astype(np.int16), col.astype(np.int16), np.asarray(incl, np.float32), method, moved, shared)
