"""Full supervision as a label source (the upper-bound rows of MWSIS Tab. 1 and 5): ``train-3d --labels gt``
trains on the per-point ground truth, ``train-2d --masks gt`` on the true instance masks."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mwsis.data.store import ShardError, open_dataset
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.training.samples2d import box_gt_masks, camera_samples
from mwsis.pipelines.training.samples3d import GROUND_TRUTH, gt_labels, iter_samples
from mwsis.pipelines.training.samples2d import prepare_sample
from mwsis.pipelines.training.train2d import Train2DConfig, rle_target_maps
from mwsis.pipelines.training.run import load_config, read_metrics
from mwsis.train2d.config import Model2DConfig
from mwsis.train2d.model import BoxInstModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_gt_labels_are_the_frames_ground_truth(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    samples = list(iter_samples(ds, GROUND_TRUTH, list(range(len(ds.manifest.shards)))))
    assert len(samples) == 4
    for s in samples:
        np.testing.assert_array_equal(s.semantic, s.gt_semantic)
        np.testing.assert_array_equal(s.instance, s.gt_instance)
        assert set(np.unique(s.semantic)) >= {0, 3}  # vehicles and background at least


def test_train_3d_on_gt_runs_without_pvc_and_frames_without_gt_are_named(tiny_dataset, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train-3d", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"), "--labels", "gt",
                             "--config", "synthetic-tiny", "--set", "epochs=2", "--set", "max_steps_per_epoch=1"])
    assert r.exit_code == 0, r.output
    assert '"labels": "gt"' in r.output and '"pvc_rounds": []' in r.output  # PVC skipped: nothing to correct

    # a frame without per-point ground truth: the error names the shard, the frame and the field
    ds = open_dataset(tiny_dataset)
    info = ds.manifest.shards[0]
    frame = ds.frame(ds.frame_ids[0], images=False)
    frame.gt = dataclasses.replace(frame.gt, point_semantic=None)
    with pytest.raises(ShardError, match=rf"frame {frame.frame_id}: --labels gt needs .*point_semantic"):
        gt_labels(frame, info.path)


def test_gt_masks_follow_boxes_and_map_onto_the_input(tiny_dataset):
    ds = open_dataset(tiny_dataset)
    frame = ds.frame(ds.frame_ids[0], images=True)
    samples = camera_samples(frame, gt_masks=True)
    assert samples and all(len(s.gt_masks) == len(s.boxes) for s in samples)
    s = samples[0]
    from pycocotools import mask as mask_utils

    for rle, box in zip(s.gt_masks, s.boxes):  # each mask lies inside its own box
        m = mask_utils.decode(rle).astype(bool)
        ys, xs = np.nonzero(m)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1
    cfg = load_config(Train2DConfig, CONFIGS / "train2d-tiny.yaml", ["masks=gt"])
    t = prepare_sample(s, cfg, np.random.default_rng(0), train=False)
    from mwsis.train2d.transforms import collate

    images, targets = collate([t])
    maps, valid = rle_target_maps(targets, "gt_masks", images)
    assert maps[0].shape == (len(s.boxes), images.shape[-2] // 4, images.shape[-1] // 4) and bool(valid[0].all())
    # the mapped masks' area scales with the image: each true mask keeps most of its area at stride 4
    area = np.array([mask_utils.area(r) for r in s.gt_masks], float) * (t["transform"].scale[0] / 4) ** 2
    assert np.all(maps[0].sum((1, 2)).numpy() > 0.3 * area)

    # a box whose object has no true mask: a clear error naming frame, camera, box and field
    frame.boxes2d.object_id[np.flatnonzero(frame.boxes2d.camera_id == s.camera_id)[0]] = 987654
    with pytest.raises(ValueError, match=r"object_id 987654\) has no ground-truth mask \(field masks2d\)"):
        box_gt_masks(frame, s.camera_id, np.flatnonzero(frame.boxes2d.camera_id == s.camera_id))


def test_mask_targets_replace_the_box_losses():
    torch.manual_seed(0)
    model = BoxInstModel(Model2DConfig.tiny())
    images = torch.randn(1, 3, 64, 96)
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    target = {"boxes": boxes, "classes": torch.tensor([0]), "image_size": (64, 96)}
    weak = model(images, [dict(target)], iteration=0)
    assert "loss_prj" in weak and "loss_mask" not in weak
    gt = torch.zeros(1, 16, 24)
    gt[0, 3:10, 3:12] = 1
    full = model(images, [dict(target, mask_targets=gt)], iteration=0)
    assert "loss_mask" in full and "loss_prj" not in full and "loss_pairwise" not in full
    assert 0 < float(full["loss_mask"].detach()) <= 1  # a dice loss
    full["loss_mask"].backward()  # and it reaches the mask head
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.mask_branch.parameters())


def test_train_2d_masks_gt_cli(tiny_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    r = CliRunner().invoke(main, ["train-2d", "--data", str(out), "--out", str(tmp_path / "run"), "--masks", "gt",
                                  "--config", "synthetic-tiny", "--set", "epochs=1", "--set", "max_steps_per_epoch=2"])
    assert r.exit_code == 0, r.output
    names = {m["name"] for m in read_metrics(tmp_path / "run")}
    assert "loss_mask" in names and "loss_prj" not in names
