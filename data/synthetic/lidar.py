"""Spinning TOP LiDAR in Waymo range-image conventions, with mixed-pixel second returns.

Row ``r`` is the beam of inclination ``incl[r]`` (row 0 highest); column ``c`` has azimuth
``az[c] = pi (1 - (2c + 1) / W)`` in the vehicle frame. Each pixel's beam has a footprint: besides the
central ray two sub-rays at +-``footprint`` columns are cast. Where they straddle a depth edge (a
silhouette), the pixel is a *mixed pixel*: the first return is the nearest surface in the footprint
and the second return the farthest one behind it, as the Waymo TOP LiDAR reports (its second return
is the last strong echo). Beams that hit tree crowns may also return from behind the foliage, and
beams that hit vehicle glass often give no echo there and return from behind the window instead.

Each point keeps the exact geometry of the sub-ray that produced it (xyz = origin + range * ray), so
labels stay exact; rebuilding xyz from (range, row, col) alone is accurate to the beam footprint.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..frame import BACKGROUND
from .config import SynthConfig
from .raycast import HIT_GROUND, HIT_NONE, LIDAR_FOLIAGE, LIDAR_GLASS, Binned, Prims, Tiles, cull, trace
from .texture import ground_material

TILE_ROWS, TILE_COLS = 4, 32  # fine range-image tiles
COARSE_ROWS, COARSE_COLS = 16, 128  # coarse parents (each spans well under pi in azimuth)


@dataclass
class Sweep:
    """LiDAR returns of one frame, vehicle frame, sorted by (return, row, col)."""

    xyz: np.ndarray  # (N, 3) float32
    range: np.ndarray  # (N,) float32
    intensity: np.ndarray
    elongation: np.ndarray
    return_index: np.ndarray  # (N,) int8
    row: np.ndarray  # (N,) int16
    col: np.ndarray  # (N,) int16
    semantic: np.ndarray  # (N,) int8
    instance: np.ndarray  # (N,) int32
    mixed: np.ndarray  # (N,) bool: the pixel straddles a depth edge (diagnostics, tests)


def beam_dirs(cfg: SynthConfig) -> np.ndarray:
    """(3, M, W, 3) unit directions: central ray, +footprint and -footprint azimuth sub-rays."""
    incl, az = cfg.inclinations(), cfg.azimuths()
    delta = cfg.footprint * 2 * np.pi / cfg.columns
    out = np.empty((3, cfg.beams, cfg.columns, 3))
    ce, se = np.cos(incl)[:, None], np.sin(incl)[:, None]
    for s, off in enumerate((0.0, delta, -delta)):
        a = az[None, :] + off
        out[s, ..., 0] = ce * np.cos(a)
        out[s, ..., 1] = ce * np.sin(a)
        out[s, ..., 2] = se
    return out


def _wedge_planes(a_lo, a_hi, e_lo, e_hi) -> np.ndarray:
    """(T, 4, 3) inward normals bounding the directions with azimuth in [a_lo, a_hi] (span < pi) and
    elevation in [e_lo, e_hi]. Elevation limits are cones; each is replaced by a plane through the
    origin that keeps the whole tile inside: the chord plane where the excluded side is convex at
    the two wedge edges, else the tangent plane at the mid azimuth (the excluded cone is convex)."""
    def d(a, e):
        return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1)

    am = (a_lo + a_hi) / 2
    tang = np.stack([-np.sin(am), np.cos(am), np.zeros_like(am)], -1)

    def bound(e, up):
        chord = np.cross(d(a_lo, e), d(a_hi, e))
        tangent = np.cross(tang, d(am, e))
        use_chord = (e < 0) if up else (e > 0)
        n = np.where(use_chord[:, None], chord, tangent)
        sgn = np.sign(n[:, 2]) * (1 if up else -1)
        return n * sgn[:, None]

    n1 = np.stack([-np.sin(a_lo), np.cos(a_lo), np.zeros_like(a_lo)], -1)
    n2 = np.stack([np.sin(a_hi), -np.cos(a_hi), np.zeros_like(a_hi)], -1)
    planes = np.stack([n1, n2, bound(e_lo, True), bound(e_hi, False)], 1)
    return planes / np.linalg.norm(planes, axis=-1, keepdims=True)


def lidar_tiles(cfg: SynthConfig) -> tuple[Tiles, np.ndarray]:
    """Range-image tiles (4 rows x 32 columns, coarse 16 x 128) and the fine tile of every ray."""
    incl, az = cfg.inclinations(), cfg.azimuths()
    M, W = cfg.beams, cfg.columns
    half = (cfg.footprint + 0.05) * 2 * np.pi / W  # sub-rays plus a margin
    eps = 1e-4

    def grid(tr, tc):
        nr, nc = -(-M // tr), -(-W // tc)
        r0, c0 = np.meshgrid(np.arange(nr) * tr, np.arange(nc) * tc, indexing="ij")
        r0, c0 = r0.ravel(), c0.ravel()
        r1, c1 = np.minimum(r0 + tr, M) - 1, np.minimum(c0 + tc, W) - 1
        planes = _wedge_planes(az[c1] - half, az[c0] + half, incl[r1] - eps, incl[r0] + eps)
        return planes, r0 // tr, c0 // tc, nc

    planes, tr, tc, nc = grid(TILE_ROWS, TILE_COLS)
    cplanes, _, _, cnc = grid(COARSE_ROWS, COARSE_COLS)
    parent = (tr * TILE_ROWS // COARSE_ROWS) * cnc + tc * TILE_COLS // COARSE_COLS
    tiles = Tiles(planes, np.full(len(planes), 4, np.int64), parent.astype(np.int64), cplanes,
                  np.full(len(cplanes), 4, np.int64))
    rows, cols = np.meshgrid(np.arange(M), np.arange(W), indexing="ij")
    ray_tile = (rows // TILE_ROWS) * nc + cols // TILE_COLS
    return tiles, np.tile(ray_tile.ravel(), 3)


@njit(cache=True)
def _ground_reflectivity(xy, layout):
    out = np.empty(xy.shape[0], np.float32)
    for i in range(xy.shape[0]):
        out[i] = ground_material(xy[i, 0], xy[i, 1], layout)[3]
    return out


def sweep(cfg: SynthConfig, prims: Prims, ground, layout, ego: np.ndarray, rng: np.random.Generator,
          binned: Binned | None = None) -> Sweep:
    """Cast the full sweep and compose first/second returns with noise, dropouts and labels."""
    M, W = cfg.beams, cfg.columns
    origin = ego + np.asarray(cfg.lidar_position)
    dirs = beam_dirs(cfg)
    tiles, ray_tile = lidar_tiles(cfg)
    if binned is None:
        binned = cull(prims, origin, tiles, cfg.max_range)
    flat = dirs.reshape(-1, 3)
    t, hit, nrm = trace(prims, ground, origin, binned, flat, ray_tile, cfg.max_range, cfg.min_range)

    # draw every random number up front, full-size, so the stream never depends on the scene
    u_drop, u_second, u_foliage = rng.random((3, M, W))
    u_glass = np.tile(rng.random(M * W), 3)  # one draw per pixel: its sub-rays pass or echo together
    # glass: some beams give no echo and continue to whatever lies behind (inside the car, or beyond)
    glass = np.flatnonzero((hit >= 0) & (u_glass < cfg.glass_pass))
    glass = glass[prims.lidar_mode[hit[glass]] == LIDAR_GLASS]
    if glass.size:
        t[glass], hit[glass], nrm[glass] = trace(prims, ground, origin, binned, flat[glass], ray_tile[glass],
                                                 cfg.max_range, t[glass] + 0.01, hit[glass])
    t, hit, nrm = t.reshape(3, M, W), hit.reshape(3, M, W), nrm.reshape(3, M, W, 3)
    noise = np.clip(rng.normal(0, cfg.range_noise, (2, M, W)), -cfg.range_noise_clip, cfg.range_noise_clip)
    n_int, n_el = rng.normal(0, 1, (2, 2, M, W))

    thr = lambda r: cfg.edge_threshold + 0.03 * r  # noqa: E731
    tc = t[0]
    near = np.argmin(t, axis=0)
    tn = np.take_along_axis(t, near[None], 0)[0]
    first = np.where(tn < tc - thr(np.where(np.isfinite(tn), tn, 0)), near, 0)
    t1 = np.take_along_axis(t, first[None], 0)[0]
    ok1 = np.isfinite(t1) & (u_drop >= cfg.dropout)
    tf = np.where(np.isfinite(t), t, -np.inf)
    far = np.argmax(tf, axis=0)
    t2 = np.take_along_axis(tf, far[None], 0)[0]
    mixed = ok1 & np.isfinite(t2) & (t2 > t1 + thr(t1))
    ok2 = mixed & (u_second < cfg.second_keep) & cfg.second_returns
    sub2, t2 = far, np.where(ok2, t2, np.inf)
    hit2 = np.take_along_axis(hit, far[None], 0)[0]
    nrm2 = np.take_along_axis(nrm, far[None, ..., None], 0)[0]

    # foliage: part of the beam passes through a crown and echoes from what lies behind it
    hit1 = np.take_along_axis(hit, first[None], 0)[0]
    safe = np.maximum(hit1, 0)
    leafy = ok1 & ~ok2 & (hit1 >= 0) & (prims.lidar_mode[safe] == LIDAR_FOLIAGE) & (u_foliage < cfg.foliage_pass) \
        & cfg.second_returns
    rr, cc = np.nonzero(leafy)
    if rr.size:
        d = dirs[first[rr, cc], rr, cc]
        tt, hh, nn = trace(prims, ground, origin, binned, d, ray_tile[rr * W + cc], cfg.max_range,
                           t1[rr, cc] + thr(t1[rr, cc]), hit1[rr, cc])
        good = np.isfinite(tt)
        rr, cc = rr[good], cc[good]
        sub2[rr, cc], t2[rr, cc], hit2[rr, cc], nrm2[rr, cc] = first[rr, cc], tt[good], hh[good], nn[good]
        ok2[rr, cc] = True

    parts = []
    for ret, ok, sub, tr_, hit_r in ((0, ok1, first, t1, hit1), (1, ok2, sub2, t2, hit2)):
        rows, cols = np.nonzero(ok)
        s = sub[rows, cols]
        d = dirs[s, rows, cols]
        n = (np.take_along_axis(nrm, first[None, ..., None], 0)[0] if ret == 0 else nrm2)[rows, cols]
        rng_m = tr_[rows, cols] + noise[ret, rows, cols]
        xyz_w = origin + rng_m[:, None] * d
        p = hit_r[rows, cols]
        is_obj = p >= 0
        pp = np.maximum(p, 0)
        refl = np.where(is_obj, prims.refl[pp], 0.0).astype(np.float32)
        gnd = p == HIT_GROUND
        if gnd.any():
            refl[gnd] = _ground_reflectivity(np.ascontiguousarray(xyz_w[gnd, :2]), layout)
        cosi = np.abs(np.einsum("ij,ij->i", d, n))
        mix = mixed[rows, cols]
        energy = np.where(ret == 1, 0.5, np.where(mix, 0.7, 1.0))
        inten = refl * (0.3 + 0.7 * cosi) * energy * (1 + 0.08 * n_int[ret, rows, cols])
        elong = 0.02 + 0.25 * (1 - cosi) + 0.3 * mix + 0.01 * np.abs(n_el[ret, rows, cols])
        parts.append(dict(
            xyz=(xyz_w - ego).astype(np.float32), range=rng_m.astype(np.float32),
            intensity=np.maximum(inten, 0).astype(np.float32), elongation=elong.astype(np.float32),
            return_index=np.full(rows.size, ret, np.int8), row=rows.astype(np.int16), col=cols.astype(np.int16),
            semantic=np.where(is_obj, prims.sem[pp], BACKGROUND).astype(np.int8),
            instance=np.where(is_obj, prims.inst[pp], 0).astype(np.int32), mixed=mix))
    assert HIT_NONE not in hit1[ok1]
    return Sweep(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
