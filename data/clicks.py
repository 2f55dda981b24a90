"""Clicks derived from what a dataset already has (WISE, seeds/002 §4 protocols; issue 17), for experiments:
one click per 2D box, with the box's camera, class and object id.

* ``box_centre_clicks``: the box centre (WISE's KITTI protocol: it may miss a thin or hollow object).
* ``mask_centre_clicks``: the pixel of the true mask farthest from its border (the maximum of the distance
  transform; WISE's COCO protocol, an oracle: always inside the object).
* ``random_mask_clicks``: a uniformly random pixel of the true (visible) mask, a human-like click.

A box whose object has no true mask, or an empty one (wholly hidden), gets no mask click. Pixels are returned
at their centres (i + 0.5) in continuous image coordinates.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from .frame import Boxes2D, Clicks2D, Masks2D


def box_centre_clicks(boxes: Boxes2D) -> Clicks2D:
    """The centre of every box."""
    uv = np.stack([(boxes.xyxy[:, 0] + boxes.xyxy[:, 2]) / 2, (boxes.xyxy[:, 1] + boxes.xyxy[:, 3]) / 2], 1)
    return Clicks2D(boxes.camera_id.copy(), boxes.class_id.copy(), uv.astype(np.float32).reshape(-1, 2),
                    boxes.object_id.copy())


def _box_masks(boxes: Boxes2D, masks: Masks2D):
    """(box index, its decoded true mask) for every box whose object has a non-empty mask in its camera."""
    by_key = {(int(c), int(o)): k for k, (c, o) in enumerate(zip(masks.camera_id, masks.object_id))}
    for i in range(len(boxes)):
        k = by_key.get((int(boxes.camera_id[i]), int(boxes.object_id[i])))
        if k is None:
            continue
        m = masks.decode(k)
        if m.any():
            yield i, m


def _clicks(boxes: Boxes2D, picks: list[tuple[int, float, float]]) -> Clicks2D:
    idx = np.array([i for i, _, _ in picks], np.int64)
    uv = np.array([[u, v] for _, u, v in picks], np.float32).reshape(-1, 2)
    return Clicks2D(boxes.camera_id[idx], boxes.class_id[idx], uv, boxes.object_id[idx])


def mask_centre_clicks(boxes: Boxes2D, masks: Masks2D) -> Clicks2D:
    """The maximum of each true mask's distance transform (ties: the first in row-major order)."""
    picks = []
    for i, m in _box_masks(boxes, masks):
        d = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]  # the image border counts as the object's border
        y, x = np.unravel_index(int(np.argmax(d)), d.shape)
        picks.append((i, x + 0.5, y + 0.5))
    return _clicks(boxes, picks)


def random_mask_clicks(boxes: Boxes2D, masks: Masks2D, rng: np.random.Generator) -> Clicks2D:
    """A uniformly random pixel of each true mask."""
    picks = []
    for i, m in _box_masks(boxes, masks):
        ys, xs = np.nonzero(m)
        j = int(rng.integers(len(ys)))
        picks.append((i, xs[j] + 0.5, ys[j] + 0.5))
    return _clicks(boxes, picks)
