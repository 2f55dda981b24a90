"""CSCS loss, MWSIS §3.4 Eq. 5-7 (method.md §8): the cross-modal consistency term both trainers use, the
2D trainer for Eq. 7 (3D teacher -> 2D student) and the 3D trainer for Eq. 6 (2D teacher -> 3D student).
Neutral to both: plain tensors of per-point class probabilities, no image or voxel geometry (the 2D side
samples its masks at the LiDAR projections in ``train2d.cscs``; the 3D side reads its targets from the
2D teacher's exported predictions).
"""
from __future__ import annotations

import torch


def cscs_loss(student_prob: torch.Tensor, teacher_prob: torch.Tensor, valid: torch.Tensor | None = None,
              lo: float = 0.3, hi: float = 0.7, confidence_weighting: bool = False, form: str = "kl",
              eps: float = 1e-5) -> torch.Tensor:
    """Eq. 5 on (P, C) probabilities; ``teacher_prob`` is treated as a constant.

    * Confidence rule (method.md §8): a (point, class) entry is ignored only when BOTH the student and the
      teacher probability lie in [lo, hi] (inclusive); otherwise it counts with weight 1.
    * ``valid`` (P,C), (P,) or None marks the entries that take part at all (point projects into the image,
      class present: the authors skip classes without a GT/proposal in the image).
    * Normaliser: the number of valid entries, i.e. N_in * N_cls of Eq. 5, for BOTH directions. The authors
      divide 2D->3D by the sum of the confidence weights and 3D->2D by the number of points (method.md §8,
      §13 item 9). Dividing by the confident count would make an almost fully ignored batch (early training,
      both nets uncertain) weigh as much as a confident one, and the two normalisers make alpha_3/alpha_6
      incomparable; Eq. 5 states N_in * N_cls.
    * ``form="kl"`` (default) returns BCE(t, q) - H(t) = KL(t || q): the same gradient w.r.t. the student as
      Eq. 5's BCE, but exactly 0 when the student equals the teacher. ``form="bce"`` returns Eq. 5 itself,
      whose minimum is the teacher's entropy H(t).
    * ``confidence_weighting`` multiplies each point's terms by the teacher's max class score (seeds/001,
      Joint 2D-3D WSSS Eq. 6-7); off by default (not in MWSIS).
    Probabilities are clamped to [eps, 1 - eps] as the authors do.
    """
    t = teacher_prob.detach().clamp(eps, 1 - eps)
    q = student_prob.clamp(eps, 1 - eps)
    if valid is None:
        valid = torch.ones_like(t, dtype=torch.bool)
    elif valid.ndim == 1:
        valid = valid[:, None].expand_as(t)
    valid = valid.bool()
    qd = q.detach()
    uncertain = (qd >= lo) & (qd <= hi) & (t >= lo) & (t <= hi)
    w = (valid & ~uncertain).to(q.dtype)
    if confidence_weighting:
        w = w * teacher_prob.detach().max(dim=1, keepdim=True).values
    ce = -(t * torch.log(q) + (1 - t) * torch.log1p(-q))
    if form == "kl":
        ce = ce + (t * torch.log(t) + (1 - t) * torch.log1p(-t))
    elif form != "bce":
        raise ValueError(f"form must be 'kl' or 'bce', not {form!r}")
    return (ce * w).sum() / valid.sum().clamp(min=1).to(q.dtype)


def cscs_ramp(iteration: int | None, start: int, ramp: int) -> float:
    """Authors' schedule: 0 before ``start``; min((iter - start) / ramp, 1) from ``start`` on."""
    if iteration is None:
        return 1.0
    if iteration < start:
        return 0.0
    return 1.0 if ramp <= 0 else min((iteration - start) / ramp, 1.0)


def cscs_point_loss(sem_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6, 2D -> 3D: ``cscs_loss`` between the 3D student's per-class sigmoids and the 2D teacher's
    probabilities at the points' projections.

    Args:
        sem_logits: (N, C) the 3D student's class logits.
        targets: (N, C) the 2D teacher's probabilities; NaN where a point has none (no projection, class
            absent from the image): those entries carry no loss.
        valid: (N,) bool, points the student labels at all (inside its voxel range); None = all.
    """
    ok = ~torch.isnan(targets)
    if valid is not None:
        ok &= valid[:, None]
    return cscs_loss(torch.sigmoid(sem_logits.float()), torch.nan_to_num(targets, nan=0.0), ok)
