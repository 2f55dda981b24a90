"""``mwsis convert kitti SRC OUT``: a KITTI 3D-object directory in, frame shards out (``data_formats.md`` §E).

SRC has the training layout ``SRC/{velodyne,calib,label_2,image_2}/NNNNNN.*`` (label_2 may be absent,
as for the test split). Samples are independent, so a *unit* is a fixed-size chunk of sorted sample
stems (``--frames-per-shard``, default 100) and becomes one shard named ``kitti-FIRST-LAST``; units are
written by :func:`mwsis.pipelines.labels.shards.write_shards` (parallel, resumable, a corrupt or missing file
fails only its unit, with the file and line in the message and in ``manifest.json``).

Per-sample conversion is :func:`mwsis.data.kitti.read_kitti_frame`; its ground truth is derived from
the label_2 3D boxes (see :mod:`mwsis.data.kitti.build`).
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import click

from .report import echo_result

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = 2048  # ~ the HDL-64E's 2000 returns per ring per revolution (0.18 deg), next power of two
DEFAULT_FRAMES_PER_SHARD = 100


def sample_stems(src: Path | str) -> list[str]:
    """Sorted stems of ``SRC/velodyne/*.bin``; every sample starts from its scan."""
    velo = Path(src) / "velodyne"
    if not velo.is_dir():
        raise FileNotFoundError(f"{velo}: missing; SRC must hold velodyne/, calib/, label_2/ and image_2/")
    return sorted(p.stem for p in velo.glob("*.bin"))


def frame_index(stem: str, position: int) -> int:
    """KITTI stems are sample numbers ('000123' -> 123); other names fall back to their sorted position."""
    return int(stem) if stem.isdigit() else position


def plan_units(stems: list[str], frames_per_shard: int) -> dict[str, list[tuple[str, int]]]:
    """Unit name -> its (stem, frame index) pairs, in order."""
    pairs = [(s, frame_index(s, i)) for i, s in enumerate(stems)]
    if len({i for _, i in pairs}) != len(pairs):
        raise ValueError("velodyne/: two stems give the same sample number (e.g. '7' and '007'); rename them")
    chunks = [pairs[i:i + frames_per_shard] for i in range(0, len(pairs), frames_per_shard)]
    return {f"kitti-{c[0][0]}-{c[-1][0]}": c for c in chunks}


def convert_unit(unit: str, src: str, plan: dict, columns: int):
    """The frames of one unit (top level so process pools can pickle it); notes go to the log."""
    from ...data.kitti import read_kitti_frame

    for stem, index in plan[unit]:
        frame, notes = read_kitti_frame(src, stem, index, columns)
        for note in notes:
            log.warning("%s", note)
        yield frame


def convert_kitti(src: Path | str, out: Path | str, workers: int = 1, columns: int = DEFAULT_COLUMNS,
                  frames_per_shard: int = DEFAULT_FRAMES_PER_SHARD, show_progress: bool = True):
    """Convert every sample of ``src`` into the dataset ``out``; returns ``shards.WriteResult``.

    Rerunning with the same arguments resumes (finished shards are kept, failed units are retried).
    """
    from ..labels.shards import write_shards

    if columns < 8 or frames_per_shard < 1:
        raise ValueError("--columns must be at least 8 and --frames-per-shard at least 1")
    src = Path(src).resolve()
    stems = sample_stems(src)
    if not stems:
        raise FileNotFoundError(f"{src / 'velodyne'}: no .bin scans")
    plan = plan_units(stems, frames_per_shard)
    source = {"kind": "kitti", "src": str(src), "frames": len(stems), "columns": int(columns),
              "frames_per_shard": int(frames_per_shard), "labels": (src / "label_2").is_dir()}
    fn = partial(convert_unit, src=str(src), plan=plan, columns=int(columns))
    return write_shards(out, [(u, len(p)) for u, p in plan.items()], fn, source, workers, show_progress,
                        desc="kitti")


@click.command("kitti")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (one shard each).")
@click.option("--columns", type=click.IntRange(min=8, max=32767), default=DEFAULT_COLUMNS, show_default=True,
              help="Range-image width W (azimuth bins); the HDL-64E gives ~2000 returns per ring.")
@click.option("--frames-per-shard", type=click.IntRange(min=1), default=DEFAULT_FRAMES_PER_SHARD, show_default=True,
              help="Samples per shard (the unit of parallelism, resume and failure).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def kitti_cmd(src, out, workers, columns, frames_per_shard, no_progress):
    """Convert KITTI 3D object data (SRC/velodyne, calib, label_2, image_2) into a mwsis dataset.

    Rings (range-image rows) are recovered from the scan order and columns from the azimuth; image_2
    becomes the FRONT camera; label_2 gives the 2D boxes (Car/Van/Truck = vehicle,
    Pedestrian/Person_sitting = pedestrian, Cyclist = cyclist) and a box-derived per-point ground truth.
    Reruns resume; a corrupt sample fails only its shard and is listed at the end (exit code 1).
    """
    try:
        res = convert_kitti(src, out, workers, columns, frames_per_shard, show_progress=not no_progress)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    echo_result(out, res)


def synth_export_kitti(out: Path | str, preset: str = "kitti", frames: int = 8, seed: int = 0,
                       overrides: dict | None = None, seam_deg: float = 0.0) -> list:
    """Render ``frames`` synthetic frames (one sequence) and write them in the KITTI layout under ``out``
    (for ``mwsis synth --format kitti``); returns the export records (``KittiExport``)."""
    from ...data.synthetic import make_frame, preset as make_preset
    from ...data.synthetic.export_kitti import export_kitti

    if frames < 1:
        raise ValueError("--frames must be at least 1")
    cfg = make_preset(preset, **dict(overrides or {}))
    return export_kitti((make_frame(cfg, seed=seed, sequence=0, index=i) for i in range(frames)), out,
                        seam_deg=seam_deg, seed=seed)
