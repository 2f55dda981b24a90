"""Training infrastructure shared by the 2D and 3D trainers (the loop itself is ``trainer.Trainer``).

* configs: dataclasses with the paper's defaults, a YAML file, then ``--set a.b=value`` overrides;
* a run directory with a snapshot of the resolved config, versions and git commit;
* atomic checkpoints every epoch and ``--resume`` from the newest one; on SIGUSR1/SIGTERM or ``RUN/PREEMPT``
  a mid-epoch checkpoint at the next step boundary, then exit status 75 (the SLURM script requeues on USR1);
* (``distributed.py``: DDP ranks and preemption; ``cscs_exchange.py``: the CSCS round of each epoch)
* a long-format CSV metrics log (step, epoch, name, value);
* seeding, bf16 autocast on CUDA, DDP when launched by torchrun.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import __version__
from ...data.store import StoreError, atomic_path, write_bytes_atomic
from .distributed import init_distributed, pick_device

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- config
# One config system for stages and trainers lives in config.py; re-exported here because the trainers,
# the benchmarks and the tests import these names from ``training``.
from ..config import apply_overrides, config_to_dict, flatten_dict, load_config  # noqa: E402,F401


# --------------------------------------------------------------------------------------------- run dir


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def snapshot_run(run: Path, cfg: Any, extra: dict | None = None) -> None:
    """Write ``config.yaml`` (resolved config) and ``run.json`` (versions, commit, command) into ``run``."""
    import yaml

    run.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=True).encode())
    versions = {"mwsis": __version__, "torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    with contextlib.suppress(ImportError):
        import spconv

        versions["spconv"] = getattr(spconv, "__version__", "?")
    info = {"versions": versions, "git_commit": git_commit(), "argv": sys.argv, "host": platform.node(),
            "cuda": torch.cuda.is_available(), **(extra or {})}
    write_bytes_atomic(run / "run.json", (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------------------------- checkpoints

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"


def save_checkpoint(run: Path, state: dict, name: str) -> Path:
    """Atomically write ``state`` as ``checkpoints/<name>.pt`` and point ``latest.json`` at it."""
    dest = run / CHECKPOINTS / f"{name}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(dest, buf.getvalue())
    write_bytes_atomic(run / CHECKPOINTS / LATEST, json.dumps({"checkpoint": dest.name}).encode())
    return dest


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / CHECKPOINTS / LATEST
    if not pointer.exists():
        return None
    try:
        path = run / CHECKPOINTS / json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as e:
        raise StoreError(f"{pointer}: corrupt ({e})") from e
    if not path.exists():
        raise StoreError(f"{pointer}: points at missing {path.name}")
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise StoreError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- metrics


class MetricsLog:
    """Appends ``step,epoch,name,value`` rows to ``metrics.csv`` (long format: new metrics need no header change)."""

    def __init__(self, run: Path, enabled: bool = True):
        self.path = run / "metrics.csv"
        self.enabled = enabled
        if enabled and not self.path.exists():
            run.mkdir(parents=True, exist_ok=True)
            self.path.write_text("step,epoch,name,value\n")

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            for k, v in values.items():
                w.writerow([step, epoch, k, f"{float(v):.6g}"])

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the log has one row per step."""
        if not self.enabled or not self.path.exists():
            return
        rows = self.path.read_text().splitlines()
        # a run killed mid-write can leave a partial last row: keep only whole rows (step,epoch,name,value)
        keep = [rows[0]] + [r for r in rows[1:] if len(r.split(",")) == 4 and r.split(",", 1)[0].isdigit()
                            and int(r.split(",", 1)[0]) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("\n".join(keep) + "\n")


def read_metrics(run: Path) -> list[dict]:
    with open(Path(run) / "metrics.csv") as f:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "name": r["name"], "value": float(r["value"])}
                for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------ devices and DDP


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))  # only for third-party code; ours uses explicit Generators


def autocast(device: torch.device, cpu_bf16: bool = False):
    """bf16 autocast on CUDA (MWSIS trains in mixed precision); on CPU plain fp32, or bf16 with ``cpu_bf16``
    (worth it where the CPU has bf16 instructions, e.g. AVX512-BF16: 1.4x faster 2D steps measured there;
    elsewhere oneDNN emulates them, slower than fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU has native bf16 arithmetic (the ``avx512_bf16`` or ``amx_bf16`` flag, Linux); None
    where it cannot be told."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def warn_emulated_bf16(device: torch.device, cpu_bf16: bool) -> bool:
    """Log a warning when ``cpu_bf16`` asks for bf16 on a CPU without native bf16 (oneDNN emulates it there,
    slower than fp32). Returns whether it warned."""
    if device.type == "cpu" and cpu_bf16 and cpu_has_bf16() is False:
        log.warning("cpu_bf16 is set but this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag): "
                    "bf16 is emulated, slower than fp32; set cpu_bf16: false")
        return True
    return False


def setup_run(data: Path, device_name: str | None, cpu_threads: int, seed: int):
    """What both trainers do first: join DDP if launched so, pick the device, set CPU threads, seed, open the
    dataset and take this rank's shards (r, r + W, ...). Returns (dist, device, dataset, shard positions)."""
    from ...data.store import open_dataset

    dist = init_distributed()
    device = pick_device(dist, device_name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    seed_everything(seed)
    ds = open_dataset(data)
    return dist, device, ds, list(range(dist.rank, ds.num_shards, dist.world_size))


def load_run_teacher(run: Path, config_cls, build_model, device: torch.device | str = "cpu", kind: str = "train"):
    """(EMA teacher in eval mode, run config) from a run's newest checkpoint; ``build_model(cfg)`` makes the
    empty model. The teacher is what MWSIS evaluates and what exports predictions."""
    ckpt = latest_checkpoint(Path(run))
    if ckpt is None:
        raise StoreError(f"{run}: no checkpoint (train with `mwsis {kind} --out {run}` first)")
    saved = load_checkpoint(ckpt, device)
    cfg = apply_overrides(config_cls(), flatten_dict(saved["config"]))
    model = build_model(cfg).to(device)
    model.load_state_dict(saved["teacher"])
    model.eval()
    return model, cfg
