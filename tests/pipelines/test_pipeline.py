"""The pseudo-label stages end to end on tiny synthetic data: outputs, resume, determinism, failures."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.frame import BACKGROUND, IGNORE, Boxes2D
from mwsis.data.label_store import LabelShard, label_shard_path, read_frame_labels
from mwsis.data.schema import Manifest
from mwsis.data.store import open_dataset, write_frame_shard, write_manifest
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import run_stages, slice_shards

STAGES_3D = ["frustum", "ccl", "dcs", "spg"]


@pytest.fixture
def ds(tiny_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


def _bytes(root, stage):
    return {p.name: p.read_bytes() for p in sorted((root / "labels" / stage).glob("*.parquet"))}


def test_stages_write_aligned_labels_with_conventions(ds):
    res = run_stages(ds, ["spg", "ccl", "frustum"], show_progress=False)
    assert {r.status for r in res} == {"done"} and {r.stage for r in res} == set(STAGES_3D)
    d = open_dataset(ds)
    for shard in d.iter_shards():
        spg = LabelShard(d, "spg", shard.info.name)
        assert spg.metadata["stage"] == "spg" and spg.metadata["inputs"]["frames"] == shard.info.sha256
        assert "labels/dcs" in spg.metadata["inputs"]
        for i, frame in enumerate(shard.iter_frames(images=False)):
            lab = spg.labels(i)
            assert lab.frame_id == frame.frame_id and lab.semantic.shape == (len(frame.points),)
            assert set(np.unique(lab.semantic)) <= {IGNORE, 0, 1, 2, BACKGROUND}
            fg = (lab.semantic >= 0) & (lab.semantic < BACKGROUND)
            assert (lab.instance[fg] > 0).all() and (lab.instance[~fg] == 0).all()
            # an instance is a claiming box: its class is that box's class
            box_cls = frame.boxes2d.class_id[lab.instance[fg] - 1]
            np.testing.assert_array_equal(box_cls, lab.semantic[fg])
            assert (lab.semantic[frame.points.laser_id != 1] == IGNORE).all()
            assert lab.segment is not None and (lab.segment[lab.semantic == 0] >= 0).all()


def test_reruns_skip_and_config_changes_recompute(ds):
    run_stages(ds, ["spg"], show_progress=False)
    before = _bytes(ds, "spg")
    again = run_stages(ds, ["spg"], show_progress=False)
    assert {r.status for r in again} == {"skipped"}
    changed = run_stages(ds, ["spg"], {"spg": {"fg_thresh": 0.05}}, show_progress=False)
    assert {r.status for r in changed} == {"done"}  # dcs and spg both record the spg section
    assert _bytes(ds, "spg") != before  # at least the recorded config differs
    meta = LabelShard(open_dataset(ds), "spg", open_dataset(ds).manifest.shards[0].name).metadata
    assert meta["config"]["spg"]["fg_thresh"] == 0.05
    forced = run_stages(ds, ["frustum"], force=True, show_progress=False)
    assert {r.status for r in forced} == {"done"}


def test_label_shards_are_byte_identical_across_runs_and_worker_counts(ds, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ds, other)
    run_stages(ds, STAGES_3D, show_progress=False)
    run_stages(other, STAGES_3D, workers=2, show_progress=False)
    for stage in STAGES_3D:
        assert _bytes(ds, stage) == _bytes(other, stage) and _bytes(ds, stage)


def test_slices_and_slurm_environment(monkeypatch):
    assert slice_shards(5) == [0, 1, 2, 3, 4]
    assert slice_shards(5, 1, 2) == [1, 3]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert slice_shards(7) == [2, 5]
    with pytest.raises(ValueError):
        slice_shards(5, 3, 2)


def test_stage_cli_single_slice_and_missing_dependency(ds):
    runner = CliRunner()
    r = runner.invoke(main, ["stage", "spg", "--data", str(ds)])
    assert r.exit_code == 1 and "needs stage 'dcs' first" in r.output
    r = runner.invoke(main, ["stage", "dcs", "--data", str(ds), "--shard-index", "0", "--num-shards", "2"])
    assert r.exit_code == 0, r.output
    names = [s.name for s in open_dataset(ds).manifest.shards]
    assert label_shard_path(ds, "dcs", names[0]).exists() and not label_shard_path(ds, "dcs", names[1]).exists()
    r = runner.invoke(main, ["stage", "sam", "--data", str(ds)], env={"SAM_CHECKPOINT": ""})
    assert r.exit_code == 0 and "skipped" in r.output


def test_pseudolabels_cli_prints_table_and_eval_json(ds, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["pseudolabels", "--data", str(ds), "--sam-checkpoint", "tiny"])
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output and "spg" in r.output and "sam" in r.output
    out = tmp_path / "q.json"
    r = runner.invoke(main, ["eval-labels", "--data", str(ds), "--json", str(out)])
    assert r.exit_code == 0, r.output
    q = json.loads(out.read_text())
    assert q["frames"] == 4
    for stage in ("frustum", "ccl", "spg", "sam"):
        assert {"miou", "ap", "ap50", "ap75", "per_class"} <= set(q[stage])
    assert 0 <= q["spg"]["miou"] <= 1 and q["spg"]["miou"] > q["frustum"]["miou"]
    # the in-memory variant with the default config must reproduce the stage's shards exactly
    assert q["spg[paper]"]["miou"] == q["spg"]["miou"] and q["spg[paper]"]["ap"] == q["spg"]["ap"]
    assert {"spg[authors thresholds]", "spg[union-find DCS]"} <= set(q)
    assert q["sam"]["sam_masks"] > 0 and 0 <= q["sam"]["sam_mask_iou"] <= 1
    sam = read_frame_labels(open_dataset(ds), "sam", open_dataset(ds).frame_ids[0])
    assert sam.masks2d is not None and len(sam.masks2d.rles) == len(open_dataset(ds).frame(sam.frame_id).boxes2d)


def test_failures_name_the_frame_and_other_shards_complete(ds, toy):
    d = open_dataset(ds)
    good = d.manifest.shards[0]
    # shard 2 from a foreign tool: one frame has boxes on a camera the frame lacks
    frame = d.frame(d.manifest.shards[1].frame_ids[0])
    frame.boxes2d = Boxes2D(np.array([4], np.int8), np.array([0], np.int8), np.array([[0, 0, 5, 5]], np.float32),
                            np.array([1], np.int64))
    info = write_frame_shard(ds, d.manifest.shards[1].name, [frame], validate=False)
    write_manifest(ds, Manifest(class_names=d.class_names, sensors=d.manifest.sensors, shards=[good, info],
                                source=d.manifest.source))
    r = CliRunner().invoke(main, ["pseudolabels", "--data", str(ds), "--stages", "ccl"])
    assert r.exit_code == 1
    # validated on read with the writer's rules: file, frame and field named
    assert (f"FAILED ccl/{info.name}: {ds / info.path}: frame {frame.frame_id}: boxes2d.camera_id: boxes on "
            "camera 4 that the frame does not have") in r.output
    assert label_shard_path(ds, "ccl", good.name).exists() and not label_shard_path(ds, "ccl", info.name).exists()


def test_corrupt_frame_shard_fails_that_shard_only(ds):
    d = open_dataset(ds)
    bad = ds / d.manifest.shards[1].path
    bad.write_bytes(bad.read_bytes()[:-100] + b"\0" * 100)
    res = run_stages(ds, ["ccl"], show_progress=False)
    status = {r.shard: (r.status, r.error) for r in res}
    assert status[d.manifest.shards[0].name][0] == "done"
    st, err = status[d.manifest.shards[1].name]
    assert st == "failed" and "checksum mismatch" in err and d.manifest.shards[1].path in err


def test_foreign_frame_with_nan_points_fails_on_read_naming_the_field(ds):
    d = open_dataset(ds)
    frames = list(d.shard(0).iter_frames())
    frames[1].points.xyz[3:10] = np.nan
    info = write_frame_shard(ds, d.manifest.shards[0].name, frames, validate=False)
    write_manifest(ds, Manifest(class_names=d.class_names, sensors=d.manifest.sensors,
                                shards=[info, d.manifest.shards[1]], source=d.manifest.source))
    res = {r.shard: r for r in run_stages(ds, ["ccl"], show_progress=False)}
    assert res[info.name].status == "failed" and res[d.manifest.shards[1].name].status == "done"
    assert (f"{ds / info.path}: frame {frames[1].frame_id}: points.xyz: 7 points with non-finite values (first: point 3)"
            == res[info.name].error)


def test_frames_with_no_boxes_and_no_projections(ds):
    d = open_dataset(ds)
    frames = list(d.shard(0).iter_frames())
    frames[0].boxes2d = Boxes2D.empty()
    frames[1].points.cam_id[:20] = 0
    info = write_frame_shard(ds, d.manifest.shards[0].name, frames, validate=False)
    write_manifest(ds, Manifest(class_names=d.class_names, sensors=d.manifest.sensors,
                                shards=[info, d.manifest.shards[1]], source=d.manifest.source))
    res = run_stages(ds, STAGES_3D, show_progress=False)
    assert {r.status for r in res} == {"done"}
    d = open_dataset(ds)
    lab0 = read_frame_labels(d, "spg", frames[0].frame_id)
    assert set(np.unique(lab0.semantic)) <= {IGNORE, BACKGROUND} and (lab0.instance == 0).all()
    lab1 = read_frame_labels(d, "spg", frames[1].frame_id)
    assert (lab1.instance[:20] == 0).all()
