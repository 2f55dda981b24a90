"""Object-centric training crops: a CPU-regime option, not part of MWSIS (§4.2 trains on whole images).

On two CPU cores a 2D run gets a few hundred steps. Whole images spend most of each step on road and sky,
and at the resolution a step can afford, pedestrians are ~10 px wide: a class that small and rare is not
learnt in that budget (docs/experiments/regime-2d.json). A crop of the full-resolution image around an
object costs less per step than the downscaled whole image and shows its objects at twice the size.

``crop_window`` picks the window: a class drawn uniformly among the classes in the image (``class_balance``)
or an object drawn uniformly, then a window placed at random so that the object's centre lies inside it,
clipped to the image. Boxes, masks and LiDAR projections are cut to the window by the caller with
``crop_boxes`` and ``crop_points``; inference always runs on whole images.
"""
from __future__ import annotations

import numpy as np


def crop_window(boxes: np.ndarray, classes: np.ndarray, image_size: tuple[int, int], crop_size: tuple[int, int],
                rng: np.random.Generator, class_balance: bool = True) -> tuple[int, int, int, int]:
    """One training window ``(top, left, height, width)`` in image pixels.

    Args:
        boxes: (K, 4) x1 y1 x2 y2, image pixels.
        classes: (K,) class ids.
        image_size: (H, W) of the image.
        crop_size: (h, w) wanted; clipped to the image.
        rng: the run's generator (same seed, same windows).
        class_balance: draw the class first (uniform over those present), then an object of it; otherwise an
            object uniformly. Rare classes then get as many windows as common ones.
    """
    H, W = image_size
    h, w = min(int(crop_size[0]), H), min(int(crop_size[1]), W)
    if len(boxes) == 0:
        return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    if class_balance:
        cls = rng.choice(np.unique(classes))
        k = int(rng.choice(np.flatnonzero(classes == cls)))
    else:
        k = int(rng.integers(0, len(boxes)))
    cx = float(np.clip((boxes[k, 0] + boxes[k, 2]) / 2, 0, W - 1e-3))
    cy = float(np.clip((boxes[k, 1] + boxes[k, 3]) / 2, 0, H - 1e-3))
    # windows containing the centre: top in (cy - h, cy], within the image
    top = int(rng.integers(max(0, int(np.floor(cy)) - h + 1), min(H - h, int(np.floor(cy))) + 1))
    left = int(rng.integers(max(0, int(np.floor(cx)) - w + 1), min(W - w, int(np.floor(cx))) + 1))
    return top, left, h, w


def crop_boxes(boxes: np.ndarray, window: tuple[int, int, int, int], min_side: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes cut to ``window`` and shifted to its origin: ``((K', 4) boxes, (K,) bool kept)``.

    A box keeps its object when at least ``min_side`` pixels of it lie inside the window in both directions;
    the object's mask is cut the same way, so the clipped box stays the mask's box.
    """
    top, left, h, w = window
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - np.array([left, top, left, top], np.float32)
    b = np.stack([b[:, 0].clip(0, w), b[:, 1].clip(0, h), b[:, 2].clip(0, w), b[:, 3].clip(0, h)], axis=1)
    keep = ((b[:, 2] - b[:, 0]) >= min_side) & ((b[:, 3] - b[:, 1]) >= min_side)
    return b[keep], keep


def crop_points(uv: np.ndarray, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) projections (u, v) -> those inside ``window``, shifted to its origin, and the (P,) bool kept."""
    top, left, h, w = window
    uv = np.asarray(uv, dtype=np.float32).reshape(-1, 2) - np.array([left, top], np.float32)
    keep = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return uv[keep], keep
