"""Focal loss, vote targets and vote loss (train3d/losses.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mwsis.train3d.losses import (LossConfig, decode_votes, encode_votes, focal_loss, instance_centres,
                                  segmentor_loss, vote_loss, vote_targets)


def _focal_direct(logits, target, gamma, alpha):
    """Element-by-element textbook formula, in float64 Python."""
    total, count = 0.0, 0
    for i in range(logits.shape[0]):
        if target[i] < 0:
            continue
        for c in range(logits.shape[1]):
            t = 1.0 if target[i] == c else 0.0
            p = 1.0 / (1.0 + math.exp(-float(logits[i, c])))
            pt = p if t == 1.0 else 1.0 - p  # probability of the true outcome
            a = alpha if t == 1.0 else 1.0 - alpha
            total += -a * (1.0 - pt) ** gamma * math.log(pt)
            count += 1
    return total / count


def test_focal_loss_matches_direct_formula():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(0, 2, (40, 3)))
    target = torch.tensor(rng.integers(-1, 4, 40))  # -1 ignore, 3 background
    got = focal_loss(logits, target, gamma=3.0, alpha=0.8)
    assert abs(float(got) - _focal_direct(logits.numpy(), target.numpy(), 3.0, 0.8)) < 1e-9
    assert LossConfig().gamma == 3.0 and LossConfig().alpha == 0.8 and LossConfig().sem_weight == 100.0


def test_background_target_is_all_zero():
    logits = torch.tensor([[-9.0, -9.0, -9.0], [9.0, -9.0, -9.0]])
    assert focal_loss(logits, torch.tensor([3, 0]), 3.0, 0.8) < 1e-6
    assert focal_loss(logits, torch.tensor([0, 3]), 3.0, 0.8) > 0.1


def test_ignored_points_get_no_gradient_and_no_loss():
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(0, 1, (10, 3)), requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, -1, -1, 0, 3, -1, 2])
    loss = focal_loss(logits, target, 3.0, 0.8)
    loss.backward()
    ign = target == -1
    assert (logits.grad[ign] == 0).all() and (logits.grad[~ign].abs().sum(1) > 0).all()
    # changing ignored logits does not change the loss
    logits2 = logits.detach().clone()
    logits2[ign] = 50.0
    assert torch.allclose(focal_loss(logits2, target, 3.0, 0.8), loss.detach())
    # a mask (e.g. out-of-range points) acts like IGNORE
    mask = torch.ones(10, dtype=torch.bool)
    mask[0] = False
    t2 = target.clone()
    t2[0] = -1
    masked = focal_loss(logits.detach(), target, 3.0, 0.8, mask=mask)
    assert torch.allclose(masked, focal_loss(logits.detach(), t2, 3.0, 0.8))
    assert focal_loss(logits, torch.full((10,), -1), 3.0, 0.8) == 0


def test_encode_decode_round_trip():
    d = torch.tensor([-4.0, -0.25, 0.0, 0.01, 2.25, 9.0])
    assert torch.allclose(encode_votes(d), torch.tensor([-2.0, -0.5, 0.0, 0.1, 1.5, 3.0]))
    assert torch.allclose(decode_votes(encode_votes(d)), d)
    p = torch.randn(100)
    assert torch.allclose(encode_votes(decode_votes(p)), p, atol=1e-6)


def test_vote_targets_point_at_instance_means_per_frame():
    xyz = torch.tensor([[0.0, 0, 0], [2, 0, 0], [10, 10, 1], [10, 12, 3], [5, 5, 5], [100, 0, 0]])
    inst = torch.tensor([1, 1, 2, 2, 0, 1])
    bidx = torch.tensor([0, 0, 0, 0, 0, 1])  # instance 1 of frame 1 is a different object
    c = instance_centres(xyz, inst, bidx)
    assert torch.allclose(c[:4], torch.tensor([[1.0, 0, 0], [1, 0, 0], [10, 11, 2], [10, 11, 2]]))
    assert torch.isnan(c[4]).all() and torch.allclose(c[5], xyz[5])
    vt = vote_targets(xyz, inst, bidx)
    assert torch.allclose(xyz[:4] + decode_votes(vt[:4]), c[:4])
    assert torch.allclose(vt[0], torch.tensor([1.0, 0, 0])) and torch.allclose(vt[1], torch.tensor([-1.0, 0, 0]))
    assert (vt[4:] == 0).all()
    # without batch_idx both "instance 1" groups merge
    merged = instance_centres(xyz, inst)
    assert torch.allclose(merged[0], torch.tensor([34.0, 0, 0]))


def test_vote_loss_uses_target_class_channel_and_instance_points_only():
    votes = torch.zeros(3, 3, 3, requires_grad=True)
    target_cls = torch.tensor([1, 2, 3])
    vt = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([True, True, False])
    loss = vote_loss(votes, target_cls, vt, mask)
    assert torch.isclose(loss, torch.tensor(6.0 / 6))
    loss.backward()
    g = votes.grad
    assert g[0, 1].abs().sum() > 0 and g[1, 2].abs().sum() > 0
    assert g[0, [0, 2]].abs().sum() == 0 and g[1, :2].abs().sum() == 0 and g[2].abs().sum() == 0


def test_segmentor_loss_weights_and_valid_mask():
    rng = np.random.default_rng(2)
    n = 30
    out = dict(sem_logits=torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32),
               votes=torch.tensor(rng.normal(size=(n, 3, 3)), dtype=torch.float32),
               valid=torch.tensor(rng.random(n) > 0.2))
    xyz = torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    sem = torch.tensor(rng.integers(0, 4, n))
    inst = torch.where(sem < 3, torch.tensor(rng.integers(1, 3, n)), torch.zeros(n, dtype=torch.long))
    L = segmentor_loss(out, xyz, sem, inst)
    assert torch.isclose(L["loss_sem"], 100 * focal_loss(out["sem_logits"], sem, 3.0, 0.8, mask=out["valid"]))
    v = out["valid"]
    ref = vote_loss(out["votes"], sem, vote_targets(xyz, torch.where(v, inst, 0)), v & (inst > 0))
    assert torch.isclose(L["loss_vote"], ref)
    assert torch.isclose(L["loss"], L["loss_sem"] + L["loss_vote"])


def test_class_balance_weights_rare_positives():
    from mwsis.train3d.losses import class_balance_weights

    t = torch.zeros(100, 3)
    t[:50, 0] = 1  # 50 vehicles, 2 pedestrians, no cyclist
    t[50:52, 1] = 1
    w = class_balance_weights(t, 0.5)
    torch.testing.assert_close(w, torch.tensor([1.0, 7.0, 1.0]))  # sqrt(98 / 2) = 7; absent class -> 1
    assert float(class_balance_weights(t, 1.0, cap=10.0)[1]) == 10.0  # 49 capped


def test_focal_class_balance_weighs_only_positives():
    logits = torch.zeros(4, 3)
    target = torch.tensor([0, 3, 3, 3])  # one vehicle point, three background
    plain = focal_loss(logits, target, gamma=0.0, alpha=0.5)
    balanced = focal_loss(logits, target, gamma=0.0, alpha=0.5, class_balance=1.0)
    # BCE at p = 0.5 is log 2 per element; the one positive element weighs 3 (3 negatives / 1 positive)
    e = 0.5 * np.log(2)
    assert float(plain) == pytest.approx(12 * e / 12)
    assert float(balanced) == pytest.approx((11 * e + 3 * e) / 12)


def test_given_centres_change_only_the_vote_targets_of_their_instances():
    import torch

    from mwsis.train3d.losses import LossConfig, segmentor_loss

    torch.manual_seed(0)
    n = 40
    xyz = torch.randn(n, 3)
    sem = torch.tensor([0] * 20 + [1] * 10 + [3] * 10)
    inst = torch.tensor([1] * 20 + [2] * 10 + [0] * 10)
    out = {"sem_logits": torch.randn(n, 3), "votes": torch.randn(n, 3, 3), "valid": torch.ones(n, dtype=torch.bool)}
    base = segmentor_loss(out, xyz, sem, inst, cfg=LossConfig())
    nan = torch.full((n, 3), float("nan"))
    assert segmentor_loss(out, xyz, sem, inst, cfg=LossConfig(), given_centre=nan)["loss_vote"] == base["loss_vote"]
    given = nan.clone()
    given[:20] = torch.tensor([5.0, 5.0, 0.0])
    moved = segmentor_loss(out, xyz, sem, inst, cfg=LossConfig(), given_centre=given)
    assert moved["loss_vote"] != base["loss_vote"] and moved["loss_sem"] == base["loss_sem"]
