"""The ``predictions`` table: teacher outputs exchanged between trainers and the PVC stage.

``DATASET/predictions/<source>/round=<R>/<shard>.parquet``, one row group per frame, aligned 1:1 with
the frame shard of the same name. ``probs`` is a float16 list: the frame's per-point values flattened
row-major from shape ``(N, *tail)``; ``tail`` is recorded in the metadata:

* ``3d``: the 3D teacher's per-class sigmoid probabilities, tail ``[C]`` (PVC, CSCS 3D → 2D);
* ``2d``: the 2D teacher's per-class mask probabilities sampled at each point's two camera
  projections, tail ``[2, C]`` (CSCS 2D → 3D);
* ``3dfeat``: the 3D teacher's per-point features, projected to ``FEATURE_DIM`` and l2-normalised
  (``crossmodal.affinity``), tail ``[FEATURE_DIM]`` (Joint 2D–3D WSSS's 3D → 2D correlation). Written with
  a ``3d`` round of the same number, each shard before its ``3d`` shard, so that a complete ``3d`` round
  implies complete features.

NaN means "no prediction for this point" (not in the evaluated set, or no projection in that slot).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .frames import FRAME_ID

PROBS = "probs"
SOURCES = ("3d", "2d", "3dfeat")
FEATURES_SOURCE = "3dfeat"
FEATURE_DIM = 16
PREDICTIONS_SCHEMA = pa.schema([(FRAME_ID, pa.string()), (PROBS, pa.list_(pa.float16()))])
META_TAIL = b"mwsis.tail"
META_INFO = b"mwsis.info"


def predictions_metadata(tail: tuple[int, ...], info: dict) -> dict[bytes, bytes]:
    return {META_TAIL: json.dumps(list(tail)).encode(), META_INFO: json.dumps(info, sort_keys=True).encode()}


def predictions_to_table(frame_id: str, probs: np.ndarray) -> pa.Table:
    """One frame's (N, *tail) probabilities as a one-row table, stored as float16."""
    flat = np.ascontiguousarray(probs, dtype=np.float16).ravel()
    arr = pa.ListArray.from_arrays(pa.array([0, len(flat)], pa.int32()), pa.array(flat, pa.float16()))
    return pa.Table.from_arrays([pa.array([frame_id], pa.string()), arr], schema=PREDICTIONS_SCHEMA)


def table_row_to_predictions(table: pa.Table, tail: tuple[int, ...], row: int = 0) -> tuple[str, np.ndarray]:
    """(frame id, (N, *tail) float16 probabilities) of row ``row``."""
    cell = table.column(PROBS).slice(row, 1).combine_chunks()
    flat = cell.values.to_numpy(zero_copy_only=False)
    return table.column(FRAME_ID)[row].as_py(), flat.reshape((-1, *tail))
