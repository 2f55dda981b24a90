"""The WISE segmenter's pieces (``train2d.wise_model``, ``wise.hull_mask``): proposals from scattered points,
WISE's inference (blob points, k-means background seeds, embedding assignment), proposal selection, and the
model option's contract with the 2D trainer's config."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mwsis.pipelines.training.train2d import Train2DConfig
from mwsis.train2d.config import IPGConfig, Model2DConfig, WISEConfig
from mwsis.train2d.model import build_model
from mwsis.train2d.transforms import collate, prepare_image
from mwsis.train2d.wise import hull_mask
from mwsis.train2d.wise_model import (WISEModel, background_seeds, blob_points, click_cells, select_proposals,
                                      wise_instances)

WISE = WISEConfig(enabled=True)


def test_hull_mask_fills_between_scattered_points():
    corners = np.array([[10.2, 5.1], [30.7, 5.3], [30.4, 20.6], [10.5, 20.9], [20.0, 12.0]])
    m = hull_mask(corners, (32, 48))
    assert m[12, 20] and m[6, 11] and m[20, 30]  # inside, and the corners' own pixels
    assert not m[3, 20] and not m[12, 35] and not m[25, 12]
    assert m.sum() == pytest.approx(20 * 15, rel=0.15)
    two = hull_mask(np.array([[3.5, 4.5], [7.5, 4.5]]), (10, 10))  # too few for a hull: just the pixels
    assert two.sum() == 2 and two[4, 3] and two[4, 7]
    assert not hull_mask(np.zeros((0, 2)), (10, 10)).any()
    line = hull_mask(np.array([[1.5, 1.5], [2.5, 2.5], [3.5, 3.5]]), (10, 10))  # collinear
    assert line.sum() == 3


def _two_objects(h=20, w=30, d=4):
    """L-Net probabilities with two class-1 blobs (columns 2-9 and 18-25 of rows 5-14) and embeddings that
    separate them from each other and from the background."""
    prob = np.zeros((3, h, w), np.float32)
    prob[2] = 0.9
    prob[0] = 0.05
    prob[1] = 0.05
    for c0, peak in ((2, 0.9), (18, 0.8)):
        prob[1, 5:15, c0:c0 + 8], prob[2, 5:15, c0:c0 + 8] = 0.7, 0.25
        prob[1, 9, c0 + 3] = peak
    emb = np.zeros((d, h, w), np.float32)
    emb[0, 5:15, 2:10] = 5.0
    emb[1, 5:15, 18:26] = 5.0
    emb[2, :, :] += np.linspace(0, 0.1, w)  # background varies a little
    emb[2, 5:15, 2:10] = emb[2, 5:15, 18:26] = 0
    return prob, emb


def test_blob_points_give_each_blob_its_peak():
    prob, _ = _two_objects()
    pts, scores, classes = blob_points(prob, min_px=2)
    assert pts.tolist() == [[9, 5], [9, 21]] and classes.tolist() == [1, 1]
    assert scores == pytest.approx([0.9, 0.8])
    assert len(blob_points(prob, min_px=81)[0]) == 0  # both blobs have 80 pixels


def test_wise_inference_assigns_each_object_its_pixels():
    prob, emb = _two_objects()
    masks, scores, classes = wise_instances(torch.as_tensor(prob), torch.as_tensor(emb), WISE)
    assert masks.shape == (2, 20, 30) and classes.tolist() == [1, 1]
    truth = np.zeros((2, 20, 30), bool)
    truth[0, 5:15, 2:10] = truth[1, 5:15, 18:26] = True
    assert (masks.numpy() > 0.5).tolist() == truth.tolist()  # the background seeds keep it out of the masks


def test_background_seeds_are_pixels_near_the_cluster_means():
    emb = np.concatenate([np.zeros((10, 2)), np.full((10, 2), 9.0)])
    emb[3] = emb[15] = [0.1, 0.1]  # outliers of neither mean exactly
    seeds = background_seeds(emb, np.arange(100, 120), k=2, iters=5)
    assert len(seeds) == 2 and seeds.min() < 110 <= seeds.max()
    assert len(background_seeds(emb[:0], np.arange(0), k=3, iters=5)) == 0


def test_select_proposals_takes_the_best_overlap():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 2:6, 2:6] = True
    masks[1, 8:, 8:] = True  # overlaps no proposal: kept
    props = np.zeros((2, 10, 10), bool)
    props[0, 0:4, 0:4] = True
    props[1, 2:7, 2:7] = True
    out = select_proposals(masks, props)
    assert (out[0] == props[1]).all() and (out[1] == masks[1]).all()


def test_clicks_ride_as_degenerate_boxes_through_resize_and_flip():
    s = prepare_image(np.zeros((40, 80, 3), np.uint8), np.array([[10.5, 20.5, 10.5, 20.5]], np.float32),
                      scale=(160, 80), flip=True)
    cells = click_cells(s["boxes"], torch.tensor([2]), (20, 40))
    assert cells.tolist() == [[10, 34, 2]]  # (20.5 * 2) / 4 and (160 - 21) / 4


def test_wise_model_trains_and_predicts_in_the_boxinst_contract():
    torch.manual_seed(0)
    model = build_model(Model2DConfig.tiny(wise=WISE, ipg=IPGConfig(enabled=False)))
    assert isinstance(model, WISEModel)
    s = prepare_image(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8),
                      np.array([[30, 40, 30, 40], [80, 50, 80, 50]], np.float32), scale=(128, 96))
    s["classes"] = torch.tensor([0, 1])
    s["proposal_maps"] = torch.zeros(2, 24, 32)
    s["proposal_maps"][0, 5:15, 3:12] = s["proposal_maps"][1, 8:18, 16:25] = 1
    images, targets = collate([s])
    losses = model(images, targets, iteration=3)
    assert set(losses) == {"loss_lnet", "loss_enet"} and all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.decoder.out.weight.grad.abs().sum() > 0
    model.eval()
    out = model.predict(images, transforms=[targets[0]["transform"]])[0]
    k = len(out["scores"])
    assert out["masks"].shape == (k, 96, 128) and out["boxes"].shape == (k, 4) and out["classes"].shape == (k,)


@pytest.mark.parametrize("override", [{"masks": "gt"}, {"cscs_3d": 1}, {"train_crop": (64, 64)},
                                      {"track_pseudo_iou": 5}])
def test_wise_refuses_box_only_options(override):
    with pytest.raises(ValueError, match="model.wise"):
        Train2DConfig(model=Model2DConfig.tiny(wise=WISE, ipg=IPGConfig(enabled=False)), **override)
    with pytest.raises(ValueError, match="model.ipg"):
        Model2DConfig.tiny(wise=WISE)  # IPG is on by default: a box method
