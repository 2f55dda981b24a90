"""CLI commands of the pseudo-label pipeline: ``stage``, ``pseudolabels``, ``eval-labels``, ``bench``."""
from __future__ import annotations

import json
import sys

import click

from ..labels.stages import STAGES

_STAGE_HELP = "\n".join(f"  {name:<8} {spec.doc}" for name, spec in STAGES.items())


def stage_configs(config: str | None, sets: tuple[str, ...], sam_checkpoint: str | None, **more):
    """The run's ``StagesConfig``: defaults < --config (its ``stages``) < --set < --sam-checkpoint < ``more``
    (dotted keys, e.g. ``{"pvc.history": 6}``)."""
    from ..config import ConfigError, apply_overrides, load_section

    try:
        cfg = load_section("stages", config, sets)
        if sam_checkpoint:
            cfg = apply_overrides(cfg, {"sam.checkpoint": sam_checkpoint})
        if more:
            cfg = apply_overrides(cfg, more)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--config/--set") from e
    return cfg


def _report(results) -> None:
    failed = [r for r in results if r.status == "failed"]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    click.echo(f"{done} shards written, {skipped} up to date or skipped, {len(failed)} failed", err=True)
    for r in failed:
        click.echo(f"FAILED {r.stage}/{r.shard}: {r.error}", err=True)
    if failed:
        sys.exit(1)


_set_option = click.option("--set", "sets", multiple=True, metavar="SECTION.FIELD=VALUE",
                           help="Override a config field, e.g. --set spg.fg_thresh=0.05 (repeatable).")
_config_option = click.option("--config", default=None, metavar="PRESET|PATH",
                              help="A preset (waymo, kitti, synthetic-tiny) or a YAML file; its 'stages' "
                                   "section sets the stage configs. --set values win over it.")
_verify_option = click.option("--verify", is_flag=True,
                              help="Up-to-date checks hash every input and output byte, instead of trusting "
                                   "files whose size and mtime are unchanged since they were last hashed.")
_sam_option = click.option("--sam-checkpoint", type=str, default=None, envvar="SAM_CHECKPOINT",
                           help="SAM weights (vit_h/l/b .pth) for the sam stage; 'tiny' = tiny random SAM (tests).")


@click.command("stage", help=f"Run one stage on a slice of shards.\n\n\b\nStages:\n{_STAGE_HELP}\n\n"
               "Without --shard-index/--num-shards the slice comes from SLURM_ARRAY_TASK_ID and "
               "SLURM_ARRAY_TASK_COUNT when set, else it is every shard; --shards names the shards "
               "explicitly (what `mwsis slurm` array tasks use). Finished shards are skipped "
               "unless --force or their config or inputs changed.")
@click.argument("name", type=click.Choice(list(STAGES)))
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--shard-index", type=int, default=None, help="This task's slice (0-based).")
@click.option("--num-shards", type=int, default=None, help="Number of slices the shards are split into.")
@click.option("--shards", "shard_list", default=None, metavar="LIST",
              help="Exactly these shard positions (manifest order), e.g. 0,3,7 or 0-4,9. "
                   "Excludes --shard-index/--num-shards and ignores SLURM_ARRAY_TASK_ID.")
@click.option("--force", is_flag=True, help="Recompute finished shards.")
@click.option("--history", type=click.IntRange(min=1), default=None, help="pvc: number of newest prediction rounds (N_his, default 4).")
@click.option("--base", default=None, help="pvc: the labels the vote corrects (default spg).")
@_verify_option
@_config_option
@_set_option
@_sam_option
def stage_cmd(name, data, shard_index, num_shards, shard_list, force, history, base, verify, config, sets,
              sam_checkpoint):
    from ...data.store import open_dataset
    from ..progress import progress_bar
    from ..labels.runner import parse_shard_list, run_stage_shard, slice_shards

    ds = open_dataset(data)
    if shard_list is not None and (shard_index is not None or num_shards is not None):
        raise click.UsageError("--shards excludes --shard-index/--num-shards")
    try:
        positions = (parse_shard_list(shard_list, ds.num_shards) if shard_list is not None
                     else slice_shards(ds.num_shards, shard_index, num_shards))
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if (history is not None or base is not None) and name != "pvc":
        raise click.UsageError("--history and --base apply to the pvc stage only")
    cfg = stage_configs(config, sets, sam_checkpoint,
                        **{f"pvc.{k}": v for k, v in (("history", history), ("base", base)) if v is not None})
    spec = STAGES[name]
    reason = spec.skip_reason(cfg.sections(spec.sections)) if spec.skip_reason else None
    if reason:
        click.echo(f"stage {name} skipped: {reason}", err=True)
        return
    # one stage only: its dependencies must exist already (`mwsis pseudolabels` runs the whole graph)
    with progress_bar(sum(ds.manifest.shards[p].frames for p in positions), "frame", name) as bar:
        results = [run_stage_shard(str(ds.root), name, cfg, p, force, tick=bar.update, verify=verify, ds=ds)
                   for p in positions]
    _report(results)


