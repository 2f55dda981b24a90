"""CSCS exchange between two running trainer jobs (MWSIS §3.4): which round of the other modality's
predictions an epoch reads. ``latest`` is resolved at each epoch start and recorded, so resume is exact."""
from __future__ import annotations

import logging
from pathlib import Path

from .distributed import DistInfo, broadcast_value
from .trainer import Hook

log = logging.getLogger(__name__)


def complete_rounds(root: Path, source: str, shard_names: list[str]) -> list[int]:
    """Rounds with a prediction shard for every frame shard, oldest first: the other modality's job may be
    writing its newest round right now (shard by shard, each shard atomically)."""
    from ...data.prediction_store import list_rounds, round_dir

    return [r for r in list_rounds(root, source)
            if all((round_dir(root, source, r) / f"{n}.parquet").exists() for n in shard_names)]


def round_resolver(ds, source: str, spec: str | int):
    """``resolve()`` for a CSCS round spec: a fixed round (must exist), or ``"latest"``: the newest complete
    round now, None while there is none yet (the epoch trains without CSCS; a job started beside the other
    modality's job picks up its first round when it appears)."""
    from ...data.prediction_store import resolve_round

    names = [s.name for s in ds.manifest.shards]

    def resolve() -> int | None:
        if str(spec) != "latest":
            return resolve_round(ds.root, source, spec)
        rounds = complete_rounds(ds.root, source, names)
        if not rounds:
            log.warning("CSCS: no complete round of predictions/%s yet; this epoch trains without it", source)
        return rounds[-1] if rounds else None

    return resolve


def epoch_round(state: dict, epoch: int, resolve, dist: DistInfo, key: str = "cscs_rounds") -> int | None:
    """The prediction round that epoch ``epoch`` reads, resolved once at the epoch's start by rank 0 and shared
    with every rank, and recorded in ``state[key]``: a resumed epoch reads what it read before."""
    rounds = state.setdefault(key, {})
    if epoch not in rounds:
        rounds[epoch] = broadcast_value(resolve() if dist.is_main else None, dist)
    return rounds[epoch]


class CSCSRoundHook(Hook):
    """Before each epoch, the round of ``predictions/<source>`` it reads (``epoch_round``: ``latest`` is
    re-resolved, a resumed epoch reuses its round); ``trainer.cscs_round`` holds it for ``batches`` and every
    step logs it as ``cscs_round`` (-1: none yet)."""

    def __init__(self, ds, source: str, spec: str | int):
        self.resolve = round_resolver(ds, source, spec)

    def before_epoch(self, trainer, epoch: int) -> None:
        trainer.cscs_round = epoch_round(trainer.state, epoch, self.resolve, trainer.dist)

    def after_step(self, trainer, metrics: dict) -> None:
        rnd = trainer.state["cscs_rounds"][trainer.state["epoch"]]
        metrics["cscs_round"] = -1 if rnd is None else rnd

