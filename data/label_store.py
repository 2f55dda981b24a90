"""Label shards of a stage: ``DATASET/labels/<stage>/<shard>.parquet``, aligned with the frame shards."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .schema.labels import (LABELS_SCHEMA, LABELS_SCHEMA_SCORED, FrameLabels, label_metadata, labels_to_table,
                            read_label_metadata, table_row_to_labels)
from .integrity import IntegrityError, check_file, sealer
from .store import PARQUET_OPTIONS, Dataset, ShardError, atomic_path

LABELS_DIR = "labels"


def label_shard_path(root: Path | str, stage: str, shard: str) -> Path:
    """``<root>/labels/<stage>/<shard>.parquet``: where a stage writes one shard's labels."""
    return Path(root) / LABELS_DIR / stage / f"{shard}.parquet"


def write_label_shard(root: Path | str, stage: str, shard: str, rows: Iterable[FrameLabels],
                      config: dict, code_version: str, inputs: dict, scored: bool = False) -> Path:
    """Write a stage's labels for one shard atomically; metadata records config, version and inputs.
    ``scored``: the shard carries instance centres and scores (``LABELS_SCHEMA_SCORED``)."""
    dest = label_shard_path(root, stage, shard)
    base = LABELS_SCHEMA_SCORED if scored else LABELS_SCHEMA
    schema = base.with_metadata(label_metadata(stage, config, code_version, inputs))
    with atomic_path(dest, before_rename=sealer(dest)) as tmp:
        with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
            for row in rows:
                writer.write_table(labels_to_table(row, base).replace_schema_metadata(schema.metadata),
                                   row_group_size=1)
    return dest


def _repair(root, stage: str, shard: str) -> str:
    return f"rerun `mwsis stage {stage} --data {root}` (it rewrites shard {shard!r}: not up to date)"


def label_shard_metadata(root: Path | str, stage: str, shard: str, verify: bool = False) -> dict | None:
    """The metadata of a finished label shard, or None when it does not exist, cannot be read, or its
    bytes fail their checksum (size and mtime guard; every byte with ``verify``)."""
    path = label_shard_path(root, stage, shard)
    if not path.exists():
        return None
    try:
        check_file(path, verify=verify)
        return read_label_metadata(pq.read_schema(path).metadata)
    except (IntegrityError, pa.ArrowException, OSError):
        return None  # a broken file counts as not done: the stage rewrites it


def label_shard_checksum(root: Path | str, stage: str, shard: str, verify: bool = False) -> str:
    """The verified checksum of a finished label shard (what a stage that reads it records); raises
    ``IntegrityError`` (missing, no stamp, damaged) saying how to repair it."""
    return check_file(label_shard_path(root, stage, shard), verify=verify, hint=_repair(root, stage, shard))


class LabelShard:
    """Reads one stage's labels for one frame shard, a frame at a time."""

    def __init__(self, ds: Dataset, stage: str, shard: str):
        self.path = label_shard_path(ds.root, stage, shard)
        self.stage, self.shard = stage, shard
        if not self.path.exists():
            raise ShardError(self.path, f"missing: stage '{stage}' has not been run on shard '{shard}' "
                                        f"(run `mwsis stage {stage} --data {ds.root}`)")
        check_file(self.path, verify=True, hint=_repair(ds.root, stage, shard))  # every byte, on read
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise ShardError(self.path, f"corrupt Parquet ({e}); {_repair(ds.root, stage, shard)}") from e
        self.metadata = read_label_metadata(self._file.schema_arrow.metadata)
        made_from = (self.metadata.get("inputs") or {}).get("frames")
        info = next((i for i in ds.manifest.shards if i.name == shard), None)
        if made_from is not None and info is not None and made_from != info.sha256:
            raise ShardError(self.path, f"made from other frames: its recorded input sha256 {made_from[:12]}… is not "
                                        f"{info.path}'s {info.sha256[:12]}… (labels of another dataset, or of an "
                                        f"older version of this shard); {_repair(ds.root, stage, shard)}")

    def __len__(self) -> int:
        return self._file.num_row_groups

    def labels(self, i: int) -> FrameLabels:
        try:
            return table_row_to_labels(self._file.read_row_group(i), 0)
        except (pa.ArrowException, OSError) as e:
            raise ShardError(self.path, f"cannot read frame {i} ({e})") from e
        except ValueError as e:  # content the schema allows but the conventions do not (check_scored)
            raise ShardError(self.path, f"row {i}: {e}") from e

    def __iter__(self) -> Iterator[FrameLabels]:
        for i in range(len(self)):
            yield self.labels(i)


def check_label_shards(ds: Dataset, stage: str, positions: list[int]) -> None:
    """Raise ``ShardError`` naming the file unless ``stage``'s shards at ``positions`` exist, pass their
    checksums and belong to these frames: what a trainer checks before it touches its run directory."""
    for p in positions:
        LabelShard(ds, stage, ds.manifest.shards[p].name)


def read_frame_labels(ds: Dataset, stage: str, frame_id: str) -> FrameLabels:
    """One frame's labels from one stage (random access by frame id)."""
    s, i = ds.locate(frame_id)
    labels = LabelShard(ds, stage, ds.manifest.shards[s].name).labels(i)
    if labels.frame_id != frame_id:
        raise ShardError(label_shard_path(ds.root, stage, ds.manifest.shards[s].name),
                         f"row {i} holds frame {labels.frame_id}, expected {frame_id}")
    return labels


def stages_with_labels(ds: Dataset) -> list[str]:
    """Names of the stages with a ``labels/<stage>/`` folder in the dataset, sorted."""
    d = ds.root / LABELS_DIR
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else []
