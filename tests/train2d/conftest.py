"""Fixtures of the 2D model tests."""
from __future__ import annotations

import numpy as np
import pytest

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 80, 230), (230, 200, 30), (200, 60, 200), (30, 200, 210)]


def _make_image(rng: np.random.Generator, h: int = 96, w: int = 128):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    patches = rng.uniform(70, 170, (h // 32 + 1, w // 32 + 1, 3)).astype(np.float32)
    img = patches[(yy // 32).astype(int), (xx // 32).astype(int)] + rng.normal(0, 2, (h, w, 3))
    masks, boxes, kinds = [], [], []
    occupied = np.zeros((h, w), bool)
    n, tries = rng.integers(2, 4), 0
    while len(masks) < n and tries < 50:
        tries += 1
        kind = int(rng.integers(0, 3))
        bw, bh = rng.integers(24, 56), rng.integers(24, 56)
        x0, y0 = rng.integers(2, w - bw - 2), rng.integers(2, h - bh - 2)
        if kind == 0:  # rectangle
            m = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
        elif kind == 1:  # ellipse
            m = ((xx + 0.5 - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy + 0.5 - y0 - bh / 2) / (bh / 2)) ** 2 <= 1
        else:  # triangle, apex up
            t = (yy + 0.5 - y0) / bh
            m = (t >= 0) & (t <= 1) & (np.abs(xx + 0.5 - x0 - bw / 2) <= t * bw / 2)
        if (m & occupied).any():
            continue
        occupied |= m
        img[m] = np.array(COLOURS[rng.integers(len(COLOURS))], np.float32) + rng.normal(0, 2, (m.sum(), 3))
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        masks.append(m)
        kinds.append(kind)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32), np.array(kinds), np.stack(masks)


@pytest.fixture
def make_image():
    """``make_image(rng, h=96, w=128)``: a tiny synthetic image of 2-3 uniformly coloured rectangles, ellipses
    and triangles (class = shape kind 0/1/2) on a patchy background -> (image (h, w, 3) uint8, boxes (K, 4),
    kinds (K,), masks (K, h, w) bool)."""
    return _make_image
