"""Frame -> Waymo records: the inverse of ``build``, for writers of Waymo-format test data.

Used by ``data/synthetic/export_waymo.py``. A ``Frame`` keeps every point's exact (return, row, col,
range), so range images are rebuilt pixel by pixel; xyz is *not* encoded (Waymo stores none) and is
recomputed by the reader from the range-image geometry (B.2-B.6). Conventions chosen here:

* pixels without a return hold -1 in every range-image channel (range -1 as observed, A.1);
  the NLZ channel is 1.0 inside a no-label zone and -1.0 outside;
* camera projections store ``floor(u), floor(v)`` (B.7: integer pixel indices);
* the TOP pixel pose is the frame's vehicle pose at every pixel with a return (zero elsewhere, as in
  real logs), so the B.6 maths runs in full and must give the identity back;
* LiDAR semantics use one raw class per our class (``labels.LIDAR_SEG_OF_CLASS``), panoptic labels
  ``class * divisor + local instance`` with local ids 1..K per image mapped to the object ids;
* object ids are written as decimal strings (``build.object_id`` reads them back unchanged).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..frame import BACKGROUND, TOP_LIDAR, Frame, Lidar
from . import geometry as geo
from . import labels as lab
from .records import (CameraBoxes, CameraCalib, CameraShot, FrameRecords, LaserCalib, LaserScan, LidarBoxes,
                      Panoptic)

PANOPTIC_DIVISOR = 1000  # as in the real sample (D.8)


def rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def laser_calib(lidar: Lidar, extra_yaw: float = 0.0) -> LaserCalib:
    """Calibration of a lidar, optionally with its sensor frame turned by ``extra_yaw`` about z.

    Turning the sensor frame leaves every pixel's vehicle-frame direction unchanged (B.3 subtracts the
    extrinsic yaw from the column azimuth), so the same range image gives the same points; real TOP
    lidars sit at yaw ~148 deg, which this lets tests exercise. Uniform tables are stored as min/max
    only (values null), as Waymo does for the short-range lidars (A.2).
    """
    e = np.asarray(lidar.extrinsic, np.float64).copy()
    e[:3, :3] = e[:3, :3] @ rotation_z(extra_yaw)
    rows = np.asarray(lidar.inclinations, np.float64)
    uniform = None if lidar.laser_id == TOP_LIDAR else geo.uniform_min_max(rows)
    if uniform is not None:
        return LaserCalib(lidar.laser_id, e, None, *uniform)
    asc = rows[::-1].copy()
    return LaserCalib(lidar.laser_id, e, asc, float(asc[0]), float(asc[-1]))


def camera_calib(cam) -> CameraCalib:
    K, d = np.asarray(cam.intrinsic, np.float64), np.asarray(cam.distortion, np.float64)
    intr = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], d[0], d[1], d[2], d[3], d[4]])
    return CameraCalib(cam.camera_id, intr, np.asarray(cam.extrinsic, np.float64), cam.width, cam.height,
                       rolling_shutter_direction=2)  # LEFT_TO_RIGHT, as all five real cameras (A.6)


def pose_pixels(pose: np.ndarray) -> np.ndarray:
    """(6,) roll, pitch, yaw, x, y, z of a world_from_vehicle matrix (inverse of B.6 step 2)."""
    return np.array([*geo.rotation_to_euler(pose[:3, :3]), *pose[:3, 3]])


def _scan(frame: Frame, lidar: Lidar, vehicle_pose: np.ndarray) -> LaserScan:
    p = frame.points
    h, w = lidar.height, lidar.width
    sel_l = p.laser_id == lidar.laser_id
    labelled = frame.gt.point_semantic is not None and lidar.laser_id == TOP_LIDAR
    ris, projs, segs = [], [], []
    for ret in (0, 1):
        sel = np.flatnonzero(sel_l & (p.return_index == ret))
        r, c = p.row[sel].astype(np.int64), p.col[sel].astype(np.int64)
        ri = np.full((h, w, 4), -1.0, np.float32)
        ri[r, c, 0], ri[r, c, 1], ri[r, c, 2] = p.range[sel], p.intensity[sel], p.elongation[sel]
        ri[r, c, 3] = np.where(p.nlz[sel], 1.0, -1.0)
        proj = np.zeros((h, w, 6), np.int32)
        proj[r, c] = geo.encode_projections(p.cam_id[sel], p.cam_uv[sel])
        ris.append(ri)
        projs.append(proj)
        if labelled:
            seg = np.zeros((h, w, 2), np.int32)
            seg[r, c] = lab.points_to_lidar_seg(frame.gt.point_semantic[sel], frame.gt.point_instance[sel])
            segs.append(seg)
    pose = None
    if lidar.laser_id == TOP_LIDAR:  # only TOP has a pixel pose (A.3), on pixels with a return
        pose = np.zeros((h, w, 6), np.float32)
        hit = (ris[0][..., 0] > 0) | (ris[1][..., 0] > 0)
        pose[hit] = pose_pixels(vehicle_pose).astype(np.float32)
    return LaserScan(lidar.laser_id, ris, projs, pose, segs if labelled else None)


def _panoptic(frame: Frame, cam) -> Panoptic | None:
    m = frame.gt.masks
    if m is None:
        return None
    label = np.full((cam.height, cam.width), lab.CAMERA_SEG_OF_CLASS[BACKGROUND] * PANOPTIC_DIVISOR, np.uint16)
    local, glob = [], []
    for i in np.flatnonzero(m.camera_id == cam.camera_id):
        oid = int(m.object_id[i])
        if not 0 < oid < 2 ** 31:
            raise ValueError(f"frame {frame.frame_id}: object id {oid} does not fit Waymo's int32 global ids")
        k = len(local) + 1
        if k >= PANOPTIC_DIVISOR:
            raise ValueError(f"frame {frame.frame_id}: more than {PANOPTIC_DIVISOR - 1} instances on one camera")
        label[m.decode(int(i))] = lab.CAMERA_SEG_OF_CLASS[int(m.class_id[i])] * PANOPTIC_DIVISOR + k
        local.append(k)
        glob.append(oid)
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format="PNG")  # uint16 -> 16-bit greyscale PNG (mode I;16)
    return Panoptic(buf.getvalue(), PANOPTIC_DIVISOR, np.array(local, np.int32), np.array(glob, np.int32))


def reencode_jpeg(image: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(image)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_frame(frame: Frame, vehicle_pose: np.ndarray, jpeg_quality: int | None = None) -> FrameRecords:
    """The Waymo records of ``frame`` with frame pose ``vehicle_pose`` (world_from_vehicle, 4x4).

    ``jpeg_quality`` re-encodes images as JPEG like real logs; None keeps the frame's bytes (PNG for
    synthetic frames) so that a round trip compares images byte for byte.
    """
    scans = {l.laser_id: _scan(frame, l, vehicle_pose) for l in frame.lidars}
    shots = {}
    for cam in frame.cameras:
        img = cam.image_bytes if jpeg_quality is None else reencode_jpeg(cam.image_bytes, jpeg_quality)
        shots[cam.camera_id] = CameraShot(cam.camera_id, img, vehicle_pose, _panoptic(frame, cam))
    b = frame.boxes2d
    xyxy = b.xyxy.astype(np.float64)
    boxes = CameraBoxes(b.camera_id.astype(np.int64), [str(int(o)) for o in b.object_id],
                        np.array([lab.CLASS_TO_BOX_TYPE[int(c)] for c in b.class_id], np.int64).reshape(-1),
                        (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2])
    b3 = frame.gt.boxes3d
    lidar_boxes = None if b3 is None else LidarBoxes(
        [str(int(o)) for o in b3.object_id], np.array([lab.CLASS_TO_BOX_TYPE[int(c)] for c in b3.class_id],
                                                      np.int64).reshape(-1),
        b3.center.astype(np.float64), b3.size.astype(np.float64), b3.heading.astype(np.float64))
    return FrameRecords(int(frame.timestamp_us), np.asarray(vehicle_pose, np.float64), scans, shots, boxes,
                        lidar_boxes)


def synthetic_vehicle_pose(index: int) -> np.ndarray:
    """A world_from_vehicle pose with non-zero roll, pitch, yaw and translation that moves per frame,
    so the B.6 pixel-pose maths is exercised (any wrong rotation order shows up as moved points)."""
    t = np.eye(4)
    t[:3, :3] = geo.euler_to_rotation(0.02 + 0.001 * index, -0.03, 0.7 + 0.01 * index)
    t[:3, 3] = [1234.5 + 1.0 * index, -567.25 + 0.3 * index, 12.75]
    return t
