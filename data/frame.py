"""The in-memory frame: one synchronised LiDAR sweep plus its camera images.

Every array is numpy; nothing here touches the filesystem. Conventions (also in the README):

* Coordinates are in the **vehicle frame** (x forward, y left, z up, metres), as Waymo gives them.
* Camera extrinsics are ``vehicle_from_camera`` 4x4 matrices in **Waymo camera axes** (x along the
  optical axis, y left, z up), not OpenCV axes. ``project`` below is the Waymo global-shutter model
  (``data_formats.md`` B.8).
* Camera ids are Waymo ``CameraName`` values: 1 FRONT, 2 FRONT_LEFT, 3 FRONT_RIGHT, 4 SIDE_LEFT,
  5 SIDE_RIGHT, plus 6 BACK (nuScenes' rear camera); 0 means "no camera". LiDAR ids are ``LaserName``
  values, 1 = TOP.
* Pixel coordinates: pixel ``i`` spans ``[i, i+1)``, so a projection ``u`` lands in column ``floor(u)``.
* Classes: 0 vehicle, 1 pedestrian, 2 cyclist (``CLASS_NAMES``); per-point semantic ground truth and
  pseudo labels use ``BACKGROUND = 3`` for background and ``IGNORE = -1`` for "no label".
  Instance id 0 means "no instance"; a ground-truth instance id equals the object's ``object_id``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("vehicle", "pedestrian", "cyclist")
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND = NUM_CLASSES  # semantic id of background, as in MWSIS Eq. 3-4 ({-1, 0..C-1, C})
IGNORE = -1
# Waymo's five cameras, and 6 for a rear camera (nuScenes' CAM_BACK; no Waymo camera looks back)
CAMERA_NAMES: dict[int, str] = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT",
                                6: "BACK"}
LIDAR_NAMES: dict[int, str] = {1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
TOP_LIDAR = 1


@dataclass
class Points:
    """Struct of arrays, one entry per LiDAR return (both returns, all lidars kept)."""

    xyz: np.ndarray  # (N, 3) float32, vehicle frame
    intensity: np.ndarray  # (N,) float32; None when read without it (schema.frames.OPTIONAL_COLUMNS)
    elongation: np.ndarray  # (N,) float32; None when read without it
    range: np.ndarray  # (N,) float32, range-image channel 0 (metres from the sensor)
    return_index: np.ndarray  # (N,) int8, 0 first return, 1 second
    laser_id: np.ndarray  # (N,) int8, LaserName
    row: np.ndarray  # (N,) int16, range-image row (0 = highest beam)
    col: np.ndarray  # (N,) int16, range-image column
    nlz: np.ndarray  # (N,) bool, Waymo no-label-zone flag
    cam_id: np.ndarray  # (N, 2) int8, CameraName of the two projections, 0 = none
    cam_uv: np.ndarray  # (N, 2, 2) float32, [slot, (u, v)] pixel coordinates, -1 where cam_id == 0

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def select(self, mask: np.ndarray) -> "Points":
        return Points(**{k: None if v is None else v[mask] for k, v in self.__dict__.items()})


@dataclass
class Lidar:
    laser_id: int
    height: int  # range-image rows M
    width: int  # range-image columns W
    extrinsic: np.ndarray  # (4, 4) vehicle_from_lidar
    inclinations: np.ndarray  # (M,) float32 radians, row order (row 0 = highest beam)


@dataclass
class Camera:
    camera_id: int
    width: int
    height: int
    intrinsic: np.ndarray  # (3, 3) [[f_u, 0, c_u], [0, f_v, c_v], [0, 0, 1]]
    distortion: np.ndarray  # (5,) k1, k2, p1, p2, k3
    extrinsic: np.ndarray  # (4, 4) vehicle_from_camera, Waymo camera axes
    image_bytes: bytes | None = field(repr=False)  # encoded image (PNG or JPEG); None if not loaded
    image_format: str = "png"

    @property
    def name(self) -> str:
        return CAMERA_NAMES.get(self.camera_id, f"CAM{self.camera_id}")

    def image(self) -> np.ndarray:
        """Decode the image to an (H, W, 3) uint8 array. Decoded on every call: frames stay small."""
        from PIL import Image

        if self.image_bytes is None:
            raise ValueError(f"camera {self.name}: image not loaded (open the frame with images=True)")
        with Image.open(io.BytesIO(self.image_bytes)) as im:
            return np.array(im.convert("RGB"))  # a writable copy (torch.as_tensor warns on read-only arrays)

    def project(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project vehicle-frame points; returns (uv (N, 2) float64, valid (N,) bool).

        Waymo global-shutter model (data_formats.md B.8): camera axes x forward, y left, z up,
        radial-tangential distortion, in-image test ``0 <= u < width``.
        """
        cam_from_vehicle = np.linalg.inv(self.extrinsic)
        p = xyz.astype(np.float64) @ cam_from_vehicle[:3, :3].T + cam_from_vehicle[:3, 3]
        x = p[:, 0]
        in_front = x > 1e-6
        xs = np.where(in_front, x, 1.0)
        un, vn = -p[:, 1] / xs, -p[:, 2] / xs
        k1, k2, p1, p2, k3 = (float(c) for c in self.distortion)
        r2 = un * un + vn * vn
        d = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        ud = un * d + 2 * p1 * un * vn + p2 * (r2 + 2 * un * un)
        vd = vn * d + p1 * (r2 + 2 * vn * vn) + 2 * p2 * un * vn
        K = self.intrinsic
        u = K[0, 0] * ud + K[0, 2]
        v = K[1, 1] * vd + K[1, 2]
        valid = in_front & (d > 0.8) & (d < 1.2) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return np.stack([u, v], axis=1), valid


