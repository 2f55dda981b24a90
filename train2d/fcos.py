"""FCOS box head, targets, losses and inference (Tian et al. 2019), as used by CondInst/BoxInst (method.md §10).

Coordinates: continuous pixel coordinates in the (resized, flipped, padded) network input, pixel i spans
[i, i+1). A feature cell j at stride s covers [j*s, (j+1)*s) and its *location* is its centre j*s + s/2
(the same numbers as AdelaiDet's ``compute_locations``). Boxes are xyxy in these coordinates.

The head also carries CondInst's ``controller`` (a 3x3 conv on the regression tower producing the dynamic
mask-head parameters), as in AdelaiDet where it is FCOS's ``top_module``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from .config import FCOSConfig

INF = 1e8


def _gn(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


class Scale(nn.Module):
    """A learnable scalar per FPN level multiplying the box regression (FCOS §3.2)."""
    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOSHead(nn.Module):
    """Shared over P3-P7: cls tower and bbox tower (3x3 conv + GN(32) + ReLU) x ``num_convs``;
    ``forward(feats) -> dict(cls, reg, ctr, params)`` of per-level lists, shapes (B,C,H,W), (B,4,H,W),
    (B,1,H,W), (B,P,H,W). ``reg`` is ReLU'd l, t, r, b in units of the level stride when
    ``norm_reg_targets`` (else exp, in pixels)."""

    def __init__(self, in_channels: int, num_classes: int, cfg: FCOSConfig, num_params: int,
                 channels: int | None = None):
        super().__init__()
        ch = channels or in_channels
        self.cfg = cfg

        def tower():
            layers, c = [], in_channels
            for _ in range(cfg.num_convs):
                layers += [nn.Conv2d(c, ch, 3, padding=1), _gn(ch), nn.ReLU(inplace=True)]
                c = ch
            return nn.Sequential(*layers)

        self.cls_tower, self.bbox_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(ch, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(ch, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(ch, 1, 3, padding=1)
        self.controller = nn.Conv2d(ch, num_params, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in cfg.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, feats: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {"cls": [], "reg": [], "ctr": [], "params": []}
        for level, x in enumerate(feats):
            c, b = self.cls_tower(x), self.bbox_tower(x)
            reg = self.scales[level](self.bbox_pred(b))
            reg = F.relu(reg) if self.cfg.norm_reg_targets else torch.exp(reg)
            out["cls"].append(self.cls_logits(c))
            out["reg"].append(reg)
            out["ctr"].append(self.ctrness(b if self.cfg.centerness_on_reg else c))
            out["params"].append(self.controller(b))
        return out


def compute_locations(h: int, w: int, stride: int, device=None) -> torch.Tensor:
    """(h*w, 2) cell centres (x, y) = (j*s + s/2, i*s + s/2), row-major."""
    xs = torch.arange(w, device=device, dtype=torch.float32) * stride + stride / 2
    ys = torch.arange(h, device=device, dtype=torch.float32) * stride + stride / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def flatten_outputs(head_out: dict[str, list[torch.Tensor]], strides) -> dict[str, torch.Tensor]:
    """Concatenate levels: cls (B,L,C), reg (B,L,4), ctr (B,L), params (B,L,P), locations (L,2),
    levels (L,) long, strides (L,) float. ``reg`` stays in stride units (if normalised)."""
    out: dict[str, torch.Tensor] = {}
    for key in ("cls", "reg", "ctr", "params"):
        out[key] = torch.cat([t.flatten(2).transpose(1, 2) for t in head_out[key]], dim=1)
    out["ctr"] = out["ctr"].squeeze(-1)
    locs, levels, strd = [], [], []
    for level, (t, s) in enumerate(zip(head_out["cls"], strides)):
        h, w = t.shape[-2:]
        locs.append(compute_locations(h, w, s, t.device))
        levels.append(torch.full((h * w,), level, dtype=torch.long, device=t.device))
        strd.append(torch.full((h * w,), float(s), device=t.device))
    out["locations"], out["levels"], out["strides"] = torch.cat(locs), torch.cat(levels), torch.cat(strd)
    return out


def fcos_targets(locations: torch.Tensor, levels: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
                 gt_classes: torch.Tensor, num_classes: int, cfg: FCOSConfig):
    """Per-location targets for one image. Returns ``labels`` (L,) (``num_classes`` = background),
    ``reg_targets`` (L,4) l,t,r,b (divided by the stride if ``norm_reg_targets``), ``gt_inds`` (L,) (-1 bg).

    A location is a candidate for a GT if it lies strictly inside the GT's centre region
    [c - r*s, c + r*s] (r = ``center_sample_radius``, s its level stride) clipped to the box, and if
    max(l,t,r,b) lies in its level's size range (inclusive). Among candidates the smallest-area GT wins.
    """
    L = locations.shape[0]
    dev = locations.device
    if gt_boxes.numel() == 0:
        return (torch.full((L,), num_classes, dtype=torch.long, device=dev), torch.zeros(L, 4, device=dev),
                torch.full((L,), -1, dtype=torch.long, device=dev))
    xs, ys = locations[:, 0:1], locations[:, 1:2]
    x0, y0, x1, y1 = gt_boxes.unbind(1)
    reg = torch.stack([xs - x0, ys - y0, x1 - xs, y1 - ys], dim=2)  # (L,K,4)
    if cfg.center_sample_radius > 0:
        rad = strides[:, None] * cfg.center_sample_radius
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        cb = torch.stack([torch.maximum(cx - rad, x0), torch.maximum(cy - rad, y0),
                          torch.minimum(cx + rad, x1), torch.minimum(cy + rad, y1)], dim=2)
        inside = torch.stack([xs - cb[..., 0], ys - cb[..., 1], cb[..., 2] - xs, cb[..., 3] - ys], 2).min(2).values > 0
    else:
        inside = reg.min(2).values > 0
    ranges = torch.tensor(cfg.size_ranges, dtype=torch.float32, device=dev)[levels]  # (L,2)
    max_reg = reg.max(2).values
    in_range = (max_reg >= ranges[:, 0:1]) & (max_reg <= ranges[:, 1:2])
    area = ((x1 - x0) * (y1 - y0))[None].expand(L, -1).clone()
    area[~(inside & in_range)] = INF
    min_area, ind = area.min(1)
    pos = min_area < INF
    labels = torch.where(pos, gt_classes.long()[ind], torch.full_like(ind, num_classes))
    reg_t = reg[torch.arange(L, device=dev), ind]
    if cfg.norm_reg_targets:
        reg_t = reg_t / strides[:, None]
    gt_inds = torch.where(pos, ind, torch.full_like(ind, -1))
    return labels, reg_t, gt_inds


def ltrb_to_box(ltrb: torch.Tensor) -> torch.Tensor:
    """Boxes relative to their location: (-l, -t, r, b)."""
    return torch.stack([-ltrb[:, 0], -ltrb[:, 1], ltrb[:, 2], ltrb[:, 3]], dim=1)


def ltrb_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Aligned IoU of two sets of l,t,r,b distances from the same locations (scale-free)."""
    pa = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    ta = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    iw = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    ih = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    return inter / (pa + ta - inter).clamp(min=1e-6)


