"""BoxInst, IPG and CSCS losses against hand-worked examples and direct loop computations."""
from __future__ import annotations

import math

import pytest
import torch

from mwsis.train2d.boxinst import (box_masks, color_similarity, pairwise_loss, projection_loss, rgb_to_lab,
                                   warmup_factor)
from mwsis.crossmodal.cscs import cscs_loss, cscs_ramp
from mwsis.train2d.cscs import class_prob_maps
from mwsis.train3d.ema import EMAConfig, EMATeacher, ema_momentum
from mwsis.train2d.ipg import (ipg_active, ipg_loss, ipg_pseudo_masks, ipg_weights,
                               pseudo_targets)


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
    return torch.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------- BoxInst
def test_rgb_to_lab_known_colours():
    rgb = torch.tensor([[255, 255, 255], [255, 0, 0], [0, 0, 0], [128, 128, 128], [0, 0, 255]],
                       dtype=torch.float64).t()[:, :, None]  # (3, 5, 1)
    lab = rgb_to_lab(rgb)[:, :, 0].t()
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.2408, 80.0925, 67.2032], [0.0, 0.0, 0.0],
                             [53.5850, 0.0, 0.0], [32.2970, 79.1875, -107.8602]], dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=0.02)


def test_projection_dice_hand_example():
    p = torch.zeros(1, 4, 4, dtype=torch.float64)
    p[0, 1, 1], p[0, 1, 2], p[0, 2, 1], p[0, 2, 2] = 0.8, 0.6, 0.4, 0.2
    box = torch.zeros(1, 4, 4, dtype=torch.float64)
    box[0, 1:3, 1:3] = 1
    # columns' max (0, .8, .6, 0) vs (0, 1, 1, 0): 1 - 2*1.4/(0.64+0.36+2)
    # rows' max (0, .8, .4, 0): 1 - 2*1.2/(0.64+0.16+2)
    expected = (1 - 2.8 / (1.0 + 2 + 1e-5)) + (1 - 2.4 / (0.8 + 2 + 1e-5))
    assert projection_loss(_logit(p), box).item() == pytest.approx(expected, abs=1e-6)
    # a mask equal to the box has (almost) zero projection loss
    assert projection_loss(_logit(box), box).item() == pytest.approx(0.0, abs=1e-4)


def test_box_masks_cell_centres():
    m = box_masks(torch.tensor([[4.0, 0.0, 12.0, 6.0], [13.0, 13.0, 14.0, 14.0]]), (4, 5), stride=4)
    # cell centres 2, 6, 10, 14, 18: x in [4, 12] -> columns 1, 2; y in [0, 6] -> rows 0, 1
    assert m[0].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    # a box holding no centre marks the cell containing its centre (13.5 -> cell 3)
    assert m[1].nonzero().tolist() == [[3, 3]]


