"""The experiment harness (pipelines/experiment.py): regime config checks, seed summaries, the cpu-bench preset."""
from __future__ import annotations

import pytest

from mwsis.pipelines.config import load_section
from mwsis.pipelines.experiment import ExperimentConfig, run_parallel, summarize


def test_summary_mean_and_spread_over_seeds():
    per_seed = {0: {"ap": 0.4, "miou": 0.8, "frames": 20, "per_class": {"vehicle": {"iou": 0.9, "ap": None}}},
                1: {"ap": 0.5, "miou": 0.7, "frames": 20, "per_class": {"vehicle": {"iou": 0.7, "ap": 0.3}}}}
    s = summarize(per_seed)
    assert s["ap"] == pytest.approx({"mean": 0.45, "min": 0.4, "max": 0.5, "spread": 0.1, "n": 2})
    assert s["per_class.vehicle.iou"]["spread"] == pytest.approx(0.2)
    assert s["per_class.vehicle.ap"]["n"] == 1  # a missing value is left out, not counted as 0
    assert "frames" not in s  # counts are not metrics


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
    # both trainers read their sections from the same preset
    assert load_section("train3d", "cpu-bench").loss.class_balance > 0
    assert load_section("train2d", "cpu-bench").optimizer == "adamw"


def _square(x: int) -> dict:
    return {"x": x * x}


def test_run_parallel_keeps_job_order():
    assert run_parallel(_square, [{"x": 3}, {"x": 2}], parallel=2) == [{"x": 9}, {"x": 4}]
    assert run_parallel(_square, [{"x": 5}], parallel=1) == [{"x": 25}]
