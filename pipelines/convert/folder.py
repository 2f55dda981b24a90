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
from functools import lru_cache, partial
from pathlib import Path

import click

from .report import echo_result

log = logging.getLogger(__name__)

DEFAULT_FRAMES_PER_SHARD = 100
CLICK_SET = "folder"  # the click set the logs' click files become
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


@lru_cache(maxsize=2)
def _source(src: str):
    """One parsed layout per process: the units of a log share its index, calibrations and COCO files."""
    from ...data.folder import FolderSource

    return FolderSource(src)


def convert_unit(unit: str, src: str, plan: dict):
    """The frames of one unit (top level so process pools can pickle it); notes go to the log."""
    name, start, stop = plan[unit]
    for frame, notes in _source(src).frames(name, start, stop):
        for note in notes:
            log.warning("%s", note)
        yield frame


def convert_folder(src: Path | str, out: Path | str, workers: int = 1,
                   frames_per_shard: int = DEFAULT_FRAMES_PER_SHARD, show_progress: bool = True):
    """Convert every log of ``src`` into the dataset ``out``; returns ``shards.WriteResult``. Reruns resume.
    When every shard is written, the logs' click files become the click set ``folder`` (:func:`import_clicks`)."""
    from ..labels.shards import write_shards

    if frames_per_shard < 1:
        raise ValueError("--frames-per-shard must be at least 1")
    src = Path(src).resolve()
    _source.cache_clear()  # a rerun reads the files as they are now (the user may have fixed one)
    plan, frames = plan_units(src, frames_per_shard)
    source = {"kind": "folder", "src": str(src), "frames": frames, "frames_per_shard": int(frames_per_shard)}
    fn = partial(convert_unit, src=str(src), plan=plan)
    res = write_shards(out, [(u, stop - start) for u, (_, start, stop) in plan.items()], fn, source, workers,
                       show_progress, desc="folder")
    if not res.failed:
        import_clicks(src, out)
    return res


def import_clicks(src: Path | str, out: Path | str) -> int:
    """Write the click set ``folder`` of dataset ``out`` from ``SRC/logs/<log>/clicks/<camera>.json`` (COCO
    keypoints, one click per annotation; WISE's point supervision). Every click is checked against its frame's
    camera before anything is written; errors name the file, the frame and the field. Returns the number of
    clicks (0 and nothing written when no log has click files)."""
    import numpy as np

    from ... import __version__
    from ...data.click_store import check_clicks, write_click_shard
    from ...data.folder import FolderFormatError, FolderSource
    from ...data.frame import NUM_CLASSES, Clicks2D
    from ...data.store import open_dataset

    source, rows = FolderSource(src), {}
    for log_name in source.logs():
        files = source.clicks(log_name)
        entries = {e.frame_id: e for e in source.entries(log_name)} if files else {}
        for cam_name, per_frame in files.items():
            path = str(Path(src) / "logs" / log_name / "clicks" / f"{cam_name}.json")
            for fid, clicks in per_frame.items():
                entry = entries.get(fid)
                if entry is None:
                    raise FolderFormatError(path, "images.frame_id", f"{fid!r} is not in frames.jsonl")
                cam = source.calib(entry.calib).cameras.get(cam_name)
                if cam is None or cam_name not in entry.cameras:
                    raise FolderFormatError(path, "", f"clicks on camera {cam_name!r}, of which the frame has no "
                                            "image", fid)
                c = Clicks2D(np.full(len(clicks), cam.camera_id, np.int8), np.array([r[0] for r in clicks], np.int8),
                             np.array([r[1:3] for r in clicks], np.float32).reshape(-1, 2),
                             np.array([r[3] for r in clicks], np.int64))
                problem = check_clicks(c, {cam.camera_id: (cam.width, cam.height)}, NUM_CLASSES)
                if problem:
                    raise FolderFormatError(path, "annotations.keypoints", problem, fid)
                rows.setdefault(fid, []).append(c)
    if not rows:
        return 0
    ds = open_dataset(out)
    for info in ds.manifest.shards:
        merged = ((f, Clicks2D(*(np.concatenate([getattr(c, k) for c in rows[f]]) for k in
                                 ("camera_id", "class_id", "uv", "object_id"))) if f in rows else Clicks2D.empty())
                  for f in info.frame_ids)
        write_click_shard(ds.root, CLICK_SET, info.name, merged,
                          {"imported_from": str(src), "version": __version__, "frames": info.sha256})
    n = sum(len(c) for cs in rows.values() for c in cs)
    log.info("convert folder: %d clicks -> click set %s", n, CLICK_SET)
    return n


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
    from ...data.click_store import click_sources

    if CLICK_SET in click_sources(out):
        from ..labels.clicks import count_clicks

        click.echo(f"{out}: {count_clicks(out, CLICK_SET)} clicks in click set '{CLICK_SET}' (for `mwsis train-2d "
                   f"--clicks {CLICK_SET}` and the clicks3d stage's clicks3d.source={CLICK_SET})")


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
