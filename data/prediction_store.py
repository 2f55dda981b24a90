"""Prediction shards: ``DATASET/predictions/<source>/round=<R>/<shard>.parquet`` (see ``schema/predictions``)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .schema.predictions import (META_INFO, META_TAIL, PREDICTIONS_SCHEMA, predictions_metadata,
                                 predictions_to_table, table_row_to_predictions)
from .integrity import check_file, sealer
from .locks import exclusive_lock, remove_stale_temps
from .store import PARQUET_OPTIONS, Dataset, ShardError, WriteError, atomic_path

PREDICTIONS_DIR = "predictions"
_ROUND = re.compile(r"^round=(\d+)$")


def round_dir(root: Path | str, source: str, rnd: int) -> Path:
    """``<root>/predictions/<source>/round=<rnd>``: one round of a teacher's exported predictions."""
    return Path(root) / PREDICTIONS_DIR / source / f"round={rnd}"


def list_rounds(root: Path | str, source: str) -> list[int]:
    """Rounds with predictions, oldest first."""
    d = Path(root) / PREDICTIONS_DIR / source
    if not d.exists():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ROUND.match(p.name)) and p.is_dir())


def resolve_round(root: Path | str, source: str, spec: str | int) -> int:
    """``"latest"`` or a round number -> an existing round number (clear error otherwise)."""
    rounds = list_rounds(root, source)
    if not rounds:
        raise ShardError(Path(root) / PREDICTIONS_DIR / source, f"no prediction rounds (run `mwsis predict-{source}`)")
    if str(spec) == "latest":
        return rounds[-1]
    if int(spec) not in rounds:
        raise ShardError(round_dir(root, source, int(spec)), f"missing; available rounds {rounds}")
    return int(spec)


def write_prediction_shard(root: Path | str, source: str, rnd: int, shard: str,
                           rows: Iterable[tuple[str, np.ndarray]], tail: tuple[int, ...], info: dict) -> Path:
    """Write one shard of a round atomically. Two exports of the same round write one shard at a time (the lock;
    the second rewrites it after the first, each file whole); a killed export's temp file is removed here."""
    dest = round_dir(root, source, rnd) / f"{shard}.parquet"
    schema = PREDICTIONS_SCHEMA.with_metadata(predictions_metadata(tail, info))
    where = f"shard {shard} of {source} predictions round {rnd}"
    try:
        with exclusive_lock(dest, where) as held:
            if held:
                remove_stale_temps(dest)
            with atomic_path(dest, before_rename=sealer(dest)) as tmp:
                with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
                    for frame_id, probs in rows:
                        if probs.shape[1:] != tuple(tail):
                            raise ValueError(f"frame {frame_id}: predictions of shape {probs.shape}, "
                                             f"expected (N, {tail})")
                        table = predictions_to_table(frame_id, probs).replace_schema_metadata(schema.metadata)
                        writer.write_table(table, row_group_size=1)
    except WriteError as e:
        raise e.within(where) from e
    return dest


class PredictionShard:
    """One shard of a prediction round, checksum-verified on open; ``predictions(i)`` gives frame i's (id, (N, C)
    probabilities)."""
    def __init__(self, ds: Dataset, source: str, rnd: int, shard: str):
        self.path = round_dir(ds.root, source, rnd) / f"{shard}.parquet"
        if not self.path.exists():
            raise ShardError(self.path, f"missing: no {source} predictions of round {rnd} for shard '{shard}'")
        check_file(self.path, verify=True, hint=f"export round {rnd} again (`mwsis predict-{source}`)")
        try:
            self._file = pq.ParquetFile(self.path)
            meta = self._file.schema_arrow.metadata or {}
            self.tail = tuple(json.loads(meta[META_TAIL]))
            self.info = json.loads(meta.get(META_INFO, b"{}"))
        except (pa.ArrowException, OSError, KeyError, ValueError) as e:
            raise ShardError(self.path, f"corrupt prediction shard ({e})") from e

    def __len__(self) -> int:
        return self._file.num_row_groups

    def predictions(self, i: int) -> tuple[str, np.ndarray]:
        try:
            return table_row_to_predictions(self._file.read_row_group(i), self.tail)
        except (pa.ArrowException, OSError) as e:
            raise ShardError(self.path, f"cannot read frame {i} ({e})") from e

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.predictions(i)
