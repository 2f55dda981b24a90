"""Experiments in one CPU regime (``make experiment-3d`` / ``make experiment-2d``, ``configs/cpu-bench.yaml``).

An experiment renders a training set and a held-out set of synthetic frames (:class:`ExperimentConfig`, the
``experiment`` section of a config file), trains one run per (row, seed) — ``parallel`` runs at a time, each
in its own process on one thread — evaluates every run on the held-out frames, and writes one JSON record
(rows with every seed, their mean and spread, config, command, wall time, machine) that the README quotes.
The rows themselves are defined by the scripts in ``bench/``; this module holds what both share.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

CLASSES = ("vehicle", "pedestrian", "cyclist")
# fractions; the spread is computed for these (iou_crowded: the 2D pseudo-mask IoU on boxes that overlap another
# box of their class, issue 15)
METRICS = ("ap", "ap50", "ap75", "miou", "iou", "iou_crowded")


@dataclass(frozen=True)
class ExperimentConfig:
    """The data and seeds of an experiment regime; every later experiment measures on the same frames."""

    synth_preset: str = "waymo"  # sensor layout of the synthetic frames (data.synthetic.config)
    image_scale: float = 0.5  # camera resolution factor
    cameras: tuple[int, ...] | None = None  # camera ids of the preset to keep (None: all)
    # the 2D rows' images: camera ids (None: the same as ``cameras``). When they (or the scale) differ, the 2D
    # experiment renders its own frames (same scenes, seeds and points) into ``train-2d``/``val-2d``
    cameras_2d: tuple[int, ...] | None = None
    image_scale_2d: float | None = None  # the 2D rows' camera resolution (None: ``image_scale``), same rule
    # object densities (probability that a stream slot holds one); None keeps the preset's value
    p_cyclist: float | None = None
    p_walker: float | None = None
    p_group: float | None = None
    train_frames: int = 40
    val_frames: int = 20
    frames_per_sequence: int = 5  # shorter sequences: more distinct scenes
    train_seed: int = 1  # scene seeds: held-out frames come from other scenes
    val_seed: int = 2
    seeds: tuple[int, ...] = (0, 1)  # training seeds of every row (the spread is reported)
    parallel: int = 2  # runs at a time, one thread each

    def __post_init__(self):
        for name in ("train_frames", "val_frames", "frames_per_sequence", "parallel"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"experiment.{name} must be a positive integer, not {getattr(self, name)!r}")
        for name in ("image_scale", "image_scale_2d"):
            v = getattr(self, name)
            if v is not None and not (0 < float(v) <= 4):
                raise ValueError(f"experiment.{name} must be in (0, 4], not {v!r}")
        for name in ("p_cyclist", "p_walker", "p_group"):
            v = getattr(self, name)
            if v is not None and not 0 <= float(v) <= 1:
                raise ValueError(f"experiment.{name} must be a probability in [0, 1], not {v!r}")
        if len(self.seeds) < 1:
            raise ValueError("experiment.seeds needs at least one seed")
        for name, null in (("cameras", "all"), ("cameras_2d", "the same as cameras")):
            if getattr(self, name) is not None and len(getattr(self, name)) < 1:
                raise ValueError(f"experiment.{name}: give at least one camera id, or null for {null}")

    def synth_overrides(self, for_2d: bool = False) -> dict:
        from ...data.synthetic import preset

        scale = self.image_scale_2d if for_2d and self.image_scale_2d is not None else self.image_scale
        over: dict[str, Any] = {"image_scale": float(scale)}
        wanted, name = ((self.cameras_2d, "cameras_2d") if for_2d and self.cameras_2d is not None
                        else (self.cameras, "cameras"))
        if wanted is not None:
            cams = preset(self.synth_preset).cameras
            missing = sorted(set(wanted) - {c.camera_id for c in cams})
            if missing:
                raise ValueError(f"experiment.{name}: preset {self.synth_preset!r} has no camera {missing} "
                                 f"(it has {[c.camera_id for c in cams]})")
            over["cameras"] = tuple(c for c in cams if c.camera_id in wanted)
        for name in ("p_cyclist", "p_walker", "p_group"):
            if getattr(self, name) is not None:
                over[name] = float(getattr(self, name))
        return over


def prepare_data(out: Path, cfg: ExperimentConfig, workers: int = 1, for_2d: bool = False) -> tuple[Path, Path]:
    """Render (or reuse) ``out/train`` and ``out/val``; returns both paths. ``for_2d``: the 2D rows' frames,
    ``out/train-2d`` and ``out/val-2d`` when ``cameras_2d`` differs from ``cameras`` (same scenes)."""
    from ..convert.synth import synth_dataset

    suffix = "-2d" if for_2d and cfg.synth_overrides(True) != cfg.synth_overrides() else ""
    paths = []
    for name, n, seed in (("train", cfg.train_frames, cfg.train_seed), ("val", cfg.val_frames, cfg.val_seed)):
        path = out / f"{name}{suffix}"
        synth_dataset(path, cfg.synth_preset, n, seed=seed, frames_per_sequence=cfg.frames_per_sequence,
                      workers=workers, overrides=cfg.synth_overrides(bool(suffix)), show_progress=False)
        paths.append(path)
    return paths[0], paths[1]


def machine() -> dict:
    """What the record says about the machine (CPU model, cores, load, versions)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "host": platform.node(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_start": list(os.getloadavg()),
            # the vector kernels torch dispatches to: AVX512 and AVX2 machines differ in the last bits
            "simd": torch.backends.cpu.get_cpu_capability()}


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when the process that started it dies, so a killed
    experiment (Ctrl-C twice, SIGKILL) does not leave hour-long training runs behind. Elsewhere: nothing."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the call: nobody will collect our result
        os._exit(1)


