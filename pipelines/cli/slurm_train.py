"""``mwsis slurm train-3d`` and ``mwsis slurm train-2d``: submit a trainer as one (multi-node) SLURM job.

Thin wrappers: the script comes from ``slurm_train.render_train_script``; submission is ``slurm.sbatch``.
"""
from __future__ import annotations

from pathlib import Path

import click

from .slurm import job_options, with_options


def _options(f):
    opts = [
        click.option("--data", type=click.Path(exists=True, file_okay=False), required=True,
                     help="Dataset directory (on a filesystem every node shares)."),
        click.option("--out", type=click.Path(file_okay=False), required=True,
                     help="Run directory (shared filesystem): checkpoints, metrics, slurm/ script and log."),
        click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Nodes."),
        click.option("--gpus-per-node", type=click.IntRange(min=0), default=0, show_default=True,
                     help="GPUs (= DDP workers) per node; 0 = one CPU worker per node, no --gres."),
        click.option("--partition", default=None, help="SLURM partition (default: the cluster's)."),
        click.option("--time", default=None, help="Time limit of one start, e.g. 04:00:00 (requeued starts "
                                                  "get it again)."),
        click.option("--mem", default=None, help="Memory per node, e.g. 64G."),
        click.option("--cpus-per-task", type=click.IntRange(min=1), default=None,
                     help="CPUs per node (the one task per node runs all its workers)."),
        click.option("--signal-seconds", type=click.IntRange(min=10), default=300, show_default=True,
                     help="Warn the job (USR1) this long before its time limit: enough for one step, a "
                          "checkpoint and, if one is due, the epoch's PVC round or prediction export."),
        click.option("--port", type=click.IntRange(min=1024, max=65535), default=None,
                     help="Rendezvous port on the first node. [default: 29500 + job id % 10000]"),
        click.option("--config", default=None, metavar="PRESET|PATH", help="Trainer config preset or YAML."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Trainer config override, e.g. --set epochs=24 --set cscs.round=latest (repeatable)."),
        *job_options("the job", "the job", "'module load cuda'", "script"),
    ]
    return with_options(f, opts)


def submit_training(kind: str, data, out, config, sets, dry_run: bool, **opts) -> str | None:
    """Check the config, render the script, and (unless ``dry_run``) write it to RUN/slurm/ and sbatch it.
    Returns the job id (None on a dry run)."""
    from ...data.store import write_bytes_atomic
    from ..slurm import stages as S
    from ..slurm.train import SLURM_DIR, TrainJob, render_train_script, script_path
    from ..training.run import load_config

    if kind == "train-3d":
        from ..training.train3d import Train3DConfig as cls
    else:
        from ..training.train2d import Train2DConfig as cls
    if config and Path(config).exists():
        config = str(Path(config).resolve())  # the job may start in another directory
    try:
        load_config(cls, config, list(sets))  # a typo fails here, not after hours in the queue
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    run = Path(out).resolve()
    job = TrainJob(kind, str(Path(data).resolve()), str(run), config=config, sets=tuple(sets),
                   **{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in opts.items()})
    text = render_train_script(job)
    if dry_run:
        click.echo(f"# sbatch {script_path(run, kind)} (dry run: nothing written or submitted)")
        click.echo(text)
        return None
    path = script_path(run, kind)
    try:
        S.require("sbatch", data)
        write_bytes_atomic(path, text.encode())
        job_id = S.sbatch(path, data)
    except S.SlurmError as e:  # no SLURM here, or sbatch refused: one clear line
        raise click.ClickException(str(e)) from e
    log = run / SLURM_DIR / f"mwsis-{kind}-{job_id}.out"
    click.echo(f"{kind}: job {job_id} ({job.nodes} node(s) x {max(job.gpus_per_node, 1)} worker(s)); "
               f"log {log}; checkpoints {run}/checkpoints; preempted starts requeue and resume")
    return job_id


@click.command("train-3d")
@_options
def train_3d_slurm_cmd(data, out, config, sets, dry_run, **opts):
    """Submit `mwsis train-3d` as one SLURM job: srun, one torchrun per node, DDP over all GPUs.

    The job always resumes from RUN's newest checkpoint, so resubmitting continues a run. USR1 (sent
    --signal-seconds before the time limit, or `scancel --batch --signal=USR1 JOB`) makes the trainer
    checkpoint at its next step and the job requeue itself; `scancel JOB` checkpoints if there is time
    and ends the job. PVC rounds run inside the job at their epochs.
    """
    submit_training("train-3d", data, out, config, sets, dry_run, **opts)


@click.command("train-2d")
@_options
def train_2d_slurm_cmd(data, out, config, sets, dry_run, **opts):
    """Submit `mwsis train-2d` as one SLURM job: srun, one torchrun per node, DDP over all GPUs.

    As train-3d. For the CSCS exchange with a 3D job running beside it, set --set export.every=K (2D
    rounds for the 3D job's cscs.round=latest) and --set cscs_3d=latest.
    """
    submit_training("train-2d", data, out, config, sets, dry_run, **opts)
