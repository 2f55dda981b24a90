"""The ``frames`` table: one row (and one Parquet row group) per frame.

Per-point fields are list columns of equal length within a row; small per-frame collections
(lidars, cameras, boxes, masks) are lists of structs. Images live in their own column
``images`` (aligned with ``cameras``) so readers that do not need pixels never load them.
Ground-truth columns are nullable: null means "this source has no such label".
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..frame import Boxes2D, Boxes3D, Camera, Frame, GroundTruth, Lidar, Masks2D, Points

FRAME_ID = "frame_id"
SEQUENCE = "sequence"
INDEX = "index"
TIMESTAMP_US = "timestamp_us"

# per-point list columns: name -> (arrow type, Points attribute, component index or None)
POINT_COLUMNS: dict[str, tuple[pa.DataType, str, tuple | None]] = {
    "x": (pa.float32(), "xyz", (slice(None), 0)),
    "y": (pa.float32(), "xyz", (slice(None), 1)),
    "z": (pa.float32(), "xyz", (slice(None), 2)),
    "intensity": (pa.float32(), "intensity", None),
    "elongation": (pa.float32(), "elongation", None),
    "range": (pa.float32(), "range", None),
    "return_index": (pa.int8(), "return_index", None),
    "laser_id": (pa.int8(), "laser_id", None),
    "row": (pa.int16(), "row", None),
    "col": (pa.int16(), "col", None),
    "nlz": (pa.bool_(), "nlz", None),
    "cam1_id": (pa.int8(), "cam_id", (slice(None), 0)),
    "cam2_id": (pa.int8(), "cam_id", (slice(None), 1)),
    "cam1_u": (pa.float32(), "cam_uv", (slice(None), 0, 0)),
    "cam1_v": (pa.float32(), "cam_uv", (slice(None), 0, 1)),
    "cam2_u": (pa.float32(), "cam_uv", (slice(None), 1, 0)),
    "cam2_v": (pa.float32(), "cam_uv", (slice(None), 1, 1)),
}

LIDARS = "lidars"
LIDAR_T = pa.struct([
    ("laser_id", pa.int8()), ("height", pa.int32()), ("width", pa.int32()),
    ("extrinsic", pa.list_(pa.float64())), ("inclinations", pa.list_(pa.float32())),
])
CAMERAS = "cameras"
CAMERA_T = pa.struct([
    ("camera_id", pa.int8()), ("width", pa.int32()), ("height", pa.int32()),
    ("intrinsic", pa.list_(pa.float64())), ("distortion", pa.list_(pa.float64())),
    ("extrinsic", pa.list_(pa.float64())), ("image_format", pa.string()),
])
IMAGES = "images"
BOXES2D = "boxes2d"
BOX2D_T = pa.struct([
    ("camera_id", pa.int8()), ("class_id", pa.int8()), ("x1", pa.float32()), ("y1", pa.float32()),
    ("x2", pa.float32()), ("y2", pa.float32()), ("object_id", pa.int64()),
])
GT_SEMANTIC = "gt_semantic"
GT_INSTANCE = "gt_instance"
GT_MASKS = "gt_masks"
MASK_T = pa.struct([
    ("camera_id", pa.int8()), ("object_id", pa.int64()), ("class_id", pa.int8()),
    ("height", pa.int32()), ("width", pa.int32()), ("counts", pa.binary()),
])
GT_BOXES3D = "gt_boxes3d"
BOX3D_T = pa.struct([
    ("object_id", pa.int64()), ("class_id", pa.int8()), ("cx", pa.float32()), ("cy", pa.float32()),
    ("cz", pa.float32()), ("length", pa.float32()), ("width", pa.float32()), ("height", pa.float32()),
    ("heading", pa.float32()),
])

FRAMES_SCHEMA = pa.schema(
    [(FRAME_ID, pa.string()), (SEQUENCE, pa.string()), (INDEX, pa.int32()), (TIMESTAMP_US, pa.int64())]
    + [(name, pa.list_(t)) for name, (t, _, _) in POINT_COLUMNS.items()]
    + [(LIDARS, pa.list_(LIDAR_T)), (CAMERAS, pa.list_(CAMERA_T)), (IMAGES, pa.list_(pa.binary())),
       (BOXES2D, pa.list_(BOX2D_T)),
       (GT_SEMANTIC, pa.list_(pa.int8())), (GT_INSTANCE, pa.list_(pa.int32())),
       (GT_MASKS, pa.list_(MASK_T)), (GT_BOXES3D, pa.list_(BOX3D_T))]
)
#: columns a reader may leave out to skip decoding pixels
IMAGE_COLUMNS = (IMAGES,)
#: columns a reader may leave out besides the images: per-point intensity and elongation (the decoded
#: ``Points`` field is then None) and the ground truth (decoded as absent). The pseudo-label stages read
#: neither; the decoder needs every other column.
OPTIONAL_COLUMNS = ("intensity", "elongation", GT_SEMANTIC, GT_INSTANCE, GT_MASKS, GT_BOXES3D)
#: what the 3D pseudo-label stages read (``Shard.frame(columns=...)``): no pixels, no intensity, no truth
LABELLING_COLUMNS = tuple(n for n in FRAMES_SCHEMA.names if n not in IMAGE_COLUMNS + OPTIONAL_COLUMNS)


def _list1(values: np.ndarray, t: pa.DataType) -> pa.Array:
    """A one-row list array holding ``values`` (zero-copy for numeric numpy arrays)."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), pa.array(values, type=t))


