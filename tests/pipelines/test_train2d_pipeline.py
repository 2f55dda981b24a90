"""The 2D trainer end to end on tiny synthetic data, CSCS in both directions, predict-2d and eval-2d."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from mwsis.data.prediction_store import PredictionShard, list_rounds
from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.experiments.pseudo_quality import pseudo_mask_quality
from mwsis.pipelines.training.samples2d import camera_samples
from mwsis.pipelines.predict.predict2d import coco_mask_ap
from mwsis.pipelines.training.train2d import Train2DConfig, train_2d
from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, load_config, read_metrics

TINY2D = Path(__file__).resolve().parents[2] / "configs" / "train2d-tiny.yaml"
TINY3D = Path(__file__).resolve().parents[2] / "configs" / "train3d-tiny.yaml"


@pytest.fixture
def ds(tiny_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


def test_coco_mask_ap_known_case():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:12, 3:20] = 1
    other = np.zeros_like(mask)
    other[14:20, 0:30] = 1
    rle = {k: (v.decode() if isinstance(v, bytes) else v)
           for k, v in mask_utils.encode(np.asfortranarray(mask)).items()}
    images = [{"id": 1, "height": 20, "width": 30}]
    gts = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 170.0, "iscrowd": 0,
            "bbox": [3, 2, 17, 10]}]
    perfect = coco_mask_ap(images, gts, [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 0.9}])
    assert perfect["ap"] == pytest.approx(1.0) and perfect["per_class"]["vehicle"]["ap50"] == pytest.approx(1.0)
    orle = {k: (v.decode() if isinstance(v, bytes) else v)
            for k, v in mask_utils.encode(np.asfortranarray(other)).items()}
    wrong = coco_mask_ap(images, gts, [{"image_id": 1, "category_id": 1, "segmentation": orle, "score": 0.9}])
    assert wrong["ap"] == 0.0
    # the box AP diagnostic of evaluate_2d: the same call on boxes (GT boxes from the masks)
    box = coco_mask_ap(images, gts, [{"image_id": 1, "category_id": 1, "bbox": [3, 2, 17, 10], "score": 0.9}], "bbox")
    assert box["ap"] == pytest.approx(1.0)


def test_train_resume_predict_eval_and_cscs_both_ways(ds, tmp_path):
    runner = CliRunner()
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = load_config(Train2DConfig, TINY2D, ["epochs=2", "max_steps_per_epoch=2"])
    train_2d(ds, full, cfg, show_progress=False)
    train_2d(ds, part, cfg, show_progress=False, stop_after_epoch=1)
    train_2d(ds, part, cfg, resume=True, show_progress=False)
    a, b = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(part))
    assert a["state"] == b["state"] == {"epoch": 2, "step": 4}
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    names = {r["name"] for r in read_metrics(full)}
    assert {"loss", "loss_prj", "loss_pairwise", "loss_pseudo", "lr"} <= names

    r = runner.invoke(main, ["predict-2d", "--run", str(full), "--data", str(ds), "--round", "3"])
    assert r.exit_code == 0, r.output
    d = open_dataset(ds)
    p = PredictionShard(d, "2d", 3, d.manifest.shards[0].name)
    fid, probs = p.predictions(0)
    frame = d.frame(fid, images=False)
    assert probs.shape == (len(frame.points), 2, 3)
    seen = frame.points.cam_id[:, 0] > 0
    assert np.isfinite(probs[seen, 0]).any(1).mean() > 0.95 and np.isnan(probs[~seen, 0]).all()
    # a class without a box in the point's camera has no teacher value
    cams = {s.camera_id: set(s.classes.tolist()) for s in camera_samples(d.frame(fid, images=True), with_empty=True)}
    for n in np.flatnonzero(seen)[:200]:
        present = cams[int(frame.points.cam_id[n, 0])]
        assert all(np.isnan(probs[n, 0, c]) != (c in present) for c in range(3))
    assert ((probs[seen, 0] >= 0) & (probs[seen, 0] <= 1)).all()

    r = runner.invoke(main, ["eval-2d", "--run", str(full), "--data", str(ds), "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["images"] == 8 and res["gt_instances"] > 5 and "ap" in res

    # CSCS 2D -> 3D: the 3D trainer reads round 3 of predictions/2d and logs the loss
    r = runner.invoke(main, ["train-3d", "--data", str(ds), "--out", str(tmp_path / "r3"), "--config", str(TINY3D),
                             "--labels", "spg", "--set", "epochs=1", "--set", "pvc.enabled=false", "--cscs-2d", "3"])
    assert r.exit_code == 1 and "labels/spg" in r.output  # the spg labels must exist first
    runner.invoke(main, ["pseudolabels", "--data", str(ds), "--stages", "spg", "--no-eval"])
    r = runner.invoke(main, ["train-3d", "--data", str(ds), "--out", str(tmp_path / "r3"), "--config", str(TINY3D),
                             "--set", "epochs=1", "--set", "pvc.enabled=false", "--cscs-2d", "latest"])
    assert r.exit_code == 0, r.output
    cscs = [row["value"] for row in read_metrics(tmp_path / "r3") if row["name"] == "loss_cscs"]
    # soft CSCS: an untrained 2D teacher's probabilities of the classes in each camera sit in [0.3, 0.7],
    # where the soft loss ignores them (absent classes carry no teacher at all)
    assert cscs and all(np.isfinite(cscs))
    # the hard-label form of Joint 2D-3D WSSS learns from the same round
    r = runner.invoke(main, ["train-3d", "--data", str(ds), "--out", str(tmp_path / "r3h"), "--config", str(TINY3D),
                             "--set", "epochs=1", "--set", "pvc.enabled=false", "--cscs-2d", "latest",
                             "--set", "cscs.form=argmax", "--set", "cscs.confidence_weighting=true"])
    assert r.exit_code == 0, r.output
    hard = [row["value"] for row in read_metrics(tmp_path / "r3h") if row["name"] == "loss_cscs"]
    assert hard and all(np.isfinite(hard)) and max(hard) > 0

    # CSCS 3D -> 2D: the 2D trainer reads the 3D teacher's round
    r = runner.invoke(main, ["predict-3d", "--run", str(tmp_path / "r3"), "--data", str(ds), "--round", "1"])
    assert r.exit_code == 0 and list_rounds(ds, "3d") == [1]
    r = runner.invoke(main, ["train-2d", "--data", str(ds), "--out", str(tmp_path / "r4"), "--config", str(TINY2D),
                             "--set", "epochs=1", "--set", "max_steps_per_epoch=2", "--cscs-3d", "latest"])
    assert r.exit_code == 0, r.output
    assert any(row["name"] == "loss_cscs_3d_to_2d" for row in read_metrics(tmp_path / "r4"))


def test_optimizer_groups_follow_the_authors():
    """SGD by default with weight decay 0 on every norm layer only (method.md §10 "Optimisers"); AdamW with the
    controller at its lr factor for the CPU experiment (configs/cpu-bench.yaml)."""
    from torch import nn

    from mwsis.pipelines.training.train2d import make_optimizer
    from mwsis.train2d.config import Model2DConfig
    from mwsis.train2d.model import BoxInstModel

    model = BoxInstModel(Model2DConfig.tiny())
    opt = make_optimizer(model, Train2DConfig())
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay) == sum(1 for p in model.parameters() if p.requires_grad)
    norms = [p for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for p in m.parameters()]
    assert norms and all(decay[id(p)] == 0.0 for p in norms)
    for p in (model.head.cls_logits.weight, model.head.cls_logits.bias, model.head.controller.weight):
        assert decay[id(p)] == 1e-4  # the authors decay biases and conv weights
    assert {g["lr"] for g in opt.param_groups} == {0.01}

    cfg = Train2DConfig(optimizer="adamw", lr=1e-3, controller_lr_mult=0.05, bias_decay=False)
    opt = make_optimizer(model, cfg)
    assert type(opt) is torch.optim.AdamW
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert lr[id(model.head.controller.weight)] == pytest.approx(5e-5) and lr[id(model.head.cls_logits.weight)] == 1e-3
    assert decay[id(model.head.cls_logits.bias)] == 0.0 and decay[id(model.head.cls_logits.weight)] == 1e-4
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(model, Train2DConfig(optimizer="lamb"))


def test_boxinst_row_skips_the_teacher_forward(ds, tmp_path, monkeypatch):
    """Without IPG the EMA teacher's pseudo masks feed no loss: the trainer does not compute them."""
    from mwsis.train2d.model import BoxInstModel

    calls = []
    orig = BoxInstModel.ipg_teacher_outputs
    monkeypatch.setattr(BoxInstModel, "ipg_teacher_outputs", lambda self, *a: calls.append(1) or orig(self, *a))
    sets = ["epochs=1", "max_steps_per_epoch=2"]
    train_2d(ds, tmp_path / "a", load_config(Train2DConfig, TINY2D, [*sets, "model.ipg.enabled=false"]),
             show_progress=False)
    assert calls == []
    train_2d(ds, tmp_path / "b", load_config(Train2DConfig, TINY2D, sets), show_progress=False)
    assert len(calls) == 2


