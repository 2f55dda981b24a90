"""``mwsis slurm``: the pseudo-label stages as SLURM array jobs (``pseudolabels``, ``status``, ``resume``).

The group is meant to grow: other modules register their commands with ``slurm.add_command(...)`` in
``cli.py``. Plans and scripts come from ``slurm.py``; this module adds the dataset (which shards are up to
date, with the runner's own test) and the submission loop.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path

import click

from ..slurm.stages import SbatchOptions, SlurmError, StageJob
from ..labels.stages import STAGES

DEFAULT_STAGES = "frustum,ccl,dcs,spg,sam"


class _SlurmGroup(click.Group):
    """SlurmError -> one clear line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SlurmError as e:
            raise click.ClickException(str(e)) from e


@click.group("slurm", cls=_SlurmGroup)
def slurm():
    """Run the pipeline on a SLURM cluster (sbatch array jobs; the dataset must be on a shared filesystem).

    \b
    mwsis slurm pseudolabels --data D   one array job per stage, chained by the stage graph
                                        (--fused: one job, every stage in one pass per shard)
    mwsis slurm status --data D         shards done / running / pending / failed per stage, failed logs
    mwsis slurm resume --data D         resubmit only the shards that are not done
    mwsis slurm train-3d --data D --out RUN --nodes N --gpus-per-node G    srun + torchrun, requeued on USR1
    mwsis slurm train-2d --data D --out RUN --nodes N --gpus-per-node G    (same for the 2D trainer)

    Scripts, logs and submission records go under D/slurm/. Without SLURM use `mwsis pseudolabels`.
    """


def _sbatch_options(f):
    """sbatch settings shared by ``pseudolabels`` and ``resume`` (None: resume reuses the recorded ones)."""
    opts = [
        click.option("--partition", default=None, help="SLURM partition (default: the cluster's)."),
        click.option("--time", default=None, help="Time limit per array task, e.g. 01:00:00."),
        click.option("--mem", default=None, help="Memory per array task, e.g. 8G."),
        click.option("--cpus-per-task", type=click.IntRange(min=1), default=None,
                     help="CPUs per array task (also its OMP/NUMBA threads). [default: 1]"),
        click.option("--array-parallelism", type=click.IntRange(min=1), default=None,
                     help="At most K tasks of one stage's array run at once (--array=0-N%K)."),
        click.option("--max-tasks", type=click.IntRange(min=1), default=None,
                     help="Array tasks per stage at most; shards are split into contiguous chunks "
                          "(SLURM's MaxArraySize is often 1001). [default: 1000]"),
        *job_options("every job", "each task", "'module load cuda; source venv/bin/activate'", "scripts"),
    ]
    return with_options(f, opts)


def job_options(jobs: str, runner: str, example: str, what: str) -> list:
    """--sbatch-arg, --setup and --dry-run, worded for ``jobs`` / ``runner`` (shared by every slurm command)."""
    return [
        click.option("--sbatch-arg", "sbatch_args", multiple=True, metavar="OPTION",
                     help=f"Extra sbatch option for {jobs}, e.g. --sbatch-arg=--account=proj (repeatable)."),
        click.option("--setup", default=None, metavar="SHELL",
                     help=f"Shell line {runner} runs first, e.g. {example}."),
        click.option("--dry-run", is_flag=True, help=f"Print the batch {what}; submit and write nothing."),
    ]


def with_options(f, opts: list):
    """Apply click options in the order listed (the first one shows first in --help)."""
    for o in reversed(opts):
        f = o(f)
    return f


def _options(recorded: dict | None, **given) -> tuple[SbatchOptions, int]:
    """SbatchOptions and max tasks from the command line, falling back to ``recorded`` (a record's)."""
    base = dict(recorded or {})
    base.setdefault("max_tasks", 1000)
    for k, v in given.items():
        if v is not None and v != ():
            base[k] = v
    max_tasks = base.pop("max_tasks")
    base["extra"] = tuple(base.pop("sbatch_args", base.get("extra", ())))
    base.setdefault("cpus_per_task", 1)
    return SbatchOptions(**{k: v for k, v in base.items() if k in SbatchOptions.__dataclass_fields__}), max_tasks


