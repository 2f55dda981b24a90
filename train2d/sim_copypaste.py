"""SIM's online weak copy-paste (Li, He et al., CVPR 2023, seeds/004 §3.4, Eq. 9-11; extensions.md §1.2).

A FIFO bank keeps the instances of the last ``bank`` training images: the pixels inside each box and its
corrected pseudo mask (the target-1 pixels of M^, ``sim.sim_teacher_outputs``) with its score S_k (Eq. 11).
Each training image (after the IPG/SIM warm-up) draws one bank entry and pastes about ``frac`` of its
instances (clamped to [min, max]), drawn in proportion to S_k, at uniform random positions inside the image:
only the mask's pixels are copied, so the pasted object's mask is known exactly and supervises its student
masks (L_paste, Eq. 10, BCE + dice, weight lambda_2).

What pasting changes in the image's targets (``paste_instances``):
- the pasted objects become GT boxes (they enter the FCOS targets), with ``paste_masks`` and ``pasted``;
- an object under a pasted one: its pseudo target is forced to 0 on the pasted pixels (``occluded``); its box
  shrinks to the visible part of the box; a box wholly covered is dropped (its box is the only extent we
  know of it: weak labels have no mask);
- an earlier pasted object under a later one loses those pixels from its mask;
- LiDAR points projected onto pasted pixels are marked invalid (``points_valid``): a pasted object has no
  LiDAR, so CSCS 3D -> 2D must not read the 3D teacher there.

Unstated in the paper and chosen here: placement uniform over the unpadded image, no rescaling (an instance
larger than the image is skipped), instances below ``min_score`` are not banked, one entry per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import CopyPasteConfig


@dataclass
class BankedInstance:
    """One banked instance: ``rgb`` (3, h, w) uint8 pixels of its box, ``mask`` (h, w) bool, class, S_k."""

    rgb: torch.Tensor
    mask: torch.Tensor
    cls: int
    score: float


class PasteBank:
    """The FIFO of the last ``capacity`` images' instance lists. ``state_dict``/``load_state_dict`` let the
    trainer checkpoint it (a resumed run pastes the same instances); one bank per DDP rank."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: list[list[BankedInstance]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, entry: list[BankedInstance]) -> None:
        if entry:
            self.entries.append(entry)
            del self.entries[:-self.capacity]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity,
                "entries": [[{"rgb": i.rgb, "mask": i.mask, "cls": i.cls, "score": i.score} for i in e]
                            for e in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.entries = [[BankedInstance(**i) for i in e] for e in state["entries"]]


def box_pixels(box: torch.Tensor, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel rows/columns (y1, y2, x1, x2), end exclusive, that an xyxy box covers, clipped to ``size``."""
    h, w = size
    x1, y1 = max(int(np.floor(float(box[0]))), 0), max(int(np.floor(float(box[1]))), 0)
    x2, y2 = min(int(np.ceil(float(box[2]))), w), min(int(np.ceil(float(box[3]))), h)
    return y1, max(y2, y1), x1, max(x2, x1)


def bank_entry(rgb: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
               scores: torch.Tensor, keep: torch.Tensor, min_score: float) -> list[BankedInstance]:
    """One image's instances for the bank: ``rgb`` (3, H, W) in [0, 255], ``masks`` (K, H, W) bool target-1
    pixels at input resolution, ``boxes`` (K, 4), ``classes`` (K,), ``scores`` (K,) S_k; ``keep`` (K,) bool
    (e.g. not pasted, with a pseudo mask). The mask is cut to the box: outside it is not the object."""
    out = []
    for k in range(len(boxes)):
        if not bool(keep[k]) or float(scores[k]) < min_score:
            continue
        y1, y2, x1, x2 = box_pixels(boxes[k], rgb.shape[-2:])
        mask = masks[k, y1:y2, x1:x2]
        if not mask.any():
            continue
        out.append(BankedInstance(rgb[:, y1:y2, x1:x2].round().clamp(0, 255).to(torch.uint8).clone(),
                                  mask.clone(), int(classes[k]), float(scores[k])))
    return out


def choose_instances(entry: list[BankedInstance], cfg: CopyPasteConfig, rng: np.random.Generator) -> list[int]:
    """Eq. 9: about ``frac`` of the entry's instances, clamped to [min, max], drawn without replacement in
    proportion to S_k (uniformly if every score is 0; never an instance of score 0 otherwise)."""
    s = np.array([i.score for i in entry], dtype=np.float64)
    p = s / s.sum() if s.sum() > 0 else None
    n = min(int(np.clip(round(cfg.frac * len(entry)), cfg.min, cfg.max)), len(entry) if p is None else int((s > 0).sum()))
    return sorted(rng.choice(len(entry), size=n, replace=False, p=p).tolist())


def _to_input(rgb: torch.Tensor, pixel_mean, pixel_std, bgr: bool) -> torch.Tensor:
    """(3, N) RGB values in [0, 255] -> the network input's normalised channels (``prepare_image``'s)."""
    x = rgb[[2, 1, 0]] if bgr else rgb
    return (x - torch.tensor(pixel_mean, dtype=x.dtype)[:, None]) / torch.tensor(pixel_std, dtype=x.dtype)[:, None]


def _stride_map(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """(..., H, W) bool -> (..., H/stride, W/stride) bool: cells more than half covered."""
    return F.avg_pool2d(mask.float().reshape(-1, 1, *mask.shape[-2:]), stride)[:, 0].reshape(
        *mask.shape[:-2], mask.shape[-2] // stride, mask.shape[-1] // stride) > 0.5


def paste_instances(image: torch.Tensor, target: dict, instances: list[BankedInstance], rng: np.random.Generator,
                    pixel_mean, pixel_std, bgr: bool = False, stride: int = 4) -> tuple[torch.Tensor, dict]:
    """Paste ``instances`` into one padded network-input ``image`` (3, H, W) at uniform random positions of its
    unpadded part, and rewrite ``target`` as the module docstring says. Returns new (image, target); adds
    ``pasted`` (K',) bool, ``paste_masks`` (K', H/s, W/s) float and ``occluded`` (K', H/s, W/s) bool."""
    image, target = image.clone(), dict(target)
    H, W = image.shape[-2:]
    h, w = target.get("image_size", (H, W))
    rgb_t = target["image_rgb"].clone() if "image_rgb" in target else None
    union = torch.zeros(H, W, dtype=torch.bool)
    placed: list[tuple[torch.Tensor, int]] = []
    for inst in instances:
        ih, iw = inst.mask.shape
        if ih > h or iw > w:
            continue
        y0, x0 = int(rng.integers(0, h - ih + 1)), int(rng.integers(0, w - iw + 1))
        full = torch.zeros(H, W, dtype=torch.bool)
        full[y0:y0 + ih, x0:x0 + iw] = inst.mask
        colours = inst.rgb.float()[:, inst.mask]
        image[:, full] = _to_input(colours, pixel_mean, pixel_std, bgr).to(image.dtype)
        if rgb_t is not None:
            rgb_t[:, full] = colours.to(rgb_t.dtype)
        placed = [(m & ~full, c) for m, c in placed]
        placed.append((full, inst.cls))
        union |= full
    placed = [(m, c) for m, c in placed if m.any()]
    boxes, classes = target["boxes"].float().reshape(-1, 4), target["classes"].reshape(-1)
    keep, new_boxes = [], []
    for box in boxes:
        y1, y2, x1, x2 = box_pixels(box, (H, W))
        covered = union[y1:y2, x1:x2]
        if not covered.any():
            keep.append(True), new_boxes.append(box)
            continue
        ys, xs = (~covered).nonzero(as_tuple=True)
        keep.append(len(ys) > 0)
        if len(ys):
            new_boxes.append(torch.stack([torch.maximum(box[0], torch.tensor(float(x1 + xs.min()))),
                                          torch.maximum(box[1], torch.tensor(float(y1 + ys.min()))),
                                          torch.minimum(box[2], torch.tensor(float(x1 + xs.max() + 1))),
                                          torch.minimum(box[3], torch.tensor(float(y1 + ys.max() + 1)))]))
    keep_t = torch.tensor(keep, dtype=torch.bool)
    paste_boxes = [torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                   for m, _ in placed for ys, xs in [m.nonzero(as_tuple=True)]]
    n_keep, n_paste = int(keep_t.sum()), len(placed)
    target["boxes"] = torch.cat([torch.stack(new_boxes) if new_boxes else boxes.new_zeros(0, 4),
                                 torch.stack(paste_boxes) if paste_boxes else boxes.new_zeros(0, 4)])
    target["classes"] = torch.cat([classes[keep_t], torch.tensor([c for _, c in placed], dtype=classes.dtype)])
    for key in ("gt_masks", "sam_masks"):  # per-box lists: a pasted object has none
        if target.get(key) is not None:
            target[key] = [m for m, k in zip(target[key], keep) if k] + [None] * n_paste
    target["pasted"] = torch.cat([torch.zeros(n_keep, dtype=torch.bool), torch.ones(n_paste, dtype=torch.bool)])
    masks = torch.stack([m for m, _ in placed]) if placed else torch.zeros(0, H, W, dtype=torch.bool)
    target["paste_masks"] = torch.cat([torch.zeros(n_keep, H // stride, W // stride),
                                       _stride_map(masks, stride).float()])
    target["occluded"] = torch.cat([_stride_map(union, stride).expand(n_keep, -1, -1),
                                    torch.zeros(n_paste, H // stride, W // stride, dtype=torch.bool)])
    if rgb_t is not None:
        target["image_rgb"] = rgb_t
    if "points_uv" in target and union.any():
        uv = target["transform"].map_points(target["points_uv"].float()).floor().long()
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        hit = torch.zeros(len(uv), dtype=torch.bool)
        hit[inside] = union[uv[inside, 1], uv[inside, 0]]
        pv = target.get("points_valid")
        pv = torch.ones(len(uv), dtype=torch.bool) if pv is None else pv.bool()
        target["points_valid"] = pv & ~(hit[:, None] if pv.ndim == 2 else hit)
    return image, target


def paste_batch(images: torch.Tensor, targets: list[dict], bank: PasteBank, cfg, rng: np.random.Generator):
    """Copy-paste for a collated batch (CPU tensors, before the teacher's forward): each image draws one bank
    entry and pastes ``choose_instances`` of it (``paste_instances``; nothing while the bank is empty, but
    every target still gets the paste keys). ``cfg``: the ``Model2DConfig``. Returns (images, targets)."""
    cp = cfg.sim.copy_paste
    out_images, out_targets = [], []
    for image, t in zip(images, targets):
        chosen = []
        if len(bank):
            entry = bank.entries[int(rng.integers(len(bank)))]
            chosen = [entry[i] for i in choose_instances(entry, cp, rng)]
        image, t = paste_instances(image, t, chosen, rng, cfg.pixel_mean, cfg.pixel_std, cfg.bgr)
        out_images.append(image), out_targets.append(t)
    return torch.stack(out_images), out_targets


def bank_batch(bank: PasteBank, rgb: torch.Tensor, targets: list[dict], teacher_out: dict, cfg,
               stride: int = 4) -> None:
    """Push each image's instances (``bank_entry``) with their corrected masks' target-1 pixels (> tau_high,
    nearest-upsampled from ``stride``) and S_k from ``sim.sim_teacher_outputs``; pasted objects are not
    banked again. ``rgb`` (B, 3, H, W) in [0, 255]; ``cfg``: the ``Model2DConfig``."""
    for b, t in enumerate(targets):
        maps, valid = teacher_out["pseudo_masks"][b], teacher_out["pseudo_valid"][b]
        px = F.interpolate((maps > cfg.ipg.tau_high).float()[None], scale_factor=stride, mode="nearest")[0] > 0.5
        keep = valid.cpu() & ~t.get("pasted", torch.zeros(len(valid), dtype=torch.bool)).cpu()
        bank.push(bank_entry(rgb[b].detach().float().cpu(), px.cpu(), t["boxes"].float().cpu(),
                             t["classes"].cpu(), teacher_out["scores"][b].cpu(), keep, cfg.sim.copy_paste.min_score))
