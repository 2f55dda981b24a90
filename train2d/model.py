"""The 2D branch of MWSIS: CondInst with BoxInst losses, IPG self-supervision and the CSCS 3D->2D term
(MWSIS §3.2, §3.4, Eq. 9: L_2d = a1 L_boxinst + a2 L_pseudo + a3 L_cscs^{3d->2d}, a = 1, 1, 0.5).

Structure (detectron2/AdelaiDet names): ``backbone`` (ResNet+FPN, P3-P7) -> ``head`` (FCOS + controller) ->
``mask_branch`` (P3-P5 -> 16 ch, stride 8) -> ``mask_head`` (dynamic 1x1 convs, logits at stride 4).

Targets, one dict per image, in network-input coordinates (see ``transforms.prepare_image``/``collate``):
    boxes (K,4) xyxy, classes (K,) long in [0, num_classes)
    image_size (h, w)            unpadded size (default: the padded size)
    image_rgb (3,H,W) [0,255]    colours for the pairwise LAB affinity (default: de-normalised input)
    transform (ImageTransform)   needed for CSCS and to scale ``bottom_pixels_removed``
    points_uv (P,2), points_teacher_prob (P,C), points_valid (P,) or (P,C) optional: LiDAR projections in
        ORIGINAL-image pixels and the 3D EMA teacher's class probabilities -> ``loss_cscs_3d_to_2d``
    mask_targets (K,H/4,W/4) optional: true instance masks at the logits' stride -> full supervision:
        ``loss_mask`` (CondInst's dice) replaces BoxInst's ``loss_prj``/``loss_pairwise`` (upper-bound rows)
    pasted (K,) bool, paste_masks (K,H/4,W/4), occluded (K,H/4,W/4) optional: SIM's copy-paste
        (``sim_copypaste.paste_instances``) -> ``loss_paste`` on the pasted objects
The model holds no iteration counter: pass ``iteration`` (warm-ups) explicitly.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNetFPN
from .boxinst import box_masks, color_similarity, dice_loss, pairwise_loss, projection_loss, warmup_factor
from .condinst import DynamicMaskHead, MaskBranch
from .config import Model2DConfig
from ..crossmodal.affinity import affinity_loss
from ..crossmodal.cscs import cscs_loss, cscs_ramp
from .cscs import class_prob_maps, sample_at_projections
from .fcos import FCOSHead, fcos_inference, fcos_losses, fcos_targets, flatten_outputs, ltrb_iou, topk_per_gt
from .ipg import ipg_active, ipg_loss, ipg_pseudo_masks, ipg_weights

MASK_FEAT_STRIDE = 8


class BoxInstModel(nn.Module):
    """BoxInst / CondInst on an FPN backbone (MWSIS §3.2, detectron2's structure on torchvision): FCOS head with
    dynamic mask-head parameters, a mask branch at stride 8, IPG (Eq. 1-2) and CSCS 3D -> 2D (Eq. 7) as options.
    torchvision's contract: ``model(images, targets)`` in training returns the weighted losses; ``predict``
    (or ``model(images)``) returns per-image boxes, scores, classes and masks.
    """
    def __init__(self, cfg: Model2DConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or Model2DConfig()
        self.backbone = ResNetFPN(cfg.backbone)
        c = self.backbone.out_channels
        self.mask_head = DynamicMaskHead(cfg.condinst)
        self.head = FCOSHead(c, cfg.num_classes, cfg.fcos, self.mask_head.num_params, cfg.head_channels)
        self.mask_branch = MaskBranch(c, cfg.condinst)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def param_groups(self, lr: float, weight_decay: float = 1e-4, controller_lr_mult: float = 1.0,
                     norm_decay: bool = False, bias_decay: bool = False) -> list[dict]:
        """Optimiser groups (``param_groups``)."""
        return param_groups(self, lr, weight_decay, controller_lr_mult, norm_decay, bias_decay)

    # ------------------------------------------------------------------ shared pieces
    def _run(self, images: torch.Tensor):
        feats = self.backbone(images)
        flat = flatten_outputs(self.head(feats), self.cfg.fcos.strides)
        return flat, self.mask_branch(feats)

    def _assign(self, flat, targets):
        out = [fcos_targets(flat["locations"], flat["levels"], flat["strides"], t["boxes"].float(),
                            t["classes"], self.cfg.num_classes, self.cfg.fcos) for t in targets]
        return tuple(torch.stack(x) for x in zip(*out))  # labels (B,L), reg_t (B,L,4), gt_inds (B,L)

    def _positives(self, flat, labels, gt_inds, topk: int):
        """Top-k-per-GT positive samples: (im_inds, loc_inds, gt_inds) sorted by image then GT."""
        im, loc = (labels != self.cfg.num_classes).nonzero(as_tuple=True)
        score = flat["cls"][im, loc].detach().sigmoid().max(-1).values * flat["ctr"][im, loc].detach().sigmoid()
        keep = topk_per_gt(score, im, gt_inds[im, loc], topk)
        im, loc = im[keep], loc[keep]
        return im, loc, gt_inds[im, loc]

    def _mask_logits(self, flat, mask_feats, im, loc):
        return self.mask_head(mask_feats, flat["params"][im, loc], flat["locations"][loc], flat["levels"][loc], im,
                              MASK_FEAT_STRIDE)

    def input_rgb(self, images: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 255]: each target's ``image_rgb``, else the de-normalised input."""
        rgb = images * self.pixel_std + self.pixel_mean
        if self.cfg.bgr:
            rgb = rgb[:, [2, 1, 0]]
        return torch.stack([t["image_rgb"].to(images) if "image_rgb" in t else rgb[i]
                            for i, t in enumerate(targets)])

    def _valid_region(self, images, targets):
        B, _, H, W = images.shape
        valid = torch.zeros(B, H, W, dtype=torch.bool, device=images.device)
        for i, t in enumerate(targets):
            h, w = t.get("image_size", (H, W))
            sy = t["transform"].scale[0] if "transform" in t else 1.0
            h = max(h - int(round(self.cfg.boxinst.bottom_pixels_removed * sy)), 0)
            valid[i, :h, :w] = True
        return valid

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                teacher_outputs: dict | None = None, iteration: int | None = None):
        """Training (``targets`` given): dict of weighted losses, to be summed:
        loss_fcos_cls/_loc/_ctr, loss_prj, loss_pairwise (BoxInst, a1 = 1), loss_pseudo (IPG, a2, only with
        ``teacher_outputs`` from the EMA teacher's ``ipg_teacher_outputs``; 0 before the IPG warm-up),
        loss_cscs_3d_to_2d (a3 * ramp, only when targets carry ``points_uv``/``points_teacher_prob``).
        Without targets: ``predict(images)``."""
        if targets is None:
            return self.predict(images)
        flat, mask_feats = self._run(images)
        # the heads and losses below run in fp32: under bf16 autocast, sigmoid(x) rounds to 1 wherever
        # 1 - 1e-5 is not representable, and the pseudo-mask and CSCS losses' log(1 - p) become -inf (the
        # first IPG step of the bf16 CPU regime failed so). The backbone and FPN above keep the autocast.
        flat = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in flat.items()}
        with torch.autocast(images.device.type, enabled=False):
            return self._losses(images, targets, flat, mask_feats.float(), teacher_outputs, iteration)

    def _losses(self, images, targets, flat, mask_feats, teacher_outputs, iteration) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        labels, reg_t, gt_inds = self._assign(flat, targets)
        C = cfg.num_classes
        losses = fcos_losses(flat["cls"].reshape(-1, C), flat["reg"].reshape(-1, 4), flat["ctr"].reshape(-1),
                             labels.reshape(-1), reg_t.reshape(-1, 4), C, cfg.fcos)
        im, loc, gi = self._positives(flat, labels, gt_inds, cfg.condinst.topk_per_img)
        logits = self._mask_logits(flat, mask_feats, im, loc)
        zero = flat["params"].sum() * 0.0 + mask_feats.sum() * 0.0
        if logits.shape[0] == 0:
            logits = logits + zero
        h4, w4 = logits.shape[-2:] if logits.shape[0] else (images.shape[-2] // 4, images.shape[-1] // 4)
        stride = cfg.condinst.mask_out_stride
        bm = _per_gt([box_masks(t["boxes"].float().reshape(-1, 4).to(images.device), (h4, w4), stride)
                      for t in targets], im, gi)
        bx = cfg.boxinst
        if all("mask_targets" in t for t in targets):
            # full supervision (CondInst): dice on the true masks replaces BoxInst's box terms
            gt = _per_gt([t["mask_targets"].to(logits) for t in targets], im, gi)
            losses["loss_mask"] = (dice_loss(logits.sigmoid(), gt).mean() if logits.shape[0] else 0.0) + zero
            return losses
        losses["loss_prj"] = bx.loss_prj_weight * projection_loss(logits, bm) + zero
        with torch.no_grad():
            sim = color_similarity(self.input_rgb(images, targets), self._valid_region(images, targets), stride,
                                   bx.pairwise_size, bx.pairwise_dilation)
        pw = pairwise_loss(logits, bm, sim[im], bx.pairwise_color_thresh, bx.pairwise_size, bx.pairwise_dilation)
        losses["loss_pairwise"] = bx.loss_pairwise_weight * warmup_factor(iteration, bx.pairwise_warmup_iters) * pw \
            + zero
        if teacher_outputs is not None and cfg.ipg.enabled:
            losses["loss_pseudo"] = self._ipg_loss(logits, im, gi, teacher_outputs, iteration) + zero
        if all("paste_masks" in t for t in targets):
            losses["loss_paste"] = self._paste_loss(logits, im, gi, targets) + zero
        if any("points_uv" in t for t in targets):
            losses["loss_cscs_3d_to_2d"] = self._cscs_loss(logits, im, gi, targets, iteration) + zero
        if cfg.cscs.affinity_weight > 0 and any("points_feat_3d" in t for t in targets):
            losses["loss_affinity_3d_to_2d"] = self._affinity_loss(mask_feats, targets, iteration) + zero
        return losses

    def _ipg_loss(self, logits, im, gi, teacher_outputs, iteration):
        ic = self.cfg.ipg
        if not ipg_active(iteration, ic.warmup_iters) or logits.shape[0] == 0:
            return logits.sum() * 0.0
        dev = logits.device
        keep = _per_gt([v.to(dev) for v in teacher_outputs["pseudo_valid"]], im, gi).bool()
        if not keep.any():
            return logits.sum() * 0.0
        target = _per_gt([m.to(logits) for m in teacher_outputs["pseudo_masks"]], im[keep], gi[keep])
        out = ipg_loss(logits[keep], target, ic.tau_low, ic.tau_high)
        # SIM's Eq. 8 is the same loss on its corrected maps, at lambda_1 instead of IPG's alpha_2
        weight = self.cfg.sim.loss_weight if self.cfg.sim.enabled else ic.loss_weight
        return weight * (out["bce"] + out["dice"])

    def _affinity_loss(self, mask_feats, targets, iteration):
        """Joint 2D-3D WSSS Eq. 11 per image: the mask features at the LiDAR projections against the 3D
        teacher's features, pairs weighted by both points' max class score (``crossmodal.affinity``); points
        off the image or on pasted pixels are left out. On CSCS's ramp."""
        cc = self.cfg.cscs
        ramp = cscs_ramp(iteration, cc.start_iter, cc.ramp_iters)
        if ramp == 0.0:
            return mask_feats.sum() * 0.0
        g = torch.Generator().manual_seed(int(iteration or 0))  # the same pairs when a step is replayed
        terms = []
        for b, t in enumerate(targets):
            if "points_feat_3d" not in t:
                continue
            z2d, inside = sample_at_projections(mask_feats[b], t["points_uv"].to(mask_feats), t["transform"],
                                                stride=MASK_FEAT_STRIDE)
            ok = inside
            if "points_valid" in t:
                pv = t["points_valid"].to(ok.device).bool()
                ok = ok & (pv if pv.ndim == 1 else pv.all(1))
            conf = t["points_teacher_prob"].to(z2d).max(1).values
            terms.append(affinity_loss(z2d[ok], t["points_feat_3d"].to(z2d)[ok], conf[ok], cc.affinity_pairs, g))
        if not terms:
            return mask_feats.sum() * 0.0
        return cc.affinity_weight * ramp * torch.stack(terms).mean()

    def _paste_loss(self, logits, im, gi, targets):
        """SIM's L_paste (seeds/004 Eq. 10): the positives of pasted objects learn their pasted masks."""
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        pasted = _per_gt([t["pasted"].to(logits.device) for t in targets], im, gi)
        if not pasted.any():
            return logits.sum() * 0.0
        target = _per_gt([t["paste_masks"].to(logits) for t in targets], im[pasted], gi[pasted])
        out = ipg_loss(logits[pasted], target, self.cfg.ipg.tau_low, self.cfg.ipg.tau_high)
        return self.cfg.sim.copy_paste.loss_weight * (out["bce"] + out["dice"])

    def _cscs_loss(self, logits, im, gi, targets, iteration):
        cc = self.cfg.cscs
        ramp = cscs_ramp(iteration, cc.start_iter, cc.ramp_iters)
        if ramp == 0.0:
            return logits.sum() * 0.0
        vals, teach, valid = [], [], []
        probs = logits.sigmoid()
        for b, t in enumerate(targets):
            if "points_uv" not in t:
                continue
            sel = im == b
            cls = t["classes"].to(logits.device)[gi[sel]]
            maps, present = class_prob_maps(probs[sel], cls, self.cfg.num_classes)
            v, inside = sample_at_projections(maps, t["points_uv"].to(logits), t["transform"],
                                              stride=self.cfg.condinst.mask_out_stride)
            ok = inside[:, None] & present[None]
            if "points_valid" in t:
                pv = t["points_valid"].to(ok.device).bool()
                ok = ok & (pv[:, None] if pv.ndim == 1 else pv)
            vals.append(v), teach.append(t["points_teacher_prob"].to(v)), valid.append(ok)
        if not vals:
            return logits.sum() * 0.0
        loss = cscs_loss(torch.cat(vals), torch.cat(teach), torch.cat(valid), cc.lo, cc.hi, cc.confidence_weighting)
        return cc.weight_3d_to_2d * ramp * loss

    # ------------------------------------------------------------------ teacher (IPG) and per-box masks
    def mask_probs_for_boxes(self, images: torch.Tensor, targets: list[dict], topk_per_img: int | None = None,
                             fallback: bool = False, k: float | None = None, use_score: bool = True,
                             with_feats: bool = False):
        """IPG Eq. 1 per GT box: for each image, ``(maps (K, H/4, W/4), valid (K,))``: the weighted mask
        probability map of each box from its FCOS positive samples (top ``max(topk // K, 1)`` per box,
        w = s exp(k IoU) normalised; ``k`` defaults to ``ipg.k``; ``use_score=False`` drops s: SIM's Eq. 6
        weights exp(mu IoU)). ``valid`` is False for a box without positives (no pseudo mask), unless
        ``fallback``: then such a box uses the single location nearest its centre on the level whose size
        range holds max(w, h) / 2 (useful for predict-2d on small boxes). ``with_feats``: returns
        ``(list, mask_feats (B, D, H/8, W/8))``. Run under ``torch.no_grad``."""
        cfg = self.cfg
        flat, mask_feats = self._run(images)
        labels, reg_t, gt_inds = self._assign(flat, targets)
        im, loc, gi = self._positives(flat, labels, gt_inds, topk_per_img or cfg.ipg.topk_per_img)
        if fallback:
            im, loc, gi = self._add_fallback(flat, targets, im, loc, gi)
        dev = images.device
        cls_of_gt = _per_gt([t["classes"].long().reshape(-1).to(dev) for t in targets], im, gi)
        s = flat["cls"][im, loc, cls_of_gt].sigmoid()
        iou = s.new_zeros(len(im))
        if len(im):
            L = flat["locations"][loc]
            bg = _per_gt([t["boxes"].float().reshape(-1, 4).to(dev) for t in targets], im, gi)
            tgt = torch.stack([L[:, 0] - bg[:, 0], L[:, 1] - bg[:, 1], bg[:, 2] - L[:, 0], bg[:, 3] - L[:, 1]], 1)
            pred = flat["reg"][im, loc] * (flat["strides"][loc, None] if cfg.fcos.norm_reg_targets else 1.0)
            iou = ltrb_iou(pred, tgt.clamp(min=0))
        probs = self._mask_logits(flat, mask_feats, im, loc).sigmoid()
        h4, w4 = images.shape[-2] // 4, images.shape[-1] // 4
        out = []
        for b, t in enumerate(targets):
            K = t["boxes"].reshape(-1, 4).shape[0]
            sel = im == b
            if not sel.any():
                out.append((probs.new_zeros(K, h4, w4), torch.zeros(K, dtype=torch.bool, device=probs.device)))
                continue
            score = s[sel] if use_score else torch.ones_like(s[sel])
            w = ipg_weights(score, iou[sel], gi[sel], K, cfg.ipg.k if k is None else k)
            out.append(ipg_pseudo_masks(probs[sel], w, gi[sel], K))
        return (out, mask_feats) if with_feats else out

    def _add_fallback(self, flat, targets, im, loc, gi):
        extra_im, extra_loc, extra_g = [], [], []
        ranges = torch.tensor(self.cfg.fcos.size_ranges, device=flat["locations"].device)
        for b, t in enumerate(targets):
            for g, box in enumerate(t["boxes"].float().reshape(-1, 4).to(ranges.device)):
                if ((im == b) & (gi == g)).any():
                    continue
                half = float((box[2:] - box[:2]).max()) / 2
                hit = ((half >= ranges[:, 0]) & (half <= ranges[:, 1])).nonzero()
                level = int(hit[0, 0]) if len(hit) else 0
                cand = (flat["levels"] == level).nonzero().squeeze(1)
                d = (flat["locations"][cand] - (box[:2] + box[2:]) / 2).pow(2).sum(1)
                extra_im.append(b), extra_loc.append(int(cand[d.argmin()])), extra_g.append(g)
        if not extra_im:
            return im, loc, gi
        dev = im.device
        return tuple(torch.cat([a, torch.tensor(b, dtype=torch.long, device=dev)])
                     for a, b in ((im, extra_im), (loc, extra_loc), (gi, extra_g)))

    @torch.no_grad()
    def ipg_teacher_outputs(self, images: torch.Tensor, targets: list[dict]) -> dict:
        """Run on the EMA teacher; pass the result to the student's ``forward(teacher_outputs=...)``.
        Keys: ``pseudo_masks`` / ``pseudo_valid`` (per image, IPG maps at stride 4 and validity per GT) and
        ``class_maps`` / ``class_present`` (per image, P_j = max over the GTs of class j of M_g, (C,H/4,W/4),
        the 2D->3D CSCS target to sample with ``cscs.sample_at_projections(..., stride=4)``)."""
        return self.teacher_dict(self.mask_probs_for_boxes(images, targets), targets)

    def teacher_dict(self, res: list[tuple[torch.Tensor, torch.Tensor]], targets: list[dict]) -> dict:
        """``ipg_teacher_outputs``'s dict from per-image (pseudo maps (K,h,w), valid (K,))."""
        out = {"pseudo_masks": [m for m, _ in res], "pseudo_valid": [v for _, v in res],
               "class_maps": [], "class_present": []}
        for (m, v), t in zip(res, targets):
            cm, pr = class_prob_maps(m[v], t["classes"].to(m.device)[v], self.cfg.num_classes)
            out["class_maps"].append(cm), out["class_present"].append(pr)
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None,
                transforms: list | None = None, score_thresh: float | None = None) -> list[dict]:
        """Detections with masks per image: boxes (K,4), scores (K,), classes (K,), masks (K,h,w) probabilities
        (threshold 0.5 for binary masks). Without ``transforms``: input coordinates, masks over the unpadded
        input (``image_sizes``, default the padded size). With ``transforms``: boxes and masks mapped back to
        the original image. ``score_thresh`` overrides ``cfg.fcos.score_thresh``. Call ``model.eval()`` first
        (BN statistics)."""
        fcfg = self.cfg.fcos if score_thresh is None else replace(self.cfg.fcos, score_thresh=score_thresh)
        flat, mask_feats = self._run(images)
        B, _, H, W = images.shape
        results = []
        for b in range(B):
            h, w = image_sizes[b] if image_sizes else (transforms[b].resized_size if transforms else (H, W))
            det = fcos_inference(flat, b, (h, w), fcfg, len(fcfg.strides))
            im = torch.full((det["params"].shape[0],), b, dtype=torch.long, device=images.device)
            probs = self.mask_head(mask_feats, det["params"], det["locations"], det["levels"], im,
                                   MASK_FEAT_STRIDE).sigmoid()
            if transforms:
                tf = replace(transforms[b], pad_size=(H, W))
                masks, boxes = tf.unmap_masks(probs), tf.unmap_boxes(det["boxes"])
            else:
                masks = F.interpolate(probs[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0, :h, :w] \
                    if probs.shape[0] else probs.new_zeros(0, h, w)
                boxes = det["boxes"]
            results.append({"boxes": boxes, "scores": det["scores"], "classes": det["classes"], "masks": masks})
        return results


def _per_gt(per_image: list[torch.Tensor], im: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
    """Row ``gi[n]`` of image ``im[n]``'s tensor for every n (per-image tensors concatenated, then indexed)."""
    counts = torch.tensor([len(x) for x in per_image], device=im.device)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.cat(per_image)[offsets[im] + gi]


def param_groups(model: nn.Module, lr: float, weight_decay: float = 1e-4, controller_lr_mult: float = 1.0,
                 norm_decay: bool = False, bias_decay: bool = False) -> list[dict]:
    """Optimiser groups of a 2D model: no weight decay on norm layers (the authors' ``norm_decay_mult=0``)
    unless ``norm_decay``, nor on other 1-D parameters (conv biases, FCOS scales) unless ``bias_decay`` (the
    authors decay those; the trainer passes its config); the CondInst controller optionally at
    ``lr * controller_lr_mult`` (useful with Adam, whose per-weight steps the controller sums over 9 x C
    inputs into every generated parameter; the paper uses SGD lr 0.01 with a 1000-it warm-up)."""
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_params = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (not norm_decay) if id(p) in norm_params else (p.ndim <= 1 and not bias_decay)
        groups.setdefault(("controller" in name, no_decay), []).append(p)
    return [{"params": ps, "lr": lr * (controller_lr_mult if ctrl else 1.0),
             "weight_decay": 0.0 if nd else weight_decay} for (ctrl, nd), ps in groups.items()]


def build_model(cfg: Model2DConfig) -> nn.Module:
    """The 2D model a config asks for: ``WISEModel`` (clicks, ``model.wise.enabled``) or ``BoxInstModel``."""
    if cfg.wise.enabled:
        from .wise_model import WISEModel

        return WISEModel(cfg)
    return BoxInstModel(cfg)
