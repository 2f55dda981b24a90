"""3D -> 2D feature correlation of Joint 2D-3D WSSS (Kweon & Yoon, NeurIPS 2022, seeds/001 Eq. 8-11;
extensions.md §2.2): the pairwise similarities of the 3D teacher's point features supervise those of the 2D
student's features at the points' projections, each pair weighted by both points' 3D confidence:

    S3d_ab = <z3d_a, z3d_b>,  S2d_ab = <z2d(u_a, v_a), z2d(u_b, v_b)>   (features l2-normalised)
    W_ab   = max_c A3d_{c,a} * max_c A3d_{c,b}
    L      = (1 / N_v^2) sum_{a,b} W_ab |S2d_ab - S3d_ab|

The 3D side is detached (the loss trains the image branch; the paper does not say). N_v^2 pairs cannot be
formed at driving scale (~30k projections per camera), so ``num_pairs`` pairs (a, b) are drawn uniformly
with replacement and the loss is their mean, an unbiased estimate of the double sum / N_v^2 (ours).

The 3D features cross the trainers as ``predictions/3dfeat`` (``data.schema.predictions``): the teacher's
head input through a fixed seeded projection to ``FEATURE_DIM`` dimensions (``feature_projection``),
l2-normalised, so that the exchanged file stays small and its width does not depend on the 3D model's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_projection(in_dim: int, out_dim: int, seed: int = 0) -> torch.Tensor:
    """A fixed (in_dim, out_dim) projection with orthonormal columns where in_dim >= out_dim (rows
    otherwise), from a seeded generator: the same for every round and every machine."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(max(in_dim, out_dim), min(in_dim, out_dim), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)  # orthonormal columns
    return (q if in_dim >= out_dim else q.T).float()


def project_features(feats: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """(N, F) point features -> (N, D) unit vectors through ``projection`` (F, D)."""
    return F.normalize(feats.float() @ projection.to(feats.device), dim=1)


def affinity_loss(z2d: torch.Tensor, z3d: torch.Tensor, conf: torch.Tensor, num_pairs: int | None = 1024,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 11 over P points: ``z2d`` (P, D2) the 2D student's features at the projections, ``z3d`` (P, D3)
    the 3D teacher's (detached here), ``conf`` (P,) the 3D teacher's max class score. ``num_pairs`` None:
    every ordered pair (the exact double sum / P^2); else that many pairs drawn with ``generator``."""
    if z2d.shape[0] == 0:
        return z2d.sum() * 0.0
    a2, a3 = F.normalize(z2d.float(), dim=1), F.normalize(z3d.detach().float(), dim=1)
    c = conf.detach().float()
    if num_pairs is None:
        s2, s3 = a2 @ a2.T, a3 @ a3.T
        return (c[:, None] * c[None, :] * (s2 - s3).abs()).mean()
    P = z2d.shape[0]
    ia = torch.randint(P, (num_pairs,), generator=generator).to(z2d.device)
    ib = torch.randint(P, (num_pairs,), generator=generator).to(z2d.device)
    s2 = (a2[ia] * a2[ib]).sum(1)
    s3 = (a3[ia] * a3[ib]).sum(1)
    return (c[ia] * c[ib] * (s2 - s3).abs()).mean()