def _structs1(rows: list[dict] | None, t: pa.DataType) -> pa.Array:
    return pa.array([rows], type=pa.list_(t))


def frame_to_table(frame: Frame) -> pa.Table:
    """Encode one frame as a one-row table with ``FRAMES_SCHEMA``."""
    p = frame.points
    cols: dict[str, pa.Array] = {
        FRAME_ID: pa.array([frame.frame_id], pa.string()),
        SEQUENCE: pa.array([frame.sequence], pa.string()),
        INDEX: pa.array([frame.index], pa.int32()),
        TIMESTAMP_US: pa.array([frame.timestamp_us], pa.int64()),
    }
    for name, (t, attr, idx) in POINT_COLUMNS.items():
        arr = getattr(p, attr)
        arr = arr[idx] if idx is not None else arr
        cols[name] = _list1(np.ascontiguousarray(arr), t)
    cols[LIDARS] = _structs1([
        {"laser_id": l.laser_id, "height": l.height, "width": l.width,
         "extrinsic": np.asarray(l.extrinsic, np.float64).ravel().tolist(),
         "inclinations": np.asarray(l.inclinations, np.float32).tolist()} for l in frame.lidars], LIDAR_T)
    cols[CAMERAS] = _structs1([
        {"camera_id": c.camera_id, "width": c.width, "height": c.height,
         "intrinsic": np.asarray(c.intrinsic, np.float64).ravel().tolist(),
         "distortion": np.asarray(c.distortion, np.float64).ravel().tolist(),
         "extrinsic": np.asarray(c.extrinsic, np.float64).ravel().tolist(),
         "image_format": c.image_format} for c in frame.cameras], CAMERA_T)
    cols[IMAGES] = pa.array([[c.image_bytes for c in frame.cameras]], pa.list_(pa.binary()))
    b = frame.boxes2d
    cols[BOXES2D] = _structs1([
        {"camera_id": int(b.camera_id[i]), "class_id": int(b.class_id[i]), "x1": float(b.xyxy[i, 0]),
         "y1": float(b.xyxy[i, 1]), "x2": float(b.xyxy[i, 2]), "y2": float(b.xyxy[i, 3]),
         "object_id": int(b.object_id[i])} for i in range(len(b))], BOX2D_T)
    gt = frame.gt
    cols[GT_SEMANTIC] = (_list1(gt.point_semantic, pa.int8()) if gt.point_semantic is not None
                         else pa.nulls(1, pa.list_(pa.int8())))
    cols[GT_INSTANCE] = (_list1(gt.point_instance, pa.int32()) if gt.point_instance is not None
                         else pa.nulls(1, pa.list_(pa.int32())))
    m = gt.masks
    cols[GT_MASKS] = _structs1(None if m is None else [
        {"camera_id": int(m.camera_id[i]), "object_id": int(m.object_id[i]), "class_id": int(m.class_id[i]),
         "height": int(m.rles[i]["size"][0]), "width": int(m.rles[i]["size"][1]),
         "counts": bytes(m.rles[i]["counts"])} for i in range(len(m))], MASK_T)
    b3 = gt.boxes3d
    cols[GT_BOXES3D] = _structs1(None if b3 is None else [
        {"object_id": int(b3.object_id[i]), "class_id": int(b3.class_id[i]),
         "cx": float(b3.center[i, 0]), "cy": float(b3.center[i, 1]), "cz": float(b3.center[i, 2]),
         "length": float(b3.size[i, 0]), "width": float(b3.size[i, 1]), "height": float(b3.size[i, 2]),
         "heading": float(b3.heading[i])} for i in range(len(b3))], BOX3D_T)
    return pa.Table.from_pydict(cols, schema=FRAMES_SCHEMA)