def _init_worker(in_pool: bool = False) -> None:
    if in_pool:
        _die_with_parent()
        # a fresh process, numba not imported yet: the environment decides its thread count. Set later, the
        # variable would differ from what numba read at import, and numba raises at the next compile. In the
        # calling process it must not change at all (numba refuses a new value once its threads run).
        os.environ["NUMBA_NUM_THREADS"] = "1"
    import numba
    import torch

    # one thread per run: spconv's CPU path slows down with OpenMP teams on a shared 2-core machine
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _job(fn: Callable[..., dict], job: dict, parent: int) -> dict:
    """One job in a pool worker. A trainer catches the SIGTERM that a dead parent sends (PR_SET_PDEATHSIG),
    checkpoints and returns; with nobody left to take its result the worker would then wait forever, so it
    exits instead (the checkpoint lets the next run resume)."""
    res = fn(**job)
    if os.getppid() != parent:
        os._exit(1)
    return res


def run_parallel(fn: Callable[..., dict], jobs: list[dict], parallel: int) -> list[dict]:
    """``[fn(**job) for job in jobs]``, ``parallel`` processes at a time (spawned: no torch state is forked).
    A failed job raises here with its arguments named."""
    if parallel <= 1:
        import torch

        import numba

        threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
        _init_worker()
        try:
            return [fn(**job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
            numba.set_num_threads(numba_threads)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=parallel, mp_context=ctx, initializer=_init_worker,
                                initargs=(True,)) as pool:
        futures = [pool.submit(_job, fn, job, os.getpid()) for job in jobs]
        out = []
        for job, fut in zip(jobs, futures):
            try:
                out.append(fut.result())
            except Exception as e:
                raise RuntimeError(f"experiment job {job} failed: {e}") from e
        return out


def _metric_paths(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_metric_paths(v, f"{prefix}{k}."))
        elif k in METRICS and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def summarize(per_seed: dict[int, dict]) -> dict:
    """Mean, min, max and spread (max - min) over seeds of every numeric metric (dotted keys)."""
    flat = [_metric_paths(m) for m in per_seed.values()]
    keys = sorted(set().union(*flat)) if flat else []
    out = {}
    for k in keys:
        vals = np.asarray([f[k] for f in flat if k in f and f[k] is not None and np.isfinite(f[k])], np.float64)
        if vals.size:
            out[k] = {"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max()),
                      "spread": float(vals.max() - vals.min()), "n": int(vals.size)}
    return out


def record(kind: str, cfg_path: Path, config: dict, rows: list[dict], info: dict, t0: float, extra: dict) -> dict:
    info = {**info, "load_avg_end": list(os.getloadavg())}
    return {"experiment": kind, "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "config_file": str(cfg_path), "config": config, "seconds": time.time() - t0, "machine": info,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **extra, "rows": rows}


def write_record(path: Path, rec: dict) -> None:
    from ...data.store import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(rec, indent=1, sort_keys=False) + "\n").encode())


