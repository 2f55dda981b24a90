"""Stage 0: render synthetic driving sequences into a dataset directory (``mwsis synth``).

One shard per sequence. The manifest is rewritten after every finished shard, so an interrupted
run resumes where it stopped; shards already listed (with the right size) are not rendered again.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from ..data.frame import CAMERA_NAMES, CLASS_NAMES, LIDAR_NAMES, Frame
from ..data.schema import Manifest, ShardInfo
from ..data.store import MANIFEST, StoreError, read_manifest, write_frame_shard, write_manifest
from .progress import progress_bar

log = logging.getLogger(__name__)


def sensors_of(frame: Frame) -> dict:
    return {
        "lidars": [{"laser_id": l.laser_id, "name": LIDAR_NAMES.get(l.laser_id, str(l.laser_id)),
                    "height": l.height, "width": l.width} for l in frame.lidars],
        "cameras": [{"camera_id": c.camera_id, "name": CAMERA_NAMES.get(c.camera_id, str(c.camera_id)),
                     "width": c.width, "height": c.height} for c in frame.cameras],
    }


def shard_name(seed: int, sequence: int) -> str:
    return f"synth-s{seed}-{sequence:04d}"


def _render_shard(out: str, preset_name: str, overrides: dict, seed: int, sequence: int, n: int, tick=None):
    from ..data.synthetic import make_frame, preset

    cfg = preset(preset_name, **overrides)
    first: list[Frame] = []

    def frames():
        for i in range(n):
            f = make_frame(cfg, seed=seed, sequence=sequence, index=i)
            if not first:
                first.append(f)
            if tick is not None:
                tick(1)
            yield f

    info = write_frame_shard(out, shard_name(seed, sequence), frames())
    return info, sensors_of(first[0])


def synth_dataset(out: Path | str, preset_name: str = "tiny", frames: int = 8, seed: int = 0,
                  frames_per_sequence: int = 4, workers: int = 1, overrides: dict | None = None,
                  show_progress: bool = True) -> Manifest:
    """Render ``frames`` frames in sequences of ``frames_per_sequence``; returns the final manifest."""
    from ..data.synthetic import preset

    if frames < 1 or frames_per_sequence < 1:
        raise ValueError("--frames and --frames-per-sequence must be at least 1")
    overrides = dict(overrides or {})
    cfg = preset(preset_name, **overrides)  # fail early on unknown presets or fields
    out = Path(out)
    plan = [(s, min(frames_per_sequence, frames - s * frames_per_sequence))
            for s in range((frames + frames_per_sequence - 1) // frames_per_sequence)]
    source = {"kind": "synthetic", "preset": preset_name, "seed": seed, "frames": frames,
              "frames_per_sequence": frames_per_sequence, "overrides": overrides,
              "config": asdict(cfg)}
    manifest = Manifest(class_names=list(CLASS_NAMES), sensors={}, source=source)
    if (out / MANIFEST).exists():
        old = read_manifest(out)
        if old.source != _jsonable(source):
            raise StoreError(f"{out / MANIFEST}: this dataset was made with other settings "
                             f"({ {k: old.source.get(k) for k in ('preset', 'seed', 'frames', 'frames_per_sequence')} }); "
                             "choose another --out or delete it")
        manifest.sensors = old.sensors
        manifest.shards = [s for s in old.shards if (out / s.path).exists() and (out / s.path).stat().st_size == s.bytes]
    done = {s.name for s in manifest.shards}
    todo = [(s, n) for s, n in plan if shard_name(seed, s) not in done]
    skipped_frames = frames - sum(n for _, n in todo)
    t0 = time.time()
    log.info("synth: %d frames in %d sequences (%s preset, seed %d) -> %s; %d shards already done",
             frames, len(plan), preset_name, seed, out, len(done))

    def commit(info: ShardInfo, sensors: dict):
        manifest.shards.append(info)
        manifest.sensors = manifest.sensors or sensors
        write_manifest(out, manifest)

    with progress_bar(total=frames, initial=skipped_frames, unit="frame", desc="synth", enabled=show_progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for s, n in todo:
                commit(*_render_shard(str(out), preset_name, overrides, seed, s, n, tick=bar.update))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_render_shard, str(out), preset_name, overrides, seed, s, n): n for s, n in todo}
                for fut in as_completed(futures):
                    commit(*fut.result())
                    bar.update(futures[fut])
    if not todo:
        write_manifest(out, manifest)
    log.info("synth: wrote %d shards (%d frames) in %.1f s; skipped %d finished shards",
             len(todo), frames - skipped_frames, time.time() - t0, len(done))
    return manifest


def _jsonable(d):
    """The value as it reads back from JSON (tuples become lists), for comparing with a stored manifest."""
    import json

    return json.loads(json.dumps(d))
