"""The ``labels`` table of a stage: ``DATASET/labels/<stage>/<shard>.parquet``.

One row (and row group) per frame, aligned 1:1 with the frame shard of the same name, and per-point
lists aligned with that frame's points (same order, all points). Columns a stage does not produce
are null. Label conventions (README "Label conventions"):

* ``semantic``: −1 ignore (no loss, not evaluated as a prediction), 0..C−1 class, C background.
* ``instance``: 0 none, 1..K = index of the claiming 2D box in the frame's ``boxes2d`` list + 1.
* ``segment``: DCS ring-segment id (frame-global), −1 where the point has none.
* ``masks2d``: 2D masks from SAM box prompts, one per 2D box (``box_index`` into ``boxes2d``).
* ``centre``, ``inst_score`` (only in shards of stages that rank their instances, e.g. TWIST's proposal
  update; ``LABELS_SCHEMA_SCORED``): per instance 1..K its target centre (K x 3 float32 flattened, NaN = the
  mean of its points, the default vote target) and its score (K float32, what ``eval-labels`` ranks by).
  Shards of the other stages keep ``LABELS_SCHEMA`` and their bytes.

The Parquet key-value metadata records the stage, its resolved config, the code version and the
checksums of the inputs, so a rerun can tell whether a finished shard is still valid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .frames import FRAME_ID

SEMANTIC = "semantic"
INSTANCE = "instance"
SEGMENT = "segment"
MASKS2D = "masks2d"
LABEL_MASK_T = pa.struct([
    ("camera_id", pa.int8()), ("box_index", pa.int32()), ("class_id", pa.int8()), ("score", pa.float32()),
    ("height", pa.int32()), ("width", pa.int32()), ("counts", pa.binary()),
])
LABELS_SCHEMA = pa.schema([
    (FRAME_ID, pa.string()),
    (SEMANTIC, pa.list_(pa.int8())),
    (INSTANCE, pa.list_(pa.int32())),
    (SEGMENT, pa.list_(pa.int32())),
    (MASKS2D, pa.list_(LABEL_MASK_T)),
])
CENTRE = "centre"
INST_SCORE = "inst_score"
LABELS_SCHEMA_SCORED = pa.schema([*LABELS_SCHEMA, (CENTRE, pa.list_(pa.float32())), (INST_SCORE, pa.list_(pa.float32()))])

META_STAGE = b"mwsis.stage"
META_CONFIG = b"mwsis.config"
META_VERSION = b"mwsis.code_version"
META_INPUTS = b"mwsis.inputs"


@dataclass
class LabelMasks:
    """2D masks a stage made (SAM), one per answered box: K masks as pycocotools RLEs."""
    camera_id: np.ndarray  # (K,) int8
    box_index: np.ndarray  # (K,) int32, index into the frame's boxes2d
    class_id: np.ndarray  # (K,) int8
    score: np.ndarray  # (K,) float32 (SAM's predicted IoU)
    rles: list[dict]  # pycocotools RLE: {"size": [h, w], "counts": bytes}


@dataclass
class FrameLabels:
    """One frame's labels from one stage; any field may be None when the stage does not produce it."""

    frame_id: str
    semantic: np.ndarray | None = None  # (N,) int8
    instance: np.ndarray | None = None  # (N,) int32
    segment: np.ndarray | None = None  # (N,) int32
    masks2d: LabelMasks | None = field(default=None, repr=False)
    centre: np.ndarray | None = None  # (K, 3) float32, target centre of instance k + 1 (NaN: its points' mean)
    inst_score: np.ndarray | None = None  # (K,) float32, score of instance k + 1

    @property
    def scored(self) -> bool:
        return self.centre is not None or self.inst_score is not None


def _list_or_null(values: np.ndarray | None, t: pa.DataType) -> pa.Array:
    if values is None:
        return pa.nulls(1, pa.list_(t))
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), pa.array(np.ascontiguousarray(values), t))


