"""The noisy 2D oracle of the controlled 2D -> 3D experiment (issue 16)."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from mwsis.crossmodal.cscs import hard_labels_2d
from mwsis.data.prediction_store import PredictionShard, list_rounds
from mwsis.data.store import open_dataset
from mwsis.pipelines.experiments.oracle import oracle_point_probs, write_noisy_oracle_2d


def test_oracle_probabilities_follow_the_truth_and_the_camera_classes():
    rng = np.random.default_rng(0)
    n = 20000
    semantic = rng.integers(0, 4, n)  # 3 = background
    cam = np.stack([np.ones(n, np.int64), np.where(rng.random(n) < 0.5, 2, 0)], 1)
    present = {1: np.array([True, True, False]), 2: np.array([True, True, True])}
    p = oracle_point_probs(semantic, cam, present, rng, frac_true=0.7)
    assert np.isnan(p[:, 0, 2]).all() and np.isnan(p[cam[:, 1] == 0, 1]).all()
    assert np.isfinite(p[cam[:, 1] == 2, 1]).all()
    labels, weight = hard_labels_2d(torch.as_tensor(p[:, :1]))  # the first projection (camera 1) alone
    labels, weight = labels.numpy(), weight.numpy()
    fair = semantic != 2  # class 2 has no box in camera 1
    right = labels[fair] == semantic[fair]
    # truthful points (70 %) are right; a wrong guess is right only by chance (it lands on the true class or,
    # below 0.5, on background)
    assert 0.7 < right.mean() < 0.9
    assert np.isclose(weight[fair][right].mean(), 0.85, atol=0.06)  # 0.9 and, for background, 1 - 0.1
    assert weight[fair][~right].max() <= 0.6 + 1e-6  # a wrong label is never confident


def test_write_round(tiny_dataset, tmp_path):
    ds_path = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds_path)
    frames = write_noisy_oracle_2d(ds_path, 900, seed=1)
    ds = open_dataset(ds_path)
    assert frames == sum(s.frames for s in ds.manifest.shards) and list_rounds(ds_path, "2d") == [900]
    fid, probs = PredictionShard(ds, "2d", 900, ds.manifest.shards[0].name).predictions(0)
    frame = ds.frame(fid, images=False)
    assert probs.shape == (len(frame.points), 2, 3)
    seen = frame.points.cam_id[:, 0] > 0
    assert np.isfinite(probs[seen, 0]).any(1).mean() > 0.5 and np.isnan(probs[~seen, 0]).all()


def test_oracle_3d_features_follow_instances(tiny_dataset, tmp_path):
    from mwsis.pipelines.experiments.oracle import oracle_point_features, write_oracle_3d

    sem = np.array([0, 0, 1, 3, 3, -1])
    inst = np.array([5, 5, 7, 0, 0, 0])
    f = oracle_point_features(sem, inst)
    assert np.allclose(f[0], f[1]) and np.allclose(f[3], f[4]) and not np.allclose(f[0], f[2])
    assert np.isnan(f[5]).all() and np.allclose(np.linalg.norm(f[:5], axis=1), 1.0)
    ds_path = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds_path)
    write_oracle_3d(ds_path, 901)
    assert list_rounds(ds_path, "3d") == [901] and list_rounds(ds_path, "3dfeat") == [901]
    ds = open_dataset(ds_path)
    fid, p = PredictionShard(ds, "3d", 901, ds.manifest.shards[0].name).predictions(0)
    frame = ds.frame(fid, images=False)
    obj = (frame.gt.point_semantic >= 0) & (frame.gt.point_semantic < 3)
    assert (p[obj].argmax(1) == frame.gt.point_semantic[obj]).all()
