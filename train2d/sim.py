"""SIM's self-correction: semantic-aware instance pseudo masks (Li, He et al., CVPR 2023, seeds/004 §3.2-3.3,
Eq. 6-8 and 11; spec/extensions.md §1.2).

For GT k of class y_k, on the EMA teacher (all at stride 4 of the padded input):
    M_I^k = sum_j w_j M_j,  w_j = exp(mu IoU_j) normalised over k's positives       (Eq. 6; ``use_score``
            multiplies in the detection score s_j: IPG's weights with k = mu, MWSIS Eq. 1)
    M^_k  = (1 - alpha) M_S^{y_k} + alpha M_I^k                                    (Eq. 7)
and the student's positives of GT k learn M^_k through IPG's tau_low / tau_high thresholds with BCE + dice
(Eq. 8, ``ipg.ipg_loss``) at weight lambda_1. M_S is the prototype map (``sim_prototypes``, Eq. 1); the
prototypes then move towards the target-1 pixels of the corrected masks (Eq. 2-5).

Why it helps where IPG locks in spill: a pixel of a neighbouring object of the same class has a high M_S but a
low M_I for this instance; the blend keeps it below tau_high (ignored instead of a positive target), and a
background pixel the teacher's mask spills onto has a low M_S, which pulls it below tau_high as well.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import Model2DConfig
from .ipg import pseudo_targets
from .sim_prototypes import PrototypeBank


def rectify(semantic: torch.Tensor, instance: torch.Tensor, alpha: float,
            has_semantic: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7: (K, H, W) semantic maps of each instance's class and (K, H, W) instance maps -> M^ (K, H, W).
    Instances whose class has no prototypes yet (``has_semantic`` False, (K,)) keep their instance map."""
    blended = (1 - alpha) * semantic + alpha * instance
    if has_semantic is None:
        return blended
    return torch.where(has_semantic.to(blended.device)[:, None, None], blended, instance)


def instance_scores(instance: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 11: S_k = mean of the instance map M_I^k over the target-1 pixels of M^_k; (K, H, W) x2 -> (K,),
    0 for an instance without target-1 pixels."""
    pos = target.flatten(1) > 0
    return (instance.flatten(1) * pos).sum(1) / pos.sum(1).clamp(min=1)


@torch.no_grad()
def sim_teacher_outputs(teacher, bank: PrototypeBank, images: torch.Tensor, targets: list[dict],
                        cfg: Model2DConfig, update: bool = True) -> dict:
    """The EMA teacher's SIM pseudo masks: ``teacher.teacher_dict``'s keys (``pseudo_masks`` are the corrected
    maps M^, (K, H/4, W/4) per image) plus ``instance_maps`` (M_I) and ``scores`` (S_k, (K,) per image).
    ``update``: move the bank's prototypes with this batch (Eq. 2-5), after the maps are computed.
    A target's ``occluded`` (K, H/4, W/4) bool (copy-paste) forces those pixels of its map to 0."""
    sc, ic = cfg.sim, cfg.ipg
    res, feats = teacher.mask_probs_for_boxes(images, targets, k=sc.mu, use_score=sc.use_score, with_feats=True)
    h4, w4 = res[0][0].shape[-2:] if res else (images.shape[-2] // 4, images.shape[-1] // 4)
    z = F.interpolate(feats.float(), size=(h4, w4), mode="bilinear", align_corners=False)  # Z' at stride 4
    sem = bank.maps(z, sc.temperature)  # (B, C, h4, w4), before this batch's update
    corrected, instance, scores = [], [], []
    for b, ((m_i, valid), t) in enumerate(zip(res, targets)):
        cls = t["classes"].long().reshape(-1).to(m_i.device)
        m_i = m_i.float()
        if "pasted" in t:  # pasted objects learn their pasted masks (L_paste), not a pseudo mask
            valid = valid & ~t["pasted"].to(valid.device)
        m_hat = rectify(sem[b, cls], m_i, sc.alpha, bank.initialized[cls])
        if "occluded" in t:
            m_hat = m_hat.masked_fill(t["occluded"].to(m_hat.device), 0.0)
        target, _ = pseudo_targets(m_hat, ic.tau_low, ic.tau_high)
        corrected.append((m_hat, valid)), instance.append(m_i), scores.append(instance_scores(m_i, target))
        if update and valid.any():
            bank.update(z[b], (target > 0) & valid[:, None, None], cls, sc.proto_momentum, sc.sinkhorn_eps,
                        sc.sinkhorn_iters)
    out = teacher.teacher_dict(corrected, targets)
    out.update(instance_maps=instance, scores=scores)
    return out
