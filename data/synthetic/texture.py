"""Procedural materials: hash value-noise, per-instance surface patterns, road markings, sky.

Everything is a pure function of a surface point and integer seeds (no random state), so a surface
looks the same from every camera and in every frame, and textures move rigidly with their object
(patterns are evaluated in the primitive's local frame). Each instance gets its own seed, so two cars
of similar paint still differ in pattern: colour-based pairwise losses and SAM-style segmenters get
real intra- and inter-object edges to work with.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# texture kinds, stored in Prims.tex[:, 0]
TEX_NOISE, TEX_FACADE, TEX_STRIPES, TEX_PAVING, TEX_GLASS, TEX_WHEEL, TEX_FOLIAGE, TEX_PAINT = range(8)

# ground layout vector (numba-friendly): indices into the ``layout`` array
L_LANE_W, L_NLANES, L_BIKE_W, L_PARK_W, L_ROAD_HALF, L_SIDEWALK_OUT, L_SEED = range(7)

_M32 = 0xFFFFFFFF


@njit(cache=True, inline="always")
def _hash(ix, iy, iz, seed):
    """32-bit integer hash of a lattice point to [0, 1) (lowbias32-style mixing)."""
    h = ((ix & _M32) * 73856093) ^ ((iy & _M32) * 19349663) ^ ((iz & _M32) * 83492791) ^ ((seed & _M32) * 2654435)
    h &= _M32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _M32
    h ^= h >> 15
    h = (h * 0x2C1B3C6D) & _M32
    h ^= h >> 16
    return h * (1.0 / 4294967296.0)


@njit(cache=True, inline="always")
def value_noise3(x, y, z, seed):
    """Smooth 3D value noise in [0, 1): trilinear blend of hashed lattice values, smoothstep weights."""
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    ix, iy, iz = np.int64(fx), np.int64(fy), np.int64(fz)
    tx, ty, tz = x - fx, y - fy, z - fz
    tx, ty, tz = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty), tz * tz * (3 - 2 * tz)
    c000, c100 = _hash(ix, iy, iz, seed), _hash(ix + 1, iy, iz, seed)
    c010, c110 = _hash(ix, iy + 1, iz, seed), _hash(ix + 1, iy + 1, iz, seed)
    c001, c101 = _hash(ix, iy, iz + 1, seed), _hash(ix + 1, iy, iz + 1, seed)
    c011, c111 = _hash(ix, iy + 1, iz + 1, seed), _hash(ix + 1, iy + 1, iz + 1, seed)
    a = c000 + tx * (c100 - c000)
    b = c010 + tx * (c110 - c010)
    c = c001 + tx * (c101 - c001)
    d = c011 + tx * (c111 - c011)
    e = a + ty * (b - a)
    f = c + ty * (d - c)
    return e + tz * (f - e)


@njit(cache=True, inline="always")
def value_noise2(x, y, seed):
    """Smooth 2D value noise in [0, 1)."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = np.int64(fx), np.int64(fy)
    tx, ty = x - fx, y - fy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    a = _hash(ix, iy, 0, seed) + tx * (_hash(ix + 1, iy, 0, seed) - _hash(ix, iy, 0, seed))
    b = _hash(ix, iy + 1, 0, seed) + tx * (_hash(ix + 1, iy + 1, 0, seed) - _hash(ix, iy + 1, 0, seed))
    return a + ty * (b - a)


@njit(cache=True)
def ground_material(x, y, layout):
    """Albedo (r, g, b) and LiDAR reflectivity of the ground at world (x, y).

    Road asphalt with lane markings (paint is retro-reflective, so it is bright in LiDAR intensity,
    as in real sweeps), a tinted bike lane, and a grass/dirt verge beyond the sidewalks.
    """
    seed = np.int64(layout[L_SEED])
    ay = abs(y)
    lane_w, nl = layout[L_LANE_W], layout[L_NLANES]
    traffic = nl * lane_w
    bike_out = traffic + layout[L_BIKE_W]
    if ay < layout[L_ROAD_HALF]:
        n = 0.6 * value_noise2(x * 2.0, y * 2.0, seed) + 0.4 * value_noise2(x * 0.2, y * 0.2, seed + 1)
        g = 0.2 + 0.12 * n
        r, gg, b, refl = g, g, g * 1.04, 0.1 + 0.05 * n
        if traffic <= ay < bike_out:  # bike lane: reddish surface
            r, gg, b = g * 1.45, g * 0.9, g * 0.85
        paint = False
        yellow = False
        if 0.05 < ay < 0.17:  # double yellow centre line
            paint, yellow = True, True
        for k in range(1, np.int64(nl)):  # dashed lane separators
            if abs(ay - k * lane_w) < 0.07 and (x / 9.0 - np.floor(x / 9.0)) < 0.35:
                paint = True
        if abs(ay - traffic) < 0.08:  # solid edge line
            paint = True
        if abs(ay - bike_out) < 0.06 and (x / 3.0 - np.floor(x / 3.0)) < 0.5:
            paint = True
        if paint:
            wear = 0.75 + 0.25 * value_noise2(x * 3.0, y * 3.0, seed + 2)
            if yellow:
                r, gg, b = 0.85 * wear, 0.7 * wear, 0.2 * wear
            else:
                r, gg, b = 0.9 * wear, 0.9 * wear, 0.88 * wear
            refl = 0.75
        return r, gg, b, refl
    if ay < layout[L_SIDEWALK_OUT]:
        return 0.6, 0.6, 0.58, 0.3
    n = value_noise2(x * 0.7, y * 0.7, seed + 3)
    m = value_noise2(x * 4.0, y * 4.0, seed + 4)
    grass = 0.3 + 0.5 * n
    return (0.28 + 0.15 * m) * (1 - grass) + 0.22 * grass, (0.26 + 0.1 * m) * (1 - grass) + 0.38 * grass, \
        0.2 * (1 - grass) + 0.12 * grass, 0.3


