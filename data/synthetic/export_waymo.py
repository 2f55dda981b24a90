"""Write frames as Waymo Open Dataset v2 Parquet components or v1 TFRecords, in the real layouts.

For tests and demos of ``mwsis convert waymo-v2 / waymo-v1`` without real data (data_formats.md A,
C). Frames come in as ``(segment name, frames)`` pairs; each frame is encoded by
``data.waymo.encode.encode_frame`` (see there for the conventions: -1 for empty pixels, integer
projections, identity pixel poses on a non-trivial vehicle pose, one raw class per our class).

What a reader gets back: the same points (return, row, col, range, intensity, elongation, NLZ,
projected pixel), labels, boxes and image bytes. xyz is recomputed from the range-image geometry,
so it equals the synthetic xyz only up to the beam footprint (up to +-0.35 column; see
``data/synthetic/lidar.py``); tests compare it with xyz computed from the same (range, row, col).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..frame import Frame
from ..waymo import v2_schema as s
from ..waymo.encode import camera_calib, encode_frame, laser_calib, synthetic_vehicle_pose
from ..waymo.records import FrameRecords
from ..waymo.tfrecord import write_records
from ..waymo.v1_proto import messages

FramesBySegment = Iterable[tuple[str, Iterable[Frame]]]


def _column(values: list, t: pa.DataType) -> pa.Array:
    """An Arrow column; list cells may be numpy arrays (built without Python lists) or None (null)."""
    if pa.types.is_list(t) and any(isinstance(v, np.ndarray) for v in values):
        vt = t.value_type
        arrays = [np.asarray(v).ravel() if v is not None else np.zeros(0) for v in values]
        offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int32)
        flat = np.concatenate(arrays).astype(vt.to_pandas_dtype()) if arrays else np.zeros(0)
        mask = pa.array([v is None for v in values])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, vt), mask=mask)
    return pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values], t)


def _table(component: str, rows: list[dict]) -> pa.Table:
    sch = s.SCHEMAS[component]
    return pa.Table.from_arrays([_column([r.get(f.name) for r in rows], f.type) for f in sch], schema=sch)


def _keys(component: str, segment: str, ts: int | None = None, sensor: int | None = None, obj: str | None = None):
    keys = s.KEYS[component]
    out = {s.SEGMENT: segment}
    if s.TIMESTAMP in keys:
        out[s.TIMESTAMP] = ts
    for k in (s.LASER, s.CAMERA):
        if k in keys:
            out[k] = sensor
    for k in (s.LASER_OBJECT, s.CAMERA_OBJECT):
        if k in keys:
            out[k] = obj
    return out


def _tensor(component: str, field: str, arr: np.ndarray | None) -> dict:
    if arr is None:
        return {}
    return {s.col(component, f"{field}.values"): arr, s.col(component, f"{field}.shape"): list(arr.shape)}


def _ones_png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ones((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def frame_rows(segment: str, rec: FrameRecords, frame: Frame) -> dict[str, list[dict]]:
    """The v2 rows of one frame, per per-frame component (A.1, A.3-A.5, A.7-A.11)."""
    ts, c = rec.timestamp_us, s.col
    rows: dict[str, list[dict]] = {name: [] for name in s.SCHEMAS if name not in ("lidar_calibration",
                                                                                  "camera_calibration")}
    rows["vehicle_pose"].append({**_keys("vehicle_pose", segment, ts),
                                 c("vehicle_pose", "world_from_vehicle.transform"): rec.vehicle_pose.ravel()})
    for laser, scan in sorted(rec.scans.items()):
        k = lambda comp: _keys(comp, segment, ts, laser)  # noqa: E731
        rows["lidar"].append({**k("lidar"), **_tensor("lidar", "range_image_return1", scan.range_images[0]),
                              **_tensor("lidar", "range_image_return2", scan.range_images[1])})
        p = "lidar_camera_projection"  # integers stored as float32 in v2 (A.4)
        rows[p].append({**k(p), **_tensor(p, "range_image_return1", scan.projections[0].astype(np.float32)),
                        **_tensor(p, "range_image_return2", scan.projections[1].astype(np.float32))})
        if scan.pixel_pose is not None:
            rows["lidar_pose"].append({**k("lidar_pose"), **_tensor("lidar_pose", "range_image_return1",
                                                                    scan.pixel_pose)})
        if scan.segmentation is not None:
            g = "lidar_segmentation"
            rows[g].append({**k(g), **_tensor(g, "range_image_return1", scan.segmentation[0]),
                            **_tensor(g, "range_image_return2", scan.segmentation[1])})
    t_s = ts / 1e6
    for cam, shot in sorted(rec.shots.items()):
        ci = "camera_image"
        rows[ci].append({**_keys(ci, segment, ts, cam), c(ci, "image"): shot.image,
                         c(ci, "pose.transform"): shot.pose.ravel(), c(ci, "pose_timestamp"): t_s,
                         **{c(ci, f"velocity.{v}_velocity.{a}"): 0.0 for v in ("linear", "angular") for a in "xyz"},
                         c(ci, "rolling_shutter_params.shutter"): 0.005,
                         c(ci, "rolling_shutter_params.camera_trigger_time"): t_s,
                         c(ci, "rolling_shutter_params.camera_readout_done_time"): t_s + 0.03})
        if shot.panoptic is not None:
            cs, m, cam_obj = "camera_segmentation", "instance_id_to_global_id_mapping", frame.camera(cam)
            pan = shot.panoptic
            rows[cs].append({**_keys(cs, segment, ts, cam), c(cs, "panoptic_label_divisor"): pan.divisor,
                             c(cs, "panoptic_label"): pan.png, c(cs, f"{m}.local_instance_ids"): pan.local_ids,
                             c(cs, f"{m}.global_instance_ids"): pan.global_ids,
                             c(cs, f"{m}.is_tracked"): [True] * len(pan.local_ids), c(cs, "sequence_id"): segment,
                             c(cs, "num_cameras_covered"): _ones_png(cam_obj.height, cam_obj.width)})
    b, cb = rec.camera_boxes, "camera_box"
    for i in range(len(b)):
        rows[cb].append({**_keys(cb, segment, ts, int(b.camera_id[i]), b.object_key[i]),
                         c(cb, "box.center.x"): b.center[i, 0], c(cb, "box.center.y"): b.center[i, 1],
                         c(cb, "box.size.x"): b.size[i, 0], c(cb, "box.size.y"): b.size[i, 1],
                         c(cb, "type"): int(b.box_type[i])})
    b3, lb = rec.lidar_boxes, "lidar_box"
    if b3 is not None:
        inst = frame.gt.point_instance
        for i in range(len(b3)):
            n = int((inst == int(b3.object_key[i])).sum()) if inst is not None else 0
            rows[lb].append({**_keys(lb, segment, ts, obj=b3.object_key[i]),
                             **{c(lb, f"box.center.{a}"): b3.center[i, j] for j, a in enumerate("xyz")},
                             **{c(lb, f"box.size.{a}"): b3.size[i, j] for j, a in enumerate("xyz")},
                             c(lb, "box.heading"): b3.heading[i], c(lb, "type"): int(b3.box_type[i]),
                             c(lb, "num_lidar_points_in_box"): n, c(lb, "num_top_lidar_points_in_box"): n})
    return rows


def calibration_rows(segment: str, frame: Frame, lidar_yaw: float) -> dict[str, list[dict]]:
    """Per-segment rows of ``lidar_calibration`` and ``camera_calibration`` (A.2, A.6)."""
    lc, cc, c = "lidar_calibration", "camera_calibration", s.col
    lasers, cams = [], []
    for lidar in frame.lidars:
        cal = laser_calib(lidar, lidar_yaw)
        lasers.append({**_keys(lc, segment, sensor=lidar.laser_id), c(lc, "extrinsic.transform"): cal.extrinsic.ravel(),
                       c(lc, "beam_inclination.min"): cal.incl_min, c(lc, "beam_inclination.max"): cal.incl_max,
                       c(lc, "beam_inclination.values"): cal.incl_values})
    names = ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")
    for cam in frame.cameras:
        cal = camera_calib(cam)
        cams.append({**_keys(cc, segment, sensor=cam.camera_id),
                     **{c(cc, f"intrinsic.{k}"): float(v) for k, v in zip(names, cal.intrinsic)},
                     c(cc, "extrinsic.transform"): cal.extrinsic.ravel(), c(cc, "width"): cal.width,
                     c(cc, "height"): cal.height, c(cc, "rolling_shutter_direction"): cal.rolling_shutter_direction})
    return {lc: lasers, cc: cams}


class _SegmentWriter:
    """One Parquet file per component; rows are buffered ``frames_per_row_group`` frames at a time and
    optionally shuffled, so readers that rely on row order (instead of keys) fail the tests."""

    def __init__(self, out: Path, segment: str, frames_per_row_group: int, rng: np.random.Generator | None):
        self.out, self.segment, self.k, self.rng = out, segment, max(int(frames_per_row_group), 1), rng
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffer: dict[str, list[dict]] = {}
        self.frames = 0

    def add(self, rows: dict[str, list[dict]], frame: bool = True) -> None:
        for name, r in rows.items():
            self.buffer.setdefault(name, []).extend(r)
        self.frames += int(frame)
        if frame and self.frames % self.k == 0:
            self.flush()

    def flush(self) -> None:
        for name, rows in self.buffer.items():
            if not rows and name in s.OPTIONAL and name not in self.writers:
                continue  # no labels of this kind (yet): an absent optional component says so (A.0)
            if name not in self.writers:
                path = self.out / name / f"{self.segment}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                self.writers[name] = pq.ParquetWriter(path, s.SCHEMAS[name])
            if not rows:
                continue
            table = _table(name, rows)
            if self.rng is not None:
                table = table.take(pa.array(self.rng.permutation(len(table))))
            self.writers[name].write_table(table, row_group_size=len(table))
        self.buffer = {}

    def close(self) -> None:
        self.flush()
        for w in self.writers.values():
            w.close()


def export_waymo_v2(frames_by_segment: FramesBySegment, out_dir: Path | str, frames_per_row_group: int = 1,
                    shuffle_seed: int | None = None, lidar_yaw_deg: float = 0.0,
                    jpeg_quality: int | None = None) -> list[str]:
    """Write each segment as ``<out_dir>/<component>/<segment>.parquet`` (A.0); returns the segment names.

    Optional components are written when the frames have the labels (``lidar_segmentation`` from
    point semantics, ``camera_segmentation`` from masks, ``lidar_box`` from 3D boxes).
    ``frames_per_row_group`` frames share a row group (the whole segment in one row group is the
    hardest case for a streaming reader); ``shuffle_seed`` permutes the rows of each row group
    differently per component; ``lidar_yaw_deg`` turns every lidar's sensor frame (see
    ``encode.laser_calib``); ``jpeg_quality`` re-encodes images as JPEG like real logs.
    """
    out = Path(out_dir)
    names = []
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    for segment, frames in frames_by_segment:
        writer = _SegmentWriter(out, segment, frames_per_row_group, rng)
        try:
            for frame in frames:
                if writer.frames == 0:
                    writer.add(calibration_rows(segment, frame, np.radians(lidar_yaw_deg)), frame=False)
                rec = encode_frame(frame, synthetic_vehicle_pose(frame.index), jpeg_quality)
                writer.add(frame_rows(segment, rec, frame))
        finally:
            writer.close()
        names.append(segment)
    return names


def frame_message(segment: str, frame: Frame, rec: FrameRecords, lidar_yaw: float):
    """A v1 ``Frame`` message (C.3) of the records; range images zlib-compressed (C.2)."""
    import zlib

    M = messages()
    msg = M.Frame(timestamp_micros=rec.timestamp_us)
    msg.context.name = segment
    for lidar in frame.lidars:
        cal = laser_calib(lidar, lidar_yaw)
        lc = msg.context.laser_calibrations.add(name=lidar.laser_id, beam_inclination_min=cal.incl_min,
                                                beam_inclination_max=cal.incl_max)
        lc.extrinsic.transform.extend(cal.extrinsic.ravel().tolist())
        if cal.incl_values is not None:
            lc.beam_inclinations.extend(cal.incl_values.tolist())
    for cam in frame.cameras:
        cal = camera_calib(cam)
        cc = msg.context.camera_calibrations.add(name=cam.camera_id, width=cal.width, height=cal.height,
                                                 rolling_shutter_direction=cal.rolling_shutter_direction)
        cc.intrinsic.extend(cal.intrinsic.tolist())
        cc.extrinsic.transform.extend(cal.extrinsic.ravel().tolist())
    msg.pose.transform.extend(rec.vehicle_pose.ravel().tolist())

    def matrix(arr, cls):
        m = cls()
        m.shape.dims.extend(list(arr.shape))
        m.data.extend(arr.ravel())
        return zlib.compress(m.SerializeToString())

    for laser, scan in sorted(rec.scans.items()):
        las = msg.lasers.add(name=laser)
        for ret, ri in enumerate((las.ri_return1, las.ri_return2)):
            ri.range_image_compressed = matrix(scan.range_images[ret], M.MatrixFloat)
            ri.camera_projection_compressed = matrix(scan.projections[ret], M.MatrixInt32)
            if scan.segmentation is not None:
                ri.segmentation_label_compressed = matrix(scan.segmentation[ret], M.MatrixInt32)
        if scan.pixel_pose is not None:
            las.ri_return1.range_image_pose_compressed = matrix(scan.pixel_pose, M.MatrixFloat)
    for cam, shot in sorted(rec.shots.items()):
        im = msg.images.add(name=cam, image=shot.image, pose_timestamp=rec.timestamp_us / 1e6)
        im.pose.transform.extend(shot.pose.ravel().tolist())
        if shot.panoptic is not None:
            sl = im.camera_segmentation_label
            sl.panoptic_label_divisor, sl.panoptic_label = shot.panoptic.divisor, shot.panoptic.png
            sl.sequence_id = segment
            for lo, gl in zip(shot.panoptic.local_ids, shot.panoptic.global_ids):
                sl.instance_id_to_global_id_mapping.add(local_instance_id=int(lo), global_instance_id=int(gl),
                                                        is_tracked=True)
    b = rec.camera_boxes
    by_cam: dict[int, object] = {}
    for i in range(len(b)):
        cam = int(b.camera_id[i])
        if cam not in by_cam:
            by_cam[cam] = msg.camera_labels.add(name=cam)
        lab = by_cam[cam].labels.add(type=int(b.box_type[i]), id=b.object_key[i])
        # 2D: length = horizontal size, width = vertical size (A.7, C.3)
        lab.box.center_x, lab.box.center_y, lab.box.length, lab.box.width = (*b.center[i], *b.size[i])
    if rec.lidar_boxes is not None:
        b3 = rec.lidar_boxes
        for i in range(len(b3)):
            lab = msg.laser_labels.add(type=int(b3.box_type[i]), id=b3.object_key[i])
            bx = lab.box
            bx.center_x, bx.center_y, bx.center_z = (float(v) for v in b3.center[i])
            bx.length, bx.width, bx.height = (float(v) for v in b3.size[i])
            bx.heading = float(b3.heading[i])
    return msg


def export_waymo_v1(frames_by_segment: FramesBySegment, out_dir: Path | str, lidar_yaw_deg: float = 0.0,
                    jpeg_quality: int | None = None) -> list[Path]:
    """Write each segment as ``<out_dir>/segment-<name>_with_camera_labels.tfrecord`` (C.1); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for segment, frames in frames_by_segment:
        path = out / f"segment-{segment}_with_camera_labels.tfrecord"

        def payloads(segment=segment, frames=frames):
            for frame in frames:
                rec = encode_frame(frame, synthetic_vehicle_pose(frame.index), jpeg_quality)
                yield frame_message(segment, frame, rec, np.radians(lidar_yaw_deg)).SerializeToString()

        write_records(path, payloads())
        paths.append(path)
    return paths
