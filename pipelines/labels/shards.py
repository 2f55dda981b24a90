"""Writes frame shards for a list of units (sequences, segments) in parallel, resumably, failure-isolated.

Used by ``mwsis synth`` and ``mwsis convert``: a *unit* is one sequence or segment and becomes one
shard. The manifest is rewritten after every finished shard, so an interrupted (even SIGKILLed) run
resumes where it stopped (listed shards with the right size are kept; a shard written but not yet listed
is written again, to the same bytes). A unit that fails (corrupt or missing input) is
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

from ...data.frame import CAMERA_NAMES, CLASS_NAMES, LIDAR_NAMES, Frame
from ...data.schema import Manifest, ShardInfo
from ...data.locks import exclusive_lock, remove_stale_temps
from ...data.store import FRAMES_DIR, MANIFEST, StoreError, WriteError, read_manifest, write_frame_shard, write_manifest
from ..progress import progress_bar

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


def _stopped(e: WriteError, unit: str, out: Path) -> WriteError:
    return e.within(f"shard {unit}; the shards finished before it stay listed in {out / MANIFEST}; "
                    "free space or fix permissions, then rerun to resume")


def _commit_failure(commit, unit: str, e: Exception, out: Path) -> None:
    try:
        commit(unit, None, None, f"{type(e).__name__}: {e}")
    except WriteError as we:  # recording the failure needs the manifest written: the output is the problem now
        raise _stopped(we, unit, out) from e


def write_shards(out: Path | str, units: list[tuple[str, int]], frames_fn: FramesFn, source: dict,
                 workers: int = 1, show_progress: bool = True, desc: str = "frames") -> WriteResult:
    """Write one shard per ``(unit name, expected frames)``; ``source`` identifies the settings.

    Refuses to mix settings: an existing dataset made with another ``source`` is an error.
    A full or read-only output stops the run with ``WriteError`` naming the file and the shard (every later
    unit would fail the same way); the shards finished before it stay listed in the manifest.
    """
    out = Path(out)
    # One writer per dataset: two writers would each rewrite the manifest from their own list and drop the
    # other's shards. A second `mwsis synth`/`convert` waits, then resumes (finds everything done). Under the
    # lock, temp files in the dataset are a killed writer's leftovers.
    with exclusive_lock(out / MANIFEST, f"dataset {out}") as held:
        if held:
            for dest in [out / MANIFEST, *(out / FRAMES_DIR / f"{u}.parquet" for u, _ in units)]:
                remove_stale_temps(dest)
        return _write_shards_locked(out, units, frames_fn, source, workers, show_progress, desc)


def _write_shards_locked(out: Path, units: list[tuple[str, int]], frames_fn: FramesFn, source: dict,
                         workers: int, show_progress: bool, desc: str) -> WriteResult:
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
                except WriteError as e:  # the output's fault, not the unit's: stop (see docstring)
                    raise _stopped(e, unit, out) from e
                except Exception as e:  # one unit's bad input must not stop the others
                    _commit_failure(commit, unit, e, out)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_write_unit, str(out), u, frames_fn): (u, n) for u, n in todo}
                for fut in as_completed(futures):
                    unit, n = futures[fut]
                    try:
                        commit(unit, *fut.result(), None)
                    except WriteError as e:
                        for f in futures:
                            f.cancel()
                        raise _stopped(e, unit, out) from e
                    except Exception as e:
                        _commit_failure(commit, unit, e, out)
                    bar.update(n)
    if not todo:
        write_manifest(out, manifest)
    log.info("%s: wrote %d shards in %.1f s; %d already done; %d failed", desc, len(result.written),
             time.time() - t0, len(result.skipped), len(result.failed))
    return result
