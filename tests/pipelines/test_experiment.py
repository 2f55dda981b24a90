"""The experiment harness (pipelines/experiments/harness.py): regime config checks, seed summaries, the cpu-bench preset."""
from __future__ import annotations

import pytest

from mwsis.pipelines.config import load_section
from mwsis.pipelines.experiments.harness import ExperimentConfig, run_parallel, summarize


def test_summary_mean_and_spread_over_seeds():
    per_seed = {0: {"ap": 0.4, "miou": 0.8, "frames": 20, "per_class": {"vehicle": {"iou": 0.9, "ap": None}}},
                1: {"ap": 0.5, "miou": 0.7, "frames": 20, "per_class": {"vehicle": {"iou": 0.7, "ap": 0.3}}}}
    s = summarize(per_seed)
    assert s["ap"] == pytest.approx({"mean": 0.45, "min": 0.4, "max": 0.5, "spread": 0.1, "n": 2})
    assert s["per_class.vehicle.iou"]["spread"] == pytest.approx(0.2)
    assert s["per_class.vehicle.ap"]["n"] == 1  # a missing value is left out, not counted as 0
    assert "frames" not in s  # counts are not metrics


def test_summary_keeps_the_crowded_pseudo_iou():
    s = summarize({0: {"iou": 0.5, "iou_crowded": 0.4, "crowded": 206}, 1: {"iou": 0.6, "iou_crowded": 0.3}})
    assert s["iou_crowded"]["mean"] == pytest.approx(0.35) and s["iou_crowded"]["n"] == 2
    assert "crowded" not in s


@pytest.mark.parametrize("field,value", [("train_frames", 0), ("image_scale", 0.0), ("p_walker", 1.5),
                                          ("seeds", ()), ("parallel", 0)])
def test_regime_config_is_range_checked(field, value):
    with pytest.raises(ValueError, match=f"experiment.{field}" if field != "seeds" else "seed"):
        ExperimentConfig(**{field: value})


def test_cpu_bench_preset_keeps_one_front_camera_and_two_seeds():
    exp = load_section("experiment", "cpu-bench")
    over = exp.synth_overrides()
    assert [c.camera_id for c in over["cameras"]] == [1] and over["image_scale"] == 0.5
    assert len(exp.seeds) >= 2
    with pytest.raises(ValueError, match="has no camera"):
        ExperimentConfig(cameras=(9,)).synth_overrides()
    # the 2D rows see the same scenes through all five cameras (FRONT alone holds too few pedestrians)
    assert [c.camera_id for c in exp.synth_overrides(for_2d=True)["cameras"]] == [1, 2, 3, 4, 5]
    assert ExperimentConfig().synth_overrides(for_2d=True) == ExperimentConfig().synth_overrides()
    five = ExperimentConfig(cameras=(1,), cameras_2d=(1, 2, 3, 4, 5))
    assert [c.camera_id for c in five.synth_overrides(for_2d=True)["cameras"]] == [1, 2, 3, 4, 5]
    assert [c.camera_id for c in five.synth_overrides()["cameras"]] == [1]
    with pytest.raises(ValueError, match="experiment.cameras_2d: preset 'waymo' has no camera"):
        ExperimentConfig(cameras_2d=(7,)).synth_overrides(for_2d=True)
    full = ExperimentConfig(image_scale=0.5, image_scale_2d=1.0)
    assert (full.synth_overrides()["image_scale"], full.synth_overrides(for_2d=True)["image_scale"]) == (0.5, 1.0)
    with pytest.raises(ValueError, match="experiment.image_scale_2d must be in"):
        ExperimentConfig(image_scale_2d=0)
    # both trainers read their sections from the same preset
    assert load_section("train3d", "cpu-bench").loss.class_balance > 0
    assert load_section("train2d", "cpu-bench").optimizer == "adamw"


def _square(x: int) -> dict:
    return {"x": x * x}


def _numba_threads() -> dict:
    import os

    from numba.core import config

    return {"env": os.environ.get("NUMBA_NUM_THREADS"), "config": config.NUMBA_NUM_THREADS}


def test_pool_workers_start_numba_with_one_thread():
    """The variable must be set before numba is imported in a worker: numba compares it with what it read at
    import and raises at the next compile ("Cannot set NUMBA_NUM_THREADS ...", a lost experiment job)."""
    assert run_parallel(_numba_threads, [{}, {}], parallel=2) == [{"env": "1", "config": 1}] * 2


def test_run_parallel_keeps_job_order():
    assert run_parallel(_square, [{"x": 3}, {"x": 2}], parallel=2) == [{"x": 9}, {"x": 4}]
    assert run_parallel(_square, [{"x": 5}], parallel=1) == [{"x": 25}]


def test_run_parallel_workers_die_with_a_killed_parent(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    # like a trainer, the job catches SIGTERM (PR_SET_PDEATHSIG's signal), stops early and returns
    (tmp_path / "jobs.py").write_text(
        "import os, signal, time\n"
        "def nap(path):\n"
        "    stop = []\n"
        "    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))\n"
        "    open(path + '.tmp', 'w').write(str(os.getpid()))\n"
        "    os.replace(path + '.tmp', path)  # whole: the test reads it as soon as it exists\n"
        "    for _ in range(1200):\n"
        "        if stop:\n"
        "            return {}\n"
        "        time.sleep(0.1)\n"
        "    return {}\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import jobs\n"
            "from mwsis.pipelines.experiments.harness import run_parallel\n"
            "run_parallel(jobs.nap, [{'path': sys.argv[1] + '/w0'}, {'path': sys.argv[1] + '/w1'}], parallel=2)")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    deadline = time.time() + 120
    while not ((tmp_path / "w0").exists() and (tmp_path / "w1").exists()) and time.time() < deadline:
        time.sleep(0.2)
    pids = [int((tmp_path / f"w{i}").read_text()) for i in range(2)]
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper counts as gone
            return f.read().split()[2] != "Z"

    deadline = time.time() + 20
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids), "workers outlived the killed experiment"


def test_gpu_check_fails_clearly_without_cuda_and_its_code_runs_on_tiny_models(tmp_path):
    """bench/gpu_check.py (make gpu-check): without CUDA it stops at once, saying so; --cpu-smoke runs every
    check on tiny models for one step and writes the JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"
    import torch

    if not torch.cuda.is_available():
        r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "g.json")], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode != 0 and "CUDA is not available" in r.stderr and not (tmp_path / "g.json").exists()
    r = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "s.json"), "--cpu-smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "s.json").read_text())
    assert {"3d", "2d", "sam"} <= set(rec) and all(rec[k]["steps_per_s"] > 0 for k in ("3d", "2d", "sam"))
