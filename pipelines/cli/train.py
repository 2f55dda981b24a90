"""CLI commands of the trainers: ``train-3d``, ``predict-3d``, ``eval-3d``."""
from __future__ import annotations

import json
from pathlib import Path

import click

_config_opt = click.option("--config", "config_path", default=None, metavar="PRESET|PATH",
                           help="A preset (waymo, kitti, synthetic-tiny: its train3d/train2d section) or a YAML "
                                "file (with that section, or the trainer's fields alone, e.g. "
                                "configs/train3d-tiny.yaml). --set values win over the file.")
_set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="Override a config value, e.g. --set epochs=2 --set model.base_channels=32.")


def _prediction_info(run: str, rnd: int, cfg) -> dict:
    """What a prediction round records: the run, its checkpoint and resolved config (the run dir may be
    retrained or deleted later; the round must still say what produced it)."""
    from ..training.run import config_to_dict, latest_checkpoint

    ckpt = latest_checkpoint(Path(run))
    return {"run": str(Path(run).resolve()), "round": rnd, "checkpoint": ckpt.name if ckpt else None,
            "config": config_to_dict(cfg)}


def _load_config(cls, config_path, sets: list[str]):
    """The trainer's resolved config; a bad preset, file or key is a usage error naming it."""
    from ..training.run import load_config

    try:
        return load_config(cls, config_path, sets)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _json_out(res: dict, json_path: str | None) -> None:
    from ...data.store import write_bytes_atomic

    text = json.dumps(res, indent=1)
    click.echo(text)
    if json_path:
        write_bytes_atomic(json_path, (text + "\n").encode())


def _summary_out(summary: dict, out: str) -> None:
    """Print the summary; a preempted run (checkpoint written) exits with PREEMPTED_EXIT, not 0 (not done)
    and not 1 (not failed), so a job script or a person can tell it apart and resume."""
    from ..training.distributed import PREEMPTED_EXIT

    click.echo(json.dumps({k: v for k, v in summary.items() if k != "last"}, indent=1))
    if summary.get("preempted"):
        click.echo(f"preempted: checkpoint written; continue with --resume --out {out}", err=True)
        raise click.exceptions.Exit(PREEMPTED_EXIT)


_overwrite_opt = click.option(
    "--overwrite", is_flag=True,
    help="--out holds a previous run: move it aside to OUT.old-<time> and start afresh (nothing is deleted). "
         "Without --resume or --overwrite a non-empty --out is refused.")


@click.command("train-3d")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--labels", default=None, help="Pseudo labels to train on: spg (default), ccl, sam, pvc, frustum; or gt: the per-point ground truth (full supervision, the upper bound; no PVC).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue from the run's newest checkpoint.")
@_overwrite_opt
@click.option("--cscs-2d", "cscs_2d", default=None, metavar="ROUND|latest",
              help="CSCS 2D->3D: supervise with the 2D teacher's predictions of this round.")
@_config_opt
@_set_opt
def train_3d_cmd(data, labels, out, resume, overwrite, cscs_2d, config_path, sets):
    """Train the 3D SparseUNet + vote head on pseudo labels (EMA teacher, PVC loop, checkpoints, metrics.csv)."""
    from ..training.train3d import Train3DConfig, train_3d

    extra = [f"labels={labels}"] if labels else []
    if cscs_2d:
        extra.append(f"cscs.round={cscs_2d}")
    cfg = _load_config(Train3DConfig, config_path, [*sets, *extra])
    summary = train_3d(data, out, cfg, resume=resume, overwrite=overwrite)
    _summary_out(summary, out)


@click.command("predict-3d")
@click.option("--run", type=click.Path(exists=True, file_okay=False), required=True, help="Run directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--round", "rnd", type=click.IntRange(min=0), required=True, help="Round number to write.")
@click.option("--features/--no-features", default=False, show_default=True,
              help="Also write the teacher's point features (16-d, fixed projection) to predictions/3dfeat/round=R/ "
                   "for the 2D trainer's feature correlation (model.cscs.affinity_weight).")
def predict_3d_cmd(run, data, rnd, features):
    """Write the EMA teacher's per-point class probabilities to DATASET/predictions/3d/round=R/ (for PVC, CSCS)."""
    from ..predict.predict3d import export_predictions
    from ..training.train3d import load_teacher
    from ..training.distributed import init_distributed, pick_device, use_cpu_threads

    device = pick_device(init_distributed())
    model, cfg = load_teacher(run, device)
    use_cpu_threads(device, cfg.cpu_threads)
    export_predictions(data, model, cfg.infer, rnd, device, info=_prediction_info(run, rnd, cfg), points=cfg.points,
                       features=features)


