"""Object-centric training crops (train2d/crop.py, pipelines.samples2d.crop_sample)."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from mwsis.pipelines.training.samples2d import Sample2D, crop_sample
from mwsis.train2d.crop import crop_boxes, crop_points, crop_window


def _rect_rle(h, w, box):
    m = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1
    return mask_utils.encode(np.asfortranarray(m))


def test_window_holds_the_chosen_object_inside_the_image_and_is_seeded():
    boxes = np.array([[10, 10, 30, 50], [600, 400, 640, 470]], np.float32)
    classes = np.array([0, 1])
    for seed in range(50):
        top, left, h, w = crop_window(boxes, classes, (480, 640), (128, 160), np.random.default_rng(seed))
        assert (h, w) == (128, 160)
        assert 0 <= top <= 480 - h and 0 <= left <= 640 - w
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres[:, 0] >= left) & (centres[:, 0] < left + w) & (centres[:, 1] >= top)
                  & (centres[:, 1] < top + h))
        assert inside.any(), (seed, top, left)
    a = crop_window(boxes, classes, (480, 640), (128, 160), np.random.default_rng(3))
    assert a == crop_window(boxes, classes, (480, 640), (128, 160), np.random.default_rng(3))
    # larger than the image: the whole image; no boxes: a random window
    assert crop_window(boxes, classes, (100, 90), (128, 160), np.random.default_rng(0)) == (0, 0, 100, 90)
    assert crop_window(boxes[:0], classes[:0], (480, 640), (64, 64), np.random.default_rng(0))[2:] == (64, 64)


def test_class_balance_gives_a_rare_class_half_the_windows():
    boxes = np.array([[x, 0, x + 10, 10] for x in range(0, 600, 60)] + [[300, 400, 310, 440]], np.float32)
    classes = np.array([0] * 10 + [1])

    def share(balance):
        rng = np.random.default_rng(0)
        hits = 0
        for _ in range(400):
            top, left, h, w = crop_window(boxes, classes, (480, 640), (64, 64), rng, balance)
            hits += top <= 420 < top + h and left <= 305 < left + w
        return hits / 400

    assert share(True) > 0.4 and share(False) < 0.2


def test_boxes_and_points_are_cut_to_the_window():
    boxes = np.array([[0, 0, 50, 50], [90, 90, 200, 200], [199, 10, 300, 20]], np.float32)
    b, keep = crop_boxes(boxes, (20, 30, 100, 170))  # top, left, h, w
    assert keep.tolist() == [True, True, False]  # the third overlaps 1 px in x
    np.testing.assert_allclose(b, [[0, 0, 20, 30], [60, 70, 170, 100]])
    uv, inside = crop_points(np.array([[30, 20], [199.9, 119.9], [200, 50], [10, 10]]), (20, 30, 100, 170))
    assert inside.tolist() == [True, True, False, False]
    np.testing.assert_allclose(uv, [[0, 0], [169.9, 99.9]], rtol=1e-5)


def test_crop_sample_keeps_masks_boxes_and_projections_aligned():
    H, W = 120, 160
    boxes = np.array([[20, 30, 60, 90], [140, 0, 160, 10]], np.float32)
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    s = Sample2D("f", 1, image, boxes, np.array([1, 0]), np.array([4, 7]),
                 gt_masks=[_rect_rle(H, W, (20, 30, 60, 90)), _rect_rle(H, W, (140, 0, 160, 10))],
                 sam_masks=[None, _rect_rle(H, W, (140, 0, 160, 10))],
                 points_uv=np.array([[25, 35], [150, 5]], np.float32), points_prob=np.eye(3, dtype=np.float32)[:2])
    c = crop_sample(s, (40, 10, 64, 64))  # rows 40..103, cols 10..73: only the first object
    np.testing.assert_array_equal(c.image, image[40:104, 10:74])
    assert c.classes.tolist() == [1] and c.box_index.tolist() == [4] and c.sam_masks == [None]
    np.testing.assert_allclose(c.boxes, [[10, 0, 50, 50]])
    m = mask_utils.decode(c.gt_masks[0])
    ys, xs = np.nonzero(m)
    assert m.shape == (64, 64) and (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 0, 50, 50)
    assert c.points_uv.tolist() == [] and c.points_prob.shape == (0, 3)  # (25, 35) is above the window
    c = crop_sample(s, (0, 10, 64, 64))
    np.testing.assert_allclose(c.points_uv, [[15, 35]])
    np.testing.assert_allclose(c.points_prob, [[1, 0, 0]])
