"""The 3D trainer end to end on tiny synthetic data: run files, PVC loop, resume, eval, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mwsis.data.label_store import LabelShard
from mwsis.data.prediction_store import PredictionShard, list_rounds
from mwsis.data.store import ShardError, open_dataset
from mwsis.pipelines.cli.main import main
from mwsis.pseudolabel.points import PointSetConfig
from mwsis.pipelines.training.samples3d import frame_sample
from mwsis.pipelines.training.train3d import Train3DConfig, load_teacher, train_3d
from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, load_config, read_metrics

TINY = Path(__file__).resolve().parents[2] / "configs" / "train3d-tiny.yaml"


def _cfg(**sets):
    return load_config(Train3DConfig, TINY, [f"{k}={v}" for k, v in sets.items()])


def test_training_writes_run_and_runs_the_pvc_loop(labelled, tmp_path):
    run = tmp_path / "run"
    summary = train_3d(labelled, run, _cfg(epochs=2), show_progress=False)
    assert summary["steps"] == 4 and summary["labels"] == "pvc" and summary["pvc_rounds"] == [1]
    assert (run / "config.yaml").exists() and (run / "run.json").exists()
    assert latest_checkpoint(run).name == "epoch-0002.pt"
    names = {r["name"] for r in read_metrics(run)}
    assert {"loss", "loss_sem", "loss_vote", "lr", "grad_norm"} <= names
    ds = open_dataset(labelled)
    assert list_rounds(labelled, "3d") == [1]
    pvc = LabelShard(ds, "pvc", ds.manifest.shards[0].name)
    assert pvc.metadata["config"]["pvc"]["base"] == "spg" and "predictions/3d/round=1" in pvc.metadata["inputs"]


def test_resume_equals_uninterrupted(labelled, tmp_path):
    other = tmp_path / "ds2"
    shutil.copytree(labelled, other)
    full, part = tmp_path / "full", tmp_path / "part"
    train_3d(labelled, full, _cfg(epochs=3), show_progress=False)
    train_3d(other, part, _cfg(epochs=3), show_progress=False, stop_after_epoch=1)
    assert latest_checkpoint(part).name == "epoch-0001.pt"
    train_3d(other, part, _cfg(epochs=3), resume=True, show_progress=False)
    a, b = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(part))
    assert a["state"] == b["state"]
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    steps = [r["step"] for r in read_metrics(part) if r["name"] == "loss"]
    assert steps == sorted(set(steps)) == list(range(1, a["state"]["step"] + 1))


def test_cli_train_predict_eval(labelled, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(main, ["train-3d", "--data", str(labelled), "--out", str(run), "--config", str(TINY), "--set", "epochs=1", "--set", "pvc.enabled=false"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["predict-3d", "--run", str(run), "--data", str(labelled), "--round", "7"])
    assert r.exit_code == 0, r.output
    assert list_rounds(labelled, "3d") == [7]
    r = runner.invoke(main, ["eval-3d", "--run", str(run), "--data", str(labelled), "--rsc", "--json",
                             str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["frames"] == 4 and {"ap", "ap50", "ap75", "miou", "per_class"} <= set(res) and res["rsc"] is True
    model, cfg = load_teacher(run)
    assert not model.training and cfg.epochs == 1


def test_bad_input_frames_and_mismatched_labels(labelled):
    ds = open_dataset(labelled)
    frame = ds.frame(ds.frame_ids[0], images=False)
    labels = LabelShard(ds, "spg", ds.manifest.shards[0].name).labels(0)
    other = LabelShard(ds, "spg", ds.manifest.shards[0].name).labels(1)
    with pytest.raises(ShardError, match="mismatched label shard"):
        frame_sample(frame, other)
    assert len(frame_sample(frame, labels)) > 100
    frame.points.xyz[:] = 500.0  # every point out of range
    with pytest.raises(ValueError, match=f"frame {frame.frame_id}: no points in range"):
        frame_sample(frame, labels)


def test_the_trainer_and_its_predictions_use_the_configured_point_set(labelled, tmp_path):
    """``points`` (the config's shared section) decides which points are trained on and predicted."""
    ps = PointSetConfig(point_range=(-12.0, -12.0, -3.0, 12.0, 12.0, 4.0))
    ds = open_dataset(labelled)
    frame = ds.frame(ds.frame_ids[0], images=False)
    labels = LabelShard(ds, "spg", ds.manifest.shards[0].name).labels(0)
    s = frame_sample(frame, labels, ps)
    assert s.point_index.tolist() == np.flatnonzero(ps.eligible(frame.points)).tolist()
    assert 0 < len(s) < len(frame_sample(frame, labels))
    data = tmp_path / "narrow"
    shutil.copytree(labelled, data)
    cfg = _cfg(epochs=2, max_steps_per_epoch=1, **{"points.point_range": list(ps.point_range)})
    train_3d(data, tmp_path / "run", cfg, show_progress=False)  # its PVC round exports predictions
    d = open_dataset(data)
    for info in d.manifest.shards:
        for fid, probs in PredictionShard(d, "3d", 1, info.name):
            f = d.frame(fid, images=False)
            assert (~np.isnan(probs).any(axis=1)).tolist() == ps.eligible(f.points).tolist(), fid


def test_twist_labelled_subset_trains_on_its_ground_truth_and_is_recorded(labelled, tmp_path):
    from mwsis.pipelines.training.samples3d import iter_samples

    ds = open_dataset(labelled)
    summary = train_3d(labelled, tmp_path / "run", _cfg(epochs=1, max_steps_per_epoch=1, **{
        "pvc.enabled": "false", "twist.enabled": "true", "twist.label_fraction": 0.5}), show_progress=False)
    chosen = summary["labelled_frames"]
    assert len(chosen) == 2 and set(chosen) < set(ds.frame_ids)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["labelled_frames"] == chosen
    positions = list(range(len(ds.manifest.shards)))
    for s in iter_samples(ds, "spg", positions, gt_frames=frozenset(chosen)):
        spg = next(x for x in iter_samples(ds, "spg", positions) if x.frame_id == s.frame_id)
        if s.frame_id in chosen:
            assert (s.semantic == s.gt_semantic).all() and (s.semantic != spg.semantic).any()
        else:
            assert (s.semantic == spg.semantic).all()
    with pytest.raises(ValueError, match="twist.label_frames: 1 frame id"):
        train_3d(labelled, tmp_path / "run2", _cfg(epochs=1, **{"twist.enabled": "true", "pvc.enabled": "false",
                                                                "twist.label_frames": "[nope]"}), show_progress=False)


def test_a_twist_round_relabels_the_other_frames_from_scored_proposals(labelled, tmp_path):
    data = tmp_path / "twist"
    shutil.copytree(labelled, data)
    sets = {"pvc.enabled": "false", "twist.enabled": "true", "twist.label_fraction": 0.5, "twist.psi_steps": 5,
            "twist.uncovered": "keep"}
    summary = train_3d(data, tmp_path / "run", _cfg(epochs=2, max_steps_per_epoch=2, **sets), show_progress=False)
    assert summary["labels"] == "twist" and summary["twist_rounds"] == [1]
    q = summary["twist_quality"][1]  # per class: what the round kept and dropped, and how much of it is true
    assert set(q) == {"vehicle", "pedestrian", "cyclist"}
    assert sum(v["kept"] + v["dropped"] for v in q.values()) > 0
    assert all(v["kept_true"] <= v["kept"] and v["dropped_true"] <= v["dropped"] for v in q.values())
    ds = open_dataset(data)
    chosen = set(summary["labelled_frames"])
    for info in ds.manifest.shards:
        twist, spg = LabelShard(ds, "twist", info.name), LabelShard(ds, "spg", info.name)
        assert twist.metadata["config"] == {"twist": {"round": 1, "base": "spg"}}
        for i, lab in enumerate(twist):
            assert lab.inst_score is not None and len(lab.centre) >= int(lab.instance.max(initial=0))
            if lab.frame_id in chosen:  # trained on its ground truth: the file keeps its base labels
                assert (lab.semantic == spg.labels(i).semantic).all()
    with pytest.raises(ValueError, match="set pvc.enabled=false"):
        train_3d(data, tmp_path / "run2", _cfg(epochs=2, **{"twist.enabled": "true"}), show_progress=False)


@pytest.mark.parametrize("update", ["proposals", "naive"])
def test_a_twist_round_runs_the_ablations_updates(labelled, tmp_path, update):
    """TWIST's ablation as trained rows: C alone keeps every proposal; the naive update decides per point, so
    the round records no proposal-level decision."""
    data = tmp_path / "twist"
    shutil.copytree(labelled, data)
    sets = {"pvc.enabled": "false", "twist.enabled": "true", "twist.label_fraction": 0.5, "twist.update": update,
            "twist.uncovered": "keep"}
    summary = train_3d(data, tmp_path / "run", _cfg(epochs=2, max_steps_per_epoch=2, **sets), show_progress=False)
    assert summary["labels"] == "twist" and summary["twist_rounds"] == [1]
    q = summary["twist_quality"][1]
    if update == "proposals":
        assert sum(v["kept"] for v in q.values()) > 0 and all(v["dropped"] == 0 for v in q.values())
    else:
        assert all(v == 0 for c in q.values() for v in c.values())
    ds = open_dataset(data)
    for info in ds.manifest.shards:
        for lab in LabelShard(ds, "twist", info.name):
            assert len(lab.centre) == len(lab.inst_score) >= int(lab.instance.max(initial=0))


def test_proposal_members_are_grouped_by_id():
    from mwsis.pipelines.training.twist_round import _members

    proposal = np.array([2, 0, 1, 2, 3, 1, 0, 2, 3])
    assert [m.tolist() for m in _members(proposal)] == [np.flatnonzero(proposal == j).tolist() for j in (1, 2, 3)]
    assert _members(np.zeros(4, np.int32)) == []


def test_twist_label_variants_cover_every_unlabelled_frame(labelled):
    from mwsis.pipelines.training.twist_round import label_variants
    from mwsis.train3d.model import VoteSegmentor
    from mwsis.train3d.twist import RecorrectionNet

    cfg = _cfg(**{"twist.enabled": "true", "twist.psi_steps": 2})
    torch.manual_seed(0)
    model = VoteSegmentor(cfg.model, cfg.loss).eval()
    psi = RecorrectionNet(model.conv_seg.in_features, cfg.twist.psi)
    ds = open_dataset(labelled)
    out = label_variants(model, psi, torch.optim.AdamW(psi.parameters()), ds, cfg, {ds.frame_ids[0]},
                         torch.device("cpu"))
    assert set(out) == {"naive", "C", "B+C"}
    for rows in out.values():
        assert [f.frame_id for f, _, _ in rows] == ds.frame_ids[1:]
        for _, s, (sem, inst, centre, score) in rows:
            assert len(sem) == len(inst) == len(s) and len(centre) == len(score) >= int(inst.max(initial=0))


def test_few_full_labels_train_on_the_labelled_frames_alone_from_given_weights(labelled, tmp_path):
    """MWSIS Fig. 7's rows: a box-supervised run fine-tuned on the labelled frames alone (init_weights)."""
    box = tmp_path / "box"
    train_3d(labelled, box, _cfg(epochs=1, max_steps_per_epoch=1, **{"pvc.enabled": "false"}), show_progress=False)
    sets = {"pvc.enabled": "false", "twist.enabled": "true", "twist.label_fraction": 0.5,
            "twist.labelled_only": "true", "init_weights": str(box), "frames_per_step": 1}
    summary = train_3d(labelled, tmp_path / "fine", _cfg(epochs=1, **sets), show_progress=False)
    assert summary["steps"] == 2 == len(summary["labelled_frames"])  # one step per labelled frame
    start = load_checkpoint(latest_checkpoint(box))["model"]
    fine = load_checkpoint(latest_checkpoint(tmp_path / "fine"))["model"]
    assert any(not torch.equal(start[k], fine[k]) for k in start)
    # at learning rate 0 the weights are the given ones (BN statistics still move)
    still = train_3d(labelled, tmp_path / "still", _cfg(epochs=1, **{**sets, "max_lr": 0.0}), show_progress=False)
    kept = load_checkpoint(latest_checkpoint(tmp_path / "still"))["model"]
    assert still["steps"] == 2 and all(torch.equal(start[k], kept[k]) for k in start if "running" not in k
                                       and "num_batches" not in k)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        train_3d(labelled, tmp_path / "x", _cfg(epochs=1, **{**sets, "init_weights": str(tmp_path)}),
                 show_progress=False)
    # step-matched: the labelled frames are cycled for as many steps as an epoch over all frames
    full = train_3d(labelled, tmp_path / "all", _cfg(epochs=1, **{"pvc.enabled": "false", "frames_per_step": 1}),
                    show_progress=False)
    matched = train_3d(labelled, tmp_path / "matched", _cfg(epochs=1, **{**sets, "twist.match_full_steps": "true"}),
                       show_progress=False)
    assert matched["steps"] == full["steps"] == len(open_dataset(labelled).frame_ids) > 2


def test_samples_carry_the_centres_of_scored_labels(labelled):
    from mwsis.data.schema.labels import FrameLabels

    ds = open_dataset(labelled)
    frame = ds.frame(ds.frame_ids[0], images=False)
    spg = LabelShard(ds, "spg", ds.manifest.shards[0].name).labels(0)
    k = int(spg.instance.max())
    centre = np.full((k, 3), np.nan, np.float32)
    centre[0] = [1.0, 2.0, 3.0]
    scored = FrameLabels(spg.frame_id, spg.semantic, spg.instance, centre=centre, inst_score=np.ones(k, np.float32))
    s = frame_sample(frame, scored)
    one = s.instance == 1
    assert one.any() and np.allclose(s.xyz[one] + s.centre_offset[one], [1.0, 2.0, 3.0], atol=1e-5)
    assert np.isnan(s.centre_offset[~one]).all()
    assert frame_sample(frame, spg).centre_offset is None


def test_ddp_two_processes_with_torchrun(labelled, tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank trains on its own shards, rank 0 checkpoints."""
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           "-m", "mwsis.pipelines.cli.main", "train-3d", "--data", str(labelled), "--out", str(run), "--config", str(TINY),
           "--set", "epochs=1", "--set", "pvc.enabled=false"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = load_checkpoint(latest_checkpoint(run))
    assert saved["state"]["step"] == 1  # 2 shards of 2 frames, one shard per rank, 2 frames per step