def test_pairwise_loss_matches_direct_loop():
    g = torch.Generator().manual_seed(0)
    H, W, S = 24, 28, 4
    img = torch.zeros(1, 3, H, W, dtype=torch.float64)
    img[:, :] = torch.tensor([90.0, 120.0, 60.0]).view(1, 3, 1, 1)
    img[:, :, 4:16, 8:24] = torch.tensor([200.0, 40.0, 40.0]).view(1, 3, 1, 1)
    img += torch.rand(1, 3, H, W, generator=g, dtype=torch.float64) * 10  # some edges pass, some fail
    valid = torch.ones(1, H, W, dtype=torch.bool)
    valid[:, 20:] = False  # removed bottom rows
    sim = color_similarity(img, valid, S, 3, 2)
    h, w = H // S, W // S
    logits = torch.randn(2, h, w, generator=g, dtype=torch.float64) * 2
    boxes = box_masks(torch.tensor([[4.0, 2.0, 22.0, 18.0], [0.0, 0.0, 28.0, 24.0]]), (h, w), S).double()
    got = pairwise_loss(logits, boxes, sim.expand(2, -1, -1, -1), 0.3, 3, 2)

    lab = rgb_to_lab(torch.nn.functional.avg_pool2d(img, S))[0]
    v = valid[0, S // 2::S, S // 2::S]
    total, count, edges = 0.0, 0, 0
    for n in range(2):
        p = torch.sigmoid(logits[n])
        for i in range(h):
            for j in range(w):
                if boxes[n, i, j] == 0 or not v[i, j]:
                    continue
                for di in (-2, 0, 2):
                    for dj in (-2, 0, 2):
                        if (di, dj) == (0, 0):
                            continue
                        a, b = i + di, j + dj
                        if not (0 <= a < h and 0 <= b < w) or not v[a, b]:
                            continue
                        edges += 1
                        s = math.exp(-float(torch.linalg.norm(lab[:, i, j] - lab[:, a, b])) / 2)
                        if s >= 0.3:
                            total += -math.log(p[i, j] * p[a, b] + (1 - p[i, j]) * (1 - p[a, b]))
                            count += 1
    assert 0 < count < edges  # the colour threshold is exercised
    assert got.item() == pytest.approx(total / count, rel=1e-9)


def test_warmup_factor():
    assert warmup_factor(0, 100) == 0.0
    assert warmup_factor(50, 100) == 0.5
    assert warmup_factor(500, 100) == 1.0
    assert warmup_factor(None, 100) == 1.0


# ---------------------------------------------------------------------------------------------- IPG
def test_ipg_weights_and_pseudo_mask_hand_example():
    # GT 0: samples (s=.8, IoU=.5) and (s=.4, IoU=1); GT 1: one sample; GT 2: none
    scores = torch.tensor([0.8, 0.4, 0.3], dtype=torch.float64)
    ious = torch.tensor([0.5, 1.0, 0.2], dtype=torch.float64)
    gt = torch.tensor([0, 0, 1])
    w = ipg_weights(scores, ious, gt, 3, k=1.0)
    a, b = 0.8 * math.exp(0.5), 0.4 * math.exp(1.0)  # 1.318977, 1.087313
    assert w.tolist() == pytest.approx([a / (a + b), b / (a + b), 1.0], abs=1e-12)  # .548137, .451863, 1
    # k = 0 leaves the score weighting only
    assert ipg_weights(scores, ious, gt, 3, k=0.0).tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])

    masks = torch.tensor([[[1.0, 0.0], [0.6, 0.2]], [[0.5, 1.0], [0.0, 0.2]], [[0.9, 0.1], [0.5, 0.5]]],
                         dtype=torch.float64)
    maps, valid = ipg_pseudo_masks(masks, w, gt, 3)
    wa = a / (a + b)
    expected0 = torch.tensor([[wa + 0.5 * (1 - wa), 1 - wa], [0.6 * wa, 0.2]], dtype=torch.float64)
    assert torch.allclose(maps[0], expected0)  # [[.774, .452], [.329, .2]]
    assert torch.allclose(maps[1], masks[2])
    assert valid.tolist() == [True, True, False] and maps[2].abs().sum() == 0
    target, conf = pseudo_targets(maps[0], 0.3, 0.7)
    assert conf.tolist() == [[True, False], [False, True]]  # .452 and .329 lie between the thresholds
    assert target[conf].tolist() == [1.0, 0.0]


def test_ipg_loss_per_instance_dice_and_ignored_pixels():
    pseudo = torch.tensor([[[0.9, 0.5, 0.1, 0.1]], [[0.8, 0.8, 0.8, 0.2]]], dtype=torch.float64)
    p = torch.tensor([[[0.6, 0.99, 0.2, 0.4]], [[0.7, 0.9, 0.5, 0.1]]], dtype=torch.float64)
    out = ipg_loss(_logit(p), pseudo, 0.3, 0.7)
    # confident pixels: inst 0 -> (0.6, t=1), (0.2, 0), (0.4, 0); inst 1 -> all four (1, 1, 1, 0)
    bce_terms = [-math.log(0.6), -math.log(0.8), -math.log(0.6),
                 -math.log(0.7), -math.log(0.9), -math.log(0.5), -math.log(0.9)]
    assert out["bce"].item() == pytest.approx(sum(bce_terms) / 7, rel=1e-6)
    d0 = 1 - 2 * 0.6 / (0.36 + 0.04 + 0.16 + 1 + 1e-5)
    d1 = 1 - 2 * (0.7 + 0.9 + 0.5) / (0.49 + 0.81 + 0.25 + 0.01 + 3 + 1e-5)
    assert out["dice"].item() == pytest.approx((d0 + d1) / 2, rel=1e-6)
    glob = 1 - 2 * (0.6 + 2.1) / (0.56 + 1.56 + 4 + 1e-5)  # the authors' global dice differs
    assert abs(out["dice"].item() - glob) > 1e-3
    # the ignored pixel (0.99 under pseudo 0.5) gets no gradient
    lg = _logit(p).requires_grad_(True)
    sum(ipg_loss(lg, pseudo).values()).backward()
    assert lg.grad[0, 0, 1] == 0 and (lg.grad[0, 0, [0, 2, 3]] != 0).all()


