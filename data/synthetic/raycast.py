"""Numba ray caster for the synthetic scenes: primitives, a heightfield ground, frustum culling.

A scene is a struct of arrays of primitives (oriented boxes, capped cylinders, ellipsoids; each with a
centre, a rotation ``world_from_local`` and half extents) plus an analytic ground ``z = G(x, y)``.
Every sensor (a camera or the spinning LiDAR) casts rays from one origin, so rays are grouped into
*tiles* (a pixel block, or a block of range-image rows x columns) whose rays all lie inside a convex
cone bounded by planes through the origin. A primitive whose oriented bounding box lies entirely
behind one of a tile's planes cannot be hit by any ray of that tile (separating-plane test); binning is
two-level (coarse tiles, then fine tiles test only their parent's list). Lists are ordered by a lower
bound of the primitive's distance, so a ray stops testing once that bound exceeds its nearest hit.

All kernels are deterministic: each ray (or tile) writes only its own outputs, so ``prange`` scheduling
cannot change results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

KIND_BOX, KIND_CYLINDER, KIND_ELLIPSOID = 0, 1, 2
HIT_NONE, HIT_GROUND = -1, -2  # values of the per-ray primitive index besides real primitives
# how a surface answers a LiDAR beam: an echo; an echo while part of the beam goes on (foliage); or,
# sometimes, no echo at all (glass: real sweeps show points behind windscreens, inside cars)
LIDAR_OPAQUE, LIDAR_FOLIAGE, LIDAR_GLASS = 0, 1, 2
NGROUND_WAVES = 4


@dataclass
class Prims:
    """Primitives as a struct of arrays (world frame). ``rot[p]`` maps local to world axes."""

    kind: np.ndarray  # (P,) int8: KIND_BOX (half = half sizes), KIND_CYLINDER (radius, radius,
    #                   half height; axis = local z), KIND_ELLIPSOID (semi-axes)
    center: np.ndarray  # (P, 3) float64
    rot: np.ndarray  # (P, 3, 3) float64, world_from_local
    half: np.ndarray  # (P, 3) float64
    inst: np.ndarray  # (P,) int32, object id, 0 = background
    sem: np.ndarray  # (P,) int8, class id or BACKGROUND
    color: np.ndarray  # (P, 3) float32, base albedo in [0, 1]
    refl: np.ndarray  # (P,) float32, LiDAR reflectivity
    tex: np.ndarray  # (P, 4) float32: texture kind, frequency, amplitude, seed (see texture.py)
    lidar_mode: np.ndarray  # (P,) int8: LIDAR_OPAQUE, LIDAR_FOLIAGE or LIDAR_GLASS

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def select(self, idx: np.ndarray) -> "Prims":
        return Prims(**{k: v[idx] for k, v in self.__dict__.items()})


# ----------------------------------------------------------------------------------------------
# ground: z = z0 + sx x + sy y + sum_m A_m sin(kx_m x + ky_m y + phi_m)   (params: 3 + 4 * waves)
# ----------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def ground_height(g, x, y):
    """Height z of the ground surface (a plane plus ``NGROUND_WAVES`` sine waves, parameters ``g``) at x, y."""
    z = g[0] + g[1] * x + g[2] * y
    for m in range(NGROUND_WAVES):
        b = 3 + 4 * m
        z += g[b] * np.sin(g[b + 1] * x + g[b + 2] * y + g[b + 3])
    return z


@njit(cache=True, inline="always")
def ground_gradient(g, x, y):
    """(dz/dx, dz/dy) of ``ground_height`` at x, y."""
    gx, gy = g[1], g[2]
    for m in range(NGROUND_WAVES):
        b = 3 + 4 * m
        c = g[b] * np.cos(g[b + 1] * x + g[b + 2] * y + g[b + 3])
        gx += c * g[b + 1]
        gy += c * g[b + 2]
    return gx, gy


@njit(cache=True, inline="always")
def _hit_ground(g, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """First intersection with the ground: the sloped plane, then Newton steps onto the bumps."""
    den = dz - g[1] * dx - g[2] * dy
    if den > -1e-9:
        return np.inf
    t = (g[0] + g[1] * ox + g[2] * oy - oz) / den
    for _ in range(3):  # the bumps are centimetres, so three damped Newton steps converge
        x, y = ox + t * dx, oy + t * dy
        f = oz + t * dz - ground_height(g, x, y)
        gx, gy = ground_gradient(g, x, y)
        fp = min(dz - gx * dx - gy * dy, 0.5 * den)  # keep the slope negative for grazing rays
        t -= f / fp
    if t <= tmin or t >= tmax:
        return np.inf
    return t


# ----------------------------------------------------------------------------------------------
# primitive intersections in the primitive's local frame; return (t, local normal)
# ----------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _slab(o, d, h, t0, t1, ax, a):
    if abs(d) < 1e-12:
        if abs(o) > h:
            return 1.0, 0.0, ax  # empty interval
        return t0, t1, ax
    inv = 1.0 / d
    ta, tb = (-h - o) * inv, (h - o) * inv
    if ta > tb:
        ta, tb = tb, ta
    if ta > t0:
        t0, ax = ta, a
    if tb < t1:
        t1 = tb
    return t0, t1, ax


@njit(cache=True, inline="always")
def _hit_box(ox, oy, oz, dx, dy, dz, hx, hy, hz, tmin):
    t0, t1, ax = -np.inf, np.inf, -1
    t0, t1, ax = _slab(ox, dx, hx, t0, t1, ax, 0)
    t0, t1, ax = _slab(oy, dy, hy, t0, t1, ax, 1)
    t0, t1, ax = _slab(oz, dz, hz, t0, t1, ax, 2)
    if t0 > t1 or t0 <= tmin or ax < 0:  # rays starting inside a box see nothing of it
        return np.inf, 0.0, 0.0, 0.0
    if ax == 0:
        return t0, -np.sign(dx), 0.0, 0.0
    if ax == 1:
        return t0, 0.0, -np.sign(dy), 0.0
    return t0, 0.0, 0.0, -np.sign(dz)


@njit(cache=True, inline="always")
def _hit_cylinder(ox, oy, oz, dx, dy, dz, r, hz, tmin):
    best, nx, ny, nz = np.inf, 0.0, 0.0, 0.0
    a = dx * dx + dy * dy
    if a > 1e-12:
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - r * r
        disc = b * b - a * c
        if disc >= 0.0:
            t = (-b - np.sqrt(disc)) / a
            if t > tmin and abs(oz + t * dz) <= hz:
                best, nx, ny = t, (ox + t * dx) / r, (oy + t * dy) / r
    if abs(dz) > 1e-12:
        zc = -hz if dz > 0 else hz  # the cap facing the ray
        t = (zc - oz) / dz
        if tmin < t < best:
            px, py = ox + t * dx, oy + t * dy
            if px * px + py * py <= r * r:
                best, nx, ny, nz = t, 0.0, 0.0, np.sign(zc)
    return best, nx, ny, nz


@njit(cache=True, inline="always")
def _hit_ellipsoid(ox, oy, oz, dx, dy, dz, ax, ay, az, tmin):
    sx, sy, sz = ox / ax, oy / ay, oz / az
    ex, ey, ez = dx / ax, dy / ay, dz / az
    a = ex * ex + ey * ey + ez * ez
    b = sx * ex + sy * ey + sz * ez
    c = sx * sx + sy * sy + sz * sz - 1.0
    disc = b * b - a * c
    if disc < 0.0:
        return np.inf, 0.0, 0.0, 0.0
    t = (-b - np.sqrt(disc)) / a
    if t <= tmin:
        return np.inf, 0.0, 0.0, 0.0
    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
    nx, ny, nz = px / (ax * ax), py / (ay * ay), pz / (az * az)
    n = np.sqrt(nx * nx + ny * ny + nz * nz)
    return t, nx / n, ny / n, nz / n


# ----------------------------------------------------------------------------------------------
# culling
# ----------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _overlaps(planes, npl, ox, oy, oz, center, rot, half, p):
    """False when the primitive's oriented bounding box lies behind one of the tile's planes."""
    cx, cy, cz = center[p, 0] - ox, center[p, 1] - oy, center[p, 2] - oz
    for k in range(npl):
        nx, ny, nz = planes[k, 0], planes[k, 1], planes[k, 2]
        s = nx * cx + ny * cy + nz * cz
        r = 0.0
        for a in range(3):
            r += half[p, a] * abs(nx * rot[p, 0, a] + ny * rot[p, 1, a] + nz * rot[p, 2, a])
        if s + r < -1e-6:
            return False
    return True


@njit(cache=True, parallel=True)
def bin_tiles(planes, nplanes, parent, pstart, pitems, origin, center, rot, half):
    """Per tile, the primitives of its parent's list that may intersect the tile's cone (order kept)."""
    T = planes.shape[0]
    ox, oy, oz = origin[0], origin[1], origin[2]
    counts = np.zeros(T, np.int64)
    for t in prange(T):
        q = parent[t]
        n = 0
        for j in range(pstart[q], pstart[q + 1]):
            if _overlaps(planes[t], nplanes[t], ox, oy, oz, center, rot, half, pitems[j]):
                n += 1
        counts[t] = n
    start = np.zeros(T + 1, np.int64)
    start[1:] = np.cumsum(counts)
    items = np.empty(start[T], np.int32)
    for t in prange(T):
        q = parent[t]
        w = start[t]
        for j in range(pstart[q], pstart[q + 1]):
            p = pitems[j]
            if _overlaps(planes[t], nplanes[t], ox, oy, oz, center, rot, half, p):
                items[w] = p
                w += 1
    return start, items


# ----------------------------------------------------------------------------------------------
# tracing
# ----------------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def trace_kernel(origin, dirs, ray_tile, tmin, tmax, skip, tile_start, tile_items,
                 kind, rot, half, local_origin, dist_lb, ground):
    """Nearest hit per ray: distance (inf = none), primitive index (HIT_GROUND, HIT_NONE) and world normal."""
    N = dirs.shape[0]
    out_t = np.empty(N, np.float64)
    out_p = np.empty(N, np.int32)
    out_n = np.zeros((N, 3), np.float32)
    ox, oy, oz = origin[0], origin[1], origin[2]
    for i in prange(N):
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        lo = tmin[i]
        best = tmax[i]
        bp = HIT_NONE
        nwx, nwy, nwz = 0.0, 0.0, 0.0
        tg = _hit_ground(ground, ox, oy, oz, dx, dy, dz, lo, best)
        if tg < best:
            best, bp = tg, HIT_GROUND
            gx, gy = ground_gradient(ground, ox + tg * dx, oy + tg * dy)
            nn = np.sqrt(gx * gx + gy * gy + 1.0)
            nwx, nwy, nwz = -gx / nn, -gy / nn, 1.0 / nn
        tile = ray_tile[i]
        for j in range(tile_start[tile], tile_start[tile + 1]):
            p = tile_items[j]
            if dist_lb[p] >= best:
                break  # lists are sorted by this bound: nothing further can be nearer
            if p == skip[i]:
                continue
            # ray direction in the primitive's frame (rot^T d); the origin was transformed once
            lx = rot[p, 0, 0] * dx + rot[p, 1, 0] * dy + rot[p, 2, 0] * dz
            ly = rot[p, 0, 1] * dx + rot[p, 1, 1] * dy + rot[p, 2, 1] * dz
            lz = rot[p, 0, 2] * dx + rot[p, 1, 2] * dy + rot[p, 2, 2] * dz
            px, py, pz = local_origin[p, 0], local_origin[p, 1], local_origin[p, 2]
            k = kind[p]
            if k == KIND_BOX:
                t, nx, ny, nz = _hit_box(px, py, pz, lx, ly, lz, half[p, 0], half[p, 1], half[p, 2], lo)
            elif k == KIND_CYLINDER:
                t, nx, ny, nz = _hit_cylinder(px, py, pz, lx, ly, lz, half[p, 0], half[p, 2], lo)
            else:
                t, nx, ny, nz = _hit_ellipsoid(px, py, pz, lx, ly, lz, half[p, 0], half[p, 1], half[p, 2], lo)
            if t < best:
                best, bp = t, p
                nwx = rot[p, 0, 0] * nx + rot[p, 0, 1] * ny + rot[p, 0, 2] * nz
                nwy = rot[p, 1, 0] * nx + rot[p, 1, 1] * ny + rot[p, 1, 2] * nz
                nwz = rot[p, 2, 0] * nx + rot[p, 2, 1] * ny + rot[p, 2, 2] * nz
        if bp == HIT_NONE:
            best = np.inf
        out_t[i] = best
        out_p[i] = bp
        out_n[i, 0], out_n[i, 1], out_n[i, 2] = nwx, nwy, nwz
    return out_t, out_p, out_n


@dataclass
class Tiles:
    """Ray groups of one sensor: fine tiles (each with a coarse parent), as planes through the origin.

    ``planes[t, k]`` is an inward normal: every ray ``d`` of tile ``t`` has ``planes[t, k] . d >= 0``.
    """

    planes: np.ndarray  # (T, K, 3) float64
    nplanes: np.ndarray  # (T,) int64
    parent: np.ndarray  # (T,) int64 index into the coarse tiles
    coarse_planes: np.ndarray  # (Tc, K, 3)
    coarse_nplanes: np.ndarray  # (Tc,)


@dataclass
class Binned:
    """Per-sensor culling result: fine-tile primitive lists plus per-primitive sensor-relative data."""

    start: np.ndarray
    items: np.ndarray
    local_origin: np.ndarray  # (P, 3) the sensor origin in each primitive's frame
    dist_lb: np.ndarray  # (P,) lower bound on the distance from the origin to the primitive


def bounding_radius(prims: Prims) -> np.ndarray:
    """Radius of a sphere about each primitive's centre that contains it."""
    return np.linalg.norm(prims.half, axis=1)


