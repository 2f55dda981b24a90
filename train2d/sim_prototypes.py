"""SIM's class prototypes and semantic map (Li, He et al., CVPR 2023, seeds/004 §3.2, Eq. 1-5;
spec/extensions.md §1.2).

Each class c keeps L unit prototypes P_c (L = 10). For an image, the pixels of class c under the current
pseudo masks (the target-1 pixels of the corrected masks M^ of that class's instances; the paper's M-bar is
unstated, this is extensions.md's proposal) are split among the prototypes by an equal-partition optimal
transport (Eq. 3-4, Sinkhorn-Knopp), assigned hard, and each prototype moves towards the centroid of its
pixels (Eq. 5):  p_l <- gamma p_l + (1 - gamma) mean(z_i : i -> l),  gamma = 0.999, then renormalised.
The semantic map of class c is  M_S^c(i) = sigmoid(max_l <z_i, p_l^c> / tau)  (Eq. 1).

Unstated choices: Sinkhorn's eps 0.05 and 3 iterations (SwAV's); a prototype that receives no pixel stays as
it is; renormalisation after the update. Initialisation is unstated too: the prototypes start as random unit
vectors, and the first image of a class sets them outright: to its centroids, and a prototype that got no
pixel to one of the class's pixels (evenly spaced). So no class waits ~1000 updates for its prototypes to
leave their random start, and no random leftover raises max_l <z, p_l> where it happens to point. Until a class has been seen, it has no
semantic map (``initialized`` is False; ``sim.rectify`` then keeps the instance map alone).

Features z are the EMA teacher's mask features (Z', the CondInst mask branch), l2-normalised per pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Eq. 3-4: the transport plan Q (L, N) of max Tr(Q^T S) + eps H(Q) with rows summing to 1/L and columns
    to 1/N, by alternating normalisation (the column step comes last, so columns hold exactly and rows to
    within the iterations' convergence). ``scores`` (L, N): prototype-pixel cosine similarities."""
    L, N = scores.shape
    # exp((s - max_col) / eps): the per-column shift is absorbed by the column scaling (Q = diag(u) K diag(v))
    q = torch.exp((scores - scores.max(0, keepdim=True).values) / eps).double()
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(1, keepdim=True) * L
        q /= q.sum(0, keepdim=True) * N
    return q.to(scores.dtype)


def prototype_centroids(z: torch.Tensor, prototypes: torch.Tensor, eps: float = 0.05,
                        iters: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4-5 for one class of one image: ``z`` (N, D) unit pixel features, ``prototypes`` (L, D) ->
    (centroids (L, D) of the pixels hard-assigned to each prototype, counts (L,)). A prototype with no
    pixel gets a zero centroid and count 0."""
    L = prototypes.shape[0]
    q = sinkhorn(prototypes @ z.T, eps, iters)
    assign = q.argmax(0)
    counts = torch.bincount(assign, minlength=L)
    sums = z.new_zeros(L, z.shape[1]).index_add_(0, assign, z)
    return sums / counts.clamp(min=1)[:, None].to(z.dtype), counts


def ema_update(prototypes: torch.Tensor, centroids: torch.Tensor, counts: torch.Tensor,
               momentum: float) -> torch.Tensor:
    """Eq. 5: (L, D) prototypes moved towards the centroids of those with ``counts > 0``, renormalised."""
    moved = F.normalize(momentum * prototypes + (1 - momentum) * centroids, dim=1)
    return torch.where((counts > 0)[:, None], moved, prototypes)


def semantic_maps(feats: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 1: ``feats`` (B, D, H, W) (normalised here), ``prototypes`` (C, L, D) -> M_S (B, C, H, W) =
    sigmoid(max_l cos(z, p_l^c) / tau)."""
    z = F.normalize(feats, dim=1)
    cos = torch.einsum("bdhw,cld->bclhw", z, prototypes.to(z))
    return torch.sigmoid(cos.max(2).values / temperature)


class PrototypeBank(nn.Module):
    """The L prototypes of each of C classes as buffers (``prototypes`` (C, L, D), ``initialized`` (C,)), so
    that a checkpoint carries them and a resumed run continues bit-identically. One bank per DDP rank (the
    checkpoint keeps rank 0's). Random unit vectors at construction, from the generator ``seed``."""

    def __init__(self, num_classes: int, num_prototypes: int, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        protos = F.normalize(torch.randn(num_classes, num_prototypes, dim, generator=g), dim=2)
        self.register_buffer("prototypes", protos)
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, feats: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, momentum: float,
               eps: float = 0.05, iters: int = 3) -> None:
        """Eq. 2-5 for one image: ``feats`` (D, H, W) teacher features, ``masks`` (K, H, W) bool, the pixels of
        each instance's pseudo mask, ``classes`` (K,). Every class with at least one pixel moves its
        prototypes (its first image sets them to the centroids)."""
        z_all = F.normalize(feats.float().flatten(1), dim=0)  # (D, H*W)
        for c in torch.unique(classes).tolist():
            pix = masks[classes == c].any(0).flatten()
            if not pix.any():
                continue
            z = z_all[:, pix].T.contiguous()
            centroids, counts = prototype_centroids(z, self.prototypes[c], eps, iters)
            if not bool(self.initialized[c]):
                # the first image sets every prototype: its centroid, or (none assigned) one of the class's
                # pixels, evenly spaced; a random leftover would raise M_S = max_l everywhere it points
                spread = z[torch.arange(len(counts), device=z.device) * len(z) // len(counts)]
                centroids = torch.where((counts > 0)[:, None], centroids, spread)
                counts, momentum_c = torch.ones_like(counts), 0.0
            else:
                momentum_c = momentum
            self.prototypes[c] = ema_update(self.prototypes[c], centroids, counts, momentum_c)
            self.initialized[c] = True

    def maps(self, feats: torch.Tensor, temperature: float) -> torch.Tensor:
        """M_S (B, C, H, W) of ``feats`` (B, D, H, W): ``semantic_maps`` with this bank."""
        return semantic_maps(feats.float(), self.prototypes, temperature)
