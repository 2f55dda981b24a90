"""Image augmentation of the 2D branch (MWSIS §4.2 "Data Augmentation"; method.md §10 "Image size").

Train: keep-ratio resize to (1333, s) with s drawn from {640, ..., 800} (one s per frame, shared by its
cameras), horizontal flip (p 0.5, per image), normalisation, padding (bottom/right) to a multiple of 32
(the authors pad to a fixed 800x1344). Test: (1333, 800). Every step is recorded in an ``ImageTransform`` so
that boxes, LiDAR projections and predictions can be mapped between the original image and the network input.

Coordinates are continuous, pixel i spans [i, i+1) (pixel centre i + 0.5). Resizing multiplies coordinates
by the per-axis factor (new size / old size); a flip maps u -> W - u; padding at the top/left (none by
default) adds its offset. The authors use the width factor for both axes and, for LiDAR projections, flip
the wrong column of the second projection and apply the FRONT camera's factor to every camera at test time
(method.md §1); ``ImageTransform.map_points`` does none of that.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_SHORT_SIDES = (640, 672, 704, 736, 768, 800)
MAX_LONG_SIDE = 1333
TEST_SCALE = (1333, 800)


@dataclass(frozen=True)
class ImageTransform:
    """Original image (h0, w0) -> resized (h1, w1) -> optional horizontal flip -> placed at ``pad_offset``
    (top, left) in a padded canvas ``pad_size`` (hp, wp)."""

    orig_size: tuple[int, int]
    resized_size: tuple[int, int]
    flip: bool = False
    pad_size: tuple[int, int] | None = None
    pad_offset: tuple[int, int] = (0, 0)

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx) = resized / original, per axis."""
        return self.resized_size[0] / self.orig_size[0], self.resized_size[1] / self.orig_size[1]

    @property
    def padded_size(self) -> tuple[int, int]:
        return self.pad_size or self.resized_size

    def map_points(self, uv: torch.Tensor) -> torch.Tensor:
        """(P,2) (u, v) in original-image coordinates -> network-input coordinates."""
        sy, sx = self.scale
        u = uv[:, 0] * sx
        v = uv[:, 1] * sy
        if self.flip:
            u = self.resized_size[1] - u
        return torch.stack([u + self.pad_offset[1], v + self.pad_offset[0]], dim=1)

    def unmap_points(self, uv: torch.Tensor) -> torch.Tensor:
        sy, sx = self.scale
        u = uv[:, 0] - self.pad_offset[1]
        v = uv[:, 1] - self.pad_offset[0]
        if self.flip:
            u = self.resized_size[1] - u
        return torch.stack([u / sx, v / sy], dim=1)

    def map_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(K,4) xyxy original -> input (a flip swaps x0 and x1)."""
        a = self.map_points(boxes[:, :2])
        b = self.map_points(boxes[:, 2:])
        return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)

    def unmap_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        a = self.unmap_points(boxes[:, :2])
        b = self.unmap_points(boxes[:, 2:])
        return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1)

    def unmap_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(K, H, W) maps over the padded input (any stride: H = hp / stride) -> (K, h0, w0) in the original
        image: crop the resized region, undo the flip, bilinear resize to the original size."""
        hp, wp = self.padded_size
        s = hp / masks.shape[-2]
        top, left = self.pad_offset
        h1, w1 = self.resized_size
        if masks.shape[0] == 0:
            return masks.new_zeros(0, *self.orig_size)
        if s != 1:  # back to input resolution first, so the crop is exact
            masks = F.interpolate(masks[:, None], size=(hp, wp), mode="bilinear", align_corners=False)[:, 0]
        m = masks[:, top: top + h1, left: left + w1]
        if self.flip:
            m = m.flip(-1)
        return F.interpolate(m[:, None], size=self.orig_size, mode="bilinear", align_corners=False)[:, 0]


def rescale_size(h: int, w: int, scale: tuple[int, int] = TEST_SCALE) -> tuple[int, int]:
    """mmdet keep-ratio rescale: the largest size with long side <= max(scale) and short side <= min(scale)."""
    long_max, short_max = max(scale), min(scale)
    f = min(long_max / max(h, w), short_max / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def sample_train_scale(rng: np.random.Generator, short_sides=TRAIN_SHORT_SIDES,
                       long_side: int = MAX_LONG_SIDE) -> tuple[int, int]:
    """(long, short) for one frame (shared by its cameras)."""
    return long_side, int(rng.choice(short_sides))


def prepare_image(image, boxes=None, scale: tuple[int, int] = TEST_SCALE, flip: bool = False,
                  pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375), bgr: bool = False,
                  size_divisor: int = 32) -> dict:
    """One image: (H,W,3) uint8 RGB numpy array or (3,H,W) tensor in [0,255] -> dict with ``image`` (3,hp,wp)
    normalised network input, ``image_rgb`` (3,hp,wp) float RGB [0,255] (for the pairwise LAB affinity),
    ``image_size`` (h1, w1), ``boxes`` mapped (if given) and ``transform``. Pads bottom/right with zeros
    (after normalisation, as mmdet) to a multiple of ``size_divisor``."""
    img = torch.as_tensor(image)
    if img.ndim == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
        img = img.permute(2, 0, 1)
    img = img.float()
    h0, w0 = img.shape[-2:]
    h1, w1 = rescale_size(h0, w0, scale)
    if (h1, w1) != (h0, w0):
        img = F.interpolate(img[None], size=(h1, w1), mode="bilinear", align_corners=False, antialias=True)[0]
        img = img.clamp(0, 255)
    if flip:
        img = img.flip(-1)
    hp = -(-h1 // size_divisor) * size_divisor
    wp = -(-w1 // size_divisor) * size_divisor
    tf = ImageTransform((h0, w0), (h1, w1), flip, (hp, wp))
    mean = torch.tensor(pixel_mean).view(3, 1, 1)
    std = torch.tensor(pixel_std).view(3, 1, 1)
    net = ((img[[2, 1, 0]] if bgr else img) - mean) / std
    out = {"image": F.pad(net, (0, wp - w1, 0, hp - h1)), "image_rgb": F.pad(img, (0, wp - w1, 0, hp - h1)),
           "image_size": (h1, w1), "transform": tf}
    if boxes is not None:
        out["boxes"] = tf.map_boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return out


def collate(samples: list[dict], size_divisor: int = 32) -> tuple[torch.Tensor, list[dict]]:
    """Stack prepared samples into a batch padded (bottom/right) to the largest size, a multiple of
    ``size_divisor``; returns ``(images (B,3,H,W), targets)`` where each target keeps the sample's other keys
    (boxes, classes, image_rgb padded to the batch size, image_size, transform with the batch pad size)."""
    hp = max(s["image"].shape[-2] for s in samples)
    wp = max(s["image"].shape[-1] for s in samples)
    hp = -(-hp // size_divisor) * size_divisor
    wp = -(-wp // size_divisor) * size_divisor
    images, targets = [], []
    for s in samples:
        h, w = s["image"].shape[-2:]
        images.append(F.pad(s["image"], (0, wp - w, 0, hp - h)))
        t = {k: v for k, v in s.items() if k != "image"}
        if "image_rgb" in t:
            t["image_rgb"] = F.pad(t["image_rgb"], (0, wp - w, 0, hp - h))
        if "transform" in t:
            t["transform"] = replace(t["transform"], pad_size=(hp, wp))
        targets.append(t)
    return torch.stack(images), targets
