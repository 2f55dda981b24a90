"""KITTI calibration and boxes in the mwsis conventions (``data_formats.md`` §E.2, §E.3, §B.8).

The Velodyne frame (x forward, y left, z up) is used as the vehicle frame. KITTI's image_2 camera is
the rectified camera-2 model ``P2 · R0_rect · Tr_velo_to_cam`` in OpenCV axes (x right, y down,
z forward). ``P2 = K [I | t]`` (zero skew, last row (0, 0, 1)), where ``t = K^-1 P2[:, 3]`` is camera 2's
offset from the rectified camera 0 in which labels live. So

    camera-2 (OpenCV) from Velodyne = [R0_rect R | R0_rect T + t]     (Tr_velo_to_cam = [R | T])

and ``Camera.extrinsic`` (vehicle_from_camera, Waymo camera axes x forward, y left, z up) is the inverse
of that, re-axed with X_waymo = Z, Y_waymo = -X, Z_waymo = -Y.

Pixel convention: KITTI (like OpenCV) puts pixel centres at integer coordinates; mwsis (like Waymo)
lets pixel i span [i, i+1). So the principal point moves by +0.5 px, and with ``intrinsic = K + 0.5``
and no distortion ``Camera.project`` reproduces ``P2 · R0_rect · Tr_velo_to_cam`` plus 0.5 exactly.
A label_2 box left..right / top..bottom names pixels (inclusive; KITTI clips boxes to [0, W-1]), so
it covers [left, right + 1) x [top, bottom + 1) in mwsis coordinates.
"""
from __future__ import annotations

import numpy as np

from ..frame import Boxes3D, Camera
from .formats import KittiCalib, KittiFormatError, KittiObject, wrap_angle

# Waymo camera axes from OpenCV camera axes: (x fwd, y left, z up) = (Z, -X, -Y).
WAYMO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
PIXEL_SHIFT = 0.5  # mwsis pixel coordinate = KITTI pixel coordinate + 0.5 (module docstring)


def box_to_edges(bbox: np.ndarray) -> np.ndarray:
    """KITTI (left, top, right, bottom), inclusive pixels -> mwsis (x1, y1, x2, y2) pixel edges."""
    return np.asarray(bbox, np.float64) + np.array([0.0, 0.0, 1.0, 1.0])


def edges_to_box(xyxy: np.ndarray) -> np.ndarray:
    """Inverse of :func:`box_to_edges`."""
    return np.asarray(xyxy, np.float64) - np.array([0.0, 0.0, 1.0, 1.0])


def _h(m34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :] = m34
    return out


def split_projection(P: np.ndarray, where: str = "calib", key: str = "P2") -> tuple[np.ndarray, np.ndarray]:
    """``P = K [I | t]`` -> (K 3x3, t 3). Refuses skewed or non-rectified matrices, which the Waymo
    pinhole model (f_u, f_v, c_u, c_v only) cannot represent."""
    bad = abs(P[2, 2]) < 1e-12
    K = P[:, :3] / (1.0 if bad else P[2, 2])
    if bad or np.abs(K[2, :2]).max() > 1e-9 or abs(K[1, 0]) > 1e-9 or abs(K[0, 1]) > 1e-6 * abs(K[0, 0]):
        raise KittiFormatError(where, f"{key} is not K[I|t] with zero skew and last row (0, 0, 1, t_z): {P.tolist()}")
    t = np.linalg.solve(K, P[:, 3] / P[2, 2])
    return K, t


def cam_from_velo(calib: KittiCalib, where: str = "calib") -> tuple[np.ndarray, np.ndarray]:
    """(K, 4x4 rectified camera-2 (OpenCV axes) from Velodyne)."""
    K, t = split_projection(calib.P["P2"], where)
    T = calib.rect_from_velo()
    T[:3, 3] += t
    return K, T


def kitti_camera(calib: KittiCalib, width: int, height: int, image_bytes: bytes | None, image_format: str = "png",
                 camera_id: int = 1, where: str = "calib") -> Camera:
    """The image_2 camera as a :class:`Camera` (FRONT, Waymo axes, no distortion); see the module docstring."""
    K, T = cam_from_velo(calib, where)
    K = K.copy()
    K[:2, 2] += PIXEL_SHIFT
    waymo = np.eye(4)
    waymo[:3, :3] = WAYMO_FROM_OPENCV
    return Camera(camera_id, int(width), int(height), K, np.zeros(5), np.linalg.inv(waymo @ T), image_bytes,
                  image_format)


