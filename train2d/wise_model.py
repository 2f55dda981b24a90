"""The WISE 2D segmenter from clicks (Laradji et al., CVPR 2019, seeds/002 §3; extensions.md §4.2), the 2D
trainer's ``model.wise`` option: the BoxInst model's backbone (ResNet/RegNet + FPN) and mask-branch FCN, with
two 1x1 outputs at stride 4 instead of the FCOS and dynamic-mask heads:

    L-Net  (C + 1) class logits, background last (LC-FCN's losses: ``wise.lnet_losses``)
    E-Net  d-dimensional pixel embeddings (the pairwise loss over proposal pairs: ``wise.enet_loss``)
    L_W = lam L_L + (1 - lam) L_E,  lam = 0.1 (the paper)

Targets, one dict per image, in network-input coordinates (``pipelines/training/samples2d``): ``boxes`` (K, 4)
holds each click as a degenerate box (u, v, u, v), so that resizing and flipping move clicks as boxes;
``classes`` (K,); ``proposal_maps`` (K, H/4, W/4) each click's pseudo mask (empty where it has none).

Inference (§3.3, ``wise_instances``): L-Net's blobs give one point each (the highest-probability pixel; its
probability is the score, which the paper leaves unstated); k-means over the background pixels' embeddings
gives as many background seeds as objects; every pixel joins its most similar seed (the Gaussian similarity is
monotone in the distance, so: the nearest). The last step, replacing each mask by the proposal of highest IoU
(``select_proposals``), needs click-free proposals at test time (the paper's SharpMask) and is applied only
when the caller has some.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .backbone import ResNetFPN
from .condinst import MaskBranch
from .config import Model2DConfig, WISEConfig
from .wise import enet_loss, lnet_losses, wise_pairs

STRIDE = 4  # the outputs' stride (the mask branch's stride 8, upsampled x2: extensions.md §4.3 (b))


class WISEModel(nn.Module):
    """L-Net and E-Net on a shared backbone (module docstring). torchvision's contract, as ``BoxInstModel``:
    ``model(images, targets, iteration=...)`` in training returns the weighted losses; ``predict`` returns
    per-image boxes, scores, classes and masks."""

    def __init__(self, cfg: Model2DConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetFPN(cfg.backbone)
        self.num_outputs = cfg.num_classes + 1
        self.decoder = MaskBranch(self.backbone.out_channels,
                                  replace(cfg.condinst, mask_channels=self.num_outputs + cfg.wise.embed_dim))

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L-Net logits (B, C + 1, H/4, W/4), E-Net embeddings (B, d, H/4, W/4)) of ``images`` (B, 3, H, W)."""
        x = self.decoder(self.backbone(images))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).float()
        return x[:, :self.num_outputs], x[:, self.num_outputs:]

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None, teacher_outputs=None,
                iteration: int = 0):
        if not self.training or targets is None:
            return self.predict(images)
        logits, emb = self.outputs(images)
        lnet, enet = [], []
        with torch.autocast(images.device.type, enabled=False):  # the losses in fp32 (log S, log(1 - S))
            for b, t in enumerate(targets):
                h, w = _grid(t.get("image_size", images.shape[-2:]))
                clicks = click_cells(t["boxes"], t["classes"], (h, w))
                lnet.append(sum(lnet_losses(logits[b, :, :h, :w], clicks).values()))
                props = t["proposal_maps"][:, :h, :w].cpu().numpy() > 0.5
                background = ~props.any(0)
                # a fixed draw per (step, image): reproducible runs without a generator in the model
                rng = np.random.default_rng([iteration, b])
                pa, pb, same = wise_pairs(clicks[:, :2], props, background, rng)
                enet.append(enet_loss(emb[b, :, :h, :w], pa, pb, same))
        lam = self.cfg.wise.lam
        return {"loss_lnet": lam * torch.stack(lnet).mean(), "loss_enet": (1 - lam) * torch.stack(enet).mean()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None,
                transforms: list | None = None, score_thresh: float | None = None) -> list[dict]:
        """Instances per image, as ``BoxInstModel.predict``: boxes (K, 4) (the masks' extents), scores (K,),
        classes (K,), masks (K, h, w) in {0, 1}; with ``transforms`` in original-image pixels, else over the
        unpadded input. ``score_thresh``: drop objects whose point probability is lower (default: keep all).
        Call ``model.eval()`` first."""
        logits, emb = self.outputs(images)
        B, _, H, W = images.shape
        results = []
        for b in range(B):
            size = image_sizes[b] if image_sizes else (transforms[b].resized_size if transforms else (H, W))
            h, w = _grid(size)
            masks, scores, classes = wise_instances(logits[b, :, :h, :w].softmax(0), emb[b, :, :h, :w],
                                                    self.cfg.wise)
            if score_thresh is not None:
                keep = scores >= score_thresh
                masks, scores, classes = masks[keep], scores[keep], classes[keep]
            canvas = masks.new_zeros(len(masks), H // STRIDE, W // STRIDE)
            canvas[:, :h, :w] = masks
            if transforms:
                full = replace(transforms[b], pad_size=(H, W)).unmap_masks(canvas)
            else:
                full = F.interpolate(canvas[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0,
                                                                                                          :size[0], :size[1]]
            full = (full > 0.5).float()
            results.append({"boxes": mask_boxes(full), "scores": scores, "classes": classes, "masks": full})
        return results


def _grid(size) -> tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    return -(-h // STRIDE), -(-w // STRIDE)


def click_cells(boxes: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Clicks carried as degenerate boxes (K, 4) (u, v, u, v) in input pixels -> (K, 3) int (row, col, class)
    on the stride-4 grid ``grid`` (h, w), clamped inside it."""
    uv = boxes.detach().reshape(-1, 4)[:, :2].cpu().numpy()
    rows = np.clip(np.floor(uv[:, 1] / STRIDE), 0, grid[0] - 1)
    cols = np.clip(np.floor(uv[:, 0] / STRIDE), 0, grid[1] - 1)
    return np.stack([rows, cols, classes.detach().reshape(-1).cpu().numpy()], 1).astype(np.int64)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) binary masks -> (K, 4) x1 y1 x2 y2 of their pixels (zeros for an empty mask)."""
    out = masks.new_zeros(len(masks), 4)
    for k, m in enumerate(masks):
        ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
        if len(xs):
            out[k] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).to(out)
    return out


def blob_points(prob: np.ndarray, min_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WISE's localisation: per class, each blob (4-connected component of the argmax) of at least ``min_px``
    pixels yields its highest-probability pixel. ``prob`` (C + 1, h, w), background last. Returns (points
    (K, 2) row, col; scores (K,) their class probability; classes (K,))."""
    arg = prob.argmax(0)
    pts, scores, classes = [], [], []
    for cls in range(prob.shape[0] - 1):
        labels, n = ndimage.label(arg == cls)
        if not n:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        peaks = ndimage.maximum_position(prob[cls], labels, np.arange(1, n + 1))
        for b, (r, c) in enumerate(peaks, start=1):
            if sizes[b] >= min_px:
                pts.append((r, c)), scores.append(prob[cls, r, c]), classes.append(cls)
    return (np.asarray(pts, np.int64).reshape(-1, 2), np.asarray(scores, np.float32),
            np.asarray(classes, np.int64))


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) squared distances between rows of ``a`` (n, d) and ``b`` (m, d), without an (n, m, d) array."""
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]


def background_seeds(emb: np.ndarray, candidates: np.ndarray, k: int, iters: int) -> np.ndarray:
    """WISE's background seeds: k-means (Lloyd, ``iters`` steps, deterministic init: k candidates evenly
    spaced in raster order) over the embeddings ``emb`` (n, d) of the ``candidates`` (n,) flat pixel indices;
    each seed is the candidate nearest its cluster mean. (min(k, n),) flat pixel indices."""
    k = min(k, len(candidates))
    if k == 0:
        return np.zeros(0, np.int64)
    centres = emb[np.linspace(0, len(emb) - 1, k).round().astype(int)].copy()
    for _ in range(iters):
        assign = _sqdist(emb, centres).argmin(1)
        for j in range(k):
            if (assign == j).any():
                centres[j] = emb[assign == j].mean(0)
    nearest = _sqdist(emb, centres).argmin(0)
    return np.unique(candidates[nearest])


def wise_instances(prob: torch.Tensor, emb: torch.Tensor, cfg: WISEConfig = WISEConfig(),
                   max_background: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WISE's inference on one image (module docstring). ``prob`` (C + 1, h, w) L-Net probabilities, ``emb``
    (d, h, w) embeddings. Returns masks (K, h, w) float {0, 1}, scores (K,), classes (K,) long; the background
    k-means sees at most ``max_background`` of the background pixels (an even subsample)."""
    p = prob.float().cpu().numpy()
    pts, scores, classes = blob_points(p, cfg.min_blob_px)
    _, h, w = p.shape
    K = len(pts)
    if K == 0:
        return prob.new_zeros(0, h, w), prob.new_zeros(0), torch.zeros(0, dtype=torch.long, device=prob.device)
    e = emb.float().cpu().numpy().reshape(emb.shape[0], -1).T  # (h*w, d)
    bg = np.flatnonzero(p.argmax(0).ravel() == p.shape[0] - 1)
    bg = bg[np.linspace(0, len(bg) - 1, min(len(bg), max_background)).round().astype(int)] if len(bg) else bg
    seeds = np.concatenate([pts[:, 0] * w + pts[:, 1], background_seeds(e[bg], bg, K, cfg.kmeans_iters)])
    owner = _sqdist(e, e[seeds]).argmin(1).reshape(h, w)
    masks = np.stack([owner == n for n in range(K)]).astype(np.float32)
    dev = prob.device
    return (torch.as_tensor(masks, device=dev), torch.as_tensor(scores, device=dev),
            torch.as_tensor(classes, device=dev))


def select_proposals(masks: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """WISE's last inference step: each mask (K, h, w) bool replaced by the proposal (M, h, w) bool of highest
    IoU with it; a mask that overlaps no proposal stays. (K, h, w) bool."""
    if not len(masks) or not len(proposals):
        return masks.copy()
    m = masks.reshape(len(masks), -1).astype(np.float32)
    q = proposals.reshape(len(proposals), -1).astype(np.float32)
    inter = m @ q.T
    iou = inter / np.maximum(m.sum(1)[:, None] + q.sum(1)[None] - inter, 1)
    best = iou.argmax(1)
    return np.where((iou.max(1) > 0)[:, None, None], proposals[best], masks)
