"""IPG: instance-based pseudo-mask generation, MWSIS §3.2 Eq. 1-2 (method.md §7); SIM's positive-mask
weighting (seeds/004 Eq. 6-8) with the detection score in the weight.

Teacher side (``BoxInstModel.mask_probs_for_boxes`` runs the network; this module holds the maths):
  for GT i with positive samples j = 1..N_i (FCOS assignment, top-k by score),
      w_ij = s_ij exp(k IoU_ij) / sum_j s_ij exp(k IoU_ij)                       (Eq. 1, right)
      M_i  = sum_j w_ij M_ij                                                     (Eq. 1, left)
  with s_ij = sigmoid(cls logit at the GT's class), IoU_ij between the predicted and the GT box (aligned at
  the sample's location), k = 1, M_ij = sigmoid(mask logits) at stride 4.
Student side (Eq. 2): each student proposal assigned to GT i is supervised by M_i thresholded with
tau_low = 0.3 / tau_high = 0.7 (> 0.7 -> 1, < 0.3 -> 0, in between ignored): BCE (mean over confident
pixels of all proposals) + dice, active from the warm-up iteration on.

Deliberate difference: the authors compute the dice once, globally, over the confident pixels of all
proposals (method.md §7, §13 item 8); we compute it PER INSTANCE (as in SIM Eq. 8 and BoxInst's projection
dice) and average over instances with at least one confident pixel, so large objects do not drown small ones.
"""
from __future__ import annotations


import torch
from torchvision.ops import box_iou


def ipg_weights(scores: torch.Tensor, ious: torch.Tensor, gt_inds: torch.Tensor, num_gt: int,
                k: float = 1.0) -> torch.Tensor:
    """Eq. 1 weights: s * exp(k * IoU) normalised over the samples of the same GT. (N,) -> (N,)."""
    raw = scores * torch.exp(k * ious)
    denom = raw.new_zeros(num_gt).index_add(0, gt_inds, raw)
    return raw / denom[gt_inds].clamp(min=1e-12)


def ipg_pseudo_masks(mask_probs: torch.Tensor, weights: torch.Tensor, gt_inds: torch.Tensor,
                     num_gt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 maps: (N,H,W) sample mask probabilities -> (num_gt, H, W) weighted maps and ``valid`` (num_gt,)
    (False for a GT without positive samples: it gets no pseudo mask, as in the authors' code)."""
    H, W = mask_probs.shape[-2:]
    maps = mask_probs.new_zeros(num_gt, H, W)
    maps.index_add_(0, gt_inds, weights[:, None, None] * mask_probs)
    valid = torch.zeros(num_gt, dtype=torch.bool, device=mask_probs.device)
    valid[gt_inds] = True
    return maps, valid


def pseudo_targets(maps: torch.Tensor, tau_low: float = 0.3, tau_high: float = 0.7):
    """Thresholds of §3.2: target 1 where M > tau_high, 0 where M < tau_low; ``confident`` marks both."""
    pos = maps > tau_high
    return pos.to(maps.dtype), pos | (maps < tau_low)


def ipg_loss(mask_logits: torch.Tensor, pseudo_maps: torch.Tensor, tau_low: float = 0.3, tau_high: float = 0.7,
             eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Eq. 2 for P student proposals: ``mask_logits`` (P,H,W) and the pseudo probability map of each
    proposal's GT (P,H,W). Returns ``{"bce", "dice"}``: BCE = mean of -log p / -log(1-p) over all confident
    pixels (p clamped to [eps, 1-eps], as the authors); dice = mean over instances of
    1 - 2 sum(p t) / (sum p^2 + sum t^2 + eps) on their confident pixels (per instance, see module doc)."""
    zero = mask_logits.sum() * 0.0
    if mask_logits.shape[0] == 0:
        return {"bce": zero, "dice": zero}
    target, conf = pseudo_targets(pseudo_maps.detach(), tau_low, tau_high)
    conf_f = conf.to(mask_logits.dtype)
    if not conf.any():
        return {"bce": zero, "dice": zero}
    p = mask_logits.sigmoid().clamp(eps, 1 - eps)
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
    bce = (bce * conf_f).sum() / conf_f.sum()
    pc, tc = (p * conf_f).flatten(1), (target * conf_f).flatten(1)
    has = conf.flatten(1).any(1)
    dice = 1 - 2 * (pc * tc).sum(1) / ((pc * pc).sum(1) + (tc * tc).sum(1) + eps)
    return {"bce": bce, "dice": dice[has].mean()}


def ipg_active(iteration: int | None, warmup_iters: int) -> bool:
    """The pseudo-mask loss is on from iteration ``warmup_iters`` (authors: 17772) on."""
    return iteration is None or iteration >= warmup_iters


def pseudo_mask_iou(pseudo_maps: torch.Tensor, gt_masks: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor,
                    tau_high: float = 0.7, crowd_iou: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagnostics of the pseudo masks (not a loss): IoU of each box's target-1 pixels (> tau_high) with its
    true mask, (K,H,W) x2 -> (K,); and ``crowded`` (K,) bool, boxes whose IoU with another box of the same
    class exceeds ``crowd_iou`` (where spill onto a neighbour shows, extensions.md §1.4)."""
    pred, gt = pseudo_maps > tau_high, gt_masks > 0.5
    inter = (pred & gt).flatten(1).sum(1)
    union = (pred | gt).flatten(1).sum(1)
    iou = inter.float() / union.clamp(min=1).float()
    overlap = box_iou(boxes, boxes) if len(boxes) else boxes.new_zeros(0, 0)
    same = classes.reshape(-1, 1) == classes.reshape(1, -1)
    same.fill_diagonal_(False)
    return iou, ((overlap > crowd_iou) & same.to(overlap.device)).any(1)
