"""CSCS: consistency sparse cross-modal supervision, MWSIS §3.4 Eq. 5-7 (method.md §8). Pure functions shared
by the 2D trainer (Eq. 7, 3D teacher -> 2D student) and the 3D trainer (Eq. 6, 2D teacher -> 3D student).

Pipeline for one image: ``class_prob_maps`` (per-class max over instance mask probabilities at stride 4),
``sample_at_projections`` (bilinear sampling at LiDAR points' projections given in ORIGINAL-image pixels,
mapped through resize, flip and padding), then ``cscs_loss``.

Deliberate differences from the authors' code (method.md §1, §8, §13 items 1-3, 9):
* the second projection is mapped like the first (they flip v instead of u and test the y bound on u);
  each image uses its own resize factors (they use the FRONT camera's at test);
* one normaliser for both directions, see ``cscs_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .transforms import ImageTransform


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


def class_prob_maps(mask_probs: torch.Tensor, classes: torch.Tensor, num_classes: int):
    """(N,H,W) instance mask probabilities with classes (N,) -> (C,H,W) per-class max (0 where a class has no
    instance) and ``present`` (C,) bool. Used for the teacher's IPG masks (2D->3D, P_j = max_g M_g) and the
    student's proposal masks (3D->2D)."""
    C = num_classes
    H, W = mask_probs.shape[-2:]
    maps = mask_probs.new_zeros(C, H, W)
    present = torch.zeros(C, dtype=torch.bool, device=mask_probs.device)
    for j in range(C):
        sel = classes == j
        if sel.any():
            maps[j] = mask_probs[sel].max(dim=0).values
            present[j] = True
    return maps, present


def sample_at_projections(prob_map: torch.Tensor, uv: torch.Tensor, transform: ImageTransform,
                          stride: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly sample a map over the padded network input at LiDAR projections.

    ``prob_map`` (C,H,W) covers the padded input (``transform.padded_size``) at ``stride`` (inferred as
    padded height / H when None); ``uv`` (P,2) are (u, v) in ORIGINAL-image continuous pixel coordinates
    (pixel i spans [i, i+1), centre i + 0.5). The points go through resize, flip and padding
    (``ImageTransform.map_points``); a map cell j covers [j*stride, (j+1)*stride), so the point x samples the
    map at x / stride in ``grid_sample(align_corners=False)`` terms: gx = 2 x / (W * stride) - 1.
    Returns values (P,C) (differentiable w.r.t. ``prob_map``) and ``inside`` (P,): the point falls in the
    resized image (not in padding, not outside the original image). Points within half a cell of the border
    read the border value.
    """
    C, H, W = prob_map.shape
    hp, wp = transform.padded_size
    if stride is None:
        stride = hp / H
    xy = transform.map_points(uv.to(prob_map.dtype))
    gx = 2 * xy[:, 0] / (W * stride) - 1
    gy = 2 * xy[:, 1] / (H * stride) - 1
    grid = torch.stack([gx, gy], dim=1)[None, None]  # (1,1,P,2)
    vals = F.grid_sample(prob_map[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    top, left = transform.pad_offset
    h1, w1 = transform.resized_size
    inside = ((xy[:, 0] >= left) & (xy[:, 0] < left + w1) & (xy[:, 1] >= top) & (xy[:, 1] < top + h1))
    return vals[0, :, 0].t(), inside
