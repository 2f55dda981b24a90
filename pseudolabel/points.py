"""The point set: which LiDAR points are labelled, trained on and evaluated (MWSIS §4.1; method.md §1, §11).

One concept, one config (``PointSetConfig``), read by the label stages, the 3D trainer, prediction and
evaluation alike, from the ``points`` section of a config file. The authors' choices:

- TOP LiDAR only, both returns;
- strictly inside ``[-80, -80, -2, 80, 80, 4]`` (mmdet3d ``in_range_3d``);
- projecting into at least one camera (a point no camera sees can take no 2D-box label);
- outside Waymo's no-label zones (their converter drops those points altogether).

Evaluation (method.md §11) uses the same set without the NLZ filter: the authors' evaluation scores every
point the converter kept, and ours keeps NLZ points in the frame.

SPG's and DCS's thresholds are not here (``spg.SPGConfig``): they say how points are labelled, not which.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.frame import TOP_LIDAR, Points

__all__ = ["POINT_RANGE", "PointSetConfig", "in_range", "eligible_mask"]

POINT_RANGE = (-80.0, -80.0, -2.0, 80.0, 80.0, 4.0)  # x0, y0, z0, x1, y1, z1 in the vehicle frame (m)


@dataclass(frozen=True)
class PointSetConfig:
    """Which points pseudo labels are made for, the 3D model trains on and evaluation scores.

    point_range: ``(x0, y0, z0, x1, y1, z1)``, strict inequalities; the KITTI preset moves z down by the
        sensor's mounting height (its converter keeps the Velodyne frame).
    drop_nlz: leave out points in no-label zones (the authors' converter); KITTI has none.
    need_camera: keep only points that project into a camera. Off, the 3D branch also sees points no
        camera covers (they are never labelled foreground: no box can claim them).
    """
    point_range: tuple[float, ...] = field(default=POINT_RANGE, metadata={"length": 6})
    drop_nlz: bool = True
    need_camera: bool = True

    def __post_init__(self):
        r = tuple(float(v) for v in self.point_range)
        if len(r) != 6 or not all(r[d] < r[d + 3] for d in range(3)):
            raise ValueError(f"points.point_range must be [x0, y0, z0, x1, y1, z1] with each lower bound below "
                             f"its upper one, got {list(self.point_range)}")
        object.__setattr__(self, "point_range", r)

    def eligible(self, points: Points) -> np.ndarray:
        """(N,) bool: the points labelled and trained on."""
        return eligible_mask(points.xyz, points.laser_id, points.cam_id, points.nlz if self.drop_nlz else None,
                             self.point_range, self.need_camera)

    def evaluated(self, points: Points) -> np.ndarray:
        """(N,) bool: the points evaluation scores: ``eligible`` without the NLZ filter (method.md §11)."""
        return eligible_mask(points.xyz, points.laser_id, points.cam_id, None, self.point_range, self.need_camera)


def in_range(xyz: np.ndarray, point_range=POINT_RANGE) -> np.ndarray:
    """(N,) bool: ``xyz`` (N, 3) strictly inside ``[x0, y0, z0, x1, y1, z1]`` (NaN coordinates are out)."""
    xyz = np.asarray(xyz)
    ok = np.ones(xyz.shape[0], bool)
    for d in range(3):  # column by column: much faster than a broadcast (N, 3) comparison + all()
        c = xyz[:, d]
        ok &= (c > point_range[d]) & (c < point_range[d + 3])
    return ok


def eligible_mask(xyz: np.ndarray, laser_id: np.ndarray, cam_id: np.ndarray, nlz: np.ndarray | None = None,
                  point_range=POINT_RANGE, need_camera: bool = True) -> np.ndarray:
    """(N,) bool: TOP lidar, in range, (optionally) projecting into a camera, not in a no-label zone.

    xyz: (N, 3); laser_id: (N,); cam_id: (N, 2), 0 = no projection; nlz: (N,) bool, or None to keep all.
    """
    ok = (np.asarray(laser_id) == TOP_LIDAR) & in_range(np.asarray(xyz), point_range)
    if need_camera:
        cam_id = np.asarray(cam_id).reshape(-1, 2)
        ok &= (cam_id[:, 0] > 0) | (cam_id[:, 1] > 0)  # not .any(axis=1): a slow reduction over 2 columns
    if nlz is not None:
        ok &= ~np.asarray(nlz, bool)
    return ok
