"""nuScenes geometry (``formats_more.md`` §1.5, §1.8): scalar-first quaternions, poses, box corners, and the
2D box of a 3D annotation as the devkit's ``export_2d_annotations_as_json.py`` makes it. Pure numpy."""
from __future__ import annotations

import numpy as np


def quat_to_matrix(q) -> np.ndarray:
    """(3, 3) rotation of a scalar-first quaternion ``[w, x, y, z]`` (normalised first)."""
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(r: np.ndarray) -> list[float]:
    """Scalar-first quaternion of a rotation matrix (for writers and tests), w >= 0."""
    r = np.asarray(r, np.float64)
    w = np.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    return [float(w), float(x), float(y), float(z)]


def pose(translation, rotation) -> np.ndarray:
    """(4, 4) ``parent_from_child`` of a calibrated_sensor or ego_pose record."""
    m = np.eye(4)
    m[:3, :3] = quat_to_matrix(rotation)
    m[:3, 3] = np.asarray(translation, np.float64)
    return m


def transform(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return np.asarray(xyz, np.float64) @ m[:3, :3].T + m[:3, 3]


def box_corners(center, size_wlh, rotation: np.ndarray) -> np.ndarray:
    """(8, 3) corners of a box: ``size`` is nuScenes' [width, length, height]; its own x runs along the length,
    y along the width, z along the height (devkit ``Box.corners``)."""
    w, l, h = (float(v) for v in size_wlh)
    sx, sy, sz = np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")
    local = np.stack([sx.ravel() * l / 2, sy.ravel() * w / 2, sz.ravel() * h / 2], 1)
    return local @ np.asarray(rotation, np.float64).T + np.asarray(center, np.float64)


def _clip(poly: list, axis: int, bound: float, keep_below: bool) -> list:
    """Sutherland-Hodgman: the part of a polygon on one side of the line ``p[axis] = bound``."""
    out = []
    for i, cur in enumerate(poly):
        prev = poly[i - 1]
        cin = cur[axis] <= bound if keep_below else cur[axis] >= bound
        pin = prev[axis] <= bound if keep_below else prev[axis] >= bound
        if cin != pin:
            t = (bound - prev[axis]) / (cur[axis] - prev[axis])
            out.append(prev + t * (cur - prev))
        if cin:
            out.append(cur)
    return out


def box_2d(corners_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """[x1, y1, x2, y2] of a 3D box in one camera, or None (§1.8): corners with depth <= 0 are dropped, the
    rest projected with ``K`` (camera axes x right, y down, z forward), their convex hull intersected with the
    image rectangle [0, width] x [0, height]; the extent of the intersection. A hull of fewer than three
    projected corners (one or two in front) has no outline: then their own extent, clipped."""
    front = corners_cam[corners_cam[:, 2] > 0]
    if len(front) == 0:
        return None
    uvw = front @ np.asarray(K, np.float64).T
    uv = uvw[:, :2] / uvw[:, 2:3]
    poly = list(uv)
    if len(uv) >= 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            poly = list(uv[ConvexHull(uv).vertices])
        except QhullError:  # collinear corners: the segment's ends
            poly = list(uv)
    for axis, bound, below in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False), (1, float(height), True)):
        poly = _clip(poly, axis, bound, below) if len(poly) >= 3 else [p for p in poly
                                                                          if (p[axis] <= bound) == below
                                                                          or p[axis] == bound]
        if not poly:
            return None
    p = np.array(poly)
    x1, y1 = p.min(0)
    x2, y2 = p.max(0)
    if x2 <= x1 or y2 <= y1:
        return None
    return np.array([x1, y1, x2, y2])
