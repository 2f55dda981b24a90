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


def collapse_projections(targets: torch.Tensor) -> torch.Tensor:
    """(N, 2, C) per-projection teacher probabilities -> (N, C): the max over the projections a point has
    (NaN where it has none for that class)."""
    filled = torch.nan_to_num(targets, nan=-1.0).max(dim=1).values
    return torch.where(filled < 0, torch.full_like(filled, float("nan")), filled)


def hard_labels_2d(targets: torch.Tensor, present: torch.Tensor | None = None,
                   background_below: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint 2D-3D WSSS Eq. 5-6 (seeds/001) for driving scenes: the 2D teacher's hard label per point.

    ``targets`` (N, 2, C): probabilities at each point's two projections, NaN where none; ``present``
    (N, 2, C) bool: the classes with a box in that projection's camera (default: the non-NaN entries). Per
    point, the probabilities of present classes are averaged over its projections; the label is the argmax
    over present classes only (t^2d of Eq. 5), or background (= C) when that maximum is below
    ``background_below`` (driving scenes have background, the paper's indoor scenes do not); -1 where the
    point has no present class in any projection (no loss). The weight (Eq. 6) is the max score over present
    classes, averaged over the projections that have one; for a background label it is 1 minus that (ours:
    with the max score itself, a confident "nothing here" at 0.1 would weigh less than any doubtful class).
    Returns (labels (N,) long, weight (N,))."""
    if present is None:
        present = ~torch.isnan(targets)
    p = torch.where(present, torch.nan_to_num(targets, nan=0.0), torch.zeros_like(targets))
    n = present.sum(dim=1)  # (N, C) projections that see each class
    mean = torch.where(n > 0, p.sum(dim=1) / n.clamp(min=1), torch.full_like(p[:, 0], -1.0))
    score, label = mean.max(dim=1)
    proj_max = torch.where(present, p, torch.full_like(p, -1.0)).max(dim=2).values  # (N, 2)
    has = proj_max >= 0
    weight = torch.where(has, proj_max, torch.zeros_like(proj_max)).sum(1) / has.sum(1).clamp(min=1)
    none = score < 0
    background = score < background_below
    label = torch.where(background, torch.full_like(label, targets.shape[-1]), label)
    label = torch.where(none, torch.full_like(label, -1), label)
    weight = torch.where(background, 1 - weight, weight)  # the confidence of "no class here"
    return label, torch.where(none, torch.zeros_like(weight), weight)


def hard_label_loss(sem_logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 7 (seeds/001): (1/N_v) sum_n W_n BCE(sigmoid(A_n), onehot(label_n)), the BCE averaged over the C
    classes (background = all zeros). ``labels`` (N,) in [0, C] or -1 (no loss); ``weight`` (N,) or None
    (unweighted); ``valid`` (N,) bool. N_v counts the points with a label."""
    C = sem_logits.shape[1]
    ok = labels >= 0
    if valid is not None:
        ok &= valid
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), C + 1)[:, :C].to(sem_logits.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(sem_logits, onehot, reduction="none").mean(1)
    w = ok.to(sem_logits.dtype) * (1.0 if weight is None else weight.to(sem_logits.dtype).detach())
    return (bce * w).sum() / ok.sum().clamp(min=1).to(sem_logits.dtype)


def cscs_point_loss(sem_logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
                    form: str = "soft", confidence_weighting: bool = False,
                    background_below: float = 0.5) -> torch.Tensor:
    """Eq. 6, 2D -> 3D, between the 3D student's per-class sigmoids and the 2D teacher at the points'
    projections.

    Args:
        sem_logits: (N, C) the 3D student's class logits.
        targets: (N, 2, C) the 2D teacher's probabilities at each projection; NaN where a point has none (no
            projection, class absent from that camera's boxes): those entries carry no loss. (N, C) is taken
            as already collapsed.
        valid: (N,) bool, points the student labels at all (inside its voxel range); None = all.
        form: "soft" (MWSIS: ``cscs_loss`` against the max over projections, optionally weighted by the
            teacher's max score) or "argmax" (seeds/001: ``hard_labels_2d`` + ``hard_label_loss``, weighted
            by the max score with ``confidence_weighting``).
    """
    if form == "argmax":
        if targets.ndim == 2:
            targets = targets[:, None]
        labels, weight = hard_labels_2d(targets, background_below=background_below)
        return hard_label_loss(sem_logits.float(), labels, weight if confidence_weighting else None, valid)
    if form != "soft":
        raise ValueError(f"form must be 'soft' or 'argmax', not {form!r}")
    if targets.ndim == 3:
        targets = collapse_projections(targets)
    ok = ~torch.isnan(targets)
    if valid is not None:
        ok &= valid[:, None]
    return cscs_loss(torch.sigmoid(sem_logits.float()), torch.nan_to_num(targets, nan=0.0), ok,
                     confidence_weighting=confidence_weighting)