def _np(col: pa.ChunkedArray, row: int, dtype) -> np.ndarray | None:
    """The list value of ``row`` as a numpy array (None when the cell is null)."""
    cell = col.slice(row, 1).combine_chunks()
    if cell.null_count:
        return None
    return cell.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def table_row_to_frame(table: pa.Table, row: int = 0) -> Frame:
    """Decode row ``row`` of a frames table: every column, or a subset without some of ``IMAGE_COLUMNS`` and
    ``OPTIONAL_COLUMNS`` (absent intensity / elongation decode as None, absent truth as no truth)."""
    n = len(table)
    if not 0 <= row < n:
        raise IndexError(f"row {row} out of range for a table of {n} rows")
    have = set(table.column_names)
    missing = [c for c in FRAMES_SCHEMA.names if c not in have and c not in IMAGE_COLUMNS + OPTIONAL_COLUMNS]
    if missing:
        raise KeyError(f"columns {missing} are needed to decode a frame")

    def c(name):  # a left-out optional column reads as a null cell
        return table.column(name) if name in have else pa.chunked_array([pa.nulls(n, FRAMES_SCHEMA.field(name).type)])

    pc = {name: _np(c(name), row, t.to_pandas_dtype()) for name, (t, _, _) in POINT_COLUMNS.items()}
    xyz = np.empty((len(pc["x"]), 3), np.float32)  # filled column by column: cheaper than np.stack
    xyz[:, 0], xyz[:, 1], xyz[:, 2] = pc["x"], pc["y"], pc["z"]
    cam_uv = np.empty((len(pc["x"]), 2, 2), np.float32)
    cam_uv[:, 0, 0], cam_uv[:, 0, 1], cam_uv[:, 1, 0], cam_uv[:, 1, 1] = (pc["cam1_u"], pc["cam1_v"], pc["cam2_u"],
                                                                      pc["cam2_v"])
    cam_id = np.empty((len(pc["x"]), 2), np.int8)
    cam_id[:, 0], cam_id[:, 1] = pc["cam1_id"], pc["cam2_id"]
    points = Points(
        xyz=xyz, intensity=pc["intensity"], elongation=pc["elongation"], range=pc["range"],
        return_index=pc["return_index"], laser_id=pc["laser_id"], row=pc["row"], col=pc["col"],
        nlz=pc["nlz"].astype(bool), cam_id=cam_id, cam_uv=cam_uv,
    )
    lidars = [Lidar(r["laser_id"], r["height"], r["width"], np.asarray(r["extrinsic"]).reshape(4, 4),
                    np.asarray(r["inclinations"], np.float32)) for r in c(LIDARS)[row].as_py()]
    images = c(IMAGES)[row].as_py() if IMAGES in table.column_names else None
    cameras = [Camera(r["camera_id"], r["width"], r["height"], np.asarray(r["intrinsic"]).reshape(3, 3),
                      np.asarray(r["distortion"]), np.asarray(r["extrinsic"]).reshape(4, 4),
                      images[i] if images is not None else None, r["image_format"])
               for i, r in enumerate(c(CAMERAS)[row].as_py())]
    boxes = c(BOXES2D)[row].as_py()
    boxes2d = Boxes2D(
        np.array([b["camera_id"] for b in boxes], np.int8), np.array([b["class_id"] for b in boxes], np.int8),
        np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes], np.float32).reshape(-1, 4),
        np.array([b["object_id"] for b in boxes], np.int64))
    masks = c(GT_MASKS)[row].as_py()
    b3 = c(GT_BOXES3D)[row].as_py()
    gt = GroundTruth(
        point_semantic=_np(c(GT_SEMANTIC), row, np.int8),
        point_instance=_np(c(GT_INSTANCE), row, np.int32),
        masks=None if masks is None else Masks2D(
            np.array([m["camera_id"] for m in masks], np.int8), np.array([m["object_id"] for m in masks], np.int64),
            np.array([m["class_id"] for m in masks], np.int8),
            [{"size": [m["height"], m["width"]], "counts": m["counts"]} for m in masks]),
        boxes3d=None if b3 is None else Boxes3D(
            np.array([b["object_id"] for b in b3], np.int64), np.array([b["class_id"] for b in b3], np.int8),
            np.array([[b["cx"], b["cy"], b["cz"]] for b in b3], np.float32).reshape(-1, 3),
            np.array([[b["length"], b["width"], b["height"]] for b in b3], np.float32).reshape(-1, 3),
            np.array([b["heading"] for b in b3], np.float32)),
    )
    return Frame(c(FRAME_ID)[row].as_py(), c(SEQUENCE)[row].as_py(), c(INDEX)[row].as_py(),
                 c(TIMESTAMP_US)[row].as_py(), points, lidars, cameras, boxes2d, gt)