def test_ipg_schedule_and_ema():
    assert not ipg_active(100, 17772) and ipg_active(17772, 17772) and ipg_active(None, 17772)
    # the 2D trainer uses the shared EMA teacher (train3d/ema.py), the authors' ramp for both branches
    assert ema_momentum(0) == 0.0
    assert ema_momentum(2500, EMAConfig(batch_per_gpu=2)) == pytest.approx(1 - math.exp(-1))
    assert ema_momentum(10**6) == 0.999
    s = torch.nn.BatchNorm1d(2)
    teacher = EMATeacher(s)
    with torch.no_grad():
        s.weight.fill_(3.0), s.running_mean.fill_(1.0)
    s.num_batches_tracked += 5
    d = teacher.update(s, 1)  # momentum d(1) = 1 - exp(-2/5000)
    assert teacher.model.weight.tolist() == pytest.approx([d + 3 * (1 - d)] * 2)
    assert teacher.model.running_mean.tolist() == pytest.approx([1 - d] * 2)
    assert int(teacher.model.num_batches_tracked) == 5


# ---------------------------------------------------------------------------------------------- CSCS
def test_cscs_zero_when_student_equals_confident_teacher():
    t = torch.tensor([[0.95, 0.02, 0.999], [0.01, 0.9, 0.05]], dtype=torch.float64)
    assert cscs_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-12)  # KL form: exactly its minimum 0
    ent = -(t * t.log() + (1 - t) * (1 - t).log()).mean()
    assert cscs_loss(t.clone(), t, form="bce").item() == pytest.approx(ent.item(), rel=1e-9)  # BCE form: H(t)
    q = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], dtype=torch.float64)
    assert cscs_loss(q, t).item() > 0.1


def test_cscs_ignore_rule_normaliser_and_gradients():
    def kl(t, q):
        return t * math.log(t / q) + (1 - t) * math.log((1 - t) / (1 - q))

    q = torch.tensor([[0.4, 0.4, 0.9, 0.3]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.6, 0.9, 0.5, 0.7]], dtype=torch.float64, requires_grad=True)
    loss = cscs_loss(q, t)
    # (0.4, 0.6) and (0.3, 0.7) are both uncertain -> ignored (bounds inclusive); the others count;
    # the normaliser is the number of valid entries (4), not the number of counted ones (2)
    assert loss.item() == pytest.approx((kl(0.9, 0.4) + kl(0.5, 0.9)) / 4, rel=1e-9)
    loss.backward()
    assert q.grad[0, 0] == 0 and q.grad[0, 3] == 0 and q.grad[0, 1] != 0 and q.grad[0, 2] != 0
    assert t.grad is None or (t.grad == 0).all()  # the teacher is a constant
    valid = torch.tensor([[True, False, True, True]])
    assert cscs_loss(q, t, valid).item() == pytest.approx(kl(0.5, 0.9) / 3, rel=1e-9)
    # seeds/001 max-score weighting: the point's terms times the teacher's max class score (0.9)
    assert cscs_loss(q, t, confidence_weighting=True).item() == pytest.approx(
        0.9 * (kl(0.9, 0.4) + kl(0.5, 0.9)) / 4, rel=1e-9)


def test_cscs_ramp_and_class_maps():
    assert cscs_ramp(19999, 20000, 1000) == 0.0 and cscs_ramp(20500, 20000, 1000) == 0.5
    assert cscs_ramp(30000, 20000, 1000) == 1.0
    m = torch.tensor([[[0.2, 0.9]], [[0.7, 0.1]], [[0.4, 0.4]]], dtype=torch.float64)
    maps, present = class_prob_maps(m, torch.tensor([0, 0, 2]), 3)
    assert maps[0].tolist() == [[0.7, 0.9]] and maps[1].abs().sum() == 0 and maps[2].tolist() == [[0.4, 0.4]]
    assert present.tolist() == [True, False, True]
