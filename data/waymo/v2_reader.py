"""Reads one Waymo v2 segment (A.0: ``<src>/<component>/<segment>.parquet``) frame by frame.

Memory stays bounded by about one frame per component, whatever the row-group layout:

* per-segment tables (``lidar_calibration``, ``camera_calibration``) and ``vehicle_pose`` (16
  numbers a frame) are read whole: they are kilobytes;
* every per-frame component is first indexed by reading its key columns only, then streamed in file
  order with ``ParquetFile.iter_batches`` (small batches, buffered column reads), never whole. Rows
  are joined on their keys: a frame's rows are handed out once all of them have been read, rows met
  early (files in different orders, A.0) wait in a buffer until their frame comes.

Errors name the segment and the component (:class:`ComponentError`).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..frame import TOP_LIDAR, Frame
from . import v2_decode as dec
from . import v2_schema as s
from .build import BuildReport, build_frame
from .labels import CAMERA_NAMES, LASER_NAMES
from .records import FrameRecords, LaserScan

READ_BUFFER = 1 << 20  # bytes per column read: keeps pyarrow from loading whole column chunks
_RETS = ("range_image_return1", "range_image_return2")

# columns each component must have / may have (besides its keys)
_NEEDED = {
    "lidar": (["range_image_return1.values", "range_image_return1.shape"],
              ["range_image_return2.values", "range_image_return2.shape"]),
    "lidar_camera_projection": (["range_image_return1.values", "range_image_return1.shape"],
                                ["range_image_return2.values", "range_image_return2.shape"]),
    "lidar_pose": (["range_image_return1.values", "range_image_return1.shape"], []),
    "lidar_segmentation": (["range_image_return1.values", "range_image_return1.shape"],
                           ["range_image_return2.values", "range_image_return2.shape"]),
    "lidar_calibration": (["extrinsic.transform", "beam_inclination.min", "beam_inclination.max",
                           "beam_inclination.values"], []),
    "camera_calibration": ([f"intrinsic.{k}" for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")]
                           + ["extrinsic.transform", "width", "height"], ["rolling_shutter_direction"]),
    "camera_image": (["image"], ["pose.transform"]),
    "camera_segmentation": (["panoptic_label_divisor", "panoptic_label",
                             "instance_id_to_global_id_mapping.local_instance_ids",
                             "instance_id_to_global_id_mapping.global_instance_ids"], []),
    "camera_box": (["box.center.x", "box.center.y", "box.size.x", "box.size.y", "type"], []),
    "lidar_box": ([f"box.center.{a}" for a in "xyz"] + [f"box.size.{a}" for a in "xyz"] + ["box.heading", "type"], []),
    "vehicle_pose": (["world_from_vehicle.transform"], []),
}


class ComponentError(ValueError):
    """A component of a segment is missing, corrupt or inconsistent."""

    def __init__(self, segment: str, component: str, problem: str):
        self.segment, self.component, self.problem = segment, component, problem
        super().__init__(f"segment {segment}: component {component}: {problem}")


def component_path(src: Path | str, component: str, segment: str) -> Path:
    return Path(src) / component / f"{segment}.parquet"


def list_segments(src: Path | str) -> list[str]:
    """Segments with a file in any required component directory (a segment missing some of them is
    listed, so that converting it fails with a message naming what is missing)."""
    src = Path(src)
    found = [d for d in s.REQUIRED if (src / d).is_dir()]
    if not found:
        raise FileNotFoundError(f"{src}: no Waymo v2 component directories (expected {', '.join(s.REQUIRED)})")
    return sorted({p.stem for d in found for p in (src / d).glob("*.parquet")})


def count_frames(src: Path | str, segment: str) -> int:
    """Frames of a segment from Parquet footers only (``vehicle_pose`` rows); 0 when unknown."""
    try:
        return pq.ParquetFile(component_path(src, "vehicle_pose", segment)).metadata.num_rows
    except (OSError, pa.ArrowException):
        return 0


class _Component:
    """One component file of a segment, opened lazily and checked for the columns we need."""

    def __init__(self, src, segment: str, name: str):
        self.name, self.segment, self.path = name, segment, component_path(src, name, segment)
        try:
            self.pf = pq.ParquetFile(self.path, buffer_size=READ_BUFFER, pre_buffer=False)
        except FileNotFoundError:
            raise self.error(f"missing: {self.path} does not exist") from None
        except (pa.ArrowException, OSError) as e:
            raise self.error(f"corrupt Parquet file {self.path} ({e})") from None
        names = set(self.pf.schema_arrow.names)
        required, optional = _NEEDED[name]
        cols = list(s.KEYS[name]) + [s.col(name, f) for f in required]
        missing = [c for c in cols if c not in names]
        if missing:
            raise self.error(f"{self.path} lacks columns {missing}")
        self.columns = cols + [c for c in (s.col(name, f) for f in optional) if c in names]

    def error(self, problem: str) -> ComponentError:
        return ComponentError(self.segment, self.name, problem)

    def batches(self, columns: list[str], batch_size: int) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise self.error(f"cannot read {self.path} ({e})") from None

    def read_segment_rows(self) -> pa.Table:
        """All rows of this segment (only for the small per-segment components)."""
        table = pa.Table.from_batches(list(self.batches(self.columns, 1 << 16)),
                                      schema=self.pf.schema_arrow.empty_table().select(self.columns).schema)
        seg = np.array(s.strings(table.column(s.SEGMENT)), dtype=object) == self.segment
        if not seg.any():
            raise self.error(f"no rows for this segment in {self.path}")
        return table.filter(pa.array(seg))


class _Cursor:
    """Streams a per-frame component in file order and hands out the rows of one frame at a time."""

    def __init__(self, comp: _Component, sensors: set[int] | None = None):
        self.comp = comp
        key = s.SENSOR_KEY.get(comp.name)
        cols = [s.SEGMENT, s.TIMESTAMP] + ([key] if key else [])
        ts, wanted = [], []
        for b in comp.batches(cols, 1 << 16):  # key columns only: a few bytes per row
            try:
                t = s.ints(b.column(s.TIMESTAMP))
                w = np.array(s.strings(b.column(s.SEGMENT)), dtype=object) == comp.segment
                if key and sensors is not None:
                    w &= np.isin(s.ints(b.column(key), key), list(sensors))
            except (ValueError, KeyError) as e:
                raise comp.error(f"bad key column ({e})") from None
            ts.append(t)
            wanted.append(w)
        self._ts = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        self._wanted = np.concatenate(wanted).astype(bool) if wanted else np.zeros(0, bool)
        self._need = Counter(self._ts[self._wanted].tolist())
        frames = max(len(self._need), 1)
        batch = int(min(max(self._wanted.size // frames, 1), 4096))  # about one frame's rows per batch
        self._batches = comp.batches(comp.columns, batch)
        self._pos = 0
        self._pending: dict[int, list] = defaultdict(list)

    def timestamps(self) -> list[int]:
        return sorted(self._need)

    def take(self, ts: int) -> pa.Table | None:
        """The rows of frame ``ts`` (None when the component has none for it)."""
        while self._need.get(ts, 0) > 0:
            b = next(self._batches, None)
            if b is None:
                raise self.comp.error(f"{self.comp.path} ended before all indexed rows were read")
            n = b.num_rows
            t, w = self._ts[self._pos:self._pos + n], self._wanted[self._pos:self._pos + n]
            self._pos += n
            for value in np.unique(t[w]):
                idx = np.flatnonzero(w & (t == value))
                contiguous = idx[-1] - idx[0] + 1 == idx.size
                piece = b.slice(int(idx[0]), int(idx.size)) if contiguous else b.take(pa.array(idx))
                self._pending[int(value)].append(piece)
                self._need[int(value)] -= idx.size
        pieces = self._pending.pop(ts, None)
        self._need.pop(ts, None)
        return pa.Table.from_batches(pieces) if pieces else None


class _Blame:
    """Turns decoding errors into a ComponentError naming segment, component and frame."""

    def __init__(self, segment: str, component: str, ts: int | None = None):
        self.segment, self.component, self.ts = segment, component, ts

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is not None and isinstance(e, (ValueError, KeyError, IndexError, TypeError, pa.ArrowException)) \
                and not isinstance(e, ComponentError):
            where = f"frame {self.ts}: " if self.ts is not None else ""
            raise ComponentError(self.segment, self.component, f"{where}{e}") from e
        return False


def _require_rows(segment: str, component: str, ts: int, have: dict, need, names: dict) -> None:
    lacking = [names.get(i, str(i)) for i in need if i not in have]
    if lacking:
        raise ComponentError(segment, component, f"frame {ts}: no row for {', '.join(lacking)}")


def segment_frames(src: Path | str, segment: str, laser_ids: set[int] | None = None,
                   report: BuildReport | None = None) -> Iterator[Frame]:
    """The frames of ``segment`` in timestamp order; ``laser_ids`` None keeps every lidar."""
    report = report if report is not None else BuildReport()
    comps = {name: _Component(src, segment, name) for name in s.REQUIRED}
    for name in s.OPTIONAL:
        if component_path(src, name, segment).exists():
            comps[name] = _Component(src, segment, name)
    with _Blame(segment, "lidar_calibration"):
        lasers = dec.laser_calibs(comps["lidar_calibration"].read_segment_rows())
    with _Blame(segment, "camera_calibration"):
        cameras = dec.camera_calibs(comps["camera_calibration"].read_segment_rows())
    with _Blame(segment, "vehicle_pose"):
        poses = dec.vehicle_poses(comps["vehicle_pose"].read_segment_rows())
    lidar_like = ("lidar", "lidar_camera_projection", "lidar_pose", "lidar_segmentation")
    cursors = {name: _Cursor(c, laser_ids if name in lidar_like else None)
               for name, c in comps.items() if name in s.SENSOR_KEY or name == "lidar_box"}
    timestamps = cursors["lidar"].timestamps()
    if not timestamps:
        raise ComponentError(segment, "lidar", f"no rows for lidars {sorted(laser_ids or [])}")
    for index, ts in enumerate(timestamps):
        t = {name: cur.take(ts) for name, cur in cursors.items()}
        if ts not in poses:
            raise ComponentError(segment, "vehicle_pose", f"no row for frame {ts}")
        with _Blame(segment, "lidar", ts):
            ri = dec.tensors(t["lidar"], "lidar", _RETS, np.float32)
        _require_rows(segment, "lidar_calibration", ts, lasers, ri, LASER_NAMES)
        with _Blame(segment, "lidar_camera_projection", ts):
            proj = dec.tensors(t["lidar_camera_projection"], "lidar_camera_projection", _RETS, np.int32, True) \
                if t["lidar_camera_projection"] is not None else {}
        _require_rows(segment, "lidar_camera_projection", ts, proj, ri, LASER_NAMES)
        with _Blame(segment, "lidar_pose", ts):
            pose = {} if t["lidar_pose"] is None else dec.tensors(t["lidar_pose"], "lidar_pose", _RETS[:1], np.float32)
        _require_rows(segment, "lidar_pose", ts, pose, [l for l in ri if l == TOP_LIDAR], LASER_NAMES)
        seg = {}
        if t.get("lidar_segmentation") is not None:
            with _Blame(segment, "lidar_segmentation", ts):
                seg = dec.tensors(t["lidar_segmentation"], "lidar_segmentation", _RETS, np.int32, True)
        scans = {l: LaserScan(l, ri[l], proj[l], pose.get(l, [None])[0], seg.get(l)) for l in ri}
        if t["camera_image"] is None:
            raise ComponentError(segment, "camera_image", f"no rows for frame {ts}")
        with _Blame(segment, "camera_image / camera_segmentation", ts):
            shots = dec.camera_shots(t["camera_image"], t.get("camera_segmentation"))
        _require_rows(segment, "camera_calibration", ts, cameras, shots, CAMERA_NAMES)
        with _Blame(segment, "camera_box", ts):
            boxes = dec.camera_boxes(t["camera_box"])
        lidar_boxes = None
        if "lidar_box" in cursors:
            with _Blame(segment, "lidar_box", ts):
                lidar_boxes = dec.lidar_boxes(t["lidar_box"])
        rec = FrameRecords(ts, poses[ts], scans, shots, boxes, lidar_boxes)
        try:
            frame = build_frame(segment, index, rec, lasers, cameras, laser_ids, report)
        except ValueError as e:
            raise ValueError(f"segment {segment}: frame {ts}: {e}") from e
        yield frame
