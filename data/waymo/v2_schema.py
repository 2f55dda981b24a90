"""Waymo v2 Parquet components: tags, key columns, declared column names and types (A.0-A.11).

``SCHEMAS`` is the schema the upstream dataclasses declare (what writers should produce); readers
must not rely on the exact types (A.0 "Declared types versus what is on disk"): they select columns
by name and cast on read with the helpers below (enum keys may arrive as strings, transforms as
float32, projections as float32 holding integers).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .labels import CAMERA_NAMES, LASER_NAMES

SEGMENT, TIMESTAMP = "key.segment_context_name", "key.frame_timestamp_micros"
LASER, CAMERA = "key.laser_name", "key.camera_name"
LASER_OBJECT, CAMERA_OBJECT = "key.laser_object_id", "key.camera_object_id"

REQUIRED = ("lidar", "lidar_calibration", "lidar_camera_projection", "lidar_pose", "camera_image",
            "camera_calibration", "camera_box", "vehicle_pose")
OPTIONAL = ("lidar_segmentation", "camera_segmentation", "lidar_box")

PREFIX = {
    "lidar": "[LiDARComponent]", "lidar_calibration": "[LiDARCalibrationComponent]",
    "lidar_pose": "[LiDARPoseComponent]", "lidar_camera_projection": "[LiDARCameraProjectionComponent]",
    "camera_image": "[CameraImageComponent]", "camera_calibration": "[CameraCalibrationComponent]",
    "camera_box": "[CameraBoxComponent]", "lidar_box": "[LiDARBoxComponent]",
    "lidar_segmentation": "[LiDARSegmentationLabelComponent]",
    "camera_segmentation": "[CameraSegmentationLabelComponent]", "vehicle_pose": "[VehiclePoseComponent]",
}
_KEY_TYPES = {SEGMENT: pa.string(), TIMESTAMP: pa.int64(), LASER: pa.int8(), CAMERA: pa.int8(),
              LASER_OBJECT: pa.string(), CAMERA_OBJECT: pa.string()}
KEYS = {
    "lidar": (SEGMENT, TIMESTAMP, LASER), "lidar_calibration": (SEGMENT, LASER),
    "lidar_pose": (SEGMENT, TIMESTAMP, LASER), "lidar_camera_projection": (SEGMENT, TIMESTAMP, LASER),
    "camera_image": (SEGMENT, TIMESTAMP, CAMERA), "camera_calibration": (SEGMENT, CAMERA),
    "camera_box": (SEGMENT, TIMESTAMP, CAMERA, CAMERA_OBJECT), "lidar_box": (SEGMENT, TIMESTAMP, LASER_OBJECT),
    "lidar_segmentation": (SEGMENT, TIMESTAMP, LASER), "camera_segmentation": (SEGMENT, TIMESTAMP, CAMERA),
    "vehicle_pose": (SEGMENT, TIMESTAMP),
}
#: the key that names the sensor of a per-frame row (None: one row per frame or per object)
SENSOR_KEY = {"lidar": LASER, "lidar_pose": LASER, "lidar_camera_projection": LASER, "lidar_segmentation": LASER,
              "camera_image": CAMERA, "camera_segmentation": CAMERA, "camera_box": CAMERA}

_F32L, _F64L, _I32L = pa.list_(pa.float32()), pa.list_(pa.float64()), pa.list_(pa.int32())
_SHAPE, _T16 = pa.list_(pa.int32(), 3), pa.list_(pa.float64(), 16)


def _range_image(values: pa.DataType, returns: int) -> dict:
    out = {}
    for r in range(1, returns + 1):
        out[f"range_image_return{r}.values"] = values
        out[f"range_image_return{r}.shape"] = _SHAPE
    return out


_FIELDS: dict[str, dict[str, pa.DataType]] = {
    "lidar": _range_image(_F32L, 2),
    "lidar_calibration": {"extrinsic.transform": _T16, "beam_inclination.min": pa.float64(),
                          "beam_inclination.max": pa.float64(), "beam_inclination.values": _F64L},
    "lidar_pose": _range_image(_F32L, 1),
    "lidar_camera_projection": _range_image(_F32L, 2),
    "camera_image": {
        "image": pa.binary(), "pose.transform": _T16,
        **{f"velocity.linear_velocity.{a}": pa.float32() for a in "xyz"},
        **{f"velocity.angular_velocity.{a}": pa.float64() for a in "xyz"},
        "pose_timestamp": pa.float64(), "rolling_shutter_params.shutter": pa.float64(),
        "rolling_shutter_params.camera_trigger_time": pa.float64(),
        "rolling_shutter_params.camera_readout_done_time": pa.float64()},
    "camera_calibration": {
        **{f"intrinsic.{k}": pa.float64() for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3")},
        "extrinsic.transform": _T16, "width": pa.int32(), "height": pa.int32(),
        "rolling_shutter_direction": pa.int8()},
    "camera_box": {"box.center.x": pa.float64(), "box.center.y": pa.float64(), "box.size.x": pa.float64(),
                   "box.size.y": pa.float64(), "type": pa.int8(), "difficulty_level.detection": pa.int8(),
                   "difficulty_level.tracking": pa.int8()},
    "lidar_box": {
        **{f"box.center.{a}": pa.float64() for a in "xyz"}, **{f"box.size.{a}": pa.float64() for a in "xyz"},
        "box.heading": pa.float64(), "type": pa.int8(), "num_lidar_points_in_box": pa.int64(),
        "num_top_lidar_points_in_box": pa.int64(), **{f"speed.{a}": pa.float64() for a in "xyz"},
        **{f"acceleration.{a}": pa.float64() for a in "xyz"}, "difficulty_level.detection": pa.int8(),
        "difficulty_level.tracking": pa.int8()},
    "lidar_segmentation": _range_image(_I32L, 2),
    "camera_segmentation": {
        "panoptic_label_divisor": pa.int32(), "panoptic_label": pa.binary(),
        "instance_id_to_global_id_mapping.local_instance_ids": _I32L,
        "instance_id_to_global_id_mapping.global_instance_ids": _I32L,
        "instance_id_to_global_id_mapping.is_tracked": pa.list_(pa.bool_()),
        "sequence_id": pa.string(), "num_cameras_covered": pa.binary()},
    "vehicle_pose": {"world_from_vehicle.transform": _T16},
}


def col(component: str, field: str) -> str:
    """Full column name of a component field, e.g. ``[LiDARComponent].range_image_return1.values``."""
    return f"{PREFIX[component]}.{field}"


def schema(component: str) -> pa.Schema:
    """The declared Arrow schema of a component (keys first)."""
    return pa.schema([(k, _KEY_TYPES[k]) for k in KEYS[component]]
                     + [(col(component, f), t) for f, t in _FIELDS[component].items()])


SCHEMAS = {name: schema(name) for name in PREFIX}

# --- casting on read (A.0 "Reader rule") -------------------------------------------------------------

_NAME_TO_ID = {LASER: {v: k for k, v in LASER_NAMES.items()}, CAMERA: {v: k for k, v in CAMERA_NAMES.items()}}


def ints(arr, key: str | None = None) -> np.ndarray:
    """int64 numpy values of an integer-like column; enum keys may arrive as strings ("1" or "TOP")."""
    arr = _flat(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        names = _NAME_TO_ID.get(key, {})
        out = []
        for v in arr.to_pylist():
            s = str(v).strip()
            out.append(int(s) if s.lstrip("-").isdigit() else names[s.upper()])
        return np.array(out, np.int64)
    if arr.null_count:
        raise ValueError(f"{arr.null_count} null values in an integer column")
    return arr.to_numpy(zero_copy_only=False).astype(np.int64)


def floats(arr) -> np.ndarray:
    """float64 values; nulls become NaN."""
    arr = _flat(arr)
    return arr.to_numpy(zero_copy_only=False).astype(np.float64)


def strings(arr) -> list[str]:
    return [str(v) for v in _flat(arr).to_pylist()]


def list_value(arr, i: int, dtype) -> np.ndarray | None:
    """Row ``i`` of a list column as a numpy array (None when null); zero-copy when types allow."""
    cell = _flat(arr)[i]
    if not cell.is_valid:
        return None
    return cell.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def tensor(table: pa.Table, component: str, field: str, i: int, dtype, integer: bool = False) -> np.ndarray | None:
    """Row ``i`` of a flattened tensor (``<field>.values`` reshaped by ``<field>.shape``, C order, A.0).

    ``integer`` rounds float storage to int32 (A.4: projections are integers stored as float32).
    """
    vals = list_value(table.column(col(component, f"{field}.values")), i, None)
    shape = list_value(table.column(col(component, f"{field}.shape")), i, np.int64)
    if vals is None or shape is None or vals.size == 0:
        return None
    if int(np.prod(shape)) != vals.size:
        raise ValueError(f"{col(component, field)}: {vals.size} values for shape {shape.tolist()}")
    if integer and vals.dtype.kind == "f":
        vals = np.rint(vals).astype(np.int32)
    return vals.astype(dtype, copy=False).reshape(tuple(int(s) for s in shape))


def transforms(arr) -> np.ndarray:
    """(K, 4, 4) float64 row-major transforms (A.0 "4x4 transforms"); float32 storage is widened."""
    arr = _flat(arr)
    if arr.null_count:
        raise ValueError("null transform")
    vals = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    if vals.size != 16 * len(arr):
        raise ValueError(f"transforms with {vals.size / max(len(arr), 1):g} numbers, expected 16")
    return vals.reshape(-1, 4, 4)


def _flat(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
