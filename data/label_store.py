"""Label shards of a stage: ``DATASET/labels/<stage>/<shard>.parquet``, aligned with the frame shards."""
from __future__ import annotations

from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .schema.labels import (LABELS_SCHEMA, LABELS_SCHEMA_SCORED, FrameLabels, label_metadata, labels_to_table,
                            read_label_metadata, table_row_to_labels)
from .integrity import IntegrityError, check_file, sealer
from .store import PARQUET_OPTIONS, Dataset, ShardError, atomic_path, scratch_path

LABELS_DIR = "labels"


def label_shard_path(root: Path | str, stage: str, shard: str) -> Path:
    """``<root>/labels/<stage>/<shard>.parquet``: where a stage writes one shard's labels."""
    return Path(root) / LABELS_DIR / stage / f"{shard}.parquet"


def write_label_shard(root: Path | str, stage: str, shard: str, rows: Iterable[FrameLabels],
                      config: dict, code_version: str, inputs: dict, scored: bool = False) -> Path:
    """Write a stage's labels for one shard atomically; metadata records config, version and inputs.
    ``scored``: the shard carries instance centres and scores (``LABELS_SCHEMA_SCORED``)."""
    with LabelShardWriter(root, stage, shard, scored, (config, code_version, inputs)) as w:
        for row in rows:
            w.add(row)
        return w.commit()


class LabelShardWriter:
    """One stage's label shard for one frame shard, written a frame at a time (``add``) and made visible by
    ``commit`` (atomic and sealed, as every shard). Use it as a context manager: leaving the block without a
    commit (an error, a failed frame) removes what was written and leaves the destination as it was.

    ``record``: (config, code version, inputs), the metadata the shard records. It may be unknown until the
    end: a stage that depends on another computed in the same pass (``pipelines/labels/fused.py``) records
    that stage's shard checksum, which exists only once that shard is committed. Then the rows go to a hidden
    Arrow IPC file beside the destination (lz4; memory stays flat in shard length) and ``commit(record)``
    copies them into the Parquet file row group by row group: the same bytes as with the record up front.
    """

    def __init__(self, root: Path | str, stage: str, shard: str, scored: bool = False,
                 record: tuple[dict, str, dict] | None = None):
        self.dest = label_shard_path(root, stage, shard)
        self.stage = stage
        self._base = LABELS_SCHEMA_SCORED if scored else LABELS_SCHEMA
        self._stack = ExitStack()
        self._parquet = self._spill = None
        try:
            if record is not None:
                self._open_parquet(record)
            else:
                self._spill_path = self._stack.enter_context(scratch_path(self.dest))
                self._spill = pa.ipc.new_stream(str(self._spill_path), self._base,
                                                options=pa.ipc.IpcWriteOptions(compression="lz4"))
        except BaseException as e:  # no `with` block yet: unwind here (a full disk becomes a WriteError)
            if not self._stack.__exit__(type(e), e, e.__traceback__):
                raise

    def _open_parquet(self, record) -> None:
        self._schema = self._base.with_metadata(label_metadata(self.stage, *record))
        tmp = self._stack.enter_context(atomic_path(self.dest, before_rename=sealer(self.dest)))
        self._parquet = self._stack.enter_context(pq.ParquetWriter(tmp, self._schema, **PARQUET_OPTIONS))

    def _write(self, table: pa.Table) -> None:
        self._parquet.write_table(table.replace_schema_metadata(self._schema.metadata), row_group_size=1)

    def add(self, row: FrameLabels) -> None:
        table = labels_to_table(row, self._base)
        if self._parquet is not None:
            self._write(table)
        else:
            self._spill.write_table(table)

    def commit(self, record: tuple[dict, str, dict] | None = None) -> Path:
        """Make the shard visible under ``record`` (required when none was given up front)."""
        if self._parquet is None:
            if record is None:
                raise ValueError(f"{self.dest}: the shard's record (config, version, inputs) is needed to commit")
            self._spill.close()
            self._open_parquet(record)
            with pa.memory_map(str(self._spill_path)) as source:
                for batch in pa.ipc.open_stream(source):
                    self._write(pa.Table.from_batches([batch]))
        self._stack.close()  # closes the Parquet writer, then fsyncs, seals and renames; drops the spill file
        return self.dest

    def __enter__(self) -> "LabelShardWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if self._spill is not None:
            with suppress(Exception):
                self._spill.close()
        self._stack.__exit__(*((kind, value, tb) if kind else (RuntimeError, RuntimeError("not committed"), None)))


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
