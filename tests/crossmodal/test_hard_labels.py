"""Joint 2D-3D WSSS's 2D -> 3D hard-label form (seeds/001 Eq. 5-7) beside MWSIS's soft CSCS."""
from __future__ import annotations

import math

import torch

from mwsis.crossmodal.cscs import (collapse_projections, cscs_point_loss, hard_label_loss, hard_labels_2d)

NAN = float("nan")


def test_argmax_never_picks_a_class_without_a_box_in_the_camera():
    g = torch.Generator().manual_seed(0)
    probs = 0.9 * torch.rand(500, 2, 3, generator=g)
    present = torch.rand(500, 2, 3, generator=g) > 0.5
    probs[:, :, 2] = 0.99  # the absent-or-not class 2 always has the highest probability
    labels, weight = hard_labels_2d(probs, present, background_below=0.0)
    for n in range(500):
        seen = present[n].any(0)
        if not seen.any():
            assert labels[n] == -1 and weight[n] == 0
        else:
            assert labels[n] < 3 and seen[labels[n]]  # a class of that point's cameras
            if seen[2]:
                assert labels[n] == 2
    # with the NaN encoding of predictions/2d (absent classes NaN) the same holds by default
    t = torch.tensor([[[0.2, NAN, 0.9], [NAN, NAN, NAN]]])
    assert hard_labels_2d(t)[0].tolist() == [2]
    t = torch.tensor([[[0.2, 0.3, NAN], [NAN, NAN, NAN]]])
    labels, weight = hard_labels_2d(t)  # the best present class is below 0.5: background
    assert labels.tolist() == [3] and math.isclose(float(weight), 0.7, rel_tol=1e-6)  # 1 - max for background


def test_two_projections_average():
    t = torch.tensor([[[0.8, 0.1, NAN], [0.4, 0.7, NAN]]])
    labels, weight = hard_labels_2d(t)
    assert labels.tolist() == [0]  # mean 0.6 vs 0.4
    assert math.isclose(float(weight), (0.8 + 0.7) / 2, rel_tol=1e-6)  # the max score, averaged
    torch.testing.assert_close(collapse_projections(t), torch.tensor([[0.8, 0.7, NAN]]), equal_nan=True)


def test_weight_zero_gives_zero_gradient_and_gradient_scales_with_weight():
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    for scale in (1.0, 3.0):
        w = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.9, 0.0]) * scale
        logits.grad = None
        hard_label_loss(logits, labels, w).backward()
        if scale == 1.0:
            g1 = logits.grad.clone()
            assert (g1[[0, 5]] == 0).all() and (g1[[1, 2, 3, 4]].abs().sum(1) > 0).all()
    torch.testing.assert_close(logits.grad, 3.0 * g1)


def test_cscs_point_loss_forms():
    logits = torch.zeros(2, 3, requires_grad=True)
    t = torch.tensor([[[0.9, NAN, NAN], [NAN, NAN, NAN]], [[NAN, NAN, NAN], [NAN, NAN, NAN]]])
    soft = cscs_point_loss(logits, t)
    hard = cscs_point_loss(logits, t, form="argmax")
    weighted = cscs_point_loss(logits, t, form="argmax", confidence_weighting=True)
    assert soft > 0 and hard > 0
    torch.testing.assert_close(weighted, 0.9 * hard)
    # the point without any teacher entry carries no loss in either form
    only = cscs_point_loss(logits[:1], t[:1], form="argmax")
    torch.testing.assert_close(hard, only)
