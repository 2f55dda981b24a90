"""Writes frame shards for a list of units (sequences, segments) in parallel, resumably, failure-isolated.

Used by ``mwsis synth`` and ``mwsis convert``: a *unit* is one sequence or segment and becomes one
shard. The manifest is rewritten after every finished shard, so an interrupted run resumes where it
stopped (listed shards with the right size are kept). A unit that fails (corrupt or missing input) is
reported with its cause and recorded under ``source["failed"]``; the other units go on.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

from ..data.frame import CAMERA_NAMES, CLASS_NAMES, LIDAR_NAMES, Frame
from ..data.schema import Manifest, ShardInfo
from ..data.store import MANIFEST, StoreError, read_manifest, write_frame_shard, write_manifest
from .progress import progress_bar

log = logging.getLogger(__name__)

FramesFn = Callable[[str], Iterator[Frame]]  # unit name -> its frames (must be picklable: top level / partial)


@dataclass
class WriteResult:
    manifest: Manifest
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def sensors_of(frame: Frame) -> dict:
    return {
        "lidars": [{"laser_id": l.laser_id, "name": LIDAR_NAMES.get(l.laser_id, str(l.laser_id)),
                    "height": l.height, "width": l.width} for l in frame.lidars],
        "cameras": [{"camera_id": c.camera_id, "name": CAMERA_NAMES.get(c.camera_id, str(c.camera_id)),
                     "width": c.width, "height": c.height} for c in frame.cameras],
    }


def _jsonable(d):
    import json

    return json.loads(json.dumps(d))


def _write_unit(out: str, unit: str, frames_fn: FramesFn, tick=None) -> tuple[ShardInfo, dict]:
    first: list[Frame] = []

    def frames():
        for f in frames_fn(unit):
            if not first:
                first.append(f)
            if tick is not None:
                tick(1)
            yield f

    info = write_frame_shard(out, unit, frames())
    if not first:
        raise ValueError(f"unit {unit}: no frames")
    return info, sensors_of(first[0])


def write_shards(out: Path | str, units: list[tuple[str, int]], frames_fn: FramesFn, source: dict,
                 workers: int = 1, show_progress: bool = True, desc: str = "frames") -> WriteResult:
    """Write one shard per ``(unit name, expected frames)``; ``source`` identifies the settings.

    Refuses to mix settings: an existing dataset made with another ``source`` is an error.
    """
    out = Path(out)
    manifest = Manifest(class_names=list(CLASS_NAMES), sensors={}, source=dict(source))
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        if {k: v for k, v in old.source.items() if k != "failed"} != _jsonable(source):
            raise StoreError(f"{out / MANIFEST}: this dataset was made with other settings "
                             f"({ {k: old.source.get(k) for k in ('kind', 'preset', 'seed', 'frames', 'src')} }); "
                             "choose another --out or delete it")
        manifest.sensors = old.sensors
        manifest.shards = [s for s in old.shards if (out / s.path).exists() and (out / s.path).stat().st_size == s.bytes]
    result = WriteResult(manifest)
    done = {s.name for s in manifest.shards}
    result.skipped = [u for u, _ in units if u in done]
    todo = [(u, n) for u, n in units if u not in done]
    t0 = time.time()
    log.info("%s: %d units -> %s; %d already done", desc, len(units), out, len(done))

    def commit(unit: str, info: ShardInfo | None, sensors: dict | None, error: str | None):
        if error is not None:
            result.failed[unit] = error
            log.error("%s: unit %s failed: %s", desc, unit, error)
        else:
            manifest.shards.append(info)
            manifest.sensors = manifest.sensors or sensors
            result.written.append(unit)
        manifest.source = {**dict(source), **({"failed": dict(sorted(result.failed.items()))} if result.failed else {})}
        write_manifest(out, manifest)

    total = sum(n for _, n in units)
    with progress_bar(total=total, initial=total - sum(n for _, n in todo), unit="frame", desc=desc,
                      enabled=show_progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for unit, _ in todo:
                try:
                    commit(unit, *_write_unit(str(out), unit, frames_fn, tick=bar.update), None)
                except Exception as e:  # one unit's bad input must not stop the others
                    commit(unit, None, None, f"{type(e).__name__}: {e}")
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_write_unit, str(out), u, frames_fn): (u, n) for u, n in todo}
                for fut in as_completed(futures):
                    unit, n = futures[fut]
                    try:
                        commit(unit, *fut.result(), None)
                    except Exception as e:
                        commit(unit, None, None, f"{type(e).__name__}: {e}")
                    bar.update(n)
    if not todo:
        write_manifest(out, manifest)
    log.info("%s: wrote %d shards in %.1f s; %d already done; %d failed", desc, len(result.written),
             time.time() - t0, len(result.skipped), len(result.failed))
    return result
