"""Source-neutral Waymo records: what one v1 ``Frame`` proto and one frame's v2 rows both hold.

The v1 and v2 readers only decode bytes into these; ``build.build_frame`` alone turns them into a
:class:`mwsis.data.frame.Frame`, so both formats give the same output by construction.
Tensors keep Waymo's layouts: range images [H, W, 4] (B.5, D.4), camera projections [H, W, 6] int32
(B.7), pixel poses [H, W, 6] (B.6), LiDAR segmentation [H, W, 2] int32 (A.9).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LaserCalib:
    """A.2 / C.3 LaserCalibration. ``incl_values`` ascending (lowest beam first) or None when uniform."""

    laser_id: int
    extrinsic: np.ndarray  # (4, 4) vehicle_from_lidar
    incl_values: np.ndarray | None
    incl_min: float
    incl_max: float


@dataclass
class CameraCalib:
    """A.6 / C.3 CameraCalibration; ``intrinsic`` is v1's 9-vector f_u, f_v, c_u, c_v, k1, k2, p1, p2, k3."""

    camera_id: int
    intrinsic: np.ndarray  # (9,)
    extrinsic: np.ndarray  # (4, 4) vehicle_from_camera, Waymo camera axes
    width: int
    height: int
    rolling_shutter_direction: int = 0


@dataclass
class LaserScan:
    """One lidar of one frame: per return (index 0, 1) tensors; None where absent."""

    laser_id: int
    range_images: list  # [H, W, 4] float32 or None, per return
    projections: list  # [H, W, 6] int32 or None, per return
    pixel_pose: np.ndarray | None = None  # [H, W, 6] (TOP, first return only; both returns use it)
    segmentation: list | None = None  # [H, W, 2] int32 (instance_id, semantic) per return, or None


@dataclass
class Panoptic:
    """A.10 camera panoptic label: a 16-bit PNG, its divisor and the local -> global instance ids."""

    png: bytes
    divisor: int
    local_ids: np.ndarray
    global_ids: np.ndarray


@dataclass
class CameraShot:
    camera_id: int
    image: bytes  # encoded (JPEG in real data)
    pose: np.ndarray | None = None  # (4, 4) world_from_vehicle at the image's pose time
    panoptic: Panoptic | None = None


@dataclass
class CameraBoxes:
    """A.7 camera boxes of one frame, struct of arrays; ``size`` x = width, y = height in pixels."""

    camera_id: np.ndarray  # (K,)
    object_key: list  # (K,) str, Waymo camera_object_id
    box_type: np.ndarray  # (K,) Label.Type (D.3)
    center: np.ndarray  # (K, 2)
    size: np.ndarray  # (K, 2)

    @staticmethod
    def empty() -> "CameraBoxes":
        return CameraBoxes(np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros((0, 2)))

    def __len__(self) -> int:
        return int(np.asarray(self.camera_id).shape[0])


@dataclass
class LidarBoxes:
    """A.8 3D boxes of one frame in the frame's vehicle frame; ``size`` = length, width, height."""

    object_key: list  # (K,) str, Waymo laser_object_id
    box_type: np.ndarray  # (K,)
    center: np.ndarray  # (K, 3) geometric centre
    size: np.ndarray  # (K, 3)
    heading: np.ndarray  # (K,)

    @staticmethod
    def empty() -> "LidarBoxes":
        return LidarBoxes([], np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.object_key)


@dataclass
class FrameRecords:
    """Everything about one frame, keyed by sensor id. ``lidar_boxes`` None: no 3D labels in the source."""

    timestamp_us: int
    vehicle_pose: np.ndarray  # (4, 4) world_from_vehicle of the frame
    scans: dict = field(default_factory=dict)  # laser id -> LaserScan
    shots: dict = field(default_factory=dict)  # camera id -> CameraShot
    camera_boxes: CameraBoxes = field(default_factory=CameraBoxes.empty)
    lidar_boxes: LidarBoxes | None = None
