"""Fused stage execution (``pipelines/labels/fused.py``): one read per frame for all stages, the same shards.

The crash tests (``test_crash_safety.py``) kill fused runs and compare them with a stage-by-stage reference;
here: byte identity on a clean run, per-stage skips, failure isolation, and the columns a pass reads."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from mwsis.data.label_store import label_shard_path
from mwsis.data.schema import LABELLING_COLUMNS
from mwsis.data.store import ShardError, open_dataset
from mwsis.pipelines.labels import stages as stages_mod
from mwsis.pipelines.labels.runner import run_stages

STAGES = ["frustum", "ccl", "dcs", "spg"]


def shard_bytes(root: Path) -> dict[str, bytes]:
    """Every label shard (not the stamps, which record mtimes, nor locks) by path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").rglob("*.parquet"))
            if ".locks" not in p.parts}


def hidden(root: Path) -> list[Path]:
    return [p for p in (root / "labels").rglob(".*.tmp")]


@pytest.fixture
def two(tiny_dataset, tmp_path):
    """Two copies of the tiny dataset (2 shards of 2 frames): one for each path."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_dataset, a)
    shutil.copytree(tiny_dataset, b)
    return a, b


def test_fused_run_writes_the_stage_by_stage_bytes(two):
    a, b = two
    by_stage = run_stages(a, STAGES, show_progress=False, fused=False)
    fused = run_stages(b, STAGES, show_progress=False)
    assert [(r.stage, r.shard, r.status) for r in fused] == [(r.stage, r.shard, r.status) for r in by_stage]
    assert all(r.status == "done" for r in fused) and len(fused) == 8
    assert shard_bytes(a) == shard_bytes(b) and len(shard_bytes(b)) == 8
    # the fused shards are current for the stage-by-stage runner, and the other way round
    assert all(r.status == "skipped" for r in run_stages(b, STAGES, show_progress=False, fused=False))
    assert all(r.status == "skipped" for r in run_stages(a, STAGES, show_progress=False))


def test_fused_rerun_redoes_only_what_is_stale(two):
    a, b = two
    run_stages(a, STAGES, show_progress=False, fused=False)
    run_stages(b, STAGES, show_progress=False)
    shard = open_dataset(b).manifest.shards[1].name
    label_shard_path(b, "dcs", shard).unlink()  # spg depends on it: recomputed with it, in the same pass
    res = {(r.stage, r.shard): r.status for r in run_stages(b, STAGES, show_progress=False)}
    assert {k for k, v in res.items() if v == "done"} == {("dcs", shard), ("spg", shard)}
    assert sum(v == "skipped" for v in res.values()) == 6
    assert shard_bytes(a) == shard_bytes(b)


def test_a_failing_frame_fails_its_stage_and_dependents_only(two, monkeypatch):
    _, b = two
    run_stages(b, ["spg"], show_progress=False)
    ds = open_dataset(b)
    bad_shard, bad_frame = ds.manifest.shards[0].name, ds.manifest.shards[0].frame_ids[1]
    before = label_shard_path(b, "spg", bad_shard).read_bytes()
    real = stages_mod.STAGES["dcs"].label_frame

    def dcs(frame, deps, cfg, ctx):
        if frame.frame_id == bad_frame:
            raise ValueError("a broken range image")
        return real(frame, deps, cfg, ctx)

    monkeypatch.setitem(stages_mod.STAGES, "dcs", replace(stages_mod.STAGES["dcs"], label_frame=dcs))
    res = {(r.stage, r.shard): r for r in run_stages(b, STAGES, show_progress=False, force=True)}
    failed = {k for k, r in res.items() if r.status == "failed"}
    assert failed == {("dcs", bad_shard), ("spg", bad_shard)}
    assert bad_frame in res[("dcs", bad_shard)].error and "a broken range image" in res[("dcs", bad_shard)].error
    assert "dcs" in res[("spg", bad_shard)].error
    assert all(r.status == "done" for k, r in res.items() if k not in failed)
    assert label_shard_path(b, "spg", bad_shard).read_bytes() == before  # nothing already written is lost
    assert not hidden(b)  # the failed stages' rows (spilled or streamed) are gone


def test_a_pass_reads_only_the_labelling_columns(tiny_dataset):
    shard = open_dataset(tiny_dataset).shard(0)
    full, light = shard.frame(0), shard.frame(0, columns=LABELLING_COLUMNS)
    assert light.points.intensity is None and light.points.elongation is None
    assert light.gt.point_semantic is None and light.gt.masks is None and light.cameras[0].image_bytes is None
    assert (light.points.xyz == full.points.xyz).all() and (light.points.cam_uv == full.points.cam_uv).all()
    assert (light.points.cam_id == full.points.cam_id).all() and len(light.boxes2d) == len(full.boxes2d)
    assert len(light.points.select(light.points.laser_id >= 0)) == len(full.points)
    with pytest.raises(ShardError, match=r"columns \['x'\] are needed"):
        shard.frame(0, columns=tuple(c for c in LABELLING_COLUMNS if c != "x"))


def test_pseudolabels_cli_runs_given_shards_fused_or_stage_by_stage(two):
    from click.testing import CliRunner

    from mwsis.pipelines.cli.main import main

    a, b = two
    names = [s.name for s in open_dataset(b).manifest.shards]
    res = CliRunner().invoke(main, ["pseudolabels", "--data", str(b), "--stages", "spg", "--shards", "1", "--no-eval"])
    assert res.exit_code == 0, res.output
    assert sorted(p.stem for p in (b / "labels" / "spg").glob("*.parquet")) == [names[1]]
    res = CliRunner().invoke(main, ["pseudolabels", "--data", str(a), "--stages", "spg", "--stage-by-stage",
                                    "--no-eval"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["pseudolabels", "--data", str(b), "--stages", "spg", "--no-eval"])
    assert res.exit_code == 0 and shard_bytes(a) == shard_bytes(b)
    res = CliRunner().invoke(main, ["pseudolabels", "--data", str(b), "--shards", "2", "--no-eval"])
    assert res.exit_code == 2 and "outside 0-1" in res.output