def project_to_cameras(xyz: np.ndarray, cameras: list[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """(cam_id (N, 2) int8, cam_uv (N, 2, 2) float32) of vehicle-frame points ``xyz`` (N, 3): up to two
    cameras per point, in camera-id order, whose image contains its projection (no occlusion test, as Waymo's
    ``camera_projections``). Used by the synthetic sensor and the readers that compute projections."""
    n = xyz.shape[0]
    cam_id = np.zeros((n, 2), np.int8)
    cam_uv = np.full((n, 2, 2), -1.0, np.float32)
    filled = np.zeros(n, np.int64)
    for c in sorted(cameras, key=lambda c: c.camera_id):
        uv, valid = c.project(xyz)
        take = valid & (filled < 2)
        idx = np.flatnonzero(take)
        slot = filled[idx]
        cam_id[idx, slot] = c.camera_id
        cam_uv[idx, slot] = uv[idx].astype(np.float32)
        filled[idx] += 1
    return cam_id, cam_uv


@dataclass
class Boxes2D:
    """2D boxes of all cameras of a frame, struct of arrays, in pixels (x1, y1, x2, y2)."""

    camera_id: np.ndarray  # (K,) int8
    class_id: np.ndarray  # (K,) int8, index into CLASS_NAMES
    xyxy: np.ndarray  # (K, 4) float32
    object_id: np.ndarray  # (K,) int64, same object across cameras shares the id

    def __len__(self) -> int:
        return int(self.camera_id.shape[0])

    def of_camera(self, camera_id: int) -> "Boxes2D":
        m = self.camera_id == camera_id
        return Boxes2D(self.camera_id[m], self.class_id[m], self.xyxy[m], self.object_id[m])

    @staticmethod
    def empty() -> "Boxes2D":
        return Boxes2D(np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


@dataclass
class Clicks2D:
    """One click per object and camera image (point supervision, WISE): the pixel (u, v) in continuous
    image coordinates (pixel i spans [i, i+1)), its class and object id. Struct of arrays."""

    camera_id: np.ndarray  # (K,) int8
    class_id: np.ndarray  # (K,) int8, index into CLASS_NAMES
    uv: np.ndarray  # (K, 2) float32
    object_id: np.ndarray  # (K,) int64, the object the click marks (its box's, where both exist)

    def __len__(self) -> int:
        return int(self.camera_id.shape[0])

    def of_camera(self, camera_id: int) -> "Clicks2D":
        m = self.camera_id == camera_id
        return Clicks2D(self.camera_id[m], self.class_id[m], self.uv[m], self.object_id[m])

    @staticmethod
    def empty() -> "Clicks2D":
        return Clicks2D(np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros((0, 2), np.float32), np.zeros(0, np.int64))


@dataclass
class Masks2D:
    """Per-camera instance masks as pycocotools RLE (``counts`` compressed bytes, size [h, w])."""

    camera_id: np.ndarray  # (K,) int8
    object_id: np.ndarray  # (K,) int64
    class_id: np.ndarray  # (K,) int8
    rles: list[dict]  # {"size": [h, w], "counts": bytes}

    def __len__(self) -> int:
        return int(self.camera_id.shape[0])

    def decode(self, index: int) -> np.ndarray:
        from pycocotools import mask as mask_utils

        return mask_utils.decode(self.rles[index]).astype(bool)


@dataclass
class Boxes3D:
    object_id: np.ndarray  # (K,) int64
    class_id: np.ndarray  # (K,) int8
    center: np.ndarray  # (K, 3) float32, box centre in the vehicle frame
    size: np.ndarray  # (K, 3) float32, length (along heading), width, height
    heading: np.ndarray  # (K,) float32, yaw about +z

    def __len__(self) -> int:
        return int(self.object_id.shape[0])

    def contains(self, xyz: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """(N, K) bool: point n inside box k (optionally grown by ``margin`` metres)."""
        d = xyz[:, None, :].astype(np.float64) - self.center[None].astype(np.float64)
        c, s = np.cos(self.heading.astype(np.float64)), np.sin(self.heading.astype(np.float64))
        lx = d[..., 0] * c + d[..., 1] * s
        ly = -d[..., 0] * s + d[..., 1] * c
        half = self.size.astype(np.float64) / 2 + margin
        return (np.abs(lx) <= half[:, 0]) & (np.abs(ly) <= half[:, 1]) & (np.abs(d[..., 2]) <= half[:, 2])


@dataclass
class GroundTruth:
    """Optional exact labels. Any field may be None when the source has no such label."""

    point_semantic: np.ndarray | None = None  # (N,) int8: 0..C-1 class, BACKGROUND, IGNORE
    point_instance: np.ndarray | None = None  # (N,) int32: 0 none, else object_id
    masks: Masks2D | None = None
    boxes3d: Boxes3D | None = None

    def present(self) -> list[str]:
        out = []
        if self.point_semantic is not None:
            out.append("point_semantic")
        if self.point_instance is not None:
            out.append("point_instance")
        if self.masks is not None:
            out.append("masks2d")
        if self.boxes3d is not None:
            out.append("boxes3d")
        return out


@dataclass
class Frame:
    frame_id: str  # unique in the dataset: "{sequence}-{index:06d}"
    sequence: str
    index: int  # position within the sequence
    timestamp_us: int
    points: Points
    lidars: list[Lidar]
    cameras: list[Camera]
    boxes2d: Boxes2D
    gt: GroundTruth = field(default_factory=GroundTruth)

    def camera(self, camera_id: int) -> Camera:
        for cam in self.cameras:
            if cam.camera_id == camera_id:
                return cam
        raise KeyError(f"frame {self.frame_id}: no camera {camera_id} (has {[c.camera_id for c in self.cameras]})")

    def lidar(self, laser_id: int = TOP_LIDAR) -> Lidar:
        for lid in self.lidars:
            if lid.laser_id == laser_id:
                return lid
        raise KeyError(f"frame {self.frame_id}: no lidar {laser_id} (has {[l.laser_id for l in self.lidars]})")

    @property
    def image_sizes(self) -> dict[int, tuple[int, int]]:
        """camera id -> (width, height) of its image."""
        return {c.camera_id: (c.width, c.height) for c in self.cameras}

    @property
    def range_image_shape(self) -> tuple[int, int]:
        """(M, W) of the TOP LiDAR's range image."""
        lid = self.lidar(TOP_LIDAR)
        return (lid.height, lid.width)

    def range_image(self, laser_id: int = TOP_LIDAR, channel: str = "range") -> np.ndarray:
        """Rebuild the (R=2 returns, M, W) range image of one LiDAR from the points (0 where empty).

        ``channel`` is any per-point float field: "range", "intensity" or "elongation".
        """
        lid = self.lidar(laser_id)
        sel = self.points.laser_id == laser_id
        out = np.zeros((2, lid.height, lid.width), np.float32)
        values = getattr(self.points, channel)[sel]
        out[self.points.return_index[sel], self.points.row[sel], self.points.col[sel]] = values
        return out
