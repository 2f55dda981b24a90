"""3D losses: per-class sigmoid focal loss and the vote (offset) L1 loss (MWSIS §3.5 Eq. 10; ``method.md`` §9, §4).

``L_3d = a4 * L_cls + a5 * L_vote (+ a6 * L_cscs)`` with a4 = 100, a5 = 1 (a6 = 2 belongs to CSCS, not here).

* **L_cls** = mmdet sigmoid ``FocalLoss`` (gamma 3, alpha 0.8): targets are one-hot over the C classes with
  background (``BACKGROUND = C``) the all-zero row; per element
  ``BCE(x, t) * (alpha t + (1 - alpha)(1 - t)) * pt^gamma`` with ``pt = (1 - p) t + p (1 - t)``, averaged over
  all ``N_sup x C`` elements of the supervised points (mmdet ``reduction='mean'``, no avg_factor), times 100.
  Supervised = target not ``IGNORE`` (-1) and the point inside the voxel range (model output ``valid``). The
  authors also drop points outside every camera (col16 == 0); give those ``IGNORE`` targets.
* **L_vote** = L1 (weight 1) between the point's vote for its *target* class and the encoded offset to its
  instance centre, averaged over the ``N_inst x 3`` elements of the points that have an instance (and a class
  target). The centre is the box's "fake centre": the mean xyz of the points carrying that instance id in that
  frame (``method.md`` §4 "Final 3D pseudo label per point"). Offsets are encoded per axis as
  ``sign(d) sqrt(|d|)`` and decoded as ``p |p|``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["LossConfig", "class_balance_weights", "encode_votes", "decode_votes", "instance_centres", "vote_targets", "focal_loss",
           "vote_loss", "segmentor_loss"]


@dataclass(frozen=True)
class LossConfig:
    """Weights of Eq. 10 (alpha_4 focal loss, alpha_5 vote loss) and the focal loss's gamma and alpha; the class
    balance term is a CPU-regime option, off by default.
    """
    gamma: float = field(default=3.0, metadata={"range": (0.0, None)})
    alpha: float = field(default=0.8, metadata={"range": (0.0, 1.0)})
    sem_weight: float = 100.0  # alpha_4 (Eq. 10)
    vote_weight: float = 1.0  # alpha_5 (Eq. 10)
    # not in the paper (0 = off): positives of class c weigh (negatives_c / positives_c) ** class_balance,
    # counted in the batch, so that rare classes (cyclists: ~1 % of the points) are learnt in short runs
    class_balance: float = field(default=0.0, metadata={"range": (0.0, None)})
    class_balance_max: float = field(default=100.0, metadata={"range": (1.0, None)})  # cap on that weight


def encode_votes(d: torch.Tensor) -> torch.Tensor:
    """sign(d) * sqrt(|d|), elementwise (authors' ``segmentation_head.py:507-511``)."""
    return torch.sign(d) * torch.sqrt(torch.abs(d))


def decode_votes(p: torch.Tensor) -> torch.Tensor:
    """p * |p|, the inverse of :func:`encode_votes`."""
    return p * torch.abs(p)


def _group_ids(instance: torch.Tensor, batch_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(has instance mask, dense group id per point with an instance) for (frame, instance) pairs."""
    has = instance > 0
    key = instance.to(torch.int64)
    if batch_idx is not None:
        key = batch_idx.to(torch.int64) * (int(instance.max().clamp_min(0)) + 1) + key
    _, gid = torch.unique(key[has], return_inverse=True)
    return has, gid


def instance_centres(xyz: torch.Tensor, instance: torch.Tensor, batch_idx: torch.Tensor | None = None,
                     given: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3): the mean xyz of each point's (frame, instance) group; NaN for points without an instance.
    ``given`` (N, 3): a centre per point where the labels carry one (TWIST's ã_j, ``FrameLabels.centre``);
    its NaN rows fall back to the mean."""
    has, gid = _group_ids(instance, batch_idx)
    out = torch.full_like(xyz, float("nan"))
    if bool(has.any()):
        g = int(gid.max()) + 1
        p = xyz[has].to(torch.float64)
        s = torch.zeros((g, 3), dtype=torch.float64, device=xyz.device).index_add_(0, gid, p)
        cnt = torch.zeros(g, dtype=torch.float64, device=xyz.device).index_add_(0, gid, torch.ones_like(p[:, 0]))
        out[has] = (s / cnt[:, None])[gid].to(xyz.dtype)
    if given is not None:
        use = has & torch.isfinite(given).all(dim=1)
        out[use] = given[use].to(xyz.dtype)
    return out


def vote_targets(xyz: torch.Tensor, instance: torch.Tensor, batch_idx: torch.Tensor | None = None,
                 encode: bool = True, given: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3) offset from each point to its instance centre (``instance_centres``, with ``given`` centres
    where set), sign-sqrt encoded if ``encode``; 0 without instance."""
    d = instance_centres(xyz, instance, batch_idx, given) - xyz
    d = torch.nan_to_num(d, nan=0.0)
    return encode_votes(d) if encode else d


def class_balance_weights(t: torch.Tensor, power: float, cap: float = 100.0) -> torch.Tensor:
    """(C,) weight of each class's positives: ``(negatives / positives) ** power`` in the one-hot targets
    ``t`` (N, C), capped at ``cap``; 1 for a class without positives."""
    pos = t.sum(0)
    ratio = (t.shape[0] - pos) / pos.clamp_min(1.0)
    return torch.where(pos > 0, ratio.clamp_min(1.0).pow(power).clamp_max(cap), torch.ones_like(pos))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 3.0, alpha: float = 0.8,
               mask: torch.Tensor | None = None, class_balance: float = 0.0,
               class_balance_max: float = 100.0) -> torch.Tensor:
    """mmdet sigmoid focal loss, mean over supervised points x classes (see module docstring).

    ``target`` (N,) long in 0..C-1 or C (background, all-zero) or -1 (ignored, like ``mask == False``).
    ``class_balance`` > 0 weighs each class's positive elements by :func:`class_balance_weights`.
    Returns 0 (still attached to the graph) when no point is supervised.
    """
    c = logits.shape[1]
    sup = target >= 0
    if mask is not None:
        sup = sup & mask
    x = logits[sup]
    if x.shape[0] == 0:
        return logits.sum() * 0.0
    t = F.one_hot(target[sup].clamp(0, c), c + 1)[:, :c].to(x.dtype)
    p = torch.sigmoid(x)
    pt = (1 - p) * t + p * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma)
    if class_balance > 0:
        w = w * torch.where(t > 0, class_balance_weights(t, class_balance, class_balance_max)[None], 1.0)
    return (F.binary_cross_entropy_with_logits(x, t, reduction="none") * w).mean()


def vote_loss(votes: torch.Tensor, target_class: torch.Tensor, vote_target: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """L1 between ``votes[i, target_class[i]]`` (N, C, 3) and ``vote_target`` (N, 3), mean over masked points x 3."""
    c = votes.shape[1]
    m = mask & (target_class >= 0) & (target_class < c)
    if not bool(m.any()):
        return votes.sum() * 0.0
    idx = torch.nonzero(m, as_tuple=True)[0]
    pred = votes[idx, target_class[idx]]
    return F.l1_loss(pred, vote_target[idx], reduction="mean")


def segmentor_loss(out: dict, xyz: torch.Tensor, semantic: torch.Tensor, instance: torch.Tensor,
                   batch_idx: torch.Tensor | None = None, cfg: LossConfig = LossConfig(),
                   given_centre: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``L_3d`` without CSCS: dict(loss_sem, loss_vote, loss) from the model output and per-point targets.

    ``semantic`` (N,) long: 0..C-1, BACKGROUND (= C) or IGNORE (-1); ``instance`` (N,) long, 0 = none, unique
    within a frame (``batch_idx`` separates frames). Points outside the voxel range (``out["valid"]``) are skipped.
    Vote targets are recomputed here from the (augmented) xyz, which equals transforming the original targets;
    ``given_centre`` (N, 3), where finite, replaces the instance's mean (TWIST's centres, ``FrameLabels.centre``).
    """
    valid = out.get("valid")
    if valid is None:
        valid = torch.ones_like(semantic, dtype=torch.bool)
    loss_sem = cfg.sem_weight * focal_loss(out["sem_logits"], semantic, cfg.gamma, cfg.alpha, mask=valid,
                                           class_balance=cfg.class_balance, class_balance_max=cfg.class_balance_max)
    vt = vote_targets(xyz, torch.where(valid, instance, torch.zeros_like(instance)), batch_idx, given=given_centre)
    loss_vote = cfg.vote_weight * vote_loss(out["votes"], semantic, vt, valid & (instance > 0))
    return dict(loss_sem=loss_sem, loss_vote=loss_vote, loss=loss_sem + loss_vote)
