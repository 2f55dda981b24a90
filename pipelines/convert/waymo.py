"""``mwsis convert waymo-v2`` and ``waymo-v1``: Waymo Open Dataset segments in, frame shards out.

One unit (shard) per segment, written by ``shards.write_shards``: parallel over segments
(``--workers``), resumable (a rerun skips finished segments), failure-isolated (a missing or corrupt
component or record fails its segment with a message naming segment, component or file and offset;
the other segments go on and the failures are recorded in manifest.json). Readers live in
``data/waymo`` (data_formats.md A-D); both formats give the same frames.

Also the synthetic exporters behind ``mwsis synth --format waymo-v2|waymo-v1``.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import click

log = logging.getLogger(__name__)

LIDAR_CHOICES = {"top": frozenset({1}), "all": None}  # laser ids kept; None = every lidar


def _laser_ids(lidars: str):
    if lidars not in LIDAR_CHOICES:
        raise ValueError(f"--lidars must be one of {sorted(LIDAR_CHOICES)}, not {lidars!r}")
    ids = LIDAR_CHOICES[lidars]
    return set(ids) if ids is not None else None


def _select(available: list[str], segments, what: str) -> list[str]:
    if not segments:
        return available
    wanted = [x.strip() for item in segments for x in str(item).split(",") if x.strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown:
        more = " ..." if len(available) > 10 else ""
        raise ValueError(f"unknown {what} {unknown}; available: {available[:10]}{more}")
    return wanted


def _log_report(segment: str, report) -> None:
    level = logging.WARNING if report.dropped else logging.INFO
    log.log(level, "segment %s: %s", segment, report.summary())


def v2_unit_frames(unit: str, src: str, lidars: str):
    """Frames of v2 segment ``unit`` (top level so process pools can pickle it)."""
    from ...data.waymo.build import BuildReport
    from ...data.waymo.v2_reader import segment_frames

    report = BuildReport()
    yield from segment_frames(src, unit, _laser_ids(lidars), report)
    _log_report(unit, report)


def v1_unit_frames(unit: str, paths: dict, lidars: str):
    """Frames of the TFRecord file of segment ``unit``."""
    from ...data.waymo.build import BuildReport
    from ...data.waymo.v1_reader import segment_frames

    report = BuildReport()
    yield from segment_frames(paths[unit], unit, _laser_ids(lidars), report)
    _log_report(unit, report)


def convert_waymo_v2(src: Path | str, out: Path | str, workers: int = 1, lidars: str = "top", segments=None,
                     show_progress: bool = True):
    """Convert the v2 Parquet dataset directory ``src`` (A.0) into a dataset at ``out``; returns WriteResult."""
    from ...data.waymo.v2_reader import count_frames, list_segments
    from ..labels.shards import write_shards

    _laser_ids(lidars)
    src = Path(src).resolve()
    names = _select(list_segments(src), segments, "segments")
    units = [(n, count_frames(src, n)) for n in names]
    source = {"kind": "waymo-v2", "src": str(src), "lidars": lidars}
    fn = partial(v2_unit_frames, src=str(src), lidars=lidars)
    return write_shards(out, units, fn, source, workers, show_progress, desc="waymo-v2")


def tfrecord_files(src: Path | str) -> dict[str, str]:
    """Segment name -> TFRecord path for a file or a directory of ``*.tfrecord`` files (C.1)."""
    from ...data.waymo.v1_reader import segment_name

    src = Path(src)
    files = [src] if src.is_file() else sorted(src.glob("*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"{src}: no .tfrecord files")
    out: dict[str, str] = {}
    for f in files:
        name = segment_name(f)
        if name in out:
            raise ValueError(f"{f} and {out[name]} are the same segment {name}")
        out[name] = str(f.resolve())
    return out


def convert_waymo_v1(src: Path | str, out: Path | str, workers: int = 1, lidars: str = "top", segments=None,
                     show_progress: bool = True):
    """Convert TFRecord segments (a file or a directory of them) into a dataset at ``out``."""
    from ...data.waymo.tfrecord import TFRecordError, count_records
    from ..labels.shards import write_shards

    _laser_ids(lidars)
    files = tfrecord_files(src)
    names = _select(sorted(files), segments, "segments")
    units = []
    for n in names:
        try:
            units.append((n, count_records(files[n])))
        except (TFRecordError, OSError):  # reported when the segment itself is converted
            units.append((n, 0))
    source = {"kind": "waymo-v1", "src": str(Path(src).resolve()), "lidars": lidars}
    fn = partial(v1_unit_frames, paths={n: files[n] for n in names}, lidars=lidars)
    return write_shards(out, units, fn, source, workers, show_progress, desc="waymo-v1")


def _report(out, result) -> None:
    frames = sum(s.frames for s in result.manifest.shards)
    click.echo(f"{out}: {frames} frames in {len(result.manifest.shards)} shards ({len(result.written)} written, "
               f"{len(result.skipped)} already done, {len(result.failed)} failed)")
    if result.failed:
        lines = "\n".join(f"  {u}: {e}" for u, e in sorted(result.failed.items()))
        raise click.ClickException(f"{len(result.failed)} segments failed (the others were converted):\n{lines}")


_common = [
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Processes, one segment each (peak memory is per worker)."),
    click.option("--lidars", type=click.Choice(sorted(LIDAR_CHOICES)), default="top", show_default=True,
                 help="top: the 64-beam TOP lidar only (all MWSIS uses); all: also FRONT, SIDE_*, REAR."),
    click.option("--segments", multiple=True, metavar="NAMES",
                 help="Only these segments (repeat or comma-separate); default all."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
]


def _options(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


@click.command("waymo-v2")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@_options
def waymo_v2_cmd(src, out, workers, lidars, segments, no_progress):
    """Convert Waymo Open Dataset v2 Parquet segments into a dataset.

    SRC holds SRC/<component>/<segment>.parquet; OUT is the dataset directory. Reads lidar, lidar_calibration, lidar_camera_projection, lidar_pose, camera_image,
    camera_calibration, camera_box, vehicle_pose and, when present, lidar_segmentation,
    camera_segmentation and lidar_box. Rerun the same command to resume.
    """
    try:
        result = convert_waymo_v2(src, out, workers, lidars, segments, show_progress=not no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    _report(out, result)


@click.command("waymo-v1")
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@_options
def waymo_v1_cmd(src, out, workers, lidars, segments, no_progress):
    """Convert Waymo Open Dataset v1 TFRecord segments into a dataset.

    SRC is a .tfrecord file or a directory of them; OUT is the dataset directory. One shard per file (segment); both CRCs of every record are checked. Rerun to resume.
    """
    try:
        result = convert_waymo_v1(src, out, workers, lidars, segments, show_progress=not no_progress)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    _report(out, result)


# --- synthetic exports (``mwsis synth --format waymo-v2|waymo-v1``) ----------------------------------

def _synthetic_segments(preset_name: str, frames: int, seed: int, frames_per_sequence: int, overrides: dict | None):
    from ...data.synthetic import preset
    from .synth import render_sequence, shard_name

    if frames < 1 or frames_per_sequence < 1:
        raise ValueError("--frames and --frames-per-sequence must be at least 1")
    overrides = dict(overrides or {})
    preset(preset_name, **overrides)  # fail early on unknown presets or fields
    n_seq = (frames + frames_per_sequence - 1) // frames_per_sequence
    lengths = {shard_name(seed, q): min(frames_per_sequence, frames - q * frames_per_sequence) for q in range(n_seq)}
    for name in lengths:
        yield name, render_sequence(name, preset_name, overrides, seed, lengths)


def synth_export_waymo_v2(out: Path | str, preset: str = "tiny", frames: int = 8, seed: int = 0,
                          frames_per_sequence: int = 4, overrides: dict | None = None, **export) -> list[str]:
    """Render synthetic sequences and write them as Waymo v2 Parquet components under ``out``."""
    from ...data.synthetic.export_waymo import export_waymo_v2

    return export_waymo_v2(_synthetic_segments(preset, frames, seed, frames_per_sequence, overrides), out, **export)


def synth_export_waymo_v1(out: Path | str, preset: str = "tiny", frames: int = 8, seed: int = 0,
                          frames_per_sequence: int = 4, overrides: dict | None = None, **export) -> list[Path]:
    """Render synthetic sequences and write them as Waymo v1 TFRecords (one file per sequence) under ``out``."""
    from ...data.synthetic.export_waymo import export_waymo_v1

    return export_waymo_v1(_synthetic_segments(preset, frames, seed, frames_per_sequence, overrides), out, **export)
