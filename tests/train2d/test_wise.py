"""WISE's losses (seeds/002): the split loss separates two clicks in one blob, the false-positive loss removes
a blob without a click, the pair sampler's counts, the E-Net loss's limits."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from mwsis.train2d.wise import enet_loss, lnet_losses, split_boundaries, wise_pairs


def _blob_logits(H=20, W=40):
    """Background everywhere except one class-0 bar across the image (rows 8-12), a class-0 blob at the
    bottom right; background channel last (C + 1 = 3)."""
    logits = torch.zeros(3, H, W)
    logits[2] = 2.0
    logits[0, 8:13, 2:38] = 4.0
    logits[0, 16:19, 30:36] = 4.0
    return logits


def test_split_boundary_lies_between_the_clicks():
    prob = np.zeros((20, 40))
    prob[8:13, 2:38] = 0.9
    prob[8:13, 18:22] = 0.6  # a weak waist in the middle
    blob = prob > 0.5
    edge = split_boundaries(prob, blob, np.array([[10, 5], [10, 34]]))
    cols = np.unique(np.nonzero(edge)[1])
    assert edge.any() and cols.min() >= 17 and cols.max() <= 22 and (edge <= blob).all()


def test_the_split_loss_separates_two_clicks_in_one_blob_and_false_positives_go():
    logits = torch.nn.Parameter(_blob_logits())
    clicks = np.array([[10, 5, 0], [10, 34, 0]])
    first = lnet_losses(logits, clicks)
    assert first["split"] > 0 and first["false_positive"] > 0  # one blob, two clicks; one blob, none
    opt = torch.optim.SGD([logits], lr=5.0)
    for _ in range(60):
        losses = lnet_losses(logits, clicks)
        opt.zero_grad()
        (losses["point"] + losses["split"] + losses["false_positive"] + losses["image"]).backward()
        opt.step()
    arg = logits.detach().argmax(0).numpy()
    labels, n = ndimage.label(arg == 0)
    assert n == 2 and labels[10, 5] != labels[10, 34] and labels[10, 5] > 0 and labels[10, 34] > 0
    assert not (arg[16:19, 30:36] == 0).any()  # the blob without a click is background now
    last = lnet_losses(logits, clicks)
    assert float(last["split"].detach()) == 0.0 and float(last["false_positive"].detach()) == 0.0


def test_image_and_point_terms():
    logits = _blob_logits()
    out = lnet_losses(logits, np.zeros((0, 3), np.int64))
    assert out["point"] == 0 and out["image"] > 0  # class 0 is predicted but absent
    present = lnet_losses(logits, np.array([[10, 5, 0]]))
    assert present["image"] < out["image"] and present["point"] < 0.2


def test_pairs_are_k_per_object_plus_background():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :3, :3] = masks[1, 5:, 5:] = masks[2, 0, 9] = True
    background = ~masks.any(0)
    clicks = np.array([[1, 1], [7, 7], [0, 9]])
    a, b, same = wise_pairs(clicks, masks, background, rng)
    K = 3
    assert len(a) == K * K * (K + 1)  # each click: k pixels from each of K objects and the background
    for n, (r, c) in enumerate(clicks):
        mine = a == r * 10 + c
        assert mine.sum() == K * (K + 1) and same[mine].sum() == K
        assert masks[n].ravel()[b[mine & same]].all()
    assert background.ravel()[b[~same & ~masks.reshape(3, -1).any(0)[b]]].all()


def test_enet_loss_limits():
    e = torch.zeros(64, 4, 4, requires_grad=True)
    a, b = np.array([0, 1, 2]), np.array([5, 6, 7])
    zero = enet_loss(e, a, b, np.ones(3, bool))
    assert float(zero) < 1e-5  # identical embeddings of one instance: no loss
    apart = enet_loss(e, a, b, np.zeros(3, bool))
    assert torch.isfinite(apart) and float(apart) > 10  # equal embeddings of different instances: clamped
    apart.backward()
    assert torch.isfinite(e.grad).all()
    far = torch.zeros(64, 4, 4)
    far[:, 1, 1] = 10.0
    assert float(enet_loss(far, np.array([0]), np.array([5]), np.zeros(1, bool))) < 1e-3
