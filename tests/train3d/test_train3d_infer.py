"""Test-time semantics and vote-shifted CCL instances (train3d/infer.py)."""
from __future__ import annotations

import numpy as np
import torch

from mwsis.train3d.infer import InferConfig, predict, predict_batch, predict_semantic
from mwsis.train3d.losses import encode_votes
from mwsis.train3d.model import make_batch


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


def test_thresholded_argmax():
    probs = np.array([[0.9, 0.2, 0.1], [0.5, 0.4, 0.3], [0.2, 0.51, 0.6], [0.1, 0.1, 0.1]])
    assert predict_semantic(probs).tolist() == [0, 3, 2, 3]
    assert predict_semantic(probs).dtype == np.int8


def _scene():
    """Two cars whose centres are 3 m apart (> the 0.6 m radius), a pedestrian, background points.

    Votes point at each object's centre (1 cm noise)."""
    rng = np.random.default_rng(0)
    centres = {1: np.array([10.0, 0.0, 0.5]), 2: np.array([10.0, 3.0, 0.5]), 3: np.array([5.0, -5.0, 0.9])}
    cls = {1: 0, 2: 0, 3: 1}
    xyz, inst, sem = [], [], []
    for k, c in centres.items():
        n = 40 if cls[k] == 0 else 15
        spread = (2.0, 1.0, 0.6) if cls[k] == 0 else (0.3, 0.3, 0.8)
        xyz.append(c + rng.uniform(-0.5, 0.5, (n, 3)) * spread)
        inst += [k] * n
        sem += [cls[k]] * n
    xyz.append(rng.uniform(-20, 20, (30, 3)))
    inst += [0] * 30
    sem += [3] * 30
    xyz, inst, sem = np.concatenate(xyz), np.array(inst), np.array(sem)
    n = len(xyz)
    probs = np.full((n, 3), 0.05)
    fg = sem < 3
    probs[fg, sem[fg]] = rng.uniform(0.6, 0.99, fg.sum())
    offsets = np.zeros((n, 3, 3))
    for k, c in centres.items():
        m = inst == k
        offsets[m, cls[k]] = c - xyz[m] + rng.normal(0, 0.01, (m.sum(), 3))  # votes land within ~1 cm
    votes = encode_votes(torch.as_tensor(offsets)).numpy()
    return xyz.astype(np.float32), inst, sem, probs, votes


def test_two_cars_and_a_pedestrian():
    xyz, inst, sem, probs, votes = _scene()
    pred = predict(_logit(probs), votes, xyz)
    assert pred.semantic.dtype == np.int8 and pred.instance.dtype == np.int32
    assert np.array_equal(pred.semantic, sem)
    assert len(pred.inst_class) == 3 and sorted(pred.inst_class.tolist()) == [0, 0, 1]
    for k in (1, 2, 3):  # each GT object is exactly one predicted instance
        ids = np.unique(pred.instance[inst == k])
        assert len(ids) == 1 and ids[0] > 0
        assert np.array_equal(pred.instance == ids[0], inst == k)
        j = int(pred.inst_class[ids[0] - 1])
        assert j == sem[inst == k][0]
        assert np.isclose(pred.inst_score[ids[0] - 1], probs[inst == k, j].mean(), atol=1e-6)
    assert (pred.instance[inst == 0] == 0).all()


def test_without_votes_the_pedestrian_fragments():
    xyz, inst, sem, probs, votes = _scene()
    pred = predict(_logit(probs), np.zeros_like(votes), xyz)
    # 15 raw points spread over 0.3 m x 0.3 m are not one 0.1 m single-link cluster: the votes do the grouping
    assert (pred.inst_class == 1).sum() > 1


def test_min_points_filter():
    xyz, inst, sem, probs, votes = _scene()
    pred = predict(_logit(probs), votes, xyz, InferConfig(min_points=20))
    assert pred.inst_class.tolist() == [0, 0]  # the 15-point pedestrian is dropped ...
    assert (pred.instance[inst == 3] == 0).all() and (pred.semantic[inst == 3] == 1).all()  # ... but keeps its class
    assert sorted(np.unique(pred.instance).tolist()) == [0, 1, 2]


def test_predict_batch_splits_frames_and_handles_invalid():
    xyz, inst, sem, probs, votes = _scene()
    n = len(xyz)
    batch = make_batch([dict(xyz=xyz, feats=np.zeros((n, 2))), dict(xyz=xyz[:50], feats=np.zeros((50, 2)))])
    logits = torch.as_tensor(np.concatenate([_logit(probs), _logit(probs[:50])]), dtype=torch.float32)
    v = torch.as_tensor(np.concatenate([votes, votes[:50]]), dtype=torch.float32)
    valid = torch.ones(n + 50, dtype=torch.bool)
    valid[n] = False  # first point of frame 2 is outside the voxel range
    preds = predict_batch(dict(sem_logits=logits, votes=v, valid=valid), batch)
    assert len(preds) == 2 and len(preds[0].semantic) == n and len(preds[1].semantic) == 50
    assert len(preds[0].inst_class) == 3
    assert preds[1].semantic[0] == 3 and preds[1].instance[0] == 0
    assert np.array_equal(preds[1].semantic[1:], sem[1:50])