def sensor_relative(prims: Prims, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local origin per primitive, distance lower bound per primitive) for rays from ``origin``."""
    rel = origin[None, :] - prims.center
    local_origin = np.einsum("pji,pj->pi", prims.rot, rel)  # rot^T (o - c)
    dist_lb = np.maximum(np.linalg.norm(rel, axis=1) - bounding_radius(prims), 0.0)
    return np.ascontiguousarray(local_origin), dist_lb


def cull(prims: Prims, origin: np.ndarray, tiles: Tiles, far: float) -> Binned:
    """Bin primitives into the sensor's tiles (root list: within ``far``, sorted near-to-far)."""
    local_origin, dist_lb = sensor_relative(prims, origin)
    order = np.argsort(dist_lb, kind="stable").astype(np.int32)
    order = order[dist_lb[order] < far]
    root_start = np.array([0, order.shape[0]], np.int64)
    nc = tiles.coarse_planes.shape[0]
    cstart, citems = bin_tiles(tiles.coarse_planes, tiles.coarse_nplanes, np.zeros(nc, np.int64),
                               root_start, order, origin, prims.center, prims.rot, prims.half)
    start, items = bin_tiles(tiles.planes, tiles.nplanes, tiles.parent, cstart, citems,
                             origin, prims.center, prims.rot, prims.half)
    return Binned(start, items, local_origin, dist_lb)


