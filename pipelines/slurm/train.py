"""SLURM batch scripts for the trainers: ``mwsis slurm train-3d|train-2d`` (one job, N nodes x G GPUs, DDP).

The script runs ``srun`` with one task per node; each task runs ``torchrun`` with G workers (1 on CPU) that
meet at a c10d rendezvous on the job's first node. The trainer always gets ``--resume``: a fresh run
starts at epoch 0, a requeued one continues from the newest checkpoint of ``RUN``.

Preemption and the time limit: ``#SBATCH --signal=B:USR1@T`` warns the batch shell T seconds ahead;
its trap touches ``RUN/PREEMPT``, which rank 0 of the trainer reads at every step boundary (and shares
with the other ranks), so the trainer writes a mid-epoch checkpoint and exits; then the script runs
``scontrol requeue`` and the job starts again, resuming. Why a flag file and not the signal itself:
``B:`` delivers the signal to the batch shell only (srun forwards signals to its tasks, but torchrun does
not handle SIGUSR1, whose default action kills it and orphans the workers), and a file in the shared run
directory reaches every node. SIGTERM (``scancel``, the time limit, preemption) stops the trainer the same
way, with a checkpoint if the workers get to it before SIGKILL (SLURM signals the batch shell, srun and the
tasks together, and srun answers SIGTERM by SIGKILLing its tasks: a race, seen both ways on Slurm 22.05),
but the script does not requeue: a cancelled job must stay cancelled. A later start resumes from the newest
checkpoint either way (written atomically, never half a file): correct, only the steps since are lost.
Hence the warning T seconds before the time limit (default 300 s; a cluster that preempts can send it at
preemption too: ``PreemptParameters=send_user_signal``; with ``PreemptMode=REQUEUE`` SLURM requeues by
itself). Everything the job writes goes to ``RUN/slurm/``: the script as submitted and its log
(``--open-mode=append``: a requeued start continues the same log).
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..training.distributed import PREEMPT_FLAG

KINDS = ("train-3d", "train-2d")
SLURM_DIR = "slurm"  # RUN/slurm/: scripts and logs of the run's jobs


@dataclass(frozen=True)
class TrainJob:
    """One training job. ``data``/``out``/``config`` as given (made absolute by the CLI); ``sets`` are
    ``--set KEY=VALUE`` overrides passed to the trainer."""

    kind: str  # "train-3d" | "train-2d"
    data: str
    out: str
    nodes: int = 1
    gpus_per_node: int = 0  # 0: CPU, one process per node (gloo), no --gres
    partition: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None  # CPUs of the one task per node (all its workers); None: the cluster's
    config: str | None = None
    sets: tuple[str, ...] = ()
    signal_seconds: int = 300  # USR1 this long before the time limit: one step + one checkpoint must fit
    port: int | None = None  # rendezvous port; None: 29500 + job id % 10000 (jobs sharing a node differ)
    python: str = field(default_factory=lambda: sys.executable)  # the venv whose mwsis the workers run
    sbatch_args: tuple[str, ...] = ()  # raw extra sbatch options, e.g. "--account=proj"
    setup: str | None = None  # shell line(s) run first, e.g. "module load cuda"


def script_path(out: str | Path, kind: str) -> Path:
    return Path(out) / SLURM_DIR / f"{kind}.sbatch"


def _sbatch_lines(job: TrainJob) -> list[str]:
    logs = Path(job.out) / SLURM_DIR
    opts = [f"--job-name=mwsis-{job.kind}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
            f"--output={logs}/%x-%j.out", "--open-mode=append",
            # requeue: the job may be put back in the queue (by our trap, or by SLURM on preemption/node failure)
            "--requeue", f"--signal=B:USR1@{job.signal_seconds}"]
    if job.gpus_per_node > 0:
        opts.append(f"--gres=gpu:{job.gpus_per_node}")
    opts += [f"--{k}={v}" for k, v in (("partition", job.partition), ("time", job.time), ("mem", job.mem),
                                       ("cpus-per-task", job.cpus_per_task)) if v]
    opts += list(job.sbatch_args)
    return [f"#SBATCH {shlex.quote(o)}" for o in opts]


def trainer_args(job: TrainJob) -> list[str]:
    """``mwsis <kind>`` arguments of every worker (``--resume`` always: see the module docstring)."""
    args = [job.kind, "--data", job.data, "--out", job.out, "--resume"]
    if job.config:
        args += ["--config", job.config]
    for s in job.sets:
        args += ["--set", s]
    return args


def render_train_script(job: TrainJob) -> str:
    """The batch script (pure: the same job gives the same text)."""
    if job.kind not in KINDS:
        raise ValueError(f"kind {job.kind!r}: expected one of {KINDS}")
    if job.nodes < 1 or job.gpus_per_node < 0:
        raise ValueError(f"nodes {job.nodes}, gpus per node {job.gpus_per_node}: need nodes >= 1, gpus >= 0")
    q = shlex.quote
    nproc = max(job.gpus_per_node, 1)
    port = str(job.port) if job.port else "$((29500 + SLURM_JOB_ID % 10000))"
    worker = " ".join(q(a) for a in ["-m", "mwsis.pipelines.cli.main", *trainer_args(job)])  # torchrun's -m
    torchrun = (f'{q(job.python)} -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc-per-node={nproc} '
                '--rdzv-backend=c10d --rdzv-endpoint="$HEAD:$PORT" --rdzv-id="$SLURM_JOB_ID" --max-restarts=0')
    lines = [
        "#!/bin/bash",
        f"# mwsis {job.kind} on SLURM: {job.nodes} node(s) x {nproc} {'GPU' if job.gpus_per_node else 'CPU'} "
        f"worker(s), run directory {job.out}.",
        "# Written by `mwsis slurm " + job.kind + "`; rerun that command to change it. A requeued start resumes.",
        *_sbatch_lines(job),
        "set -u",
        *([job.setup] if job.setup else []),
        f"RUN={q(job.out)}",
        f'FLAG="$RUN"/{PREEMPT_FLAG}',
        "preempted=0",
        "# USR1 (--signal=B:USR1@T, or `scancel --batch --signal=USR1`): the trainer sees the flag file at its",
        "# next step, checkpoints and exits; then this script requeues the job. TERM (scancel, time limit):",
        "# the same checkpoint if the workers get to it, but no requeue: a cancelled job must stay cancelled",
        'on_usr1() { preempted=1; echo "mwsis: SIGUSR1 at $(date -Is): checkpoint, then requeue"; touch "$FLAG"; }',
        'on_term() { echo "mwsis: SIGTERM at $(date -Is): checkpoint if there is time; no requeue"; touch "$FLAG"; }',
        "trap on_usr1 USR1",
        "trap on_term TERM",
        'rm -f "$FLAG"  # a leftover from an earlier start must not stop this one',
        'echo "mwsis: job $SLURM_JOB_ID start ${SLURM_RESTART_COUNT:-0} on $SLURM_JOB_NODELIST at $(date -Is)"',
        'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"PORT={port}",
        "export PYTHONUNBUFFERED=1",
        "# if a USR1 reaches torchrun anyway (scancel without --batch), it forwards it instead of dying",
        "export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "# in the background: bash runs a trap only between commands, and `wait` returns at once on one",
        'srun --ntasks-per-node=1 --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \\',
        f"  {torchrun} \\",
        f"  {worker} &",
        "pid=$!",
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; done  # a trapped signal ends `wait` early',
        'wait "$pid"; status=$?',
        'if [ "$preempted" = 1 ]; then',
        '  echo "mwsis: trainer exited with $status; requeueing job $SLURM_JOB_ID"',
        '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "fi",
        'echo "mwsis: trainer exited with $status at $(date -Is)"',
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)
