"""FCOS target assignment, image transforms and projection sampling alignment (hand-worked examples)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mwsis.train2d.config import FCOSConfig
from mwsis.train2d.cscs import sample_at_projections
from mwsis.train2d.fcos import compute_locations, fcos_targets, ltrb_iou
from mwsis.train2d.transforms import ImageTransform, collate, prepare_image, rescale_size


def _levels(h, w, strides=(8, 16, 32, 64, 128)):
    locs, levels, strd = [], [], []
    for i, s in enumerate(strides):
        loc = compute_locations(-(-h // s), -(-w // s), s)
        locs.append(loc)
        levels.append(torch.full((len(loc),), i, dtype=torch.long))
        strd.append(torch.full((len(loc),), float(s)))
    return torch.cat(locs), torch.cat(levels), torch.cat(strd)


def test_fcos_targets_center_sampling_hand_example():
    locs, levels, strides = _levels(80, 80)
    cfg = FCOSConfig()
    box = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    labels, reg, gt = fcos_targets(locs, levels, strides, box, torch.tensor([1]), 3, cfg)
    pos = (labels != 3).nonzero().squeeze(1)
    # centre (40, 40), radius 1.5 * 8 = 12 -> open square (28, 52): P3 centres 36 and 44 only. P4 and P5 centres
    # inside their (clipped) centre regions have max(l,t,r,b) = 36 / 28, outside (64,128] / (128,256].
    assert sorted(locs[pos].tolist()) == [[36.0, 36.0], [36.0, 44.0], [44.0, 36.0], [44.0, 44.0]]
    assert (levels[pos] == 0).all() and (labels[pos] == 1).all() and (gt[pos] == 0).all()
    i = pos[(locs[pos] == torch.tensor([36.0, 36.0])).all(1)][0]
    assert reg[i].tolist() == [2.0, 2.0, 3.0, 3.0]  # (16, 16, 24, 24) / stride 8
    assert (gt[labels == 3] == -1).all()
    # without centre sampling every P3 centre strictly inside the box is positive: 28..52 -> 4 x 4
    labels0, _, _ = fcos_targets(locs, levels, strides, box, torch.tensor([1]), 3, replace(cfg, center_sample_radius=0))
    assert int((labels0 != 3).sum()) == 16
    # a smaller box over the same locations wins them (minimum area rule)
    boxes = torch.tensor([[20.0, 20.0, 60.0, 60.0], [30.0, 30.0, 50.0, 50.0]])
    labels2, reg2, gt2 = fcos_targets(locs, levels, strides, boxes, torch.tensor([1, 2]), 3, cfg)
    assert (gt2[pos] == 1).all() and (labels2[pos] == 2).all() and int((labels2 != 3).sum()) == 4
    # no boxes: all background
    labels3, _, gt3 = fcos_targets(locs, levels, strides, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3, cfg)
    assert (labels3 == 3).all() and (gt3 == -1).all()


def test_ltrb_iou():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    # second: boxes [-2,0]x[0,2] and [-1,1]x[-1,1] intersect in [-1,0]x[0,1] = 1, union 4 + 4 - 1
    assert ltrb_iou(a, b).tolist() == pytest.approx([1.0, 1 / 7])


def test_rescale_size_keep_ratio():
    assert rescale_size(1280, 1920, (1333, 800)) == (800, 1200)
    assert rescale_size(886, 1920, (1333, 800)) == (615, 1333)
    assert rescale_size(1280, 1920, (1333, 640)) == (640, 960)


def test_transform_points_boxes_round_trip():
    tf = ImageTransform((60, 100), (90, 150), flip=True, pad_size=(96, 160), pad_offset=(2, 3))
    uv = torch.tensor([[0.0, 0.0], [10.5, 20.25], [100.0, 60.0]])
    out = tf.map_points(uv)
    assert out.tolist() == [[153.0, 2.0], [150 - 15.75 + 3, 32.375], [3.0, 92.0]]
    assert torch.allclose(tf.unmap_points(out), uv)
    box = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert tf.map_boxes(box).tolist() == [[150 - 45 + 3, 32.0, 150 - 15 + 3, 62.0]]
    assert torch.allclose(tf.unmap_boxes(tf.map_boxes(box)), box)


def test_prepare_image_flip_moves_pixels_consistently():
    img = np.zeros((40, 60, 3), np.uint8)
    img[5, 7] = (255, 0, 0)
    s = prepare_image(img, [[7, 5, 8, 6]], scale=(60, 40), flip=True)
    tf = s["transform"]
    assert s["image"].shape == (3, 64, 64) and s["image_size"] == (40, 60)
    x, y = tf.map_points(torch.tensor([[7.5, 5.5]]))[0].floor().long().tolist()
    assert (x, y) == (52, 5) and s["image_rgb"][:, y, x].tolist() == [255.0, 0.0, 0.0]
    assert s["boxes"].tolist() == [[52.0, 5.0, 53.0, 6.0]]
    images, targets = collate([s, prepare_image(np.zeros((70, 50, 3), np.uint8), scale=(70, 50))])
    assert images.shape == (2, 3, 96, 64) and targets[0]["transform"].pad_size == (96, 64)
    assert targets[0]["image_rgb"].shape == (3, 96, 64)


@pytest.mark.parametrize("flip", [False, True])
def test_sample_at_projections_lands_on_the_right_values(flip):
    """A map over the padded input at stride 4 whose value at every cell is a linear function f of the ORIGINAL
    image coordinates of the cell centre: bilinear sampling at mapped points must return f(u, v) exactly
    (a half-pixel or flip error shows as an offset of ~0.5-2 per pixel times the slope)."""
    tf = ImageTransform((60, 100), (90, 150), flip=flip, pad_size=(96, 160))
    S = 4
    hs, ws = 96 // S, 160 // S
    centres = torch.stack(torch.meshgrid((torch.arange(hs) + 0.5) * S, (torch.arange(ws) + 0.5) * S,
                                         indexing="ij"), -1).reshape(-1, 2).flip(-1)  # (x, y) input coords
    orig = tf.unmap_points(centres.double())

    def f(uv):
        return torch.stack([3.0 * uv[:, 0] - 2.0 * uv[:, 1] + 7.0, uv[:, 1]], 1)

    prob_map = f(orig).t().reshape(2, hs, ws)
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(200, 2, generator=g, dtype=torch.float64) * torch.tensor([90.0, 50.0]) + 5  # interior
    vals, inside = sample_at_projections(prob_map, uv, tf)
    assert inside.all()
    assert torch.allclose(vals, f(uv), atol=1e-9)

    # piecewise-constant map: a point at a cell centre reads exactly that cell
    cells = torch.arange(hs * ws, dtype=torch.float64).reshape(1, hs, ws)
    pick = torch.tensor([[3, 5], [10, 30], [20, 2]])  # (row, col)
    pts = tf.unmap_points(((pick.flip(-1).double() + 0.5) * S))
    v, _ = sample_at_projections(cells, pts, tf, stride=4)
    assert v[:, 0].tolist() == pytest.approx([float(r * ws + c) for r, c in pick.tolist()], abs=1e-9)

    # points outside the original image are flagged
    _, ins = sample_at_projections(prob_map, torch.tensor([[-1.0, 10.0], [50.0, 60.5], [99.9, 59.9]]), tf)
    assert ins.tolist() == [False, False, True]
