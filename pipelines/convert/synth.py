"""Stage 0: render synthetic driving sequences into a dataset directory (``mwsis synth``).

One shard per sequence, written by ``shards.write_shards`` (parallel, resumable).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

from ...data.schema import Manifest


def shard_name(seed: int, sequence: int) -> str:
    return f"synth-s{seed}-{sequence:04d}"


def render_sequence(unit: str, preset_name: str, overrides: dict, seed: int, lengths: dict):
    """The frames of one synthetic sequence (top level so process pools can pickle it)."""
    from ...data.synthetic import make_frame, preset

    cfg = preset(preset_name, **overrides)
    sequence = int(unit.rsplit("-", 1)[1])
    for i in range(lengths[unit]):
        yield make_frame(cfg, seed=seed, sequence=sequence, index=i)


def synth_dataset(out: Path | str, preset_name: str = "tiny", frames: int = 8, seed: int = 0,
                  frames_per_sequence: int = 4, workers: int = 1, overrides: dict | None = None,
                  show_progress: bool = True) -> Manifest:
    """Render ``frames`` frames in sequences of ``frames_per_sequence``; returns the final manifest."""
    from ...data.synthetic import preset
    from ..labels.shards import write_shards

    if frames < 1 or frames_per_sequence < 1:
        raise ValueError("--frames and --frames-per-sequence must be at least 1")
    overrides = dict(overrides or {})
    cfg = preset(preset_name, **overrides)  # fail early on unknown presets or fields
    n_seq = (frames + frames_per_sequence - 1) // frames_per_sequence
    lengths = {shard_name(seed, s): min(frames_per_sequence, frames - s * frames_per_sequence) for s in range(n_seq)}
    source = {"kind": "synthetic", "preset": preset_name, "seed": seed, "frames": frames,
              "frames_per_sequence": frames_per_sequence,
              # camera overrides are CameraSpec dataclasses: recorded as their fields
              "overrides": json.loads(json.dumps(overrides, default=asdict)), "config": asdict(cfg)}
    fn = partial(render_sequence, preset_name=preset_name, overrides=overrides, seed=seed, lengths=lengths)
    result = write_shards(out, list(lengths.items()), fn, source, workers, show_progress, desc="synth")
    if result.failed:
        raise RuntimeError(f"synth: {len(result.failed)} sequences failed: {result.failed}")
    return result.manifest
