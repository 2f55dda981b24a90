"""``mwsis bench`` (pipelines/experiments/bench.py): its JSON keys, same-run baselines and the profile of each
end-to-end path (speeds are measured by ``make bench``, never asserted here)."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from mwsis.pipelines.experiments.bench import run_bench
from mwsis.pipelines.experiments.profile import profile_costs

ROOT = Path(__file__).resolve().parents[2]


def _bench_table():
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "bench_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_reports_fused_and_stage_by_stage_runs_with_their_profiles(tiny_dataset, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(tiny_dataset, data)
    res = run_bench(frames=4, data=data)
    e2e = res["stages_end_to_end"]
    assert set(e2e) == {"by_stage_1", "fused_1", "fused_2"} and all(r["frames"] == 4 for r in e2e.values())
    assert res["stages_frames_per_s"] == e2e["fused_1"]["frames_per_s"] > 0
    assert res["fused_speedup"] == pytest.approx(res["stages_frames_per_s"] / res["stages_by_stage_frames_per_s"])
    assert res["stages_vs_pipeline"] == pytest.approx(res["stages_frames_per_s"] / res["pipeline_frames_per_s"])
    assert {"stages_vs_pipeline>=0.5", "dcs_ms_per_frame<=1"} <= set(res["targets"])
    assert [r["name"] for r in res["rows"]] == ["kernels in memory", "by_stage_1", "fused_1", "fused_2"]
    assert {"command", "machine", "seconds", "date"} <= set(res) and len(res["machine"]["load_avg_end"]) == 3
    table = _bench_table().markdown(res)  # the docs table renders from the record (bench/update_readme.py)
    assert f"{res['stages_frames_per_s']:.1f} frames/s" in table and "by stage" in table
    for prof in res["profile"].values():
        assert {"parquet decode", "kernel dcs", "parquet write"} <= set(prof["costs"])
        assert len(prof["top"]) == 5 and 0 < sum(share for _, _, share in prof["top"]) <= 1
        assert sum(prof["costs"].values()) <= prof["ms_per_frame"] * 1.05  # own times add up to the run
    # stage by stage decodes every frame once per stage, fused once: four times the Parquet decoding
    decode = {k: p["costs"]["parquet decode"] for k, p in res["profile"].items()}
    assert decode["by_stage"] > 2 * decode["fused"]


def test_profile_costs_sort_and_share():
    prof = profile_costs(lambda: sum(i * i for i in range(20000)), frames=2, top=2)
    assert list(prof["costs"].values()) == sorted(prof["costs"].values(), reverse=True)
    assert [k for k, _, _ in prof["top"]] == list(prof["costs"])[:2]
