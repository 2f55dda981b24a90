"""Waymo records -> :class:`mwsis.data.frame.Frame`, shared by the v1 and v2 readers. Pure.

Frames are validated when they are written (``data/validate.py``), so everything real logs get wrong
is fixed or dropped here first and counted in a :class:`BuildReport` that the converter logs per
segment: camera boxes are clipped to their image and dropped when degenerate, duplicated ids and
non-finite values are dropped, projections into cameras the frame lacks are cleared.

Point order follows the authors' converter (method.md §12): first returns of all lidars (ascending
laser id), then second returns; within one lidar, valid pixels (``range > 0``) in row-major order.
"""
from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..frame import IGNORE, TOP_LIDAR, Boxes2D, Boxes3D, Camera, Frame, GroundTruth, Lidar, Masks2D, Points
from . import geometry as geo
from . import labels as lab
from .records import CameraCalib, FrameRecords, LaserCalib, LaserScan


@dataclass
class BuildReport:
    """What was dropped or fixed (bad data) and what was skipped by design (sign / unknown boxes),
    summed over the frames of a segment (``what -> count``)."""

    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def add(self, what: str, n: int) -> None:
        if n:
            self.dropped[what] += int(n)

    def skip(self, what: str, n: int) -> None:
        if n:
            self.skipped[what] += int(n)

    @staticmethod
    def _text(c: Counter) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(c.items())) or "none"

    def summary(self) -> str:
        return f"dropped or fixed: {self._text(self.dropped)}; skipped by design: {self._text(self.skipped)}"


def object_id(key: str) -> int:
    """A stable int64 id for a Waymo object id string.

    Decimal strings keep their value (our exporter writes ids that way, so synthetic round trips are
    exact); Waymo's base64-like ids hash to 62 bits (blake2b), the same in every process and frame,
    so a track keeps its id across frames and collisions within a segment are negligible.
    """
    k = str(key)
    if k.isdecimal() and len(k) < 18:
        return int(k)
    return int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") & ((1 << 62) - 1)


def image_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    raise ValueError(f"image is neither JPEG nor PNG (starts {data[:8].hex()})")


def make_lidar(calib: LaserCalib, height: int, width: int) -> Lidar:
    incl = geo.inclinations_rows(calib.incl_values, calib.incl_min, calib.incl_max, height)
    return Lidar(calib.laser_id, height, width, np.asarray(calib.extrinsic, np.float64).reshape(4, 4),
                 incl.astype(np.float32))


def make_camera(calib: CameraCalib, image: bytes) -> Camera:
    f_u, f_v, c_u, c_v, k1, k2, p1, p2, k3 = (float(v) for v in calib.intrinsic)
    K = np.array([[f_u, 0.0, c_u], [0.0, f_v, c_v], [0.0, 0.0, 1.0]])
    return Camera(int(calib.camera_id), int(calib.width), int(calib.height), K, np.array([k1, k2, p1, p2, k3]),
                  np.asarray(calib.extrinsic, np.float64).reshape(4, 4), image, image_format(image))


def _check_shape(name: str, arr, h: int, w: int, c: int) -> None:
    if arr is not None and tuple(arr.shape) != (h, w, c):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {(h, w, c)}")


def _scan_points(scan: LaserScan, ret: int, calib: LaserCalib, frame_pose: np.ndarray, lidar: Lidar,
                 with_seg: bool, report: BuildReport) -> dict | None:
    """Per-point arrays of one lidar's return ``ret`` (None when the return is absent)."""
    ri = scan.range_images[ret]
    if ri is None:
        return None
    name = lab.LASER_NAMES.get(scan.laser_id, str(scan.laser_id))
    h, w = lidar.height, lidar.width
    proj = scan.projections[ret] if ret < len(scan.projections) else None
    seg = scan.segmentation[ret] if scan.segmentation is not None and ret < len(scan.segmentation) else None
    _check_shape(f"lidar {name} return {ret + 1} range image", ri, h, w, 4)
    _check_shape(f"lidar {name} return {ret + 1} camera projection", proj, h, w, 6)
    _check_shape(f"lidar {name} pixel pose", scan.pixel_pose, h, w, 6)
    _check_shape(f"lidar {name} return {ret + 1} segmentation", seg, h, w, 2)
    rows, cols = geo.valid_pixels(ri[..., 0])
    az = geo.azimuths(w, calib.extrinsic)
    xyz = geo.pixels_to_points(ri[rows, cols, 0], rows, cols, lidar.inclinations.astype(np.float64), az,
                               calib.extrinsic, scan.pixel_pose, frame_pose if scan.pixel_pose is not None else None)
    n = rows.shape[0]
    if scan.pixel_pose is not None and ret == 0:  # counted once: both returns share the pose
        report.add(f"lidar {name} pixels with an all-zero pixel pose (left uncompensated)",
                   int((~scan.pixel_pose[rows, cols].any(axis=1)).sum()))
    if proj is not None:
        cam_id, cam_uv = geo.decode_projections(proj[rows, cols])
    else:
        cam_id, cam_uv = np.zeros((n, 2), np.int8), np.full((n, 2, 2), -1.0, np.float32)
    out = dict(xyz=xyz.astype(np.float32), intensity=ri[rows, cols, 1].astype(np.float32),
               elongation=ri[rows, cols, 2].astype(np.float32), range=ri[rows, cols, 0].astype(np.float32),
               return_index=np.full(n, ret, np.int8), laser_id=np.full(n, scan.laser_id, np.int8),
               row=rows.astype(np.int16), col=cols.astype(np.int16), nlz=ri[rows, cols, 3] == 1.0,
               cam_id=cam_id, cam_uv=cam_uv)
    if with_seg:
        if seg is not None:
            out["semantic"], out["instance"] = lab.lidar_seg_to_points(seg[rows, cols, 0], seg[rows, cols, 1])
        else:  # only TOP is labelled (A.9): other lidars' points are "no label"
            out["semantic"], out["instance"] = np.full(n, IGNORE, np.int8), np.zeros(n, np.int32)
    return out


