"""``mwsis bench``: speed and memory of the pseudo-label pipeline on waymo-preset frames.

Every number is compared with a straightforward baseline measured in the same run, and reported with
the machine it was taken on. Run it with ``NUMBA_NUM_THREADS=1`` (``make bench`` does) for one core.
"""
from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LABEL_STAGES = ["frustum", "ccl", "dcs", "spg"]  # what the end-to-end rows run


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict:
    import numba

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numba": numba.__version__, "numpy": np.__version__,
            "numba_num_threads": int(os.environ.get("NUMBA_NUM_THREADS", 0)) or None}


def _time(fn, repeat: int) -> float:
    """Median wall time of ``fn()`` in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _top_ranges(frame) -> np.ndarray:
    from ...pseudolabel.dcs import range_image

    p = frame.points
    top = p.laser_id == 1
    return range_image(p.range[top], p.return_index[top].astype(np.int64), p.row[top].astype(np.int64),
                       p.col[top].astype(np.int64), frame.range_image_shape)


def dcs_oracle():
    """The plain-Python DCS rules (``tests/pseudolabel/dcs_reference.py``), the baseline of the DCS speed-up.
    They live beside their tests in the source checkout; an installed wheel has no tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tests" / "pseudolabel" / "dcs_reference.py"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the DCS baseline is part of the source checkout; run `mwsis bench` "
                                "(or `make bench`) from a clone of the repository")
    spec = importlib.util.spec_from_file_location("dcs_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ring_segments_reference, mod.ring_segments_rescan


def bench_kernels(frames, repeat: int = 5) -> dict:
    """DCS (numba vs the plain-Python rule) and association + DCS + SPG + CCL per frame, in memory."""
    from ...pseudolabel.dcs import ring_segments
    from ...pseudolabel.spg import SPGConfig, ccl_frame, spg_frame

    ring_segments_reference, ring_segments_rescan = dcs_oracle()

    ranges = [_top_ranges(f) for f in frames]
    ring_segments(ranges[0])  # JIT warm-up (cached on disk after the first run)
    dcs = statistics.median(_time(lambda r=r: ring_segments(r), repeat * 4) for r in ranges)
    t = time.perf_counter()
    ref = ring_segments_reference(ranges[0])
    dcs_py = time.perf_counter() - t
    assert np.array_equal(ref, ring_segments(ranges[0])), "numba DCS disagrees with the Python reference"
    t = time.perf_counter()
    rescan = ring_segments_rescan(ranges[0])
    dcs_rescan = time.perf_counter() - t
    assert np.array_equal(ref, rescan), "authors-style DCS disagrees with the Python reference"
    cfg = SPGConfig()

    def pipeline():
        for f in frames:
            spg_frame(f.points, f.boxes2d, f.image_sizes, cfg, f.range_image_shape)  # association + DCS + Eq. 3 + Eq. 4
            ccl_frame(f.points, f.boxes2d, f.image_sizes, cfg)  # the CCL baseline labels too

    pipeline()  # warm-up
    per_frame = _time(pipeline, repeat) / len(frames)
    return {"dcs_ms_per_frame": 1e3 * dcs, "dcs_python_ms_per_frame": 1e3 * dcs_py, "dcs_speedup": dcs_py / dcs,
            "dcs_authors_style_python_ms_per_frame": 1e3 * dcs_rescan, "dcs_speedup_vs_authors_style": dcs_rescan / dcs,
            "pipeline_ms_per_frame": 1e3 * per_frame, "pipeline_frames_per_s": 1.0 / per_frame,
            "points_per_frame": float(np.mean([len(f.points) for f in frames])),
            "boxes_per_frame": float(np.mean([len(f.boxes2d) for f in frames]))}


def bench_stages(data: Path, workers_list=(1, 2)) -> dict:
    """End-to-end stage runner (frames read from Parquet, labels written) over frustum, ccl, dcs, spg: fused
    (one read per frame for all stages, what ``mwsis pseudolabels`` runs) with 1 and 2 workers, and stage by
    stage with 1 worker (the baseline: every stage reads every frame)."""
    from ..labels.runner import run_stages

    out = {}
    for fused, workers in [(False, 1), *((True, w) for w in workers_list)]:
        t = time.perf_counter()
        res = run_stages(data, LABEL_STAGES, workers=workers, force=True, show_progress=False, fused=fused)
        dt = time.perf_counter() - t
        frames = sum(r.frames for r in res if r.stage == "spg")
        out[f"{'fused' if fused else 'by_stage'}_{workers}"] = {"seconds": dt, "frames": frames,
                                                                "frames_per_s": frames / dt}
    return out


def profile_stages(data: Path, frames: int) -> dict:
    """Where the time of one 4-stage ``--force`` run goes, per frame, fused and stage by stage."""
    from ..labels.runner import run_stages
    from .profile import profile_costs

    return {name: profile_costs(lambda f=fused: run_stages(data, LABEL_STAGES, force=True, show_progress=False,
                                                            fused=f), frames)
            for name, fused in (("fused", True), ("by_stage", False))}


def bench_integrity(data: Path) -> dict:
    """Cost of verifying on read (README "Crash safety and integrity"): one process runs the four stages
    with ``--force`` while every SHA-256 it computes (frame shards on first read, label shards read and
    sealed) is timed; the share is hashing time over the whole run's time."""
    from ...data import integrity
    from ..labels.runner import run_stages

    spent = [0.0, 0]
    plain = integrity.sha256_file

    def timed(path):
        t = time.perf_counter()
        try:
            return plain(path)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    integrity.sha256_file = timed  # this process only, restored below
    try:
        t = time.perf_counter()
        run_stages(data, LABEL_STAGES, workers=1, force=True, show_progress=False)
        dt = time.perf_counter() - t
    finally:
        integrity.sha256_file = plain
    return {"seconds": dt, "hash_seconds": spent[0], "files_hashed": spent[1], "hash_share": spent[0] / dt}


def run_bench(frames: int = 8, seed: int = 0, data: Path | None = None) -> dict:
    import sys

    from ...data.store import open_dataset
    from ..convert.synth import synth_dataset

    t0, load_start = time.time(), list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "waymo"
            t = time.perf_counter()
            synth_dataset(data, "waymo", frames=frames, seed=seed, frames_per_sequence=max(1, frames // 4),
                          workers=2, show_progress=False)
            log.info("bench: rendered %d waymo-preset frames in %.1f s", frames, time.perf_counter() - t)
        ds = open_dataset(data)
        loaded = [f for f in ds.iter_frames(images=False)][:frames]
        result = {"frames": len(loaded), "range_image_shape": list(loaded[0].range_image_shape)}
        result.update(bench_kernels(loaded))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["stages_end_to_end"] = e2e = bench_stages(data)
        result["stages_frames_per_s"] = e2e["fused_1"]["frames_per_s"]
        result["stages_by_stage_frames_per_s"] = e2e["by_stage_1"]["frames_per_s"]
        result["fused_speedup"] = result["stages_frames_per_s"] / result["stages_by_stage_frames_per_s"]
        result["stages_vs_pipeline"] = result["stages_frames_per_s"] / result["pipeline_frames_per_s"]
        # the record's rows (docs/experiments/bench-pseudolabels.json): each end-to-end path beside the kernels
        result["rows"] = [{"name": "kernels in memory", "frames_per_s": result["pipeline_frames_per_s"]},
                          *({"name": k, **v} for k, v in e2e.items())]
        result["profile"] = profile_stages(data, len(loaded))
        result["integrity"] = bench_integrity(data)
        result["peak_rss_mb_worker"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["targets"] = {
        "dcs_ms_per_frame<=5": result["dcs_ms_per_frame"] <= 5,
        "dcs_speedup>=1000": result["dcs_speedup"] >= 1000,
        "dcs_speedup_vs_authors_style>=1000": result["dcs_speedup_vs_authors_style"] >= 1000,
        "pipeline_frames_per_s>=20": result["pipeline_frames_per_s"] >= 20,
        "dcs_ms_per_frame<=1": result["dcs_ms_per_frame"] <= 1,
        "stages_vs_pipeline>=0.5": result["stages_vs_pipeline"] >= 0.5,
        "peak_rss_mb<=2048": max(result["peak_rss_mb"], result["peak_rss_mb_worker"]) <= 2048,
        "integrity_hash_share<=0.05": result["integrity"]["hash_share"] <= 0.05,
    }
    # the load says whether the speeds compare with another run's (a busy machine slows every row)
    result["machine"] = {**machine_info(), "load_avg_start": load_start, "load_avg_end": list(os.getloadavg())}
    result.update(command=" ".join(["mwsis", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("mwsis") else
                  " ".join(sys.argv), seconds=time.time() - t0, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return result
