"""Click shards: ``DATASET/clicks/<source>/<shard>.parquet`` (``schema.clicks``), aligned with the frame shards.

Written atomically with a checksum stamp, like label shards; read back verified (every byte), with each
click checked against the dataset: a known camera, a class of the dataset, a finite pixel inside the image.
A bad click raises ``ShardError`` naming the file, the frame and the field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .frame import Clicks2D
from .integrity import check_file, sealer
from .schema.clicks import CLICKS_SCHEMA, clicks_metadata, clicks_to_table, read_clicks_metadata, table_row_to_clicks
from .store import PARQUET_OPTIONS, Dataset, ShardError, atomic_path

CLICKS_DIR = "clicks"


def click_shard_path(root: Path | str, source: str, shard: str) -> Path:
    return Path(root) / CLICKS_DIR / source / f"{shard}.parquet"


def click_sources(root: Path | str) -> list[str]:
    """The click sets a dataset holds (``clicks/<source>/``), sorted."""
    d = Path(root) / CLICKS_DIR
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []


def write_click_shard(root: Path | str, source: str, shard: str, rows: Iterable[tuple[str, Clicks2D]],
                      info: dict) -> Path:
    """Write one shard's clicks atomically; ``info`` (how they were made) goes into the metadata."""
    dest = click_shard_path(root, source, shard)
    schema = CLICKS_SCHEMA.with_metadata(clicks_metadata({"source": source, **info}))
    with atomic_path(dest, before_rename=sealer(dest)) as tmp:
        with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
            for frame_id, clicks in rows:
                writer.write_table(clicks_to_table(frame_id, clicks).replace_schema_metadata(schema.metadata),
                                   row_group_size=1)
    return dest


def check_clicks(clicks: Clicks2D, cameras: dict[int, tuple[int, int]], num_classes: int) -> str | None:
    """What is wrong with a frame's clicks (field and value), or None. ``cameras``: {id: (width, height)}."""
    for k in range(len(clicks)):
        cam, cls, (u, v) = int(clicks.camera_id[k]), int(clicks.class_id[k]), clicks.uv[k]
        if cam not in cameras:
            return f"click {k}: camera_id {cam} is not a camera of the dataset ({sorted(cameras)})"
        if not 0 <= cls < num_classes:
            return f"click {k}: class_id {cls} outside [0, {num_classes})"
        w, h = cameras[cam]
        if not (np.isfinite(u) and np.isfinite(v) and 0 <= u < w and 0 <= v < h):
            return f"click {k}: (u, v) = ({u}, {v}) outside camera {cam}'s {w}x{h} image"
    return None


class ClickShard:
    """One click set's clicks for one frame shard, a frame at a time, verified on read."""

    def __init__(self, ds: Dataset, source: str, shard: str):
        self.path = click_shard_path(ds.root, source, shard)
        hint = f"make it with `mwsis clicks --data {ds.root} --from ...`"
        if not self.path.exists():
            raise ShardError(self.path, f"missing: no '{source}' clicks for shard '{shard}' ({hint})")
        check_file(self.path, verify=True, hint=hint)
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise ShardError(self.path, f"corrupt Parquet ({e}); {hint}") from e
        self.metadata = read_clicks_metadata(self._file.schema_arrow.metadata)
        self._cameras = {int(c["camera_id"]): (int(c["width"]), int(c["height"]))
                         for c in ds.manifest.sensors.get("cameras", [])}
        self._num_classes = len(ds.manifest.class_names)

    def __len__(self) -> int:
        return self._file.num_row_groups

    def clicks(self, i: int, frame_id: str | None = None) -> tuple[str, Clicks2D]:
        """Row ``i``: (frame id, clicks); ``frame_id``: the frame it must belong to."""
        try:
            fid, clicks = table_row_to_clicks(self._file.read_row_group(i), 0)
        except (pa.ArrowException, OSError) as e:
            raise ShardError(self.path, f"cannot read frame {i} ({e})") from e
        if frame_id is not None and fid != frame_id:
            raise ShardError(self.path, f"row {i} is frame {fid}, expected {frame_id} (mismatched ids)")
        problem = check_clicks(clicks, self._cameras, self._num_classes)
        if problem:
            raise ShardError(self.path, f"frame {fid}, field clicks: {problem}")
        return fid, clicks

    def __iter__(self) -> Iterator[tuple[str, Clicks2D]]:
        for i in range(len(self)):
            yield self.clicks(i)


def read_frame_clicks(ds: Dataset, source: str, frame_id: str) -> Clicks2D:
    """One frame's clicks of a click set (verified)."""
    pos, i = ds.locate(frame_id)
    return ClickShard(ds, source, ds.manifest.shards[pos].name).clicks(i, frame_id)[1]
