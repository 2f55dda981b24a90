"""Waymo geometry, pure numpy: range images to vehicle-frame points, camera projections, 2D boxes.

Everything follows ``data_formats.md`` section B; the formulas are cited where they are used.
Computation is in float64 (ranges reach 75 m and float32 products would cost ~1e-5 m each step).
"""
from __future__ import annotations

import numpy as np


def inclinations_rows(values: np.ndarray | None, vmin: float, vmax: float, height: int) -> np.ndarray:
    """(H,) float64 beam inclinations in range-image row order (row 0 = highest beam), B.2.

    ``values`` is the stored ascending table (lowest beam first) or None/empty for a uniform lidar,
    whose rows sit at half-row offsets between ``vmin`` and ``vmax``.
    """
    if values is not None and len(values) > 0:
        asc = np.asarray(values, np.float64)
        if asc.shape != (height,):
            raise ValueError(f"{asc.shape[0]} beam inclinations for a range image of {height} rows")
    else:
        asc = vmin + (np.arange(height, dtype=np.float64) + 0.5) / height * (vmax - vmin)
    return asc[::-1].copy()


def uniform_min_max(incl_rows: np.ndarray) -> tuple[float, float] | None:
    """(min, max) when ``incl_rows`` is a B.2 uniform table (so it can be stored without values), else None."""
    r = np.asarray(incl_rows, np.float64)
    h = r.shape[0]
    if h < 2:
        return None
    span = (r[0] - r[-1]) * h / (h - 1)
    vmax = r[0] + 0.5 * span / h
    vmin = vmax - span
    if np.allclose(inclinations_rows(None, vmin, vmax, h), r, rtol=0, atol=1e-6):
        return float(vmin), float(vmax)
    return None


def azimuths(width: int, extrinsic: np.ndarray) -> np.ndarray:
    """(W,) float64 sensor-frame azimuth of every column, B.3.

    ``az[c] = pi (1 - (2c + 1) / W) - yaw``, where yaw is the lidar's yaw in the vehicle frame, so
    that after the extrinsic rotation column c looks at vehicle azimuth ``pi (1 - (2c + 1) / W)``.
    """
    e = np.asarray(extrinsic, np.float64)
    yaw = np.arctan2(e[1, 0], e[0, 0])
    c = np.arange(width, dtype=np.float64)
    return np.pi * (1.0 - (2.0 * c + 1.0) / width) - yaw


def euler_to_rotation(roll, pitch, yaw) -> np.ndarray:
    """(..., 3, 3) rotation ``Rz(yaw) Ry(pitch) Rx(roll)`` (B.6 step 2), broadcast over the inputs."""
    roll, pitch, yaw = (np.asarray(a, np.float64) for a in (roll, pitch, yaw))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    out = np.empty(np.broadcast(roll, pitch, yaw).shape + (3, 3))
    out[..., 0, 0] = cy * cp
    out[..., 0, 1] = cy * sp * sr - sy * cr
    out[..., 0, 2] = cy * sp * cr + sy * sr
    out[..., 1, 0] = sy * cp
    out[..., 1, 1] = sy * sp * sr + cy * cr
    out[..., 1, 2] = sy * sp * cr - cy * sr
    out[..., 2, 0] = -sp
    out[..., 2, 1] = cp * sr
    out[..., 2, 2] = cp * cr
    return out


def rotation_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw) with ``euler_to_rotation(roll, pitch, yaw) == rot`` (|pitch| < pi/2)."""
    r = np.asarray(rot, np.float64)
    pitch = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    return float(np.arctan2(r[2, 1], r[2, 2])), float(pitch), float(np.arctan2(r[1, 0], r[0, 0]))


def valid_pixels(range_hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels with a return (``range > 0``), in row-major order (B.5)."""
    return np.nonzero(range_hw > 0)