def labels_to_table(labels: FrameLabels, schema: pa.Schema = LABELS_SCHEMA) -> pa.Table:
    """One ``FrameLabels`` as a one-row Parquet table of ``schema`` (``LABELS_SCHEMA``, or
    ``LABELS_SCHEMA_SCORED`` for instance centres and scores; the only place that spells the columns)."""
    scored = CENTRE in schema.names
    if labels.scored and not scored:
        raise ValueError(f"frame {labels.frame_id}: labels with instance centres or scores need LABELS_SCHEMA_SCORED")
    m = labels.masks2d
    masks = None if m is None else [
        {"camera_id": int(m.camera_id[i]), "box_index": int(m.box_index[i]), "class_id": int(m.class_id[i]),
         "score": float(m.score[i]), "height": int(m.rles[i]["size"][0]), "width": int(m.rles[i]["size"][1]),
         "counts": bytes(m.rles[i]["counts"])} for i in range(len(m.rles))]
    columns = {
        FRAME_ID: pa.array([labels.frame_id], pa.string()),
        SEMANTIC: _list_or_null(labels.semantic, pa.int8()),
        INSTANCE: _list_or_null(labels.instance, pa.int32()),
        SEGMENT: _list_or_null(labels.segment, pa.int32()),
        MASKS2D: pa.array([masks], pa.list_(LABEL_MASK_T)),
    }
    if scored:
        columns[CENTRE] = _list_or_null(None if labels.centre is None else np.asarray(labels.centre).reshape(-1),
                                        pa.float32())
        columns[INST_SCORE] = _list_or_null(labels.inst_score, pa.float32())
    return pa.Table.from_pydict(columns, schema=schema)


def _np(table: pa.Table, name: str, row: int, dtype) -> np.ndarray | None:
    cell = table.column(name).slice(row, 1).combine_chunks()
    if cell.null_count:
        return None
    return cell.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def table_row_to_labels(table: pa.Table, row: int = 0) -> FrameLabels:
    """Row ``row`` of a labels table back into ``FrameLabels`` (arrays of the schema's dtypes)."""
    masks = table.column(MASKS2D)[row].as_py()
    scored = CENTRE in table.schema.names
    centre = _np(table, CENTRE, row, np.float32) if scored else None
    score = _np(table, INST_SCORE, row, np.float32) if scored else None
    frame_id = table.column(FRAME_ID)[row].as_py()
    if centre is not None:
        if centre.size % 3:
            raise ValueError(f"frame {frame_id}: column {CENTRE!r} holds {centre.size} values, not 3 per instance")
        centre = centre.reshape(-1, 3)
    out = FrameLabels(
        frame_id=frame_id,
        semantic=_np(table, SEMANTIC, row, np.int8),
        instance=_np(table, INSTANCE, row, np.int32),
        segment=_np(table, SEGMENT, row, np.int32),
        masks2d=None if masks is None else LabelMasks(
            np.array([m["camera_id"] for m in masks], np.int8), np.array([m["box_index"] for m in masks], np.int32),
            np.array([m["class_id"] for m in masks], np.int8), np.array([m["score"] for m in masks], np.float32),
            [{"size": [m["height"], m["width"]], "counts": m["counts"]} for m in masks]),
        centre=centre, inst_score=score,
    )
    if scored:
        check_scored(out)
    return out


def check_scored(labels: FrameLabels) -> None:
    """Raise ``ValueError`` naming the frame and column unless every instance id has a centre and a score."""
    k = int(labels.instance.max(initial=0)) if labels.instance is not None else 0
    for name, values in ((CENTRE, labels.centre), (INST_SCORE, labels.inst_score)):
        n = 0 if values is None else len(values)
        if n < k:
            raise ValueError(f"frame {labels.frame_id}: column {name!r} holds {n} instances, but instance ids "
                             f"reach {k}")


def label_metadata(stage: str, config: dict, code_version: str, inputs: dict) -> dict[bytes, bytes]:
    """Deterministic key-value metadata (sorted JSON) for a label shard."""
    return {
        META_STAGE: stage.encode(),
        META_CONFIG: json.dumps(config, sort_keys=True).encode(),
        META_VERSION: code_version.encode(),
        META_INPUTS: json.dumps(inputs, sort_keys=True).encode(),
    }


def read_label_metadata(meta: dict[bytes, bytes] | None) -> dict:
    meta = meta or {}
    out = {}
    for key, name in ((META_STAGE, "stage"), (META_VERSION, "code_version")):
        if key in meta:
            out[name] = meta[key].decode()
    for key, name in ((META_CONFIG, "config"), (META_INPUTS, "inputs")):
        if key in meta:
            out[name] = json.loads(meta[key])
    return out
