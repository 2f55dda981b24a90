"""``mwsis convert folder SRC OUT``: your own fleet's logs in the documented sensor-folder layout
(``data/folder/layout.py``, docs/data.md "Bring your own data") -> frame shards.

A *unit* is a fixed-size chunk of one log's frames (``--frames-per-shard``, default 100) and becomes the
shard ``<log>-<first position>``; units are written by :func:`mwsis.pipelines.labels.shards.write_shards`
(parallel, resumable, a bad file fails only its unit, named with its frame and field in ``manifest.json``).
The whole index (every log's ``frames.jsonl``, every calibration and COCO file) is parsed before anything is
written, so a typo there stops the command at once instead of failing every shard.
"""
from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import click

from .report import echo_result

log = logging.getLogger(__name__)

DEFAULT_FRAMES_PER_SHARD = 100
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def plan_units(src: Path | str, frames_per_shard: int) -> tuple[dict[str, tuple[str, int, int]], int]:
    """Unit name -> (log, first, stop) over every log of ``src``, and the frame count; parses and checks the
    index, the calibrations and the box files on the way (a ``FolderFormatError`` names the file)."""
    from ...data.folder import FolderFormatError, FolderSource

    source = FolderSource(src)
    logs = source.logs()
    if not logs:
        raise FolderFormatError(str(Path(src) / "logs"), "", "no log directory with a frames.jsonl")
    plan, frames, ids = {}, 0, {}
    for name in logs:
        if not _NAME.match(name):
            raise FolderFormatError(str(Path(src) / "logs" / name), "", "log names may hold letters, digits, "
                                    "'-', '_' and '.' only (they name shards)")
        entries = source.entries(name)
        for e in entries:
            source.calib(e.calib)  # parse every calibration once, up front
            if e.frame_id in ids:
                raise FolderFormatError(str(Path(src) / "logs" / name / "frames.jsonl"), "frame_id",
                                        f"also in log {ids[e.frame_id]!r}: frame ids must be unique in the dataset",
                                        e.frame_id)
            ids[e.frame_id] = name
        source.boxes(name)
        for start in range(0, len(entries), frames_per_shard):
            plan[f"{name}-{start:06d}"] = (name, start, min(start + frames_per_shard, len(entries)))
        frames += len(entries)
    return plan, frames


def convert_unit(unit: str, src: str, plan: dict):
    """The frames of one unit (top level so process pools can pickle it); notes go to the log."""
    from ...data.folder import FolderSource

    name, start, stop = plan[unit]
    for frame, notes in FolderSource(src).frames(name, start, stop):
        for note in notes:
            log.warning("%s", note)
        yield frame


def convert_folder(src: Path | str, out: Path | str, workers: int = 1,
                   frames_per_shard: int = DEFAULT_FRAMES_PER_SHARD, show_progress: bool = True):
    """Convert every log of ``src`` into the dataset ``out``; returns ``shards.WriteResult``. Reruns resume."""
    from ..labels.shards import write_shards

    if frames_per_shard < 1:
        raise ValueError("--frames-per-shard must be at least 1")
    src = Path(src).resolve()
    plan, frames = plan_units(src, frames_per_shard)
    source = {"kind": "folder", "src": str(src), "frames": frames, "frames_per_shard": int(frames_per_shard)}
    fn = partial(convert_unit, src=str(src), plan=plan)
    return write_shards(out, [(u, stop - start) for u, (_, start, stop) in plan.items()], fn, source, workers,
                        show_progress, desc="folder")


@click.command("folder")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (one shard each).")
@click.option("--frames-per-shard", type=click.IntRange(min=1), default=DEFAULT_FRAMES_PER_SHARD, show_default=True,
              help="Frames per shard (the unit of parallelism, resume and failure).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def folder_cmd(src, out, workers, frames_per_shard, no_progress):
    """Convert your own logs in the sensor-folder layout (SRC/dataset.yaml, calib/, logs/<log>/frames.jsonl)
    into a mwsis dataset.

    Points come from .npy, .bin, .pcd, .las or .laz files; range-image rows from a ring column, else the
    calibration's beam inclinations, else the scan order (docs/data.md, "Bring your own data"). 2D boxes come
    from per-camera COCO files. Reruns resume; a bad file fails only its shard and is listed at the end.
    """
    from ...data.folder import FolderFormatError

    try:
        res = convert_folder(src, out, workers, frames_per_shard, show_progress=not no_progress)
    except (FileNotFoundError, ValueError, FolderFormatError) as e:
        raise click.ClickException(str(e)) from e
    echo_result(out, res)


def synth_export_folder(out: Path | str, preset: str = "tiny", frames: int = 8, seed: int = 0,
                        frames_per_sequence: int = 4, overrides: dict | None = None, **export) -> list:
    """Render synthetic sequences and write them in the sensor-folder layout under ``out`` (``mwsis synth
    --format folder``); ``export`` goes to :func:`~mwsis.data.synthetic.export_folder.export_folder`."""
    from ...data.synthetic import make_frame, preset as make_preset
    from ...data.synthetic.export_folder import export_folder

    if frames < 1 or frames_per_sequence < 1:
        raise ValueError("--frames and --frames-per-sequence must be at least 1")
    cfg = make_preset(preset, **dict(overrides or {}))
    return export_folder((make_frame(cfg, seed=seed, sequence=i // frames_per_sequence, index=i % frames_per_sequence)
                          for i in range(frames)), out, **export)