def project_velo(calib: KittiCalib, xyz: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """§E.2 chain ``P2 · R0_rect · Tr_velo_to_cam`` in mwsis pixel coordinates (KITTI's + 0.5):
    (uv (N, 2) float64, valid (N,) bool), valid when in front (w' > 0) and inside the image
    (0 <= u < W, 0 <= v < H; pixel i spans [i, i+1))."""
    P = _h(calib.P["P2"])
    M = P @ calib.rect_from_velo()
    h = xyz.astype(np.float64) @ M[:3, :3].T + M[:3, 3]
    w = h[:, 2]
    front = w > 1e-6
    ws = np.where(front, w, 1.0)
    uv = np.stack([h[:, 0] / ws, h[:, 1] / ws], axis=1) + PIXEL_SHIFT
    valid = front & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return uv, valid


def boxes3d_from_labels(calib: KittiCalib, objects: list[KittiObject]) -> Boxes3D:
    """Velodyne-frame boxes of ``objects`` (§E.3 conversion): centre = velo_from_rect(x, y - h/2, z),
    size (l, w, h), heading = azimuth of the box's length axis (cos ry, 0, -sin ry) mapped to the
    Velodyne frame (equals -ry - pi/2 when the camera is level; exact for a tilted one too)."""
    n = len(objects)
    if n == 0:
        return Boxes3D(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros((0, 3), np.float32),
                       np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
    velo_from_rect = np.linalg.inv(calib.rect_from_velo())
    h, w, l = (np.array([o.hwl[i] for o in objects]) for i in range(3))
    loc = np.array([o.location for o in objects], np.float64)
    ry = np.array([o.rotation_y for o in objects], np.float64)
    centre_rect = loc - np.stack([np.zeros(n), h / 2, np.zeros(n)], axis=1)
    centre = centre_rect @ velo_from_rect[:3, :3].T + velo_from_rect[:3, 3]
    d = np.stack([np.cos(ry), np.zeros(n), -np.sin(ry)], axis=1) @ velo_from_rect[:3, :3].T
    heading = np.arctan2(d[:, 1], d[:, 0])
    return Boxes3D(np.array([o.object_id for o in objects], np.int64),
                   np.array([o.class_id if o.class_id is not None else -1 for o in objects], np.int8),
                   centre.astype(np.float32), np.stack([l, w, h], axis=1).astype(np.float32),
                   heading.astype(np.float32))


def label_fields_from_box(calib: KittiCalib, center: np.ndarray, size: np.ndarray, heading: float) -> dict:
    """Inverse of :func:`boxes3d_from_labels` for one Velodyne-frame box: hwl, location (bottom centre,
    rectified camera 0), rotation_y, alpha (= rotation_y - atan2(x, z), §E.3). Assumes the rectified
    camera's y axis is the Velodyne's -z (a level camera), as KITTI's box model does."""
    rect_from_velo = calib.rect_from_velo()
    l, w, h = (float(v) for v in size)
    c = rect_from_velo[:3, :3] @ np.asarray(center, np.float64) + rect_from_velo[:3, 3]
    loc = c + np.array([0.0, h / 2, 0.0])
    d = rect_from_velo[:3, :3] @ np.array([np.cos(heading), np.sin(heading), 0.0])
    ry = wrap_angle(float(np.arctan2(-d[2], d[0])))
    return {"hwl": np.array([h, w, l]), "location": loc, "rotation_y": ry,
            "alpha": wrap_angle(ry - float(np.arctan2(loc[0], loc[2])))}


def box_corners_velo(center: np.ndarray, size: np.ndarray, heading: float) -> np.ndarray:
    """(8, 3) corners of a Velodyne-frame box."""
    sx, sy, sz = (np.array([-1, 1]) * float(s) / 2 for s in size)
    g = np.array(np.meshgrid(sx, sy, sz, indexing="ij")).reshape(3, -1).T
    c, s = np.cos(heading), np.sin(heading)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return g @ R.T + np.asarray(center, np.float64)
