"""Dataset statistics for ``mwsis info``, read from a few columns only (no images, no decoding)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .frame import CLASS_NAMES, TOP_LIDAR
from .schema import frames as F
from .store import Dataset

_GT_COLUMNS = {F.GT_SEMANTIC: "point_semantic", F.GT_INSTANCE: "point_instance", F.GT_MASKS: "masks2d",
               F.GT_BOXES3D: "boxes3d"}


def summarize(ds: Dataset, progress: Callable[[int], None] | None = None) -> dict:
    """Counts over the whole dataset. Keys ``frames``, ``points_per_frame``, ``range_image_shape``,
    ``boxes_per_class`` and ``ground_truth`` are a stable interface (scripts rely on them)."""
    points: list[int] = []
    boxes_per_class = {name: 0 for name in ds.class_names}
    boxes_per_camera: dict[str, int] = {}
    gt_seen = {name: 0 for name in _GT_COLUMNS.values()}
    shape = None
    columns = ["x", F.LIDARS, F.BOXES2D, *_GT_COLUMNS]
    for shard in ds.iter_shards():
        table = shard.read_columns(columns)
        points += table.column("x").combine_chunks().value_lengths().to_numpy().tolist()
        for row in table.column(F.BOXES2D).to_pylist():
            for b in row:
                name = ds.class_names[b["class_id"]] if b["class_id"] < len(ds.class_names) else str(b["class_id"])
                boxes_per_class[name] = boxes_per_class.get(name, 0) + 1
                cam = str(b["camera_id"])
                boxes_per_camera[cam] = boxes_per_camera.get(cam, 0) + 1
        if shape is None and len(table):
            for lid in table.column(F.LIDARS)[0].as_py():
                if lid["laser_id"] == TOP_LIDAR:
                    shape = [lid["height"], lid["width"]]
        for col, name in _GT_COLUMNS.items():
            gt_seen[name] += len(table) - table.column(col).null_count
        if progress is not None:
            progress(len(table))
    return {
        "frames": len(points),
        "shards": ds.num_shards,
        "points_per_frame": float(np.mean(points)) if points else 0.0,
        "points_min": int(min(points)) if points else 0,
        "points_max": int(max(points)) if points else 0,
        "range_image_shape": shape,
        "boxes_per_class": boxes_per_class,
        "boxes_per_camera": boxes_per_camera,
        "ground_truth": [name for name, n in gt_seen.items() if n > 0],
        "ground_truth_frames": gt_seen,
        "class_names": list(ds.class_names or CLASS_NAMES),
        "sensors": ds.manifest.sensors,
        "first_frame_id": ds.frame_ids[0] if len(ds) else None,
    }
