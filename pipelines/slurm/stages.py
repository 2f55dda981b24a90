"""SLURM for the pseudo-label stages: one array job per stage, chained with ``--dependency=afterok``.

We submit plain ``sbatch`` scripts (not submitit): every array task runs the ``mwsis stage`` command line on
its own shard list, so a script can be printed (``--dry-run``), read, kept beside the logs and resubmitted
by hand; nothing is pickled, and a task needs only the installed ``mwsis``, not the submitting process.

Pure functions build the plan (which shards each array task labels, which stage waits for which) and the
script text; thin wrappers call ``sbatch``/``squeue``/``sacct``; ``classify`` turns shard states, queue
states and exit records into the per-stage status. On disk, under ``DATASET/slurm/``::

    submissions/0001.json          one record per `mwsis slurm pseudolabels|resume` (job ids, shard lists)
    scripts/0001-dcs.sbatch        each script exactly as submitted
    logs/<stage>/<job>_<task>.out  a task's output; ``.exit`` beside it holds its exit code
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...data.store import write_bytes_atomic
from ..labels.runner import format_shard_list

SLURM_DIR = "slurm"
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "SUSPENDED"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "RESV_DEL_HOLD"}
LOCAL_HINT = ("run the stages on this machine instead: `mwsis pseudolabels --data {data} --workers N` "
              "(or one stage: `mwsis stage NAME --data {data}`)")


class SlurmError(RuntimeError):
    """A SLURM command is missing or failed; the message says which and what to do."""


@dataclass(frozen=True)
class SbatchOptions:
    """What every array job of a submission asks SLURM for (None: the cluster's default)."""

    partition: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int = 1
    array_parallelism: int | None = None  # at most this many tasks of one array at once (``--array=...%K``)
    extra: tuple[str, ...] = ()  # raw sbatch options, e.g. "--account=proj" or "--gres=gpu:1"
    setup: str | None = None  # shell line(s) each task runs first, e.g. "module load cuda"


@dataclass(frozen=True)
class StageJob:
    """One array job: task ``i`` labels shard positions ``tasks[i]``; starts after stages ``after``.

    ``stages``: a fused job (``plan_fused_job``): each task runs all of them in one pass per shard
    (``mwsis pseudolabels --shards``); ``stage`` then names the group (scripts, logs, job name)."""

    stage: str
    tasks: tuple[tuple[int, ...], ...]
    after: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """The stages whose shards this job writes."""
        return self.stages or (self.stage,)


# ------------------------------------------------------------------------------------------- the plan

def split_tasks(positions, max_tasks: int) -> tuple[tuple[int, ...], ...]:
    """Contiguous chunks of ``positions`` (sizes differ by at most one), at most ``max_tasks`` of them.

    Contiguous rather than round robin: neighbouring shards make short ranges in the script (``0-41``)."""
    ps = sorted(set(positions))
    n = min(len(ps), max(1, max_tasks))
    bounds = [len(ps) * k // n for k in range(n + 1)] if n else [0]
    return tuple(tuple(ps[bounds[k]:bounds[k + 1]]) for k in range(n))


def plan_jobs(positions: dict[str, list[int]], dependencies: dict[str, tuple[str, ...]],
              max_tasks: int) -> list[StageJob]:
    """Array jobs for ``positions`` ({stage: shard positions}, dependencies first, as ``resolve_order``).

    A stage with no positions is left out; a dependency that is left out (complete already) needs no
    afterok, one that is in the plan does."""
    planned = [s for s, ps in positions.items() if ps]
    return [StageJob(s, split_tasks(positions[s], max_tasks),
                     tuple(d for d in dependencies.get(s, ()) if d in planned)) for s in planned]


def plan_fused_job(positions: dict[str, list[int]], max_tasks: int) -> list[StageJob]:
    """One array job for every stage of ``positions`` (dependencies first): its tasks cover the shards any
    stage still needs, and each task's pass skips the stages that are current on a shard."""
    stages = [s for s, ps in positions.items() if ps]
    union = sorted({p for s in stages for p in positions[s]})
    return [StageJob("+".join(stages), split_tasks(union, max_tasks), (), tuple(stages))] if stages else []


def job_stages(job: dict) -> list[str]:
    """The stages a recorded job entry labels (a fused job: several; its ``stage`` names the group)."""
    return list(job.get("stages") or [job["stage"]])


def array_spec(num_tasks: int, parallelism: int | None) -> str:
    return f"0-{num_tasks - 1}" + (f"%{parallelism}" if parallelism else "")


def log_dir(data: Path | str, stage: str) -> Path:
    return Path(data) / SLURM_DIR / "logs" / stage


def task_log(data: Path | str, stage: str, job_id: str, task: int, suffix: str = ".out") -> Path:
    return log_dir(data, stage) / f"{job_id}_{task}{suffix}"


def mwsis_command() -> list[str]:
    """How a task calls mwsis: the entry point beside this interpreter (same venv), else ``python -m``."""
    exe = Path(sys.executable).parent / "mwsis"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mwsis.pipelines.cli.main"]


def render_script(job: StageJob, data: str, opts: SbatchOptions, command: list[str], stage_args: list[str],
                  dependency_ids: list[str]) -> str:
    """The batch script of one stage's array job. ``data`` is absolute; ``stage_args`` go to ``mwsis stage``
    (``--config``, ``--set``); ``dependency_ids`` are the job ids (or dry-run placeholders) of ``job.after``."""
    logs = log_dir(data, job.stage)
    sb = [f"--job-name=mwsis-{job.stage}", f"--array={array_spec(len(job.tasks), opts.array_parallelism)}",
          f"--output={logs}/%A_%a.out", f"--chdir={data}", f"--cpus-per-task={opts.cpus_per_task}",
          # a failed dependency can never be satisfied: end the job instead of leaving it pending forever
          "--kill-on-invalid-dep=yes"]
    sb += [f"--{k}={v}" for k, v in (("partition", opts.partition), ("time", opts.time), ("mem", opts.mem)) if v]
    if dependency_ids:
        sb.append("--dependency=afterok:" + ":".join(dependency_ids))
    sb += list(opts.extra)
    shards = sum(len(t) for t in job.tasks)
    if job.stages:  # one pass per shard for every stage (each frame read once); the quality table is not wanted
        call = " ".join(shlex.quote(a) for a in [*command, "pseudolabels", "--stages", ",".join(job.stages),
                                                  "--data", data, "--no-eval"])
        what = f"stages {', '.join(job.stages)} in one pass per shard"
    else:
        call = " ".join(shlex.quote(a) for a in [*command, "stage", job.stage, "--data", data])
        what = f"stage '{job.stage}'"
    extra = "".join(" " + shlex.quote(a) for a in stage_args)
    lines = ["#!/bin/bash",
             f"# mwsis pseudo-label {what}: {len(job.tasks)} array tasks over {shards} shards of {data}.",
             "# Written by `mwsis slurm`. Task i labels the shard positions (manifest.json order) SHARDS[i];",
             "# shards that are already up to date are skipped.",
             *(f"#SBATCH {shlex.quote(o) if ' ' in o else o}" for o in sb),
             *([opts.setup] if opts.setup else []),  # before set -u: module/conda scripts read unset variables
             "set -uo pipefail",
             # numba and BLAS default to every core of the node; a task owns --cpus-per-task of them
             ': "${OMP_NUM_THREADS:=${SLURM_CPUS_PER_TASK:-1}}" "${NUMBA_NUM_THREADS:=${SLURM_CPUS_PER_TASK:-1}}"',
             "export OMP_NUM_THREADS NUMBA_NUM_THREADS",
             "SHARDS=(" + " ".join(format_shard_list(t) for t in job.tasks) + ")",
             "rc=0",
             f'{call} --shards "${{SHARDS[$SLURM_ARRAY_TASK_ID]}}"{extra} || rc=$?',
             "# the exit code beside the log, for `mwsis slurm status` where sacct (accounting) is off",
             f'EXIT={shlex.quote(str(logs))}/"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}.exit"',
             'echo "$rc" > "$EXIT.tmp" && mv "$EXIT.tmp" "$EXIT"',
             'exit "$rc"', ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- SLURM commands

def require(cmd: str, data: Path | str) -> str:
    """The path of SLURM command ``cmd``, or a SlurmError that says how to run locally instead."""
    path = shutil.which(cmd)
    if not path:
        raise SlurmError(f"`{cmd}` not found on PATH: this machine has no SLURM client commands. "
                         + LOCAL_HINT.format(data=data))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def sbatch(script: Path, data: Path | str) -> str:
    """Submit ``script``; its job id."""
    r = _run([require("sbatch", data), "--parsable", str(script)])
    if r.returncode != 0:
        raise SlurmError(f"sbatch {script} failed (exit {r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"


def queue_states(data: Path | str) -> dict[str, tuple[str, str]]:
    """{"<job>_<task>": (state, reason)} of this user's array tasks SLURM still knows (``squeue -t all``:
    pending, running, and recently ended ones, for ``MinJobAge`` seconds)."""
    r = _run([require("squeue", data), "--me", "--array", "--noheader", "--states=all", "--format=%F|%K|%T|%r"])
    if r.returncode != 0:
        raise SlurmError(f"squeue failed (exit {r.returncode}): {r.stderr.strip()}")
    out = {}
    for line in r.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[1].isdigit():
            out[f"{parts[0]}_{parts[1]}"] = (parts[2], parts[3])
    return out


def expand_task_ids(job_field: str) -> list[str]:
    """sacct's ``123_4`` / ``123_[0-3,7%2]`` -> ["123_4"] / ["123_0", ..., "123_3", "123_7"]."""
    m = re.fullmatch(r"(\d+)_\[([\d,\-]+)(?:%\d+)?\]", job_field)
    if not m:
        return [job_field]
    ids: list[str] = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        ids += [f"{m.group(1)}_{t}" for t in range(int(lo), int(hi or lo) + 1)]
    return ids


def accounting_states(job_ids: list[str]) -> dict[str, str] | None:
    """{"<job>_<task>": state} from sacct, or None where accounting is off (no slurmdbd) or sacct is absent."""
    exe = shutil.which("sacct")
    if not exe or not job_ids:
        return None
    r = _run([exe, "--noheader", "--parsable2", "--allocations", "--jobs", ",".join(job_ids),
              "--format=JobID,State"])
    if r.returncode != 0:
        return None
    out = {}
    for line in r.stdout.splitlines():
        job, _, state = line.partition("|")
        for t in expand_task_ids(job.strip()):
            out[t] = state.split()[0] if state.split() else ""  # "CANCELLED by 0" -> "CANCELLED"
    return out


# ------------------------------------------------------------------------------------------ records

def submissions_dir(data: Path | str) -> Path:
    return Path(data) / SLURM_DIR / "submissions"


def load_records(data: Path | str) -> list[dict]:
    """Every submission record of ``data``, oldest first."""
    d = submissions_dir(data)
    return [json.loads(p.read_text()) for p in sorted(d.glob("[0-9]*.json"))] if d.exists() else []


def next_record_id(data: Path | str) -> int:
    return max((r["id"] for r in load_records(data)), default=0) + 1


def write_record(data: Path | str, record: dict) -> Path:
    """Write (or rewrite, after each sbatch) a submission record atomically."""
    path = submissions_dir(data) / f"{record['id']:04d}.json"
    write_bytes_atomic(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


def read_exit_codes(data: Path | str, stages) -> dict[str, int]:
    """{"<job>_<task>": exit code} from the ``.exit`` files the tasks write."""
    out = {}
    for stage in stages:
        for p in log_dir(data, stage).glob("*.exit") if log_dir(data, stage).exists() else ():
            try:
                out[p.stem] = int(p.read_text().strip())
            except ValueError:
                continue  # an empty or torn file: treated as no record
    return out


# ------------------------------------------------------------------------------------------ status

def latest_assignments(records: list[dict]) -> dict[str, dict[int, tuple[str, int, str]]]:
    """{stage: {shard position: (job id, task id, log directory name)}}: the newest task that was given each
    shard (a fused job gives it for all its stages; its logs are under the group's name)."""
    out: dict[str, dict[int, tuple[str, int, str]]] = {}
    for rec in records:
        for job in rec["jobs"]:
            for task, positions in enumerate(job["tasks"]):
                for p in positions:
                    for stage in job_stages(job):
                        out.setdefault(stage, {})[p] = (job["job_id"], task, job["stage"])
    return out


def task_state(key: str, queue: dict, acct: dict | None, exits: dict, started: bool = True) -> tuple[str, str]:
    """("running" | "pending" | "ended", SLURM state in words) of array task ``key`` ("<job>_<task>");
    ``started``: whether the task wrote its log (SLURM forgets array tasks cancelled while pending)."""
    state, reason = queue.get(key, ("", ""))
    if not state and acct and acct.get(key) in RUNNING | PENDING:
        state = acct[key]  # submitted by another user (squeue --me misses it): accounting knows
    if state in RUNNING:
        return "running", state
    if state in PENDING:
        return "pending", state + (f" ({reason})" if reason and reason != "None" else "")
    if acct and acct.get(key):
        return "ended", acct[key]
    if state:  # ended recently: squeue still knows how
        if state == "FAILED" and key in exits:
            return "ended", f"FAILED (exit {exits[key]})"
        return "ended", state + (f" ({reason})" if reason and reason not in ("None", "NonZeroExitCode") else "")
    if key in exits:
        return "ended", "COMPLETED" if exits[key] == 0 else f"FAILED (exit {exits[key]})"
    if not started:
        return "ended", "NEVER RAN (cancelled while pending, or purged)"
    return "ended", "ENDED without an exit record (killed, cancelled or timed out)"


def classify(data: str, num_shards: int, done: dict[str, set[int]], records: list[dict], queue: dict,
             acct: dict | None, exits: dict) -> dict:
    """Per stage: shards done / running / pending / failed / missing (never submitted), and the failed tasks.

    ``done`` holds the up-to-date shard positions of each stage. A shard that is not done is running or
    pending while its newest task is; once that task has ended (any state, even COMPLETED) it is failed."""
    assigned = latest_assignments(records)
    stages: dict[str, dict] = {}
    failed: dict[tuple[str, str], dict] = {}
    for stage in done:
        counts = {"total": num_shards, "done": 0, "running": 0, "pending": 0, "failed": 0, "missing": 0}
        incomplete = []
        for p in range(num_shards):
            if p in done[stage]:
                counts["done"] += 1
                continue
            incomplete.append(p)
            if p not in assigned.get(stage, {}):
                counts["missing"] += 1
                continue
            job, task, logs = assigned[stage][p]
            key = f"{job}_{task}"
            log = task_log(data, logs, job, task)
            kind, state = task_state(key, queue, acct, exits, log.exists())
            if kind != "ended":
                counts[kind] += 1
                continue
            counts["failed"] += 1
            entry = failed.setdefault((stage, key), {
                "stage": stage, "job_id": job, "task_id": task, "state": state, "shards": [],
                "log": str(log), "log_exists": log.exists()})
            entry["shards"].append(p)
        stages[stage] = {**counts, "incomplete": incomplete}
    return {"dataset": data, "shards": num_shards, "stages": stages, "failed_tasks": list(failed.values()),
            "live_tasks": live_tasks(records, queue),
            "complete": all(s["done"] == s["total"] for s in stages.values())}


def live_tasks(records: list[dict], queue: dict) -> list[str]:
    """The recorded array tasks SLURM still has pending or running."""
    keys = {f"{j['job_id']}_{t}" for r in records for j in r["jobs"] for t in range(len(j["tasks"]))}
    return sorted(k for k in keys if queue.get(k, ("",))[0] in RUNNING | PENDING)


def format_status(st: dict) -> str:
    """The status table and the failed tasks with their logs, for people."""
    lines = [f"{st['dataset']}: {st['shards']} shards",
             f"{'stage':<9}{'done':>9}{'running':>9}{'pending':>9}{'failed':>8}{'missing':>9}"]
    for stage, c in st["stages"].items():
        lines.append(f"{stage:<9}{c['done']:>5}/{c['total']:<3}{c['running']:>9}{c['pending']:>9}"
                     f"{c['failed']:>8}{c['missing']:>9}")
    if st["failed_tasks"]:
        lines.append("failed tasks:")
        for f in st["failed_tasks"]:
            log = f["log"] if f["log_exists"] else "none (the task never started)"
            lines.append(f"  {f['stage']:<8} task {f['job_id']}_{f['task_id']}  {f['state']}  "
                         f"shards {format_shard_list(f['shards'])}  log {log}")
    if st["live_tasks"]:
        lines.append(f"{len(st['live_tasks'])} array tasks pending or running: {' '.join(st['live_tasks'][:10])}"
                     + (" ..." if len(st["live_tasks"]) > 10 else ""))
    if st["complete"]:
        lines.append("complete: every stage is up to date on every shard")
    elif any(c["failed"] or c["missing"] for c in st["stages"].values()):
        lines.append(f"resubmit what is incomplete: mwsis slurm resume --data {st['dataset']}")
    return "\n".join(lines)