def centerness_targets(reg_targets: torch.Tensor) -> torch.Tensor:
    """FCOS centre-ness (Eq. 3) of (L, 4) regression targets (l, t, r, b): (L,) in [0, 1]."""
    lr, tb = reg_targets[:, [0, 2]], reg_targets[:, [1, 3]]
    c = (lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) * (tb.min(1).values / tb.max(1).values.clamp(min=1e-6))
    return c.clamp(min=0).sqrt()


def fcos_losses(cls: torch.Tensor, reg: torch.Tensor, ctr: torch.Tensor, labels: torch.Tensor,
                reg_targets: torch.Tensor, num_classes: int, cfg: FCOSConfig) -> dict[str, torch.Tensor]:
    """Flat inputs over all images and locations: cls (N,C) logits, reg (N,4), ctr (N,) logits, labels (N,),
    reg_targets (N,4). Focal loss over all locations / #pos; GIoU on positives weighted by the centerness
    targets / their sum; centerness BCE / #pos (AdelaiDet ``fcos_losses``; single process, no all-reduce)."""
    pos = labels != num_classes
    num_pos = max(int(pos.sum()), 1)
    onehot = torch.zeros_like(cls)
    onehot[pos, labels[pos]] = 1.0
    loss_cls = sigmoid_focal_loss(cls, onehot, cfg.focal_alpha, cfg.focal_gamma, reduction="sum") / num_pos
    if pos.any():
        ct = centerness_targets(reg_targets[pos])
        giou = generalized_box_iou_loss(ltrb_to_box(reg[pos]), ltrb_to_box(reg_targets[pos]), reduction="none")
        loss_loc = (giou * ct).sum() / ct.sum().clamp(min=1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos], ct, reduction="sum") / num_pos
    else:
        loss_loc = reg.sum() * 0.0
        loss_ctr = ctr.sum() * 0.0
    return {"loss_fcos_cls": cfg.loss_cls_weight * loss_cls, "loss_fcos_loc": cfg.loss_loc_weight * loss_loc,
            "loss_fcos_ctr": cfg.loss_ctr_weight * loss_ctr}


