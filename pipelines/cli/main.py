"""The ``mwsis`` command line. Each command is a thin wrapper over a function in ``pipelines/``."""
from __future__ import annotations

import json
import logging
import sys

import click

from ...data.store import StoreError, open_dataset
from ...data.validate import FrameError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Group(click.Group):
    """Turns errors into one clear line and exit code 1 instead of a traceback (``--debug`` shows it).

    Our data errors (``StoreError``, ``FrameError``) name the file, frame and field themselves; anything
    else is shown as its type and message."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit,
                KeyboardInterrupt):
            raise
        except (StoreError, FrameError, KeyError) as e:
            if ctx.params.get("debug"):
                raise
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            raise click.ClickException(str(msg)) from e
        except Exception as e:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(f"{type(e).__name__}: {e} (rerun with `mwsis --debug ...` for the "
                                       "traceback)") from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error (default: one line).")
@click.version_option(package_name="mwsis")
def main(verbose: bool, debug: bool) -> None:
    """mwsis: 2D boxes + camera + LiDAR in, 2D and 3D instance pseudo labels and segmentors out.

    A dataset is a directory with manifest.json and Parquet shards (see README, "Data model").
    Start with `mwsis synth --preset tiny --frames 8 --out DATA`, then `mwsis info DATA`.
    """
    _setup_logging(verbose)


@main.command()
@click.option("--preset", type=click.Choice(["tiny", "waymo", "kitti", "nuscenes"]), default="tiny", show_default=True,
              help="tiny: 16x512 LiDAR, 2 small cameras (tests). waymo: 64x2650 TOP LiDAR, 5 cameras. "
                   "kitti: HDL-64E-like, one 1242x375 camera. nuscenes: HDL-32E-like, six 1600x900 cameras.")
@click.option("--format", "fmt", type=click.Choice(["native", "waymo-v2", "waymo-v1", "kitti", "nuscenes", "folder"]),
              default="native", show_default=True,
              help="native: a mwsis dataset. Others write the real Waymo v2 Parquet / v1 TFRecord / KITTI / nuScenes "
                   "layout or the sensor-folder layout of your own logs (to test `mwsis convert`; nuscenes needs "
                   "--preset nuscenes).")
@click.option("--point-format", type=click.Choice(["npy", "bin", "pcd", "las", "laz"]), default="npy",
              show_default=True, help="--format folder: the point files' type (pcd, las, laz need mwsis[formats]).")
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True, help="Number of frames.")
@click.option("--frames-per-sequence", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frames per sequence; one shard per sequence.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Dataset directory to write.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (one shard each).")
@click.option("--image-scale", type=click.FloatRange(min=0.05, max=4.0), default=None,
              help="Scale every camera's resolution and focal length (waymo default 960x640 = 1.0).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def synth(preset, fmt, point_format, frames, frames_per_sequence, seed, out, workers, image_scale, no_progress):
    """Render synthetic street scenes (LiDAR + cameras + exact ground truth) into a dataset.

    Reruns resume: finished shards are kept, missing ones are rendered. With --format waymo-v2,
    waymo-v1, kitti, nuscenes or folder the frames are written in that file layout instead.
    """
    from ..convert.synth import synth_dataset

    overrides = {"image_scale": image_scale} if image_scale else {}
    if fmt != "native":
        from ..convert.folder import synth_export_folder
        from ..convert.kitti import synth_export_kitti
        from ..convert.nuscenes import synth_export_nuscenes
        from ..convert.waymo import synth_export_waymo_v1, synth_export_waymo_v2

        if fmt == "kitti":
            synth_export_kitti(out, preset, frames, seed, overrides)
        elif fmt == "nuscenes":
            try:
                synth_export_nuscenes(out, preset, frames, seed, frames_per_sequence, overrides)
            except ValueError as e:
                raise click.ClickException(str(e)) from e
        elif fmt == "folder":
            synth_export_folder(out, preset, frames, seed, frames_per_sequence, overrides, point_format=point_format)
        else:
            export = synth_export_waymo_v2 if fmt == "waymo-v2" else synth_export_waymo_v1
            export(out, preset, frames, seed, frames_per_sequence, overrides)
        click.echo(f"{out}: {frames} synthetic frames in the {fmt} layout (convert with `mwsis convert {fmt}`)")
        return
    m = synth_dataset(out, preset, frames, seed, frames_per_sequence, workers, overrides,
                      show_progress=not no_progress)
    click.echo(f"{out}: {sum(s.frames for s in m.shards)} frames in {len(m.shards)} shards")


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys: frames, points_per_frame, "
              "range_image_shape, boxes_per_class, ground_truth, click_sets, ...).")
@click.option("--verify", is_flag=True, help="Also check every shard's checksum.")
def info(dataset, as_json, verify):
    """Summarise a dataset: frames, points per frame, range-image shape, boxes per class, ground truth."""
    from ...data.click_store import click_sources
    from ...data.summary import summarize
    from ..labels.clicks import count_clicks
    from ..progress import progress_bar

    ds = open_dataset(dataset)
    if verify:
        ds.verify()
    with progress_bar(total=len(ds), unit="frame", desc="info", enabled=len(ds) > 500 and not as_json) as bar:
        s = summarize(ds, progress=bar.update)
    s["click_sets"] = {c: count_clicks(dataset, c) for c in click_sources(dataset)}
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    click.echo(f"dataset            {dataset}")
    click.echo(f"frames             {s['frames']} in {s['shards']} shards" + (" (checksums OK)" if verify else ""))
    click.echo(f"points per frame   {s['points_per_frame']:.0f} (min {s['points_min']}, max {s['points_max']})")
    click.echo(f"range image (TOP)  {s['range_image_shape']}")
    click.echo("cameras            " + ", ".join(f"{c['name']} {c['width']}x{c['height']}" for c in s["sensors"].get("cameras", [])))
    click.echo("boxes per class    " + ", ".join(f"{k} {v}" for k, v in s["boxes_per_class"].items()))
    # a kind present in only some frames (e.g. Waymo v2 segments with and without lidar_segmentation) says so
    gt = [name if s["ground_truth_frames"][name] == s["frames"]
          else f"{name} (only {s['ground_truth_frames'][name]} of {s['frames']} frames)" for name in s["ground_truth"]]
    click.echo("ground truth       " + (", ".join(gt) or "none"))
    click.echo(f"first frame        {s['first_frame_id']}")
    click.echo("click sets         " + (", ".join(f"{c} ({n} clicks)" for c, n in s["click_sets"].items())
                                       or "none (make one with `mwsis clicks`)"))


@main.group()
def viz():
    """Pictures of frames (PNG)."""


@viz.command("frame")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.argument("frame_id")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for the PNGs.")
@click.option("--points", is_flag=True, help="Also draw the projected LiDAR points on the camera images.")
def viz_frame_cmd(dataset, frame_id, out, points):
    """Bird's-eye view (by instance), range image, and every camera with boxes and masks."""
    from ..report.viz import viz_frame

    for path in viz_frame(dataset, frame_id, out, points_on_images=points):
        click.echo(str(path))


def _register() -> None:
    from .labels import bench_cmd, eval_labels_cmd, export_cmd, pseudolabels_cmd, stage_cmd, view_cmd

    from .convert import convert
    from .report import report_cmd
    from .slurm import slurm  # a group: other modules add commands with slurm.add_command(...)
    from .slurm_train import train_2d_slurm_cmd, train_3d_slurm_cmd
    from .train import (eval_2d_cmd, eval_3d_cmd, predict_2d_cmd, predict_3d_cmd, train_2d_cmd,
                            train_3d_cmd)

    from .clicks import clicks_cmd

    for cmd in (clicks_cmd, export_cmd, view_cmd, stage_cmd, pseudolabels_cmd, eval_labels_cmd, bench_cmd, convert,
                train_3d_cmd, predict_3d_cmd, eval_3d_cmd, train_2d_cmd, predict_2d_cmd, eval_2d_cmd, slurm, report_cmd):
        main.add_command(cmd)
    for cmd in (train_3d_slurm_cmd, train_2d_slurm_cmd):
        slurm.add_command(cmd)


_register()

if __name__ == "__main__":
    main()