@click.command("eval-3d")
@click.option("--run", type=click.Path(exists=True, file_okay=False), required=True, help="Run directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset with ground truth.")
@click.option("--rsc/--no-rsc", default=False, show_default=True, help="Ring-segment correction (MWSIS §3.3).")
@click.option("--min-points", type=click.IntRange(min=0), default=0, show_default=True,
              help="Minimum instance size in points (0 = off, as the authors).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the result here.")
def eval_3d_cmd(run, data, rsc, min_points, json_path):
    """Instance AP/AP50/AP75 (point-count IoU, COCO protocol) and semantic IoU/mIoU of a run's EMA teacher."""
    import dataclasses

    from ..predict.predict3d import evaluate_3d
    from ..training.train3d import load_teacher
    from ..training.distributed import init_distributed, pick_device, use_cpu_threads

    device = pick_device(init_distributed())
    model, cfg = load_teacher(run, device)
    use_cpu_threads(device, cfg.cpu_threads)
    infer = dataclasses.replace(cfg.infer, min_points=max(min_points, 1))
    res = evaluate_3d(model, data, infer, device, rsc=rsc, points=cfg.points, spg=cfg.spg)
    if not res["frames"]:
        raise click.ClickException(f"{data}: no frame has per-point ground truth")
    _json_out(res, json_path)


@click.command("train-2d")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue from the run's newest checkpoint.")
@_overwrite_opt
@click.option("--pseudo-masks", type=click.Choice(["sam"]), default=None,
              help="Use the sam stage's box-prompt masks as 2D pseudo masks.")
@click.option("--masks", type=click.Choice(["boxes", "gt"]), default=None,
              help="Mask supervision: boxes (BoxInst, the default) or gt: the true instance masks (full "
                   "supervision, the upper bound; frames without masks fail with their id).")
@click.option("--cscs-3d", "cscs_3d", default=None, metavar="ROUND|latest",
              help="CSCS 3D->2D: supervise with the 3D teacher's predictions of this round.")
@click.option("--backbone-weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="torchvision-format ImageNet ResNet weights (.pth); random init otherwise.")
@click.option("--clicks", default=None, metavar="SET",
              help="Learn from one click per object instead of boxes: WISE (L-Net + E-Net) on this click set "
                   "(`mwsis clicks`), with proposals from the clicks3d stage run on it (model.wise.*).")
@_config_opt
@_set_opt
def train_2d_cmd(data, out, resume, overwrite, pseudo_masks, masks, cscs_3d, backbone_weights, clicks, config_path,
                 sets):
    """Train the 2D segmenter: BoxInst (CondInst) + IPG from 2D boxes, or WISE from clicks (--clicks); EMA
    teacher, checkpoints, metrics.csv."""
    from ..training.train2d import Train2DConfig, train_2d

    extra = [f"{k}={v}" for k, v in (("pseudo_masks", pseudo_masks), ("masks", masks), ("cscs_3d", cscs_3d),
                                      ("backbone_weights", backbone_weights)) if v]
    if clicks:
        extra += ["model.ipg.enabled=false", "model.wise.enabled=true", f"model.wise.clicks={clicks}"]
    cfg = _load_config(Train2DConfig, config_path, [*sets, *extra])
    summary = train_2d(data, out, cfg, resume=resume, overwrite=overwrite)
    _summary_out(summary, out)


def _teacher_2d(run):
    from ..training.train2d import load_teacher_2d
    from ..training.distributed import init_distributed, pick_device, use_cpu_threads

    device = pick_device(init_distributed())
    model, cfg = load_teacher_2d(run, device)
    use_cpu_threads(device, cfg.cpu_threads)
    return model, cfg, device


@click.command("predict-2d")
@click.option("--run", type=click.Path(exists=True, file_okay=False), required=True, help="Run directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset directory.")
@click.option("--round", "rnd", type=click.IntRange(min=0), required=True, help="Round number to write.")
def predict_2d_cmd(run, data, rnd):
    """Write the 2D teacher's IPG mask probabilities at each point's projections to predictions/2d/round=R/."""
    from ..predict.predict2d import export_predictions_2d

    model, cfg, device = _teacher_2d(run)
    export_predictions_2d(data, model, cfg, rnd, device, info=_prediction_info(run, rnd, cfg))


@click.command("eval-2d")
@click.option("--run", type=click.Path(exists=True, file_okay=False), required=True, help="Run directory.")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True, help="Dataset with GT masks.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the result here.")
def eval_2d_cmd(run, data, json_path):
    """COCO mask AP/AP50/AP75 per class (pycocotools, original resolution, GT masks > 200 px)."""
    from ..predict.predict2d import evaluate_2d

    model, cfg, device = _teacher_2d(run)
    res = evaluate_2d(model, data, cfg, device)
    if not res["images"]:
        raise click.ClickException(f"{data}: no frame has ground-truth masks")
    _json_out(res, json_path)
