"""``mwsis convert nuscenes SRC OUT --version v1.0-mini|v1.0-trainval``: nuScenes keyframes in, frame shards out
(``formats_more.md`` §1; :mod:`mwsis.data.nuscenes`).

A *unit* is one scene (about 40 keyframes) and becomes the shard named after it; units are written by
:func:`mwsis.pipelines.labels.shards.write_shards` (parallel, resumable, a missing or corrupt file fails only
its scene, named in ``manifest.json``). The tables are read once per process.
"""
from __future__ import annotations

import logging
from functools import lru_cache, partial
from pathlib import Path

import click

from .report import echo_result

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = 1088  # the HDL-32E gives ~1085 returns per ring and turn at 20 Hz
VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")


@lru_cache(maxsize=2)
def _tables(src: str, version: str):
    from ...data.nuscenes import load_tables

    return load_tables(src, version)


def convert_unit(unit: str, src: str, version: str, columns: int, min_visibility: int):
    """The frames of one scene (top level so process pools can pickle it); notes go to the log."""
    from ...data.nuscenes import nuscenes_frame

    tables = _tables(src, version)
    scene = next(s for s in tables.by_token["scene"].values() if s["name"] == unit)
    for i, sample in enumerate(tables.scene_samples(scene["token"])):
        frame, notes = nuscenes_frame(tables, sample, i, columns, min_visibility)
        for note in notes:
            log.warning("%s", note)
        yield frame


def convert_nuscenes(src: Path | str, out: Path | str, version: str = "v1.0-mini", workers: int = 1,
                     columns: int = DEFAULT_COLUMNS, min_visibility: int = 0, scenes: list[str] | None = None,
                     show_progress: bool = True):
    """Convert every scene of ``src/version`` (or ``scenes``) into the dataset ``out``; returns
    ``shards.WriteResult``. Reruns resume."""
    from ...data.nuscenes import NuScenesFormatError
    from ..labels.shards import write_shards

    if columns < 8 or not 0 <= min_visibility <= 4:
        raise ValueError("--columns must be at least 8 and --min-visibility within 0..4")
    src = Path(src).resolve()
    _tables.cache_clear()  # a rerun reads the tables as they are now (the user may have fixed one)
    tables = _tables(str(src), version)
    names = {s["name"]: s for s in tables.by_token["scene"].values()}
    unknown = sorted(set(scenes or []) - set(names))
    if unknown:
        raise NuScenesFormatError(str(tables.table_path("scene")), f"no scene named {unknown[0]!r}")
    units = [(n, int(names[n].get("nbr_samples") or len(tables.scene_samples(names[n]["token"]))))
             for n in sorted(scenes or names)]
    source = {"kind": "nuscenes", "src": str(src), "version": version, "columns": int(columns),
              "min_visibility": int(min_visibility), "lidarseg": bool(tables.lidarseg),
              "panoptic": bool(tables.panoptic)}
    fn = partial(convert_unit, src=str(src), version=version, columns=int(columns), min_visibility=int(min_visibility))
    return write_shards(out, units, fn, source, workers, show_progress, desc="nuscenes")


@click.command("nuscenes")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--version", type=click.Choice(VERSIONS), default="v1.0-mini", show_default=True,
              help="The metadata folder under SRC.")
@click.option("--scenes", default=None, help="Comma-separated scene names (default: every scene).")
@click.option("--min-visibility", type=click.IntRange(0, 4), default=0, show_default=True,
              help="Keep annotations of at least this visibility level (1: 0-40 %% ... 4: 80-100 %% visible over "
                   "the six cameras); 0 keeps all, as nuScenes' own 2D export.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (one scene each).")
@click.option("--columns", type=click.IntRange(min=8, max=32767), default=DEFAULT_COLUMNS, show_default=True,
              help="Range-image width W (the HDL-32E gives ~1085 returns per ring).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def nuscenes_cmd(src, out, version, scenes, min_visibility, workers, columns, no_progress):
    """Convert nuScenes keyframes (SRC/samples, SRC/VERSION/*.json, optional lidarseg/ or panoptic/) into a
    mwsis dataset, one shard per scene.

    LIDAR_TOP points with rows from their ring index (sorted by elevation), the six cameras with the ego-pose
    chain between LiDAR and camera times, 2D boxes projected from the 3D annotations as nuScenes' 2D export
    does (car, truck, bus, trailer, construction, emergency, motorcycle = vehicle; adult, child, police,
    worker, personal mobility = pedestrian; bicycle with rider = cyclist), and per-point ground truth from
    lidarseg or panoptic when present. No nuscenes-devkit needed. Reruns resume.
    """
    from ...data.nuscenes import NuScenesFormatError

    try:
        res = convert_nuscenes(src, out, version, workers, columns, min_visibility,
                               [s for s in scenes.split(",") if s] if scenes else None, show_progress=not no_progress)
    except (FileNotFoundError, ValueError, NuScenesFormatError) as e:
        raise click.ClickException(str(e)) from e
    echo_result(out, res)


def synth_export_nuscenes(out: Path | str, preset: str = "nuscenes", frames: int = 8, seed: int = 0,
                          frames_per_sequence: int = 4, overrides: dict | None = None) -> list:
    """Render synthetic sequences and write them in the nuScenes layout under ``out`` (``mwsis synth --format
    nuscenes``); returns per frame the native indices of its ``.pcd.bin`` rows."""
    from ...data.synthetic import make_frame, preset as make_preset
    from ...data.synthetic.export_nuscenes import export_nuscenes

    if frames < 1 or frames_per_sequence < 1:
        raise ValueError("--frames and --frames-per-sequence must be at least 1")
    cfg = make_preset(preset, **dict(overrides or {}))
    if cfg.beams != 32:
        raise ValueError(f"--format nuscenes needs a 32-beam sensor (preset nuscenes), preset {preset} has {cfg.beams}")
    return export_nuscenes((make_frame(cfg, seed=seed, sequence=i // frames_per_sequence,
                                       index=i % frames_per_sequence) for i in range(frames)), out)