def _points(rec: FrameRecords, lasers: dict, lidars: dict, report: BuildReport):
    with_seg = any(rec.scans[l].segmentation is not None for l in lidars)
    parts = []
    for ret in (0, 1):
        for laser_id in sorted(lidars):
            scan = rec.scans[laser_id]
            if laser_id == TOP_LIDAR and scan.pixel_pose is None and scan.range_images[ret] is not None:
                raise ValueError("TOP lidar without its per-pixel pose (lidar_pose / range_image_pose_compressed)")
            p = _scan_points(scan, ret, lasers[laser_id], rec.vehicle_pose, lidars[laser_id], with_seg, report)
            if p is not None:
                parts.append(p)
    if not parts:
        raise ValueError("no lidar returns")
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    finite = np.isfinite(cat["xyz"]).all(1) & np.isfinite(cat["intensity"]) & np.isfinite(cat["elongation"])
    report.add("points with non-finite values", int((~finite).sum()))
    if not finite.all():
        cat = {k: v[finite] for k, v in cat.items()}
    sem, inst = cat.pop("semantic", None), cat.pop("instance", None)
    return Points(**cat), sem, inst


def _boxes2d(rec: FrameRecords, cameras: dict[int, Camera], report: BuildReport) -> Boxes2D:
    b = rec.camera_boxes
    cls = lab.box_classes(b.box_type)
    cam = np.asarray(b.camera_id, np.int64)
    report.skip("camera boxes of other types (sign/unknown)", int((cls < 0).sum()))
    has_cam = np.isin(cam, list(cameras))
    report.add("camera boxes on cameras the frame lacks", int(((cls >= 0) & ~has_cam).sum()))
    keep = (cls >= 0) & has_cam
    xyxy = geo.boxes_center_to_corners(b.center, b.size)
    wh = np.array([[cameras[int(c)].width, cameras[int(c)].height] if int(c) in cameras else [0, 0] for c in cam],
                  np.float64).reshape(-1, 2)
    clipped, ok = geo.clip_boxes(xyxy, wh[:, 0], wh[:, 1])
    report.add("camera boxes outside the image or degenerate", int((keep & ~ok).sum()))
    report.add("camera boxes clipped to the image", int((keep & ok & (np.abs(clipped - xyxy) > 1e-6).any(1)).sum()))
    keep &= ok
    ids = np.array([object_id(k) for k in b.object_key], np.int64)
    seen, dup = set(), np.zeros(len(ids), bool)
    for i in np.flatnonzero(keep):
        key = (int(cam[i]), int(ids[i]))
        dup[i] = key in seen
        seen.add(key)
    report.add("camera boxes with a duplicated id", int(dup.sum()))
    keep &= ~dup
    order = np.flatnonzero(keep)
    order = order[np.lexsort((ids[order], cam[order]))]  # canonical order, whatever the file's row order
    return Boxes2D(cam[order].astype(np.int8), cls[order].astype(np.int8), clipped[order].astype(np.float32),
                   ids[order])