def cell(summary: dict, key: str) -> str:
    """``mean ± half-spread`` of a metric in percent ("-" when missing)."""
    s = summary.get(key)
    if s is None:
        return "-"
    return f"{100 * s['mean']:.1f} ± {50 * s['spread']:.1f}" if s["n"] > 1 else f"{100 * s['mean']:.1f}"


# ------------------------------------------------------------------------------------------ run jobs
# Top-level functions (a spawned process imports them by name); each trains one run and evaluates it.


def _eval3d_models(run: Path, val: Path, rsc: bool) -> dict:
    """The run's EMA teacher (what eval-3d, predict-3d and PVC use) and its student, side by side, so that a
    lagging teacher shows; with ``rsc`` also the teacher with ring-segment correction."""
    import torch

    from ...train3d.model import VoteSegmentor
    from ..predict.predict3d import evaluate_3d
    from ..training.train3d import load_teacher
    from ..training.run import latest_checkpoint, load_checkpoint

    device = torch.device("cpu")
    teacher, cfg = load_teacher(run, device)
    sets = {"points": cfg.points, "spg": cfg.spg, "show_progress": False}
    out = {"teacher": evaluate_3d(teacher, val, cfg.infer, device, **sets)}
    student = VoteSegmentor(cfg.model)
    student.load_state_dict(load_checkpoint(latest_checkpoint(run), device)["model"])
    out["student"] = evaluate_3d(student, val, cfg.infer, device, **sets)
    if rsc:
        out["teacher_rsc"] = evaluate_3d(teacher, val, cfg.infer, device, rsc=True, **sets)
    return out


def train_eval_3d(train: str, val: str, run: str, config: str, sets: list[str], rsc: bool = False) -> dict:
    """Train one 3D run (resuming a finished one is a no-op) and evaluate it on ``val``."""
    from ..training.train3d import Train3DConfig, train_3d
    from ..training.run import load_config

    cfg = load_config(Train3DConfig, config, sets)
    t = time.time()
    summary = train_3d(train, run, cfg, resume=True, show_progress=False)
    res = {"steps": summary["steps"], "train_seconds": time.time() - t, "pvc_rounds": summary["pvc_rounds"],
           **{k: summary[k] for k in ("twist_rounds", "twist_quality", "labelled_frames") if k in summary}}
    res.update(_eval3d_models(Path(run), Path(val), rsc))
    if cfg.twist.enabled and not cfg.twist.labelled_only:
        # what the run trained on last (a round's labels, or the box labels without one) on the frames outside
        # the labelled subset: TWIST's pseudo-label quality (its Tab. 5), beside the model's
        from ..labels.evaluate import evaluate_labels

        result = evaluate_labels(train, [summary["labels"]], show_progress=False,
                                 exclude_frames=frozenset(summary.get("labelled_frames", ())))
        res["train_labels"] = result[summary["labels"]]
    return res


def train_eval_2d(train: str, val: str, run: str, config: str, sets: list[str]) -> dict:
    """Train one 2D run and evaluate its EMA teacher (COCO mask AP, box AP as a diagnostic) on ``val``."""
    import torch

    from ..predict.predict2d import evaluate_2d
    from .pseudo_quality import pseudo_mask_quality
    from ..training.train2d import Train2DConfig, load_teacher_2d, train_2d
    from ..training.run import load_config

    cfg = load_config(Train2DConfig, config, sets)
    t = time.time()
    summary = train_2d(train, run, cfg, resume=True, show_progress=False)
    seconds = time.time() - t
    model, cfg = load_teacher_2d(run, torch.device("cpu"))
    res = evaluate_2d(model, val, cfg, torch.device("cpu"), show_progress=False, box_ap=True)
    quality = pseudo_mask_quality(run, train)  # the teacher's pseudo masks on training images, per epoch
    return {"steps": summary["steps"], "train_seconds": seconds, "teacher": res, "pseudo_quality": quality}
