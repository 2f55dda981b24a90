"""The order both trainers read frames in, and the id check of prediction rows, written once.

Shard by shard, with the shard order and the row order within each shard shuffled by ``rng`` (a whole-dataset
shuffle would need every shard open at once; memory stays bounded).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ...data.prediction_store import PredictionShard
from ...data.store import Dataset, ShardError


def shuffled_shards(ds: Dataset, positions: list[int], rng: np.random.Generator | None = None) -> Iterator[tuple]:
    """(shard info, shard, row order) for each shard position; without ``rng`` in the given order."""
    order = list(positions)
    if rng is not None:
        rng.shuffle(order)
    for pos in order:
        shard = ds.shard(pos)
        rows = np.arange(len(shard))
        if rng is not None:
            rng.shuffle(rows)
        yield ds.manifest.shards[pos], shard, rows


def prediction_row(pred: PredictionShard, row: int, frame_id: str) -> np.ndarray:
    """Row ``row``'s per-point probabilities; an error naming the file when it belongs to another frame."""
    fid, probs = pred.predictions(row)
    if fid != frame_id:
        raise ShardError(pred.path, f"row {row} is frame {fid}, expected {frame_id} (mismatched ids)")
    return probs