@click.command("pseudolabels")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--stages", default="frustum,ccl,dcs,spg,sam", show_default=True,
              help="Comma-separated stages; dependencies are added.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (one shard each).")
@click.option("--shards", "shard_list", default=None, metavar="LIST",
              help="Only these shard positions (manifest order), e.g. 0,3,7 or 0-4,9 (one task of your own batch "
                   "script). Default: every shard.")
@click.option("--force", is_flag=True, help="Recompute finished shards.")
@click.option("--stage-by-stage", is_flag=True,
              help="Run each stage over every shard before the next (the baseline) instead of one pass per shard "
                   "that reads each frame once for all stages. Same label shards, byte for byte.")
@click.option("--eval/--no-eval", "do_eval", default=True, show_default=True,
              help="Print the quality table when the dataset has ground truth.")
@_verify_option
@_config_option
@_set_option
@_sam_option
def pseudolabels_cmd(data, stages, workers, shard_list, force, stage_by_stage, do_eval, verify, config, sets,
                     sam_checkpoint):
    """Run the pseudo-label stage graph locally over a process pool, then print the quality table.

    Each shard is read once for all stages (SPG takes DCS's segments in memory); every stage still writes,
    checks and skips its own shards, so `mwsis stage NAME` and this command agree on what is done."""
    from ...data.store import open_dataset
    from ..labels.runner import parse_shard_list, run_stages

    cfg = stage_configs(config, sets, sam_checkpoint)
    try:
        positions = None if shard_list is None else parse_shard_list(shard_list, open_dataset(data).num_shards)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    results = run_stages(data, [s.strip() for s in stages.split(",") if s.strip()], cfg, shard_positions=positions,
                         workers=workers, force=force, verify=verify, fused=not stage_by_stage)
    if do_eval and not any(r.status == "failed" for r in results):
        from ..labels.evaluate import evaluate_labels, format_table

        res = evaluate_labels(data, variants=True, config=cfg)
        if res["frames"]:
            click.echo(format_table(res))
    _report(results)


@click.command("eval-labels")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--stages", default=None, help="Comma-separated stages (default: every stage with labels).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the result as JSON (keys: frames, and per stage miou, ap, ap50, ap75, per_class).")
@click.option("--variants/--no-variants", default=True, show_default=True,
              help="Also score SPG variants computed in memory: paper vs authors' thresholds and overlap rule, "
                   "authors' vs union-find DCS.")
@click.option("--config", default=None, metavar="PRESET|PATH",
              help="The config the labels were made with (its 'points' and 'stages' sections): the evaluated point "
                   "set and the base of the SPG variants. Default: the config recorded in the spg label shards.")
@_set_option
def eval_labels_cmd(data, stages, json_path, variants, config, sets):
    """Score each stage's pseudo labels against ground truth (point IoU/mIoU, instance AP, SAM mask IoU)."""
    from ...data.store import write_bytes_atomic
    from ..labels.evaluate import evaluate_labels, format_table

    cfg = stage_configs(config, sets, None) if config or sets else None
    res = evaluate_labels(data, [s for s in stages.split(",")] if stages else None, variants=variants, config=cfg)
    if not res["frames"]:
        raise click.ClickException(f"{data}: no frame has per-point ground truth; nothing to evaluate")
    click.echo(format_table(res))
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(res, indent=1) + "\n").encode())


@click.command("bench")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), required=True, help="Where to write the JSON.")
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True,
              help="waymo-preset frames rendered for the benchmark.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="Benchmark on this dataset instead of rendered frames.")
def bench_cmd(json_path, frames, data):
    """Pseudo-label speed and memory -> JSON: DCS vs plain Python, the kernels' frames/s, the stages end to end
    (fused vs stage by stage, 1 and 2 workers), a profile of each path's top costs, peak RSS, hashing share."""
    from ...data.store import write_bytes_atomic
    from ..experiments.bench import run_bench

    res = run_bench(frames=frames, data=data)
    write_bytes_atomic(json_path, (json.dumps(res, indent=1) + "\n").encode())
    click.echo(json.dumps({k: v for k, v in res.items() if k not in ("machine", "stages_end_to_end", "profile")},
                          indent=1))
    for name, prof in res["profile"].items():
        click.echo(f"profile, {name} ({prof['ms_per_frame']:.1f} ms/frame under cProfile): "
                   + ", ".join(f"{k} {ms:.1f} ms ({100 * share:.0f} %)" for k, ms, share in prof["top"]))


@click.command("export")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--labels", "stage", required=True,
              help="The label stage to export (e.g. spg, pvc, clicks3d); for coco: sam, or a 2D run directory; for "
                   "rerun also gt (the ground truth).")