def _masks(rec: FrameRecords, cameras: dict[int, Camera], report: BuildReport) -> Masks2D | None:
    shots = [s for s in rec.shots.values() if s.panoptic is not None and s.camera_id in cameras]
    if not shots:
        return None
    cam_ids, obj_ids, cls_ids, rles = [], [], [], []
    for shot in sorted(shots, key=lambda s: s.camera_id):
        c, pan = cameras[shot.camera_id], shot.panoptic
        with Image.open(io.BytesIO(pan.png)) as im:
            label = np.asarray(im)
        if label.shape != (c.height, c.width):
            report.add(f"panoptic labels of the wrong size (camera {c.name})", 1)
            continue
        for oid, cls, rle in lab.panoptic_to_masks(label, pan.divisor, pan.local_ids, pan.global_ids):
            cam_ids.append(shot.camera_id)
            obj_ids.append(oid)
            cls_ids.append(cls)
            rles.append(rle)
    return Masks2D(np.array(cam_ids, np.int8), np.array(obj_ids, np.int64), np.array(cls_ids, np.int8), rles)


def _boxes3d(rec: FrameRecords, report: BuildReport) -> Boxes3D | None:
    b = rec.lidar_boxes
    if b is None:
        return None
    cls = lab.box_classes(b.box_type)
    center, size = np.asarray(b.center, np.float64).reshape(-1, 3), np.asarray(b.size, np.float64).reshape(-1, 3)
    heading = np.asarray(b.heading, np.float64).reshape(-1)
    finite = np.isfinite(center).all(1) & np.isfinite(size).all(1) & np.isfinite(heading)
    report.skip("3D boxes of other types (sign/unknown)", int((cls < 0).sum()))
    report.add("3D boxes with non-finite values", int(((cls >= 0) & ~finite).sum()))
    ids = np.array([object_id(k) for k in b.object_key], np.int64)
    keep = (cls >= 0) & finite
    _, first = np.unique(ids[keep], return_index=True)
    report.add("3D boxes with a duplicated id", int(keep.sum()) - len(first))
    order = np.flatnonzero(keep)[first]  # sorted by object id: canonical, whatever the row order
    return Boxes3D(ids[order], cls[order].astype(np.int8), center[order].astype(np.float32),
                   size[order].astype(np.float32), heading[order].astype(np.float32))


def build_frame(segment: str, index: int, rec: FrameRecords, lasers: dict[int, LaserCalib],
                cameras: dict[int, CameraCalib], laser_ids=None, report: BuildReport | None = None) -> Frame:
    """The frame ``index`` of ``segment`` from its records and the segment's calibrations.

    ``laser_ids`` restricts the lidars (None: all in the records). Raises ``ValueError`` naming the
    sensor when the records are unusable (missing calibration, wrong tensor shapes, TOP without pose).
    """
    report = report if report is not None else BuildReport()
    lidars = {}
    for laser_id, scan in rec.scans.items():
        if laser_ids is not None and laser_id not in laser_ids:
            continue
        if laser_id not in lasers:
            raise ValueError(f"lidar {lab.LASER_NAMES.get(laser_id, laser_id)} has no calibration")
        first = next((r for r in scan.range_images if r is not None), None)
        if first is None or first.ndim != 3:
            raise ValueError(f"lidar {lab.LASER_NAMES.get(laser_id, laser_id)}: no range image")
        lidars[laser_id] = make_lidar(lasers[laser_id], first.shape[0], first.shape[1])
    if not lidars:
        raise ValueError(f"none of the lidars {sorted(laser_ids or [])} in this frame (has {sorted(rec.scans)})")
    cams = {}
    for cam_id, shot in sorted(rec.shots.items()):
        if cam_id not in cameras:
            raise ValueError(f"camera {lab.CAMERA_NAMES.get(cam_id, cam_id)} has no calibration")
        try:
            cams[cam_id] = make_camera(cameras[cam_id], shot.image)
        except ValueError as e:
            raise ValueError(f"camera {lab.CAMERA_NAMES.get(cam_id, cam_id)}: {e}") from None
    points, sem, inst = _points(rec, lasers, lidars, report)
    stray = (points.cam_id > 0) & ~np.isin(points.cam_id, list(cams))
    report.add("point projections into cameras the frame lacks", int(stray.sum()))
    points.cam_id[stray] = 0
    points.cam_uv[stray] = -1.0
    gt = GroundTruth(point_semantic=sem, point_instance=inst, masks=_masks(rec, cams, report),
                     boxes3d=_boxes3d(rec, report))
    return Frame(frame_id=f"{segment}-{index:06d}", sequence=segment, index=int(index),
                 timestamp_us=int(rec.timestamp_us), points=points, lidars=[lidars[k] for k in sorted(lidars)],
                 cameras=[cams[k] for k in sorted(cams)], boxes2d=_boxes2d(rec, cams, report), gt=gt)
