"""Issue 12: a failed or mistaken trainer command cannot damage an existing run; frames without usable
points are skipped, not fatal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from mwsis.data.store import open_dataset, write_frame_shard, write_manifest
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.training.train3d import Train3DConfig, train_3d
from mwsis.pipelines.training.run import latest_checkpoint, load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "train3d-tiny.yaml"
ARGS = ["--config", str(TINY), "--set", "epochs=1", "--set", "pvc.enabled=false"]


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and ".locks" not in p.parts}


def test_failed_rerun_leaves_a_finished_run_as_it_was(labelled, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), *ARGS])
    assert r.exit_code == 0, r.output
    before = _files(run)
    r = CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), "--labels",
                                  "doesnotexist", "--resume", *ARGS])
    assert r.exit_code == 1 and "labels/doesnotexist/" in r.output and "has not been run" in r.output
    assert _files(run) == before  # metrics.csv, config.yaml, checkpoints untouched


def test_rerun_without_resume_is_refused_and_overwrite_moves_the_old_run_aside(labelled, tmp_path):
    run = tmp_path / "run"
    assert CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), *ARGS]).exit_code == 0
    before = _files(run)
    r = CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), *ARGS])
    assert r.exit_code == 1 and "already holds a train-3d run (newest checkpoint epoch-0001.pt)" in r.output
    assert "--resume" in r.output and "--overwrite" in r.output and _files(run) == before
    r = CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), "--overwrite", *ARGS])
    assert r.exit_code == 0, r.output
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and _files(old[0]) == before and latest_checkpoint(run).name == "epoch-0001.pt"


def test_foreign_directory_is_refused_even_with_resume(labelled, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    for flags in ([], ["--resume"]):
        r = CliRunner().invoke(main, ["train-3d", "--data", str(labelled), "--out", str(out), *flags, *ARGS])
        assert r.exit_code == 1 and "holds files that are not a training run" in r.output
    r = CliRunner().invoke(main, ["train-2d", "--data", str(labelled), "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "holds files that are not a training run" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_frames_without_usable_points_are_skipped_with_a_count(labelled, tmp_path):
    ds = labelled  # a copy per test already
    d = open_dataset(ds)
    frames = list(d.shard(0).iter_frames())
    frames[0].points.cam_id[:] = 0  # no point seen by a camera: nothing for the model
    info = write_frame_shard(ds, d.manifest.shards[0].name, frames, validate=False)
    m = d.manifest
    m.shards[0] = info
    write_manifest(ds, m)
    from mwsis.pipelines.labels.runner import run_stages
    assert all(r.status != "failed" for r in run_stages(ds, ["spg"], show_progress=False))
    cfg = load_config(Train3DConfig, TINY, ["epochs=1", "pvc.enabled=false"])
    summary = train_3d(ds, tmp_path / "run", cfg, show_progress=False)
    assert summary["skipped_frames"] == 1 and summary["steps"] >= 1
    assert np.isfinite(summary["last"]["loss"])


def test_a_run_killed_before_its_run_json_still_resumes(labelled, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.csv").write_text("step,epoch,name,value\n")
    cfg = load_config(Train3DConfig, TINY, ["epochs=1", "pvc.enabled=false"])
    summary = train_3d(labelled, run, cfg, resume=True, show_progress=False)
    assert summary["steps"] >= 1 and latest_checkpoint(run).name == "epoch-0001.pt"
