"""BoxInst losses in pure PyTorch (Tian et al. 2021; method.md §10; MWSIS L_boxinst in Eq. 9).

* Projection term: dice between the max-projections of the predicted mask and of the GT box mask, along x and
  along y, summed, averaged over instances (BoxInst Eq. 2).
* Pairwise term: for each pixel i inside the GT box and each of its 8 neighbours j in a 3x3 kernel with
  dilation 2, an edge counts when the LAB colour similarity exp(-||LAB_i - LAB_j|| / 2) >= 0.3; the loss is
  -log P(y_i = y_j) = -log(p_i p_j + (1 - p_i)(1 - p_j)) averaged over counted edges (BoxInst Eq. 3-4), times
  the warm-up factor min(iter / warmup, 1). Computed in log space with zero padding, equivalent to the
  authors' CUDA ``pairwise_nlog`` and AdelaiDet's ``compute_pairwise_term``.

Everything is at the mask output stride (4): the colour image is average-pooled 4x4 (cell j covers pixels
[4j, 4j+4)), box masks mark cells whose centre lies in the box.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) in [0, 255] -> CIE LAB (D65), L in [0, 100] (same as skimage ``rgb2lab``)."""
    c = (rgb / 255.0).clamp(0, 1)
    lin = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    r, g, b = lin.unbind(-3)
    x = (0.412453 * r + 0.357580 * g + 0.180423 * b) / 0.950456
    y = 0.212671 * r + 0.715160 * g + 0.072169 * b
    z = (0.019334 * r + 0.119193 * g + 0.950227 * b) / 1.088754
    eps = (6 / 29) ** 3

    def f(t):
        return torch.where(t > eps, t.clamp(min=eps) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)

    fx, fy, fz = f(x), f(y), f(z)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def box_masks(boxes: torch.Tensor, out_hw: tuple[int, int], stride: int) -> torch.Tensor:
    """(K,4) xyxy input-pixel boxes -> (K,h,w) float masks of the cells at ``stride`` whose centre
    (j + 0.5) * stride lies in the box (inclusive). A box too small to contain a centre marks the cell that
    contains its centre, so no mask is empty."""
    h, w = out_hw
    dev = boxes.device
    xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * stride
    ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * stride
    inx = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3])
    iny = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4])
    m = (iny[:, :, None] & inx[:, None, :]).float()
    empty = m.flatten(1).sum(1) == 0
    if empty.any():
        idx = empty.nonzero().squeeze(1)
        cx = (((boxes[idx, 0] + boxes[idx, 2]) / 2) / stride).long().clamp(0, w - 1)
        cy = (((boxes[idx, 1] + boxes[idx, 3]) / 2) / stride).long().clamp(0, h - 1)
        m[idx, cy, cx] = 1.0
    return m


def unfold_wo_center(x: torch.Tensor, size: int, dilation: int) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,size*size-1,H,W): the dilated neighbours of every pixel (zero padded), centre removed."""
    n, c, h, w = x.shape
    pad = (size + (dilation - 1) * (size - 1)) // 2
    u = F.unfold(x, kernel_size=size, padding=pad, dilation=dilation).reshape(n, c, size * size, h, w)
    centre = size * size // 2
    return torch.cat([u[:, :, :centre], u[:, :, centre + 1:]], dim=2)


def color_similarity(images_rgb: torch.Tensor, valid: torch.Tensor, stride: int, size: int = 3,
                     dilation: int = 2) -> torch.Tensor:
    """Images (B,3,H,W) RGB in [0,255] and a validity mask (B,H,W) (the unpadded image minus removed rows) ->
    (B, size*size-1, H/stride, W/stride) similarities exp(-||dLAB|| / 2) between each stride cell and its
    neighbours; 0 where the cell or its neighbour is outside the valid region (AdelaiDet masks only the
    neighbour; masking the centre too keeps removed bottom rows out of the loss entirely)."""
    pooled = F.avg_pool2d(images_rgb.float(), kernel_size=stride, stride=stride)
    lab = rgb_to_lab(pooled)
    diff = lab[:, :, None] - unfold_wo_center(lab, size, dilation)
    sim = torch.exp(-torch.norm(diff, dim=1) * 0.5)
    start = stride // 2
    v = valid[:, start::stride, start::stride].float()[:, None, : sim.shape[-2], : sim.shape[-1]]
    v_unf = unfold_wo_center(v, size, dilation)[:, 0]
    return sim * v_unf * v


def dice_loss(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-instance dice loss 1 - 2 sum(x t) / (sum(x^2) + sum(t^2) + eps) over flattened dims; (N,)."""
    x, target = x.flatten(1), target.flatten(1)
    inter = (x * target).sum(1)
    union = (x * x).sum(1) + (target * target).sum(1) + eps
    return 1.0 - 2.0 * inter / union


def projection_loss(mask_logits: torch.Tensor, gt_box_masks: torch.Tensor) -> torch.Tensor:
    """BoxInst projection term: mean over instances of dice(max_x p, max_x b) + dice(max_y p, max_y b)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    p = mask_logits.sigmoid()
    loss_y = dice_loss(p.max(dim=1).values, gt_box_masks.max(dim=1).values)  # project along y -> per column
    loss_x = dice_loss(p.max(dim=2).values, gt_box_masks.max(dim=2).values)  # project along x -> per row
    return (loss_x + loss_y).mean()


def pairwise_nlog(mask_logits: torch.Tensor, size: int = 3, dilation: int = 2) -> torch.Tensor:
    """(N,h,w) logits -> (N, size*size-1, h, w) of -log(p_i p_j + (1-p_i)(1-p_j)), in log space."""
    lf = F.logsigmoid(mask_logits)[:, None]
    lb = F.logsigmoid(-mask_logits)[:, None]
    lf_u = unfold_wo_center(lf, size, dilation)[:, 0]
    lb_u = unfold_wo_center(lb, size, dilation)[:, 0]
    same_f = lf[:, 0, None] + lf_u
    same_b = lb[:, 0, None] + lb_u
    return -torch.logaddexp(same_f, same_b)


def pairwise_loss(mask_logits: torch.Tensor, gt_box_masks: torch.Tensor, similarity: torch.Tensor,
                  color_thresh: float = 0.3, size: int = 3, dilation: int = 2) -> torch.Tensor:
    """BoxInst pairwise term. ``similarity`` (N, 8, h, w) is the per-instance (indexed by image) output of
    ``color_similarity``. Edge weight = [sim >= thresh] * [centre cell in the box]; loss = sum / max(sum w, 1).
    The warm-up factor is applied by the caller (``warmup_factor``)."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    nlog = pairwise_nlog(mask_logits, size, dilation)
    weights = (similarity >= color_thresh).float() * gt_box_masks[:, None]
    return (nlog * weights).sum() / weights.sum().clamp(min=1.0)


def warmup_factor(iteration: int | None, warmup_iters: int) -> float:
    """min(iter / warmup, 1); 1 when ``iteration`` is None or there is no warm-up."""
    if iteration is None or warmup_iters <= 0:
        return 1.0
    return min(float(iteration) / warmup_iters, 1.0)