def _stage_args(config: str | None, sets: list[str]) -> list[str]:
    return (["--config", config] if config else []) + [a for s in sets for a in ("--set", s)]


def _overrides(config: str | None, sets: list[str]):
    """The ``StagesConfig`` exactly as `mwsis stage` resolves it (so status agrees with the tasks)."""
    from .labels import stage_configs

    return stage_configs(config, tuple(sets), None)


def _dependencies(stage: str, config) -> tuple[str, ...]:
    spec = STAGES[stage]
    return spec.dependencies(config.sections(spec.sections))


def _closure(stages: list[str], overrides_of) -> list[str]:
    """``stages`` plus what they depend on (config-dependent dependencies too), in registry (graph) order."""
    need: set[str] = set()

    def add(s):
        if s not in need:
            need.add(s)
            for d in _dependencies(s, overrides_of(s)):
                add(d)

    for s in stages:
        add(s)
    return [s for s in STAGES if s in need]


def _done_shards(data: Path, stages: list[str], overrides_of) -> tuple[int, dict[str, set[int]]]:
    from ...data.store import open_dataset
    from ..labels.runner import shard_is_current

    ds = open_dataset(data)
    done = {}
    for s in stages:
        cfg = overrides_of(s)
        done[s] = {p for p in range(ds.num_shards) if shard_is_current(ds, s, cfg, p)}
    return ds.num_shards, done