def brute_force_binned(prims: Prims, origin: np.ndarray, n_tiles: int) -> Binned:
    """Baseline without culling: every tile lists every primitive, and no early exit by distance."""
    local_origin, _ = sensor_relative(prims, origin)
    P = len(prims)
    start = np.arange(n_tiles + 1, dtype=np.int64) * P
    items = np.tile(np.arange(P, dtype=np.int32), n_tiles)
    return Binned(start, items, local_origin, np.zeros(P))


def trace(prims: Prims, ground: np.ndarray, origin: np.ndarray, binned: Binned, dirs: np.ndarray,
          ray_tile: np.ndarray, tmax: float | np.ndarray, tmin: float | np.ndarray = 0.0,
          skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cast rays ``origin + t * dirs`` (unit ``dirs``); returns (t, primitive index, world normal)."""
    n = dirs.shape[0]
    tmin_a = np.broadcast_to(np.asarray(tmin, np.float64), (n,)).copy()
    tmax_a = np.broadcast_to(np.asarray(tmax, np.float64), (n,)).copy()
    skip_a = np.full(n, -1, np.int32) if skip is None else skip.astype(np.int32)
    return trace_kernel(origin.astype(np.float64), np.ascontiguousarray(dirs, np.float64),
                        ray_tile.astype(np.int64), tmin_a, tmax_a, skip_a, binned.start, binned.items,
                        prims.kind, prims.rot, prims.half, binned.local_origin, binned.dist_lb, ground)
