"""Camera rendering: pinhole rays, tile frusta for culling, shading, instance masks and 2D boxes.

The model is the Waymo global-shutter pinhole without distortion (``Frame``'s ``Camera.project``):
camera axes x forward, y left, z up, ``u = c_u - f y / x``, ``v = c_v - f z / x``, pixel ``i`` spanning
``[i, i + 1)``. One ray per pixel through its centre; the ray caster's nearest hit gives colour, the
instance id (exact visible instance mask) and the depth buffer.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from PIL import Image

from ..frame import Boxes2D, Masks2D
from .config import CameraSpec, SynthConfig
from .objects import rot_y, rot_z
from .raycast import HIT_GROUND, Prims, Tiles
from .texture import ground_material, sky_color, surface_albedo

TILE = 16  # pixels per fine tile side
COARSE = 8  # fine tiles per coarse tile side


@dataclass
class CameraGeometry:
    camera_id: int
    width: int
    height: int
    intrinsic: np.ndarray  # (3, 3)
    extrinsic: np.ndarray  # (4, 4) vehicle_from_camera, Waymo camera axes


def camera_geometry(spec: CameraSpec, scale: float) -> CameraGeometry:
    """Intrinsics (principal point at the image centre) and extrinsic of one camera at ``scale``."""
    w, h = max(int(round(spec.width * scale)), 8), max(int(round(spec.height * scale)), 8)
    f = spec.focal * w / spec.width
    K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    E = np.eye(4)
    E[:3, :3] = rot_z(math.radians(spec.yaw_deg)) @ rot_y(math.radians(spec.pitch_deg))
    E[:3, 3] = spec.position
    return CameraGeometry(spec.camera_id, w, h, K, E)


def _cam_dirs(K: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Camera-frame directions (unnormalised, x = 1) through image points (u, v)."""
    return np.stack([np.ones_like(u), -(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1]], axis=-1)