def _submit(data: Path, jobs: list[StageJob], args_of, opts: SbatchOptions, max_tasks: int, kind: str,
            dry_run: bool) -> None:
    """Render and sbatch ``jobs`` in order, each after the job ids of its ``after`` stages; record each."""
    from ...data.store import write_bytes_atomic
    from ..slurm import stages as S

    command = S.mwsis_command()
    if dry_run:
        for job in jobs:
            deps = [f"<jobid-of-{d}>" for d in job.after]  # known only once submitted
            click.echo(f"# ---- stage {job.stage}: sbatch {S.SLURM_DIR}/scripts/NNNN-{job.stage}.sbatch "
                       "(dry run: nothing submitted)")
            click.echo(S.render_script(job, str(data), opts, command, args_of(job.labels[0])[0], deps))
        return
    S.require("sbatch", data)
    rec = {"id": S.next_record_id(data), "kind": kind,
           "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "dataset": str(data), "sbatch": {**asdict(opts), "max_tasks": max_tasks}, "jobs": []}
    ids: dict[str, str] = {}
    for job in jobs:
        stage_args, config, sets = args_of(job.labels[0])  # a fused job's stages share one config
        script = S.render_script(job, str(data), opts, command, stage_args, [ids[d] for d in job.after])
        path = data / S.SLURM_DIR / "scripts" / f"{rec['id']:04d}-{job.stage}.sbatch"
        write_bytes_atomic(path, script.encode())
        S.log_dir(data, job.stage).mkdir(parents=True, exist_ok=True)  # sbatch does not create it
        try:
            ids[job.stage] = S.sbatch(path, data)
        except SlurmError as e:
            sent = ", ".join(f"{s} (job {j})" for s, j in ids.items())
            raise SlurmError(f"{e}" + (f"\nalready submitted: {sent}; cancel with `scancel "
                                       f"{' '.join(ids.values())}` or let them run" if ids else "")) from e
        rec["jobs"].append({"stage": job.stage, **({"stages": list(job.stages)} if job.stages else {}),
                            "job_id": ids[job.stage], "after": [ids[d] for d in job.after],
                            "tasks": [list(t) for t in job.tasks], "config": config, "sets": sets,
                            "script": str(path), "log": str(S.log_dir(data, job.stage) / "%A_%a.out")})
        S.write_record(data, rec)
        after = f", after {', '.join(f'{d} ({ids[d]})' for d in job.after)}" if job.after else ""
        what = f"stages {', '.join(job.stages)} (one pass per shard)" if job.stages else f"stage {job.stage}"
        click.echo(f"{what}: job {ids[job.stage]}, {len(job.tasks)} tasks over "
                   f"{sum(map(len, job.tasks))} shards{after}")
    click.echo(f"recorded in {S.submissions_dir(data)}/{rec['id']:04d}.json; "
               f"follow with `mwsis slurm status --data {data}`")


def _refuse_if_live(data: Path, records: list[dict]) -> None:
    from ..slurm import stages as S

    live = S.live_tasks(records, S.queue_states(data))
    if live:
        raise SlurmError(f"{len(live)} array tasks of earlier submissions are still pending or running "
                         f"({', '.join(live[:8])}{' ...' if len(live) > 8 else ''}); wait for them "
                         f"(`mwsis slurm status --data {data}`) or cancel them (`scancel JOBID`) first")


def _data_option(f):
    return click.option("--data", type=click.Path(exists=True, file_okay=False), required=True,
                        help="Dataset directory (on a filesystem the compute nodes share).")(f)


@slurm.command("pseudolabels")
@_data_option
@click.option("--stages", default=DEFAULT_STAGES, show_default=True,
              help="Comma-separated stages; dependencies are added (spg brings dcs).")
@click.option("--config", default=None, metavar="PRESET|PATH",
              help="Stage config preset or YAML file, passed to every task.")
@click.option("--set", "sets", multiple=True, metavar="SECTION.FIELD=VALUE",
              help="Config override passed to every task, e.g. --set spg.fg_thresh=0.05 (repeatable).")
@click.option("--sam-checkpoint", default=None, envvar="SAM_CHECKPOINT",
              help="SAM weights for the sam stage (without them it is skipped).")
@click.option("--fused", is_flag=True,
              help="One array job for all the stages: each task runs them in one pass per shard, reading each "
                   "frame once (`mwsis pseudolabels --shards LIST`); the same label shards.")
@_sbatch_options
def pseudolabels_cmd(data, stages, config, sets, sam_checkpoint, fused, dry_run, **sbatch):
    """Submit the pseudo-label stages: one array job per stage, each task labelling its slice of shards.

    Each task runs `mwsis stage NAME --data DATA --shards LIST`. A stage that needs another (spg needs
    dcs) waits with --dependency=afterok on it; the others start at once. Tasks skip shards that are
    already up to date. Task logs: DATA/slurm/logs/STAGE/JOB_TASK.out. --dry-run prints the scripts.
    With --fused, one array job runs every stage (logs under DATA/slurm/logs/STAGE+STAGE+…/); status and
    resume still count each stage's shards.
    """
    from ..slurm import stages as S

    root = Path(data).resolve()
    if config and Path(config).exists():
        config = str(Path(config).resolve())  # tasks run in the dataset directory
    sets = list(sets)
    if sam_checkpoint:
        ckpt = Path(sam_checkpoint)
        sets.append(f"sam.checkpoint={ckpt.resolve() if ckpt.exists() else sam_checkpoint}")
    overrides = _overrides(config, sets)
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise click.BadParameter(f"unknown stage(s) {unknown}; stages are {list(STAGES)}", param_hint="--stages")
    order = []
    for s in _closure(wanted, lambda _: overrides):
        spec = STAGES[s]
        reason = spec.skip_reason(overrides.sections(spec.sections)) if spec.skip_reason else None
        if reason:
            click.echo(f"stage {s} skipped: {reason}", err=True)
        else:
            order.append(s)
    from ...data.store import open_dataset

    n = open_dataset(root).num_shards
    opts, max_tasks = _options(None, **sbatch)
    positions = {s: list(range(n)) for s in order}
    jobs = (S.plan_fused_job(positions, max_tasks) if fused else
            S.plan_jobs(positions, {s: _dependencies(s, overrides) for s in order}, max_tasks))
    records = [] if dry_run else S.load_records(root)
    if records:
        _refuse_if_live(root, records)
    _submit(root, jobs, lambda s: (_stage_args(config, sets), config, sets), opts, max_tasks, "pseudolabels",
            dry_run)


def _recorded(root: Path) -> tuple[list[dict], dict[str, dict]]:
    """The submission records and, per stage, its newest job entry (which holds the stage's config)."""
    from ..slurm import stages as S

    records = S.load_records(root)
    if not records:
        raise SlurmError(f"{root}/{S.SLURM_DIR}: no submissions recorded; submit with "
                         f"`mwsis slurm pseudolabels --data {root}`")
    newest = {s: j for r in records for j in r["jobs"] for s in S.job_stages(j)}
    return records, newest


def _status(root: Path) -> dict:
    from ..slurm import stages as S

    records, newest = _recorded(root)
    stages = [s for s in STAGES if s in newest]
    n, done = _done_shards(root, stages, lambda s: _overrides(newest[s]["config"], newest[s]["sets"]))
    queue = S.queue_states(root)
    acct = S.accounting_states(sorted({j["job_id"] for r in records for j in r["jobs"]}))
    logs = {j["stage"] for r in records for j in r["jobs"]}  # log directories: a stage's, or a fused group's
    return S.classify(str(root), n, done, records, queue, acct, S.read_exit_codes(root, logs))


@slurm.command("status")
@_data_option
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: {stages: {STAGE: {total, done, running, pending, failed, missing, "
                   "incomplete}}, failed_tasks: [{stage, job_id, task_id, state, shards, log, log_exists}], "
                   "live_tasks, complete}.")
def status_cmd(data, as_json):
    """Per stage: shards done, running, pending, failed, never submitted; failed tasks with their logs.

    A shard is done when its label shard is up to date (the test `mwsis stage` uses to skip it). A shard
    that is not done is running or pending while its newest array task is (squeue), and failed once that
    task has ended: the state comes from sacct when accounting is on, else from squeue while SLURM
    remembers the job, else from the exit code the task wrote beside its log.
    """
    from ..slurm import stages as S

    st = _status(Path(data).resolve())
    click.echo(json.dumps(st, indent=1) if as_json else S.format_status(st))


@slurm.command("resume")
@_data_option
@click.option("--stages", default=None, help="Only these recorded stages (and the incomplete ones they need).")
@click.option("--fused/--per-stage", default=None,
              help="One array job for every incomplete stage (one pass per shard), or one per stage. "
                   "[default: as the newest submission]")
@_sbatch_options
def resume_cmd(data, stages, fused, dry_run, **sbatch):
    """Resubmit only what is not done: per stage, the shards whose label shard is missing or out of date.

    Stages chain as before (afterok); a dependency that is already complete is not resubmitted and
    needs no afterok. Each stage keeps the config it was submitted with; sbatch settings are the newest
    submission's unless given here. Refuses while tasks of earlier submissions are pending or running.
    """
    from ..slurm import stages as S

    root = Path(data).resolve()
    records, newest = _recorded(root)
    fallback = records[-1]["jobs"][-1] if records[-1]["jobs"] else {"config": None, "sets": []}

    def entry(s):  # a dependency never submitted (run locally) takes the newest submission's config
        return newest.get(s, fallback)

    def overrides_of(s):
        return _overrides(entry(s)["config"], entry(s)["sets"])

    wanted = [s for s in STAGES if s in newest]
    if stages:
        wanted = [s.strip() for s in stages.split(",") if s.strip()]
        bad = [s for s in wanted if s not in newest]
        if bad:
            raise click.BadParameter(f"{bad} never submitted here; recorded stages: {list(newest)}",
                                     param_hint="--stages")
    order = _closure(wanted, overrides_of)
    n, done = _done_shards(root, order, overrides_of)
    positions = {s: [p for p in range(n) if p not in done[s]] for s in order}
    opts, max_tasks = _options(records[-1].get("sbatch"), **sbatch)
    if fused is None:
        fused = any("stages" in j for j in records[-1]["jobs"])
    jobs = (S.plan_fused_job(positions, max_tasks) if fused else
            S.plan_jobs(positions, {s: _dependencies(s, overrides_of(s)) for s in order}, max_tasks))
    if not jobs:
        click.echo(f"nothing to resubmit: {', '.join(order)} up to date on all {n} shards")
        return
    if not dry_run:
        _refuse_if_live(root, records)
    for s in order:
        if not positions[s]:
            click.echo(f"stage {s}: complete, not resubmitted")
    _submit(root, jobs, lambda s: (_stage_args(entry(s)["config"], entry(s)["sets"]), entry(s)["config"],
                                   entry(s)["sets"]), opts, max_tasks, "resume", dry_run)
