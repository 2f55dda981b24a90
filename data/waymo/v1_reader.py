"""Reads Waymo v1 TFRecord segments (C.1-C.3): records -> ``Frame`` protos -> Waymo records -> frames.

``decode_frame`` is pure (a parsed ``Frame`` message in, records out); ``segment_frames`` streams a
file record by record, so memory stays at about one frame. Every v1 frame repeats the segment's
calibrations in ``context``; each frame is built with its own.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from ..frame import Frame
from .build import BuildReport, build_frame
from .records import CameraBoxes, CameraCalib, CameraShot, FrameRecords, LaserCalib, LaserScan, LidarBoxes, Panoptic
from .tfrecord import iter_records
from .v1_proto import messages

_FILE_NAME = re.compile(r"^(?:segment-)?(.+?)(?:_with_camera_labels)?$")


def segment_name(path: Path | str) -> str:
    """Segment (context) name from a file name ``segment-<name>_with_camera_labels.tfrecord`` (C.1)."""
    return _FILE_NAME.match(Path(path).stem).group(1)


def _matrix(data: bytes, cls) -> np.ndarray | None:
    """A zlib-compressed serialized MatrixFloat / MatrixInt32 (C.2) as an array of its shape; empty = absent."""
    if not data:
        return None
    m = cls.FromString(zlib.decompress(data))
    dims = [int(d) for d in m.shape.dims]
    arr = np.array(m.data, np.float32 if cls is messages().MatrixFloat else np.int32)
    if int(np.prod(dims)) != arr.size:
        raise ValueError(f"matrix with {arr.size} values for shape {dims}")
    return arr.reshape(dims)


def _transform(t) -> np.ndarray:
    if len(t.transform) != 16:
        raise ValueError(f"transform with {len(t.transform)} numbers, expected 16")
    return np.array(t.transform, np.float64).reshape(4, 4)


def decode_calibrations(context) -> tuple[dict[int, LaserCalib], dict[int, CameraCalib]]:
    lasers = {}
    for c in context.laser_calibrations:
        values = np.array(c.beam_inclinations, np.float64)
        lasers[int(c.name)] = LaserCalib(int(c.name), _transform(c.extrinsic), values if values.size else None,
                                         float(c.beam_inclination_min), float(c.beam_inclination_max))
    cameras = {}
    for c in context.camera_calibrations:
        intr = np.zeros(9)
        intr[:len(c.intrinsic)] = np.array(c.intrinsic[:9], np.float64)
        cameras[int(c.name)] = CameraCalib(int(c.name), intr, _transform(c.extrinsic), int(c.width), int(c.height),
                                           int(c.rolling_shutter_direction))
    return lasers, cameras


def _scan(laser, laser_ids) -> LaserScan | None:
    M = messages()
    if laser_ids is not None and int(laser.name) not in laser_ids:
        return None
    r1, r2 = laser.ri_return1, laser.ri_return2
    ris = [_matrix(r.range_image_compressed, M.MatrixFloat) for r in (r1, r2)]
    projs = [_matrix(r.camera_projection_compressed, M.MatrixInt32) for r in (r1, r2)]
    segs = [_matrix(r.segmentation_label_compressed, M.MatrixInt32) for r in (r1, r2)]
    pose = _matrix(r1.range_image_pose_compressed, M.MatrixFloat)  # first return only (A.3)
    return LaserScan(int(laser.name), ris, projs, pose, segs if any(s is not None for s in segs) else None)


def _shot(image) -> CameraShot:
    pan = None
    if image.HasField("camera_segmentation_label"):
        s = image.camera_segmentation_label
        pan = Panoptic(bytes(s.panoptic_label), int(s.panoptic_label_divisor),
                       np.array([m.local_instance_id for m in s.instance_id_to_global_id_mapping], np.int64),
                       np.array([m.global_instance_id for m in s.instance_id_to_global_id_mapping], np.int64))
    return CameraShot(int(image.name), bytes(image.image), _transform(image.pose) if image.HasField("pose") else None,
                      pan)


def _camera_boxes(frame) -> CameraBoxes:
    cam, keys, types, center, size = [], [], [], [], []
    for cl in frame.camera_labels:
        for lab in cl.labels:
            b = lab.box
            cam.append(int(cl.name))
            keys.append(lab.id)
            types.append(int(lab.type))
            center.append((b.center_x, b.center_y))
            size.append((b.length, b.width))  # 2D: length = horizontal extent, width = vertical (A.7)
    if not cam:
        return CameraBoxes.empty()
    return CameraBoxes(np.array(cam, np.int64), keys, np.array(types, np.int64), np.array(center, np.float64),
                       np.array(size, np.float64))


def _lidar_boxes(frame) -> LidarBoxes:
    labels = list(frame.laser_labels)
    if not labels:
        return LidarBoxes.empty()
    b = [l.box for l in labels]
    return LidarBoxes([l.id for l in labels], np.array([int(l.type) for l in labels], np.int64),
                      np.array([(x.center_x, x.center_y, x.center_z) for x in b], np.float64),
                      np.array([(x.length, x.width, x.height) for x in b], np.float64),
                      np.array([x.heading for x in b], np.float64))


def decode_frame(frame, laser_ids=None) -> tuple[str, dict, dict, FrameRecords]:
    """(context name, laser calibrations, camera calibrations, records) of a parsed ``Frame`` message.

    ``laser_ids`` None keeps every lidar. 3D boxes are always present (possibly empty): v1 cannot
    tell "no labels" from "no objects".
    """
    lasers, cameras = decode_calibrations(frame.context)
    scans = {}
    for laser in frame.lasers:
        scan = _scan(laser, laser_ids)
        if scan is not None:
            scans[scan.laser_id] = scan
    shots = {int(im.name): _shot(im) for im in frame.images}
    rec = FrameRecords(int(frame.timestamp_micros), _transform(frame.pose), scans, shots, _camera_boxes(frame),
                       _lidar_boxes(frame))
    return frame.context.name, lasers, cameras, rec


def segment_frames(path: Path | str, segment: str, laser_ids: set[int] | None = None,
                   report: BuildReport | None = None) -> Iterator[Frame]:
    """The frames of one TFRecord file, in file order; errors name the file and the record offset."""
    report = report if report is not None else BuildReport()
    M = messages()
    for index, (offset, payload) in enumerate(iter_records(path)):
        try:
            msg = M.Frame.FromString(payload)
            _, lasers, cameras, rec = decode_frame(msg, laser_ids)
            frame = build_frame(segment, index, rec, lasers, cameras, laser_ids, report)
        except Exception as e:  # protobuf DecodeError, zlib.error, ValueError: all mean a bad record
            raise ValueError(f"{path}: record at byte offset {offset} (frame {index}): {type(e).__name__}: {e}") from e
        yield frame
