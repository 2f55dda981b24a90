"""Processes of one training job: DDP ranks (torchrun), collectives, and preemption (SLURM's warning signal).

Both trainers use these through ``training.fit``; the SLURM job script (``slurm_train.py``) and the trainers
agree on ``PREEMPT_FLAG`` and ``PREEMPTED_EXIT``.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def pick_device(dist_info: DistInfo, device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device(f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu")


def use_cpu_threads(device: torch.device, n: int) -> None:
    """A run's own CPU thread count (its ``cpu_threads``) for everything that runs its model: spconv's CPU path
    is slower with more OpenMP threads, and one thread keeps CPU results bitwise reproducible. numba's
    kernels (RSC's DCS) get as many, up to the number its pool was started with (``NUMBA_NUM_THREADS``)."""
    if device.type == "cpu":
        import numba

        torch.set_num_threads(n)
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


# ------------------------------------------------------------------------- preemption and collectives

# Exit status of a trainer that stopped because it was asked to (signal or flag file) after writing a
# checkpoint: EX_TEMPFAIL of sysexits.h, "temporary failure, retry". The SLURM job script requeues the job.
PREEMPTED_EXIT = 75
PREEMPT_FLAG = "PREEMPT"  # RUN/PREEMPT: touched by the SLURM job script's signal trap


def barrier(dist: DistInfo) -> None:
    if dist.world_size > 1:
        import torch.distributed as tdist

        tdist.barrier()


def broadcast_value(value: Any, dist: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object); the value itself without DDP."""
    if dist.world_size <= 1:
        return value
    import torch.distributed as tdist

    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _any_rank(flag: bool, dist: DistInfo) -> bool:
    """True on every rank when it is true on any: ranks must stop at the same step or DDP hangs."""
    if dist.world_size <= 1:
        return flag
    import torch.distributed as tdist

    device = (torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl"
              else torch.device("cpu"))
    t = torch.tensor([int(flag)], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


class Preemption:
    """Has this run been asked to stop? Asked by SIGUSR1/SIGTERM to this process, or by ``RUN/PREEMPT``.

    Why both: under SLURM the batch shell gets the warning signal (``--signal=B:USR1@T``), and torchrun
    neither handles nor forwards SIGUSR1 (its default action would kill torchrun and orphan the workers),
    so the shell's trap touches the flag file instead, which reaches every node through the shared run
    directory. SIGTERM (time limit, scancel; also a plain ``kill``) is handled the same way when it arrives
    (torchrun forwards it), though under SLURM srun may SIGKILL the workers first (``slurm_train``).
    Only rank 0 looks at the file; ``requested`` is a collective, so every rank stops at the same step.
    """

    def __init__(self, run: Path, dist: DistInfo, signals=("SIGUSR1", "SIGTERM")):
        self.flag, self.dist, self.received = run / PREEMPT_FLAG, dist, None
        self._signals = [getattr(signal, s) for s in signals]
        self._old: dict = {}

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self._signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, signal.SIG_DFL if old is None else old)  # None: a handler set outside Python

    def _handler(self, signum, frame) -> None:
        self.received = signum  # acted on at the next step boundary, where a checkpoint is consistent

    def requested(self) -> bool:
        return _any_rank(self.received is not None or (self.dist.is_main and self.flag.exists()), self.dist)

    def acknowledge(self) -> None:
        """The request was honoured (checkpoint written): a later ``--resume`` must not stop again at once."""
        if self.dist.is_main:
            self.flag.unlink(missing_ok=True)


