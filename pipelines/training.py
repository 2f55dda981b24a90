"""Training infrastructure shared by the 2D and 3D trainers (written once, used by both).

* configs: dataclasses with the paper's defaults, a YAML file, then ``--set a.b=value`` overrides;
* a run directory with a snapshot of the resolved config, versions and git commit;
* atomic checkpoints every epoch and ``--resume`` from the newest one;
* a long-format CSV metrics log (step, epoch, name, value);
* seeding, bf16 autocast on CUDA, DDP when launched by torchrun.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.store import StoreError, atomic_path, write_bytes_atomic

# ----------------------------------------------------------------------------------------------- config


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _coerce(value: Any, current: Any) -> Any:
    """YAML gives lists where the dataclass holds (nested) tuples: convert, so configs stay hashable."""
    if isinstance(value, list) and (current is None or isinstance(current, tuple)):
        return _tuples(value)
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass ``cfg`` with dotted-key overrides (``{"optim.lr": 1e-3}``) applied."""
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        names = {f.name for f in dataclasses.fields(cfg)}
        if head not in names:
            raise ValueError(f"config has no field {head!r} (fields: {sorted(names)})")
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ValueError(f"config field {head!r} is not a section; cannot set {key!r}")
            cfg = dataclasses.replace(cfg, **{head: apply_overrides(current, {rest: value})})
        elif dataclasses.is_dataclass(current) and isinstance(value, dict):
            cfg = dataclasses.replace(cfg, **{head: apply_overrides(current, value)})
        else:
            cfg = dataclasses.replace(cfg, **{head: _coerce(value, current)})
    return cfg


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (the override form of a nested config)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_config(cls, path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> Any:
    """Defaults of ``cls`` ← YAML file ``path`` ← ``sets`` ("a.b=value", values parsed as YAML)."""
    import yaml

    cfg = cls()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read config ({e})") from e
        cfg = apply_overrides(cfg, flatten_dict(data))
    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        parsed[key.strip()] = yaml.safe_load(value)
    return apply_overrides(cfg, parsed)


def config_to_dict(cfg: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# --------------------------------------------------------------------------------------------- run dir


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
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
        keep = [rows[0]] + [r for r in rows[1:] if int(r.split(",", 1)[0]) <= step]
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


def autocast(device: torch.device):
    """bf16 autocast on CUDA (MWSIS trains in mixed precision); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def setup_run(data: Path, device_name: str | None, cpu_threads: int, seed: int):
    """What both trainers do first: join DDP if launched so, pick the device, set CPU threads, seed, open the
    dataset and take this rank's shards (r, r + W, ...). Returns (dist, device, dataset, shard positions)."""
    from ..data.store import open_dataset

    dist = init_distributed()
    device = pick_device(dist, device_name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads)
    seed_everything(seed)
    ds = open_dataset(data)
    return dist, device, ds, list(range(dist.rank, ds.num_shards, dist.world_size))


def pick_device(dist_info: DistInfo, device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device(f"cuda:{dist_info.local_rank}" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------- the epoch loop


def fit(run: Path, cfg: Any, parts: dict[str, Any], state: dict, batches, step, steps_per_epoch: int,
        epochs: int, dist: DistInfo, desc: str, after_epoch=None, resume: bool = False,
        show_progress: bool = True, stop_after_epoch: int | None = None, extra_snapshot: dict | None = None) -> dict:
    """The epoch loop both trainers share.

    ``parts``: name -> object with ``state_dict``/``load_state_dict`` (model, teacher, optimizer, scheduler),
    all checkpointed every epoch with ``state`` (``epoch`` and ``step`` are kept up to date here; trainers add
    their own keys). ``batches(epoch, state)`` yields batches; ``step(batch, state)`` trains on one and returns
    scalar metrics (logged to metrics.csv); ``after_epoch(epoch, state)`` runs before the checkpoint (e.g. PVC).
    ``resume`` continues from the newest checkpoint; ``stop_after_epoch`` ends early, as a preempted job would.
    """
    import time

    from .progress import progress_bar

    metrics = MetricsLog(run, enabled=dist.is_main)
    ckpt = latest_checkpoint(run) if resume else None
    if ckpt is not None:
        saved = load_checkpoint(ckpt)
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        state.clear()
        state.update(saved["state"])
        if "torch_rng" in saved:  # models that draw from torch's global generator continue identically
            torch.set_rng_state(saved["torch_rng"])
        metrics.truncate_after(state["step"])
    if dist.is_main:
        snapshot_run(run, cfg, {"resumed_from": None if ckpt is None else ckpt.name, **(extra_snapshot or {})})
    t0 = time.time()
    last: dict = {}
    for epoch in range(state["epoch"], epochs):
        with progress_bar(total=steps_per_epoch, unit="step", desc=f"{desc} epoch {epoch + 1}/{epochs}",
                          enabled=show_progress and dist.is_main) as bar:
            for i, batch in enumerate(batches(epoch, state)):
                if i >= steps_per_epoch:
                    break
                last = step(batch, state)
                state["step"] += 1
                metrics.log(state["step"], epoch, last)
                bar.set_postfix(loss=f"{last.get('loss', float('nan')):.3f}")
                bar.update(1)
        state["epoch"] = epoch + 1
        if after_epoch is not None:
            after_epoch(epoch, state)
        if dist.is_main:
            save_checkpoint(run, {**{n: p.state_dict() for n, p in parts.items()}, "state": dict(state),
                                  "config": config_to_dict(cfg), "torch_rng": torch.get_rng_state()},
                            f"epoch-{epoch + 1:04d}")
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            break
    return {"state": state, "last": last, "seconds": time.time() - t0}


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