@njit(cache=True)
def sky_color(dz):
    """Sky gradient from a hazy horizon to a blue zenith, by the ray's elevation."""
    e = max(dz, 0.0) ** 0.5
    return 0.8 - 0.45 * e, 0.84 - 0.3 * e, 0.9 - 0.08 * e


@njit(cache=True)
def surface_albedo(kind, freq, amp, seed, base, px, py, pz, lnx, lny, lnz, hy, hz, x, y):
    """Albedo of a primitive at local point (px, py, pz) with local normal (lnx, lny, lnz).

    ``hy, hz`` are the primitive's local half width and height (facades count floors from their base,
    vehicle lamps sit relative to the body's corners); ``x, y`` the world position (paving joints are
    world-anchored so adjacent slabs line up).
    """
    r, g, b = float(base[0]), float(base[1]), float(base[2])
    if kind == TEX_FACADE:
        # windows on a floor grid; the ground floor has tall shop windows; roofs are plain
        n = value_noise3(px * 1.5, py * 1.5, pz * 1.5, seed)
        shade = 1.0 + amp * (n - 0.5)
        if abs(lnz) > 0.5:
            return 0.45 * shade, 0.43 * shade, 0.42 * shade
        u = px if abs(lny) > abs(lnx) else py
        zb = pz + hz - 1.0  # boxes are sunk 1 m into the ground
        fu = u / freq - np.floor(u / freq)
        if zb < 3.6:
            win = 0.5 < zb < 3.0 and 0.08 < fu < 0.92
        else:
            fz = (zb - 3.6) / 3.2 - np.floor((zb - 3.6) / 3.2)
            win = 0.3 < fz < 0.8 and 0.25 < fu < 0.75
        if win:
            lit = _hash(np.int64(np.floor(u / freq)), np.int64(np.floor(zb / 3.2)), 7, seed)
            if lit > 0.85:
                return 0.75, 0.65, 0.45
            return 0.12 + 0.1 * lit, 0.15 + 0.1 * lit, 0.2 + 0.12 * lit
        return r * shade, g * shade, b * shade
    if kind == TEX_GLASS:
        s = 0.6 + 0.4 * value_noise3(px * 2, py * 2, pz * 2, seed)
        return 0.1 + 0.25 * s * max(lnz, 0.0) + 0.05 * s, 0.12 + 0.25 * s * max(lnz, 0.0) + 0.06 * s, \
            0.15 + 0.3 * s * max(lnz, 0.0) + 0.08 * s
    if kind == TEX_WHEEL:
        if abs(lnz) > 0.5 and px * px + py * py < (0.55 * freq) ** 2:  # hub cap on the flat side
            return 0.55, 0.56, 0.58
        return 0.05, 0.05, 0.055
    if kind == TEX_PAVING:
        fx, fy = x / freq - np.floor(x / freq), y / freq - np.floor(y / freq)
        joint = fx < 0.04 or fy < 0.04
        n = value_noise3(px * 3, py * 3, pz * 3, seed)
        k = (0.75 if joint else 1.0) * (1.0 + amp * (n - 0.5))
        return r * k, g * k, b * k
    if kind == TEX_STRIPES:
        s = 0.5 + 0.5 * np.sin(6.2832 * freq * pz + seed * 0.37)
        n = value_noise3(px * 6, py * 6, pz * 6, seed)
        k = 1.0 - (amp if s > 0.5 else 0.0) + 0.15 * (n - 0.5)
        return r * k, g * k, b * k
    if kind == TEX_FOLIAGE:
        n = value_noise3(px * freq, py * freq, pz * freq, seed)
        m = value_noise3(px * freq * 3, py * freq * 3, pz * freq * 3, seed + 1)
        k = 0.55 + amp * (0.6 * n + 0.4 * m)
        return r * k, g * k, b * k
    if kind == TEX_PAINT and abs(lnx) > 0.5 and hz > 0.1:
        # vehicle front/back: lamps at the upper corners, a number plate low in the middle
        u, w = py / hy, (pz + hz) / (2 * hz)
        if abs(u) > 0.62 and 0.55 < w < 0.85:
            if lnx > 0:
                return 0.95, 0.93, 0.8
            return 0.75, 0.06, 0.05
        if abs(u) < 0.2 and 0.2 < w < 0.45:
            return 0.9, 0.9, 0.86
        if lnx > 0 and abs(u) < 0.45 and 0.5 < w < 0.8:
            return 0.08, 0.08, 0.09
    # TEX_NOISE and TEX_PAINT: per-instance value noise in local coordinates
    n = value_noise3(px * freq, py * freq, pz * freq, seed)
    k = 1.0 + amp * (2.0 * n - 1.0)
    return r * k, g * k, b * k
