"""SIM (seeds/004): Sinkhorn marginals, prototype separation, self-correction on overlapping objects
(extensions.md §1.4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mwsis.train2d.ipg import ipg_pseudo_masks, ipg_weights, pseudo_mask_iou, pseudo_targets
from mwsis.train2d.sim import instance_scores, rectify
from mwsis.train2d.sim_prototypes import PrototypeBank, prototype_centroids, sinkhorn


def test_sinkhorn_marginals_and_balanced_hard_assignment():
    g = torch.Generator().manual_seed(0)
    L, N = 10, 2000
    z = torch.nn.functional.normalize(torch.randn(N, 16, generator=g), dim=1)
    p = torch.nn.functional.normalize(torch.randn(L, 16, generator=g), dim=1)
    q = sinkhorn(p @ z.T, eps=0.05, iters=200)
    torch.testing.assert_close(q.sum(1), torch.full((L,), 1 / L), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((N,), 1 / N), atol=1e-4 / N, rtol=0)
    # the defaults (3 iterations) already balance the hard assignment within +-25 %
    _, counts = prototype_centroids(z, p)
    assert counts.sum() == N and counts.min() >= 0.75 * N / L and counts.max() <= 1.25 * N / L
    # while a plain argmax over similarities does not
    plain = torch.bincount((p @ z.T).argmax(0), minlength=L)
    assert plain.max() > 1.25 * N / L or plain.min() < 0.75 * N / L




def test_prototypes_separate_two_classes():
    g = torch.Generator().manual_seed(1)
    bank = PrototypeBank(num_classes=2, num_prototypes=10, dim=16, seed=0)
    centre = torch.nn.functional.normalize(torch.randn(2, 16, generator=g), dim=1)

    def sample(n):
        z = torch.cat([centre[c] + 0.5 * torch.randn(n, 16, generator=g) / 4 for c in (0, 1)])
        return z.T.reshape(16, 1, 2 * n), torch.arange(2).repeat_interleave(n)

    for _ in range(200):
        feats, cls = sample(64)
        masks = torch.stack([cls == 0, cls == 1]).reshape(2, 1, -1)
        bank.update(feats, masks, torch.tensor([0, 1]), momentum=0.9)
    assert bank.initialized.all()
    feats, cls = sample(500)
    ms = bank.maps(feats[None], temperature=1.0)[0]  # (C, 1, N)
    auc = roc_auc_score((cls == 0).numpy(), ms[0, 0].numpy())
    assert auc >= 0.95
    # the map of class 1 ranks the other way round
    assert roc_auc_score((cls == 1).numpy(), ms[1, 0].numpy()) >= 0.95


def test_a_prototype_without_pixels_stays_and_the_first_image_sets_them():
    bank = PrototypeBank(1, 4, 8, seed=0)
    before = bank.prototypes.clone()
    feats = torch.nn.functional.normalize(torch.randn(8, 2, 2), dim=0)
    bank.update(feats, torch.zeros(1, 2, 2, dtype=torch.bool), torch.tensor([0]), 0.999)
    assert torch.equal(bank.prototypes, before) and not bank.initialized[0]
    bank.update(feats, torch.ones(1, 2, 2, dtype=torch.bool), torch.tensor([0]), 0.999)
    # the first image sets every prototype, none stays at its random start: each lies in the cone of the
    # image's pixel features (a centroid, or a pixel for a prototype that got none)
    z = torch.nn.functional.normalize(feats.flatten(1), dim=0)
    best = (bank.prototypes[0] @ z).max(1).values
    rand_best = (before[0] @ z).max(1).values
    assert bank.initialized[0] and (best > 0.5).all() and (best > rand_best).all()
    assert torch.allclose(bank.prototypes.norm(dim=2), torch.ones(1, 4))
    # later images move them with the momentum
    prev = bank.prototypes.clone()
    bank.update(-feats, torch.ones(1, 2, 2, dtype=torch.bool), torch.tensor([0]), 0.999)
    step = (bank.prototypes - prev).norm(dim=2)
    assert (step < 0.01).all() and (step > 0).any()


def _two_pedestrians():
    """Two overlapping pedestrian boxes A and B on a 40x40 grid; teacher positives centred on each, with
    masks of their own object; features: pedestrian pixels share one direction, background another."""
    H = W = 40
    a, b = torch.zeros(H, W, dtype=torch.bool), torch.zeros(H, W, dtype=torch.bool)
    a[5:35, 8:20] = True
    b[5:35, 15:27] = True
    boxes = torch.tensor([[8., 5, 20, 35], [15., 5, 27, 35]])
    # three positives per GT: masks of their own object (0.9 inside, 0.05 outside)
    probs = torch.stack([torch.where(m, 0.9, 0.05) for m in (a, a, a, b, b, b)])
    gi = torch.tensor([0, 0, 0, 1, 1, 1])
    iou = torch.tensor([0.9, 0.8, 0.7, 0.9, 0.8, 0.7])
    w = ipg_weights(torch.ones(6), iou, gi, 2, k=5.0)
    m_i, valid = ipg_pseudo_masks(probs, w, gi, 2)
    ped, bg = torch.zeros(16), torch.zeros(16)
    ped[0], bg[1] = 1.0, 1.0
    feats = torch.where((a | b)[None], ped[:, None, None], bg[:, None, None])
    return a, b, boxes, m_i, valid, feats


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_self_correction_keeps_the_neighbour_out_of_the_target(temperature):
    a, b, boxes, m_i, valid, feats = _two_pedestrians()
    bank = PrototypeBank(1, 10, 16, seed=0)
    bank.update(feats, (a | b)[None], torch.tensor([0]), momentum=0.0)
    m_s = bank.maps(feats[None], temperature)[0, 0]  # the pedestrian class map
    b_only = b & ~a
    semantic_alone, _ = pseudo_targets(rectify(m_s.expand(2, -1, -1), m_i, alpha=0.0))
    if temperature == 0.1:  # the saturated map claims every pedestrian pixel for A, its neighbour's too
        assert semantic_alone[0][b_only].all()
    corrected, _ = pseudo_targets(rectify(m_s.expand(2, -1, -1), m_i, alpha=0.5))
    assert not corrected[0][b_only].any()
    assert corrected[0][a & ~b].float().mean() > 0.9  # A keeps its own pixels


def test_self_correction_removes_background_spill_that_ipg_keeps():
    a, b, boxes, m_i, valid, feats = _two_pedestrians()
    spill = torch.zeros_like(a)
    spill[5:35, 2:8] = True  # background left of A that the teacher's mask spills onto (a similar colour)
    m_i = m_i.clone()
    m_i[0][spill] = 0.8
    ipg_target, _ = pseudo_targets(m_i)
    assert ipg_target[0][spill].all()  # IPG: a positive target
    bank = PrototypeBank(1, 10, 16, seed=0)
    bank.update(feats, (a | b)[None], torch.tensor([0]), momentum=0.0)
    m_s = bank.maps(feats[None], 0.1)[0, 0]
    corrected, _ = pseudo_targets(rectify(m_s.expand(2, -1, -1), m_i, alpha=0.5))
    assert not corrected[0][spill].any()
    # the score of Eq. 11 is the instance map's mean over the corrected target
    s = instance_scores(m_i, corrected)
    assert s.shape == (2,) and 0.85 < float(s[0]) <= 0.9 + 1e-6


def test_rectify_keeps_the_instance_map_for_unseen_classes():
    m_s, m_i = torch.full((2, 4, 4), 0.9), torch.full((2, 4, 4), 0.2)
    out = rectify(m_s, m_i, 0.5, torch.tensor([True, False]))
    assert torch.allclose(out[0], torch.full((4, 4), 0.55)) and torch.equal(out[1], m_i[1])


def test_pseudo_mask_iou_and_crowded_boxes():
    a, b, boxes, m_i, valid, _ = _two_pedestrians()
    gt = torch.stack([a, b]).float()
    iou, crowded = pseudo_mask_iou(m_i, gt, boxes, torch.tensor([1, 1]))
    assert torch.allclose(iou, torch.ones(2)) and crowded.all()
    iou, crowded = pseudo_mask_iou(m_i, gt, boxes, torch.tensor([1, 2]))  # other classes: not crowded
    assert not crowded.any()
    half = m_i.clone()
    half[0][:, :14] = 0.0
    iou, _ = pseudo_mask_iou(half, gt, boxes, torch.tensor([1, 1]))
    assert float(iou[0]) == pytest.approx(6 / 12) and float(iou[1]) == 1.0
    assert np.isfinite(iou.numpy()).all()