def test_sim_run_resumes_bit_identically_with_its_prototypes_and_paste_bank(ds, tmp_path):
    """SIM's prototype bank is part of the checkpoint: a stopped and resumed run ends where an uninterrupted
    one does, prototypes included; the pseudo-mask IoU diagnostic is logged at its steps."""
    full, part = tmp_path / "full", tmp_path / "part"
    cfg = load_config(Train2DConfig, TINY2D, ["epochs=2", "max_steps_per_epoch=2", "model.sim.enabled=true",
                                              "model.sim.proto_momentum=0.5", "track_pseudo_iou=2",
                                              "model.ipg.tau_high=0.4",  # the random-init masks pass it
                                              "model.sim.copy_paste.enabled=true", "model.sim.copy_paste.min_score=0"])
    train_2d(ds, full, cfg, show_progress=False)
    train_2d(ds, part, cfg, show_progress=False, stop_after_epoch=1)
    train_2d(ds, part, cfg, resume=True, show_progress=False)
    a, b = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(part))
    assert a["sim_prototypes"]["initialized"].any()
    for part_name in ("model", "sim_prototypes"):
        for k in a[part_name]:
            torch.testing.assert_close(a[part_name][k], b[part_name][k], rtol=0, atol=0, msg=k)
    rows = read_metrics(full)
    ious = [r for r in rows if r["name"] == "pseudo_iou"]
    assert [r["step"] for r in ious] == [1, 3]  # steps 0 and 2, logged after them
    assert all(0.0 <= r["value"] <= 1.0 for r in ious)
    assert {"loss_pseudo"} <= {r["name"] for r in rows}
    # the copy-paste bank fills from step 0 and is pasted from step 1 on; it is checkpointed too
    paste = [r["value"] for r in rows if r["name"] == "loss_paste"]
    assert len(paste) == 4 and paste[0] == 0.0 and max(paste[1:]) > 0
    # the pseudo-mask quality of experiment-2d, from the epoch checkpoints (SIM's maps with their prototypes)
    q = pseudo_mask_quality(full, ds, stride=1)
    assert [r["epoch"] for r in q] == [1, 2] and all(0.0 <= r["iou"] <= 1.0 and r["boxes"] > 5 for r in q)
    assert (full / "pseudo_quality.json").exists() and pseudo_mask_quality(full, ds, stride=1) == q
    ea, eb = a["sim_paste_bank"]["entries"], b["sim_paste_bank"]["entries"]
    assert len(ea) == len(eb) > 0
    assert all(torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["mask"], y["mask"])
               for e1, e2 in zip(ea, eb) for x, y in zip(e1, e2))


