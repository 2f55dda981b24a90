"""Pure decoding of v2 component rows (Arrow tables) into Waymo records (``records``). No file access.

Each function takes the rows of one component that belong together (a segment's calibrations, one
frame's rows of a sensor component) and joins by key columns only, never by row position (A.0).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from . import v2_schema as s
from .records import CameraBoxes, CameraCalib, CameraShot, LaserCalib, LidarBoxes, Panoptic


def _by_sensor(table: pa.Table | None, component: str) -> dict[int, int]:
    """sensor id -> row index; duplicated sensors are an error (a corrupt or mixed-up file)."""
    if table is None or table.num_rows == 0:
        return {}
    key = s.SENSOR_KEY.get(component) or (s.LASER if s.LASER in table.column_names else s.CAMERA)
    ids = s.ints(table.column(key), key)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"duplicated {key} values {sorted(ids.tolist())}")
    return {int(v): i for i, v in enumerate(ids)}


def laser_calibs(table: pa.Table) -> dict[int, LaserCalib]:
    c = "lidar_calibration"
    ext = s.transforms(table.column(s.col(c, "extrinsic.transform")))
    vmin = s.floats(table.column(s.col(c, "beam_inclination.min")))
    vmax = s.floats(table.column(s.col(c, "beam_inclination.max")))
    values = table.column(s.col(c, "beam_inclination.values"))
    out = {}
    for laser, i in _by_sensor(table, c).items():
        v = s.list_value(values, i, np.float64)
        out[laser] = LaserCalib(laser, ext[i], v if v is not None and v.size else None, float(vmin[i]), float(vmax[i]))
    return out


def camera_calibs(table: pa.Table) -> dict[int, CameraCalib]:
    c = "camera_calibration"
    intr = np.stack([s.floats(table.column(s.col(c, f"intrinsic.{k}")))
                     for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")], axis=1)
    intr = np.nan_to_num(intr)  # a null k3 (older files) means no third radial term
    ext = s.transforms(table.column(s.col(c, "extrinsic.transform")))
    w, h = s.ints(table.column(s.col(c, "width"))), s.ints(table.column(s.col(c, "height")))
    rs_name = s.col(c, "rolling_shutter_direction")
    rs = s.ints(table.column(rs_name)) if rs_name in table.column_names else np.zeros(len(w), np.int64)
    return {cam: CameraCalib(cam, intr[i], ext[i], int(w[i]), int(h[i]), int(rs[i]))
            for cam, i in _by_sensor(table, c).items()}


def vehicle_poses(table: pa.Table) -> dict[int, np.ndarray]:
    """timestamp -> (4, 4) world_from_vehicle (A.11)."""
    ts = s.ints(table.column(s.TIMESTAMP))
    poses = s.transforms(table.column(s.col("vehicle_pose", "world_from_vehicle.transform")))
    if len(set(ts.tolist())) != len(ts):
        raise ValueError("duplicated frame timestamps")
    return {int(t): poses[i] for i, t in enumerate(ts)}


def tensors(table, component, field_names, dtype, integer=False) -> dict[int, list]:
    """sensor id -> [tensor per field] (None where a field column is absent or the cell is null)."""
    rows = _by_sensor(table, component)
    present = [f for f in field_names if s.col(component, f"{f}.values") in (table.column_names if table else [])]
    return {sid: [s.tensor(table, component, f, i, dtype, integer) if f in present else None for f in field_names]
            for sid, i in rows.items()}


def camera_shots(images: pa.Table, segmentation: pa.Table | None) -> dict[int, CameraShot]:
    """One frame's cameras from ``camera_image`` and (optional) ``camera_segmentation`` rows."""
    c, cs = "camera_image", "camera_segmentation"
    img = images.column(s.col(c, "image"))
    pose_name = s.col(c, "pose.transform")
    poses = s.transforms(images.column(pose_name)) if pose_name in images.column_names else None
    seg_rows = _by_sensor(segmentation, cs)
    out = {}
    for cam, i in _by_sensor(images, c).items():
        data = img[i].as_py()
        if not data:
            raise ValueError(f"camera {cam}: empty image")
        pan = None
        if cam in seg_rows:
            j = seg_rows[cam]
            mapping = "instance_id_to_global_id_mapping"
            local = s.list_value(segmentation.column(s.col(cs, f"{mapping}.local_instance_ids")), j, np.int64)
            glob = s.list_value(segmentation.column(s.col(cs, f"{mapping}.global_instance_ids")), j, np.int64)
            pan = Panoptic(segmentation.column(s.col(cs, "panoptic_label"))[j].as_py(),
                           int(s.ints(segmentation.column(s.col(cs, "panoptic_label_divisor")))[j]),
                           local if local is not None else np.zeros(0, np.int64),
                           glob if glob is not None else np.zeros(0, np.int64))
        out[cam] = CameraShot(cam, data, None if poses is None else poses[i], pan)
    return out


def camera_boxes(table: pa.Table | None) -> CameraBoxes:
    if table is None or table.num_rows == 0:
        return CameraBoxes.empty()
    c = "camera_box"
    f = lambda name: s.floats(table.column(s.col(c, name)))  # noqa: E731
    return CameraBoxes(s.ints(table.column(s.CAMERA), s.CAMERA), s.strings(table.column(s.CAMERA_OBJECT)),
                       s.ints(table.column(s.col(c, "type"))), np.stack([f("box.center.x"), f("box.center.y")], 1),
                       np.stack([f("box.size.x"), f("box.size.y")], 1))


def lidar_boxes(table: pa.Table | None) -> LidarBoxes:
    if table is None or table.num_rows == 0:
        return LidarBoxes.empty()
    c = "lidar_box"
    f = lambda name: s.floats(table.column(s.col(c, name)))  # noqa: E731
    return LidarBoxes(s.strings(table.column(s.LASER_OBJECT)), s.ints(table.column(s.col(c, "type"))),
                      np.stack([f(f"box.center.{a}") for a in "xyz"], 1),
                      np.stack([f(f"box.size.{a}") for a in "xyz"], 1), f("box.heading"))
