"""The ``clicks`` table: ``DATASET/clicks/<source>/<shard>.parquet``, point supervision (WISE: one click per
object and camera image), a weak label beside the frames' 2D boxes.

One row (and row group) per frame, aligned 1:1 with the frame shard of the same name. ``clicks`` lists the
frame's clicks: camera, class, pixel (u, v) in continuous image coordinates (pixel i spans [i, i+1)) and the
object id. A dataset may hold several click sets side by side, one per ``<source>``: imported from a
COCO-style keypoints file (``coco``), or derived from what the dataset has, for experiments
(``box-centre``: WISE's KITTI protocol; ``mask-centre``: the maximum of the distance transform of the true
mask, WISE's COCO protocol, an oracle; ``mask-random-s<seed>``: a uniformly random pixel of the visible
mask, a human-like click). The Parquet metadata records how the set was made (``source``, its parameters,
the code version and the frame shard's checksum).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from ..frame import Clicks2D
from .frames import FRAME_ID

CLICKS = "clicks"
CLICK_T = pa.struct([
    ("camera_id", pa.int8()), ("class_id", pa.int8()), ("u", pa.float32()), ("v", pa.float32()),
    ("object_id", pa.int64()),
])
CLICKS_SCHEMA = pa.schema([(FRAME_ID, pa.string()), (CLICKS, pa.list_(CLICK_T))])
META_CLICKS = b"mwsis.clicks"


def clicks_metadata(info: dict) -> dict[bytes, bytes]:
    return {META_CLICKS: json.dumps(info, sort_keys=True).encode()}


def read_clicks_metadata(meta: dict[bytes, bytes] | None) -> dict:
    return json.loads(meta[META_CLICKS]) if meta and META_CLICKS in meta else {}


def clicks_to_table(frame_id: str, clicks: Clicks2D) -> pa.Table:
    """One frame's clicks as a one-row table."""
    rows = [{"camera_id": int(c), "class_id": int(k), "u": float(uv[0]), "v": float(uv[1]), "object_id": int(o)}
            for c, k, uv, o in zip(clicks.camera_id, clicks.class_id, clicks.uv, clicks.object_id)]
    return pa.Table.from_arrays([pa.array([frame_id], pa.string()), pa.array([rows], pa.list_(CLICK_T))],
                                schema=CLICKS_SCHEMA)


def table_row_to_clicks(table: pa.Table, row: int = 0) -> tuple[str, Clicks2D]:
    """(frame id, ``Clicks2D``) of row ``row``."""
    rows = table.column(CLICKS)[row].as_py() or []
    return table.column(FRAME_ID)[row].as_py(), Clicks2D(
        np.array([r["camera_id"] for r in rows], np.int8), np.array([r["class_id"] for r in rows], np.int8),
        np.array([[r["u"], r["v"]] for r in rows], np.float32).reshape(-1, 2),
        np.array([r["object_id"] for r in rows], np.int64))