@click.option("--format", "fmt", type=click.Choice(["semantickitti", "ply", "las", "laz", "coco", "rerun"]),
              required=True,
              help="semantickitti: sequences/<seq>/velodyne/*.bin + labels/*.label (uint32: semantic low 16 bits, "
                   "instance high 16) and label_map.yaml. ply: one coloured binary PLY per frame. las/laz: LAS 1.4 "
                   "per frame, classes 64/65/66 (vehicle/pedestrian/cyclist), 1 background, 0 ignore, extra "
                   "dimensions instance, score, mwsis_class (needs the formats extra: laspy). coco: "
                   "instances_gt.json + results.json of 2D masks (--labels sam or a 2D run). rerun: one "
                   "<dataset>.rrd recording (points by label, 3D boxes, posed cameras with images, 2D boxes and "
                   "masks on a frame timeline; needs the viz extra: rerun-sdk).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write.")
@click.option("--frames", "frame_range", default=None, help="rerun: positions A:B of the frames to record (B "
              "excluded; default all).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def export_cmd(data, stage, fmt, out, frame_range, no_progress):
    """Write a stage's labels in a format other tools read (SemanticKITTI loaders, CloudCompare, COCO, rerun)."""
    from ..labels.export import export_coco, export_labels, export_rerun

    if fmt == "coco":
        res = export_coco(data, stage, out, show_progress=not no_progress)
        ap50 = "-" if res["ap50"] is None else f"{100 * res['ap50']:.1f}"
        click.echo(f"{out}: instances_gt.json and results.json of {stage} (mask AP50 {ap50})")
        return
    if fmt == "rerun":
        try:
            path = export_rerun(data, stage, out, frame_range, show_progress=not no_progress)
        except ValueError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"{path}: rerun recording of {stage} (open it with `rerun {path}` or `mwsis view`)")
        return
    n = export_labels(data, stage, fmt, out, show_progress=not no_progress)
    click.echo(f"{out}: {n} frames of labels/{stage} as {fmt}")


@click.command("view")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "stage", default="gt", show_default=True,
              help="The label stage to colour the points by (gt: the ground truth).")
@click.option("--frames", "frame_range", default=None, help="Positions A:B of the frames to show (default all).")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the recording in this directory (default: a temporary one when a viewer opens it, "
                   "DATA/../rerun otherwise).")
@click.option("--screenshot", type=click.Path(dir_okay=False), default=None,
              help="Instead of opening a window: render the viewer headless (software Vulkan is enough: Mesa's "
                   "lavapipe) and save a PNG of it. On a busy machine the viewer may shoot before the data has "
                   "loaded: run it again.")
@click.option("--window-size", default="1600x900", show_default=True, help="--screenshot: the viewer's size.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def view_cmd(data, stage, frame_range, save_dir, screenshot, window_size, no_progress):
    """Open a dataset and its labels in the rerun viewer; without a display, save the recording and say where.

    Writes the same recording as `mwsis export --format rerun`, then starts the viewer (the `rerun` program of
    the viz extra) when $DISPLAY or $WAYLAND_DISPLAY is set.
    """
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from ..labels.export import export_rerun

    display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    viewer = shutil.which("rerun") or shutil.which("rerun", path=str(Path(sys.executable).parent))
    where = save_dir or (tempfile.mkdtemp(prefix="mwsis-view-") if (display or screenshot) and viewer else
                         str(Path(data).resolve().parent / "rerun"))
    try:
        path = export_rerun(data, stage, where, frame_range, show_progress=not no_progress)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if screenshot:
        if not viewer:
            raise click.ClickException("no `rerun` program found: pip install 'mwsis[viz]'")
        png = Path(screenshot).resolve()
        png.parent.mkdir(parents=True, exist_ok=True)
        # --new: never hand the file to a viewer that already runs (it would take the screenshot, or not)
        cmd = [viewer, str(path), "--new", "--headless", "--renderer", "vulkan", "--screenshot-to", str(png),
               "--window-size", window_size]
        env = {**os.environ, "RERUN_ANALYTICS": "0"}
        try:  # its own session, so that a timeout can stop the viewer's whole process group
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            out, _ = proc.communicate(timeout=1800)
            run = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            raise click.ClickException(f"the headless viewer took more than 30 min on {path} (a software renderer "
                                       "on a busy CPU: try fewer --frames or a smaller --window-size)") from None
        if run.returncode != 0 or not png.exists():
            tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-5:])
            raise click.ClickException(f"the headless viewer failed (exit {run.returncode}); it needs a Vulkan driver, "
                                       f"e.g. `apt-get install mesa-vulkan-drivers` (software):\n{tail}")
        click.echo(f"{png}: screenshot of {path} in the rerun viewer")
        return
    if display and viewer:
        click.echo(f"opening {path} in the rerun viewer")
        subprocess.Popen([viewer, str(path)])
    else:
        why = "no display ($DISPLAY / $WAYLAND_DISPLAY unset)" if not display else "no `rerun` program on PATH"
        click.echo(f"{why}: saved {path}; open it with `rerun {path}` on a machine with a screen")
