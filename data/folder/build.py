"""One frame of the sensor-folder layout -> one :class:`Frame` (issue 18).

:func:`folder_frame` is pure (parsed pieces in, frame out); :func:`read_folder_frame` reads a frame's files
(points, images, ground truth) and calls it. What a converted frame holds:

* points: every point of the file, in file order, in the vehicle frame (moved there with the calibration's
  ``vehicle_from_lidar`` when stored in the LiDAR frame); ``range`` is the distance from the sensor;
  ``intensity`` x ``points.intensity_scale``; ``return``, ``elongation`` when given, else 0; one LiDAR, TOP (1);
  rows and columns from :mod:`.rows`; the two projection slots from the calibration's cameras
  (:func:`~mwsis.data.frame.project_to_cameras`, no occlusion test, as Waymo's).
* the cameras of the frame's ``cameras`` entry, with the calibration's geometry and the image bytes as stored;
  the image's own size must match the calibration's.
* 2D boxes from the cameras' COCO files, clipped to the image (empty ones dropped, both noted).
* ground truth when the frame names per-point ``semantic`` (mwsis ids: classes, 3 background, -1 ignore) and
  ``instance`` (0 none) arrays.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..frame import TOP_LIDAR, Boxes2D, Camera, Frame, GroundTruth, Lidar, Points, project_to_cameras
from ..validate import FrameError, validate_frame
from .layout import Calib, CocoBox, FolderFormatError, FrameEntry, PointSchema, check_semantic
from .points import read_points
from .rows import RowRecoveryError, recover_rows


def _transform(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return xyz @ m[:3, :3].T + m[:3, 3]


def _boxes(boxes: dict[int, list[CocoBox]], sizes: dict[int, tuple[int, int]], notes: list[str]) -> Boxes2D:
    cam, cls, xyxy, oid = [], [], [], []
    for cid in sorted(boxes):
        w, h = sizes[cid]
        for b in boxes[cid]:
            e = np.clip(np.array(b.xyxy, np.float64), 0, [w, h, w, h])
            if e[2] <= e[0] or e[3] <= e[1]:
                notes.append(f"camera {cid}: box of object {b.object_id} {list(b.xyxy)} lies outside the "
                             f"{w}x{h} image: dropped")
                continue
            if not np.allclose(e, b.xyxy):
                notes.append(f"camera {cid}: box of object {b.object_id} clipped to the {w}x{h} image")
            cam.append(cid), cls.append(b.class_id), xyxy.append(e), oid.append(b.object_id)
    if not cam:
        return Boxes2D.empty()
    return Boxes2D(np.array(cam, np.int8), np.array(cls, np.int8), np.array(xyxy, np.float32),
                   np.array(oid, np.int64))


def _check_cameras(entry: FrameEntry, calib: Calib, where: str) -> None:
    for name in entry.cameras:
        if name not in calib.cameras:
            raise FolderFormatError(where, f"cameras.{name}", f"camera {name!r} is not in calibration "
                                    f"{entry.calib!r} (has {', '.join(calib.cameras) or 'none'})", entry.frame_id)


def folder_frame(entry: FrameEntry, sequence: str, index: int, columns: dict[str, np.ndarray], schema: PointSchema,
                 calib: Calib, images: dict[str, tuple[bytes, str]], boxes: dict[str, list[CocoBox]],
                 semantic: np.ndarray | None = None, instance: np.ndarray | None = None,
                 where: str = "frames.jsonl") -> tuple[Frame, list[str]]:
    """Build frame ``entry.frame_id`` from parsed pieces; returns (frame, notes on what was changed).

    ``columns``: the point file's named columns (:func:`.points.read_points`); ``images``: camera name ->
    (encoded bytes, "png" or "jpeg"); ``boxes``: camera name -> that frame's COCO boxes. ``where`` names the
    index file line in errors.
    """
    fid, notes = entry.frame_id, []
    stored = np.stack([columns["x"], columns["y"], columns["z"]], 1)
    lidar_from_vehicle = np.linalg.inv(calib.vehicle_from_lidar)
    if schema.frame == "lidar":
        xyz_lidar, xyz = stored, _transform(calib.vehicle_from_lidar, stored)
    else:
        xyz_lidar, xyz = _transform(lidar_from_vehicle, stored), stored
    n = len(xyz)
    ret = columns.get("return", np.zeros(n))
    if np.any((ret != 0) & (ret != 1)):
        raise FolderFormatError(where, "return", "values must be 0 (first return) or 1 (second)", fid)
    try:
        rows = recover_rows(xyz_lidar, schema.azimuth_columns, columns.get("ring"), ret, calib.inclinations,
                            schema.beams, schema.ring_order)
    except RowRecoveryError as e:
        raise FolderFormatError(where, "lidar", str(e), fid) from None
    if rows.shared > 0.005 * n:
        notes.append(f"frame {fid}: {rows.shared} of {n} points share a range-image pixel; a larger "
                     f"points.azimuth_columns than {schema.azimuth_columns} keeps them apart")
    _check_cameras(entry, calib, where)
    cams = []
    for name in sorted(entry.cameras, key=lambda c: calib.cameras[c].camera_id if c in calib.cameras else 0):
        c = calib.cameras[name]
        data, fmt = images[name]
        cams.append(Camera(c.camera_id, c.width, c.height, c.intrinsic, c.distortion, c.extrinsic, data, fmt))
    cam_id, cam_uv = project_to_cameras(xyz, cams)
    points = Points(xyz=xyz.astype(np.float32), intensity=(columns.get("intensity", np.zeros(n)) *
                    schema.intensity_scale).astype(np.float32),
                    elongation=columns.get("elongation", np.zeros(n)).astype(np.float32),
                    range=np.linalg.norm(xyz_lidar, axis=1).astype(np.float32), return_index=ret.astype(np.int8),
                    laser_id=np.full(n, TOP_LIDAR, np.int8), row=rows.row, col=rows.col, nlz=np.zeros(n, bool),
                    cam_id=cam_id, cam_uv=cam_uv)
    lidar = Lidar(TOP_LIDAR, len(rows.inclinations), schema.azimuth_columns, calib.vehicle_from_lidar,
                  rows.inclinations)
    sizes = {c.camera_id: (c.width, c.height) for c in cams}
    boxes2d = _boxes({calib.cameras[k].camera_id: v for k, v in boxes.items() if k in entry.cameras}, sizes, notes)
    gt = GroundTruth()
    if semantic is not None or instance is not None:
        if semantic is None or instance is None:
            raise FolderFormatError(where, "gt", "give both semantic and instance, or neither", fid)
        gt = GroundTruth(point_semantic=semantic.astype(np.int8), point_instance=instance.astype(np.int32))
    frame = Frame(frame_id=fid, sequence=sequence, index=int(index), timestamp_us=entry.timestamp_us, points=points,
                  lidars=[lidar], cameras=cams, boxes2d=boxes2d, gt=gt)
    try:
        validate_frame(frame)
    except FrameError as e:  # the frame's own checks, reported against the index line that built it
        raise FolderFormatError(where, e.field, e.problem, fid) from None
    return frame, notes


def read_file(path: Path, field: str = "", frame: str | None = None) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FolderFormatError(str(path), field, "missing", frame) from None
    except OSError as e:
        raise FolderFormatError(str(path), field, f"cannot read ({e.strerror or e})", frame) from None


def _image(path: Path, name: str, fid: str, calib: Calib) -> tuple[bytes, str]:
    from PIL import Image, UnidentifiedImageError

    data = read_file(path, f"cameras.{name}", fid)
    try:
        with Image.open(io.BytesIO(data)) as im:
            size, fmt = im.size, (im.format or "").lower()
    except (UnidentifiedImageError, OSError):
        raise FolderFormatError(str(path), f"cameras.{name}", f"not a readable image: {len(data)} bytes starting "
                                f"{data[:8]!r}, expected PNG or JPEG", fid) from None
    if fmt not in ("png", "jpeg"):
        raise FolderFormatError(str(path), f"cameras.{name}", f"{fmt or 'unknown'} image; PNG or JPEG expected", fid)
    c = calib.cameras.get(name)
    if c is not None and size != (c.width, c.height):
        raise FolderFormatError(str(path), f"cameras.{name}", f"image is {size[0]}x{size[1]} but the calibration "
                                f"says {c.width}x{c.height}", fid)
    return data, fmt


def _per_point(path: Path, field: str, fid: str, n: int) -> np.ndarray:
    try:
        a = np.load(io.BytesIO(read_file(path, field, fid)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FolderFormatError(str(path), field, f"not a readable .npy file ({e})", fid) from None
    if a.shape != (n,) or a.dtype.kind not in "iu":
        raise FolderFormatError(str(path), field, f"{a.dtype} array of shape {a.shape}, expected ({n},) integers "
                                "(one per point of the LiDAR file, same order)", fid)
    return a


def read_folder_frame(log_dir: Path, entry: FrameEntry, index: int, schema: PointSchema, calib: Calib,
                      boxes: dict[str, dict[str, list[CocoBox]]]) -> tuple[Frame, list[str]]:
    """Read frame ``entry`` of the log directory ``log_dir``; ``boxes``: camera name -> {frame id: boxes}
    (the log's parsed COCO files). See :func:`folder_frame`."""
    fid = entry.frame_id
    where = f"{log_dir / 'frames.jsonl'} line {entry.line}"
    lidar = log_dir / entry.lidar
    _check_cameras(entry, calib, where)
    columns = read_points(read_file(lidar, "lidar", fid), lidar.suffix, schema, str(lidar), fid)
    images = {name: _image(log_dir / rel, name, fid, calib) for name, rel in entry.cameras.items()}
    sem = inst = None
    if entry.semantic is not None:
        sem = _per_point(log_dir / entry.semantic, "gt.semantic", fid, len(columns["x"]))
        check_semantic(sem, str(log_dir / entry.semantic), fid)
    if entry.instance is not None:
        inst = _per_point(log_dir / entry.instance, "gt.instance", fid, len(columns["x"]))
    frame_boxes = {name: per_frame.get(fid, []) for name, per_frame in boxes.items()}
    return folder_frame(entry, log_dir.name, index, columns, schema, calib, images, frame_boxes, sem, inst, where)