def pixel_rays(geo: CameraGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Unit world-orientation directions through every pixel centre (row-major) and their fine tile."""
    v, u = np.meshgrid(np.arange(geo.height) + 0.5, np.arange(geo.width) + 0.5, indexing="ij")
    d = _cam_dirs(geo.intrinsic, u.ravel(), v.ravel()) @ geo.extrinsic[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ntx = -(-geo.width // TILE)
    tile = (v.ravel().astype(np.int64) // TILE) * ntx + u.ravel().astype(np.int64) // TILE
    return d, tile


def _rect_planes(geo: CameraGeometry, u0, u1, v0, v1) -> np.ndarray:
    """(T, 5, 3) inward plane normals of the pyramids through pixel rectangles, plus the image plane."""
    corners = np.stack([_cam_dirs(geo.intrinsic, u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))], 1)
    centre = corners.mean(axis=1)
    n = np.cross(corners, np.roll(corners, -1, axis=1))
    n *= np.sign(np.einsum("tkc,tc->tk", n, centre))[..., None]
    fwd = np.broadcast_to(np.array([1.0, 0.0, 0.0]), (n.shape[0], 1, 3))
    planes = np.concatenate([n, fwd], axis=1) @ geo.extrinsic[:3, :3].T
    return planes / np.linalg.norm(planes, axis=-1, keepdims=True)


def camera_tiles(geo: CameraGeometry) -> Tiles:
    """Fine 16x16-pixel tiles with coarse 128x128 parents, as frusta in world orientation."""
    def grid(step):
        ny, nx = -(-geo.height // step), -(-geo.width // step)
        ty, tx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        u0, v0 = (tx * step).ravel().astype(float), (ty * step).ravel().astype(float)
        u1, v1 = np.minimum(u0 + step, geo.width), np.minimum(v0 + step, geo.height)
        return _rect_planes(geo, u0, u1, v0, v1), ty.ravel(), tx.ravel(), nx

    planes, ty, tx, _ = grid(TILE)
    cplanes, _, _, cnx = grid(TILE * COARSE)
    parent = (ty // COARSE) * cnx + tx // COARSE
    return Tiles(planes, np.full(len(planes), 5, np.int64), parent.astype(np.int64), cplanes,
                 np.full(len(cplanes), 5, np.int64))


@njit(cache=True, parallel=True)
def shade_kernel(origin, dirs, t, hit, normal, center, rot, half, color, tex, ground, layout, sun, fog):
    """Linear RGB per ray: textured albedo x (sky ambient + Lambert sun), haze, sky where no hit."""
    N = dirs.shape[0]
    out = np.empty((N, 3), np.float32)
    hr, hg, hb = sky_color(0.03)
    for i in prange(N):
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        p = hit[i]
        if p == -1:
            r, g, b = sky_color(dz)
            out[i, 0], out[i, 1], out[i, 2] = r, g, b
            continue
        ti = t[i]
        x, y, z = origin[0] + ti * dx, origin[1] + ti * dy, origin[2] + ti * dz
        nx, ny, nz = normal[i, 0], normal[i, 1], normal[i, 2]
        if p == HIT_GROUND:
            r, g, b, _ = ground_material(x, y, layout)
        else:
            qx, qy, qz = x - center[p, 0], y - center[p, 1], z - center[p, 2]
            lx = rot[p, 0, 0] * qx + rot[p, 1, 0] * qy + rot[p, 2, 0] * qz
            ly = rot[p, 0, 1] * qx + rot[p, 1, 1] * qy + rot[p, 2, 1] * qz
            lz = rot[p, 0, 2] * qx + rot[p, 1, 2] * qy + rot[p, 2, 2] * qz
            mx = rot[p, 0, 0] * nx + rot[p, 1, 0] * ny + rot[p, 2, 0] * nz
            my = rot[p, 0, 1] * nx + rot[p, 1, 1] * ny + rot[p, 2, 1] * nz
            mz = rot[p, 0, 2] * nx + rot[p, 1, 2] * ny + rot[p, 2, 2] * nz
            r, g, b = surface_albedo(np.int64(tex[p, 0]), tex[p, 1], tex[p, 2], np.int64(tex[p, 3]), color[p],
                                     lx, ly, lz, mx, my, mz, half[p, 1], half[p, 2], x, y)
        lam = nx * sun[0] + ny * sun[1] + nz * sun[2]
        light = 0.38 + 0.12 * nz + 0.75 * max(lam, 0.0)
        f = 1.0 - np.exp(-(ti / fog) ** 2)  # haze: clear near field, fading into the horizon
        out[i, 0] = (1 - f) * r * light + f * hr
        out[i, 1] = (1 - f) * g * light + f * hg
        out[i, 2] = (1 - f) * b * light + f * hb
    return out


def shade(prims: Prims, ground, layout, sun, origin, dirs, t, hit, normal, fog: float) -> np.ndarray:
    return shade_kernel(origin, dirs, t, hit, normal, prims.center, prims.rot, prims.half, prims.color,
                        prims.tex, ground, layout, sun.astype(np.float64), float(fog))


def to_png(rgb_linear: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Tone-map (gamma 1/1.25), add sensor noise, quantise, and encode as PNG (deterministic, fast zlib)."""
    img = np.clip(np.power(np.clip(rgb_linear, 0, None), 0.8) * 255.0 + noise, 0, 255)
    img = np.rint(img).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=1)
    return img, buf.getvalue()


def masks_and_boxes(inst: np.ndarray, camera_id: int, min_area: int, ids_sorted: np.ndarray,
                    classes_sorted: np.ndarray) -> tuple[Boxes2D, Masks2D]:
    """Visible instance masks (>= ``min_area`` pixels) as RLE, and their tight boxes.

    Box convention: x1 = min column, y1 = min row, x2 = max column + 1, y2 = max row + 1 (pixel edges).
    """
    from pycocotools import mask as mask_utils

    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    ids = ids[counts >= min_area]
    xyxy = np.zeros((len(ids), 4), np.float32)
    rles = []
    for k, oid in enumerate(ids):
        m = inst == oid
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        xyxy[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        rles.append({"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]})
    cls = classes_sorted[np.searchsorted(ids_sorted, ids)].astype(np.int8)
    cam = np.full(len(ids), camera_id, np.int8)
    oid = ids.astype(np.int64)
    return Boxes2D(cam, cls, xyxy, oid), Masks2D(cam.copy(), oid.copy(), cls.copy(), rles)


def image_noise(cfg: SynthConfig, rng: np.random.Generator, shape) -> np.ndarray:
    """Per-pixel Gaussian sensor noise in grey levels."""
    return rng.standard_normal(size=shape, dtype=np.float32) * np.float32(cfg.image_noise)