def topk_per_gt(scores: torch.Tensor, im_inds: torch.Tensor, gt_inds: torch.Tensor, topk_per_img: int) -> torch.Tensor:
    """Indices of the kept positives: in each image each GT keeps its ``max(topk_per_img // #GT, 1)`` best
    positives by ``scores`` (sigmoid(cls).max * sigmoid(ctr), as AdelaiDet/the authors). ``topk_per_img`` <= 0
    keeps all. The result is sorted by (image, GT, score)."""
    if topk_per_img <= 0 or scores.numel() == 0:
        return torch.arange(scores.numel(), device=scores.device)
    keep = []
    for im in im_inds.unique().tolist():
        sel = (im_inds == im).nonzero().squeeze(1)
        gts = gt_inds[sel].unique()
        k = max(topk_per_img // len(gts), 1)
        for g in gts.tolist():
            idx = sel[gt_inds[sel] == g]
            order = scores[idx].argsort(descending=True, stable=True)[:k]
            keep.append(idx[order])
    return torch.cat(keep)


def decode_boxes(locations: torch.Tensor, reg: torch.Tensor, strides: torch.Tensor, norm_reg: bool) -> torch.Tensor:
    """(L, 2) locations (x, y) and (L, 4) distances (l, t, r, b), times the (L,) level strides when
    ``norm_reg``: (L, 4) boxes x1 y1 x2 y2.
    """
    d = reg * strides[:, None] if norm_reg else reg
    return torch.stack([locations[:, 0] - d[:, 0], locations[:, 1] - d[:, 1],
                        locations[:, 0] + d[:, 2], locations[:, 1] + d[:, 3]], dim=1)


@torch.no_grad()
def fcos_inference(flat: dict[str, torch.Tensor], b: int, image_size: tuple[int, int], cfg: FCOSConfig,
                   num_levels: int) -> dict[str, torch.Tensor]:
    """Detections of image ``b``: per level, scores sigmoid(cls)*sigmoid(ctr) above ``score_thresh``, the best
    ``nms_pre``; decoded boxes clipped to ``image_size`` (h, w); class-wise NMS; top ``max_per_img``.
    Returns boxes (K,4), scores, classes, and for CondInst params (K,P), locations (K,2), levels (K,)."""
    scores_all = flat["cls"][b].sigmoid() * flat["ctr"][b].sigmoid()[:, None]
    loc_idx, cls_idx = [], []
    for level in range(num_levels):
        lv = (flat["levels"] == level).nonzero().squeeze(1)
        s = scores_all[lv]
        cand = (s > cfg.score_thresh).nonzero()
        if cand.numel() == 0:
            continue
        cs = s[cand[:, 0], cand[:, 1]]
        top = cs.topk(min(cfg.nms_pre, cs.numel())).indices
        loc_idx.append(lv[cand[top, 0]])
        cls_idx.append(cand[top, 1])
    dev = scores_all.device
    if not loc_idx:
        P = flat["params"].shape[-1]
        return {"boxes": torch.zeros(0, 4, device=dev), "scores": torch.zeros(0, device=dev),
                "classes": torch.zeros(0, dtype=torch.long, device=dev), "params": torch.zeros(0, P, device=dev),
                "locations": torch.zeros(0, 2, device=dev), "levels": torch.zeros(0, dtype=torch.long, device=dev)}
    li, ci = torch.cat(loc_idx), torch.cat(cls_idx)
    scores = scores_all[li, ci]
    boxes = decode_boxes(flat["locations"][li], flat["reg"][b, li], flat["strides"][li], cfg.norm_reg_targets)
    h, w = image_size
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                         boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
    keep = batched_nms(boxes, scores, ci, cfg.nms_thresh)[: cfg.max_per_img]
    li = li[keep]
    return {"boxes": boxes[keep], "scores": scores[keep], "classes": ci[keep], "params": flat["params"][b, li],
            "locations": flat["locations"][li], "levels": flat["levels"][li]}