def pixels_to_points(rho: np.ndarray, rows: np.ndarray, cols: np.ndarray, incl_rows: np.ndarray,
                     az: np.ndarray, extrinsic: np.ndarray, pixel_pose: np.ndarray | None = None,
                     frame_pose: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float64 vehicle-frame points of range-image pixels (B.4-B.6).

    ``rho`` are the ranges of pixels (``rows``, ``cols``). With ``pixel_pose`` ((H, W, 6) roll, pitch,
    yaw, x, y, z: world_from_vehicle when the pixel was measured; TOP only) and ``frame_pose``
    (world_from_vehicle of the frame), points move from "the vehicle at pixel time" into the frame's
    vehicle frame, so a moving ego's TOP points line up with the boxes (B.6). Pixels whose pose is
    all zero (real logs have some, B.6) are left in the vehicle frame rather than sent to the world
    origin: the compensation is a few centimetres to decimetres, an all-zero pose would be kilometres.
    """
    rho = np.asarray(rho, np.float64)
    phi, theta = incl_rows[rows], az[cols]
    cphi = np.cos(phi)
    p = np.stack([rho * cphi * np.cos(theta), rho * cphi * np.sin(theta), rho * np.sin(phi)], axis=1)
    e = np.asarray(extrinsic, np.float64)
    p = p @ e[:3, :3].T + e[:3, 3]
    if pixel_pose is not None:
        if frame_pose is None:
            raise ValueError("a pixel pose needs the frame pose (vehicle_pose) to be applied")
        pose = np.asarray(pixel_pose[rows, cols], np.float64)
        has = pose.any(axis=1)
        rot = euler_to_rotation(pose[has, 0], pose[has, 1], pose[has, 2])
        p_world = np.einsum("nij,nj->ni", rot, p[has]) + pose[has, 3:6]
        f = np.asarray(frame_pose, np.float64)
        p[has] = (p_world - f[:3, 3]) @ f[:3, :3]  # inverse(frame_pose): R^T (p - t), row-vector form
    return p


def decode_projections(proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 6) integer camera projections (B.7) -> cam_id (N, 2) int8, cam_uv (N, 2, 2) float32.

    Waymo's integers are pixel indices (coordinate truncated; pixel i spans [i, i+1)), so the
    continuous estimate is the pixel centre ``i + 0.5``; ``floor(u)`` gives Waymo's value back.
    Slots with camera 0 ("none") get uv = -1, as ``Points`` documents.
    """
    proj = np.asarray(proj)
    cam_id = proj[:, [0, 3]].astype(np.int8)
    uv = np.stack([proj[:, [1, 2]], proj[:, [4, 5]]], axis=1).astype(np.float32) + np.float32(0.5)
    uv[cam_id == 0] = -1.0
    return cam_id, uv


def encode_projections(cam_id: np.ndarray, cam_uv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_projections`: (N, 6) int32, ``floor`` of each coordinate, zeros for no camera."""
    out = np.zeros((cam_id.shape[0], 6), np.int32)
    for slot in (0, 1):
        has = cam_id[:, slot] > 0
        out[has, 3 * slot] = cam_id[has, slot]
        out[has, 3 * slot + 1: 3 * slot + 3] = np.floor(cam_uv[has, slot]).astype(np.int32)
    return out


def boxes_center_to_corners(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(K, 4) x1, y1, x2, y2 from box centre (x, y) and size (x = width, y = height), A.7."""
    c, s = np.asarray(center, np.float64).reshape(-1, 2), np.asarray(size, np.float64).reshape(-1, 2)
    return np.concatenate([c - s / 2, c + s / 2], axis=1)


def clip_boxes(xyxy: np.ndarray, width: np.ndarray, height: np.ndarray, min_size: float = 1.0):
    """Clip boxes to their image and flag the usable ones: (clipped (K, 4), keep (K,) bool).

    A box is dropped when a coordinate is not finite or, after clipping, it is narrower or shorter
    than ``min_size`` pixels (it lay outside the image or was degenerate to begin with).
    """
    b = np.asarray(xyxy, np.float64).copy()
    finite = np.isfinite(b).all(axis=1)
    b[~finite] = 0.0
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    b[:, 0], b[:, 2] = np.clip(b[:, 0], 0, w), np.clip(b[:, 2], 0, w)
    b[:, 1], b[:, 3] = np.clip(b[:, 1], 0, h), np.clip(b[:, 3], 0, h)
    keep = finite & (b[:, 2] - b[:, 0] >= min_size) & (b[:, 3] - b[:, 1] >= min_size)
    return b, keep