def test_feature_correlation_reads_predict_3d_features_and_resumes(ds, tmp_path):
    """Joint 2D-3D WSSS's 3D -> 2D correlation: predict-3d --features writes the 3D teacher's features as
    predictions/3dfeat (unit 16-d vectors beside the probabilities of the same round); the 2D trainer learns
    from them, and a stopped and resumed run ends bit-identical."""
    runner = CliRunner()
    runner.invoke(main, ["pseudolabels", "--data", str(ds), "--stages", "spg", "--no-eval"])
    r = runner.invoke(main, ["train-3d", "--data", str(ds), "--out", str(tmp_path / "r3"), "--config", str(TINY3D),
                             "--labels", "spg", "--set", "epochs=1", "--set", "pvc.enabled=false"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["predict-3d", "--run", str(tmp_path / "r3"), "--data", str(ds), "--round", "2",
                             "--features"])
    assert r.exit_code == 0, r.output
    d = open_dataset(ds)
    assert list_rounds(ds, "3d") == [2] and list_rounds(ds, "3dfeat") == [2]
    name = d.manifest.shards[0].name
    fid, feats = PredictionShard(d, "3dfeat", 2, name).predictions(0)
    _, probs = PredictionShard(d, "3d", 2, name).predictions(0)
    assert feats.shape == (len(probs), 16)
    has = ~np.isnan(probs).any(1)
    assert has.any() and np.array_equal(~np.isnan(feats).any(1), has)
    np.testing.assert_allclose(np.linalg.norm(feats[has].astype(np.float32), axis=1), 1.0, atol=2e-3)

    full, part = tmp_path / "full", tmp_path / "part"
    cfg = load_config(Train2DConfig, TINY2D, ["epochs=2", "max_steps_per_epoch=2", "cscs_3d=2",
                                              "model.cscs.affinity_weight=1.0", "model.cscs.affinity_pairs=256"])
    train_2d(ds, full, cfg, show_progress=False)
    train_2d(ds, part, cfg, show_progress=False, stop_after_epoch=1)
    train_2d(ds, part, cfg, resume=True, show_progress=False)
    a, b = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(part))
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    aff = [row["value"] for row in read_metrics(full) if row["name"] == "loss_affinity_3d_to_2d"]
    assert len(aff) == 4 and all(np.isfinite(aff)) and max(aff) > 0
    # without the features the option fails before training, naming what to run
    with pytest.raises(Exception, match="cscs_3d"):
        load_config(Train2DConfig, TINY2D, ["model.cscs.affinity_weight=1.0"])


def test_sim_with_copy_paste_under_ddp(ds, tmp_path):
    """torchrun, 2 CPU ranks (gloo): each rank keeps its own prototype and paste banks; rank 0 checkpoints its
    own."""
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29563",
           "-m", "mwsis.pipelines.cli.main", "train-2d", "--data", str(ds), "--out", str(run), "--config", str(TINY2D),
           "--set", "epochs=1", "--set", "max_steps_per_epoch=2", "--set", "model.sim.enabled=true",
           "--set", "model.ipg.tau_high=0.4", "--set", "model.sim.copy_paste.enabled=true",
           "--set", "model.sim.copy_paste.min_score=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = load_checkpoint(latest_checkpoint(run))
    assert saved["state"]["step"] == 2 and saved["sim_prototypes"]["initialized"].any()
    assert len(saved["sim_paste_bank"]["entries"]) > 0
    assert any(row["name"] == "loss_paste" and row["value"] > 0 for row in read_metrics(run))
