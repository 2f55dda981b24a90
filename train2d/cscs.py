"""CSCS on the image side, MWSIS §3.4 Eq. 5-7 (method.md §8): from 2D mask probabilities to per-point class
probabilities at the LiDAR projections. The loss itself (Eq. 5) is ``crossmodal.cscs``, shared with 3D.

Pipeline for one image: ``class_prob_maps`` (per-class max over instance mask probabilities at stride 4),
``sample_at_projections`` (bilinear sampling at LiDAR points' projections given in ORIGINAL-image pixels,
mapped through resize, flip and padding), then ``crossmodal.cscs.cscs_loss``.

Deliberate differences from the authors' code (method.md §1, §8, §13 items 1-3, 9):
* the second projection is mapped like the first (they flip v instead of u and test the y bound on u);
  each image uses its own resize factors (they use the FRONT camera's at test);
* one normaliser for both directions, see ``crossmodal.cscs.cscs_loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .transforms import ImageTransform


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
