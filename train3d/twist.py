"""TWIST's re-correction network Ψ (Chu et al., CVPR 2023, §3.3 "Module B"; ``extensions.md`` §3.2).

Ψ scores each proposal (a group of points the 3D model's vote-shifted clustering put together): a class
(ê_j, logits over the C thing classes) and a certainty (v̂_j = σ(·), trained towards the proposal's point IoU
with its best-matching true instance). Input per proposal: its points' positions relative to the proposal's
centre, concatenated with the 3D model's per-point features ``k̂_j = [xyz ‖ F]``. The encoder is a small
sparse-conv net (two SubM stages, one strided conv) on a proposal-local voxel grid, max-pooled per proposal,
with two MLP heads.

Loss (TWIST Eq. in §3.2): ``L^Ψ = L_sem + L_sc``, ``L_sc`` the BCE of v̂ against the soft IoU targets and
``L_sem`` the cross-entropy of ê against the matched instance's class, only where IoU > 0.5. The model's
features are detached (TWIST leaves open whether gradients reach Φ).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .spconv_shim import ensure_spconv_cpu
from .voxelize import VoxelConfig, scatter_max, scatter_mean, voxelize

__all__ = ["RecorrectionConfig", "RecorrectionNet", "recorrection_loss", "augment_proposals"]


@dataclass(frozen=True)
class RecorrectionConfig:
    """Ψ's size. TWIST does not give its architecture: two stages of ``channels`` on ``voxel_size`` voxels over
    a proposal-local cube of ``extent`` metres (a 16 m cube holds a bus; larger proposals are clipped).

    TWIST's 2 cm voxels suit dense indoor RGB-D. LiDAR returns on an object lie centimetres apart along a
    ring but decimetres between rings, so small voxels leave every point alone in its neighbourhood and the
    sparse convs degrade to a per-point MLP: on held-out tiny synthetic frames (200 steps, 2 seeds) the
    Spearman correlation of v̂ with IoU was 0.36-0.42 at 0.1 m, 0.52-0.56 at 0.3 m and 0.56 at 0.4 m."""
    channels: tuple[int, ...] = field(default=(16, 32), metadata={"length": 2, "range": (1, None)})
    voxel_size: float = field(default=0.4, metadata={"range": (0.01, None)})
    extent: float = field(default=16.0, metadata={"range": (0.1, None)})
    num_classes: int = 3


class RecorrectionNet(nn.Module):
    """Ψ: proposals -> (class logits (P, C), certainty logits (P,))."""

    def __init__(self, in_features: int, cfg: RecorrectionConfig = RecorrectionConfig()):
        super().__init__()
        ensure_spconv_cpu()
        import spconv.pytorch as sp

        self.cfg = cfg
        c1, c2 = cfg.channels
        half = cfg.extent / 2
        self.voxel = VoxelConfig(voxel_size=(cfg.voxel_size,) * 3, point_range=(-half, -half, -half, half, half, half),
                                 pad_multiple=2)
        self.encoder = sp.SparseSequential(
            sp.SubMConv3d(3 + in_features, c1, 3, padding=1, bias=False, indice_key="psi1"),
            nn.BatchNorm1d(c1), nn.ReLU(inplace=True),
            sp.SparseConv3d(c1, c2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(c2), nn.ReLU(inplace=True),
            sp.SubMConv3d(c2, c2, 3, padding=1, bias=False, indice_key="psi2"),
            nn.BatchNorm1d(c2), nn.ReLU(inplace=True))
        d = 2 * c2 + 4  # max- and mean-pooled features, log point count, box extent
        self.cls_head = nn.Sequential(nn.Linear(d, c2), nn.ReLU(inplace=True), nn.Linear(c2, cfg.num_classes))
        self.certainty_head = nn.Sequential(nn.Linear(d, c2), nn.ReLU(inplace=True), nn.Linear(c2, 1))

    def forward(self, xyz: torch.Tensor, features: torch.Tensor, proposal: torch.Tensor,
                num_proposals: int) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            xyz: (n, 3) float positions of the points of every proposal (a point may appear in several).
            features: (n, F) the 3D model's features of those points (detached by the caller or here).
            proposal: (n,) long, which proposal (0..P-1) each row belongs to.
            num_proposals: P.

        Returns:
            class logits (P, C) and certainty logits (P,); a proposal with no point in its grid gets zeros.
        """
        import spconv.pytorch as sp

        local = xyz - scatter_mean(xyz, proposal, num_proposals)[proposal]  # proposal-centred
        vox = voxelize(local, proposal, self.voxel)
        ok = vox.valid
        feats = torch.cat([local, features.detach().to(local.dtype)], dim=1)[ok]
        vfeat = scatter_mean(feats, vox.point2voxel[ok], vox.num_voxels)
        x = sp.SparseConvTensor(vfeat, vox.coords, self.voxel.sparse_shape, num_proposals)
        y = self.encoder(x)
        owner = y.indices[:, 0].long()
        # a max-pool alone sees which patterns occur, not how much of them: the mean, the point count and the
        # box's size tell a fragment or a merge of two objects from a whole one
        count = torch.zeros(num_proposals, dtype=local.dtype, device=local.device).index_add_(
            0, proposal, torch.ones_like(proposal, dtype=local.dtype))
        extent = scatter_max(local, proposal, num_proposals) + scatter_max(-local, proposal, num_proposals)
        pooled = torch.cat([scatter_max(y.features, owner, num_proposals), scatter_mean(y.features, owner, num_proposals),
                            torch.log1p(count)[:, None], extent], dim=1)
        return self.cls_head(pooled), self.certainty_head(pooled).squeeze(1)


def recorrection_loss(class_logits: torch.Tensor, certainty_logits: torch.Tensor, iou: torch.Tensor,
                      gt_class: torch.Tensor, sem_iou_thresh: float = 0.5) -> dict[str, torch.Tensor]:
    """dict(loss_sc, loss_sem): BCE of σ(certainty_logits) (P,) against the soft targets ``iou`` (P,) in [0, 1],
    and the cross-entropy of ``class_logits`` (P, C) against ``gt_class`` (P,) over the proposals with
    ``iou > sem_iou_thresh`` (0 when there are none)."""
    loss_sc = F.binary_cross_entropy_with_logits(certainty_logits, iou.to(certainty_logits.dtype))
    sem = (iou > sem_iou_thresh) & (gt_class >= 0)
    loss_sem = (F.cross_entropy(class_logits[sem], gt_class[sem].long()) if bool(sem.any())
                else class_logits.sum() * 0.0)
    return {"loss_sc": loss_sc, "loss_sem": loss_sem}


def augment_proposals(xyz: torch.Tensor, proposal: torch.Tensor, num_proposals: int,
                      generator: torch.Generator | None = None, scale: tuple[float, float] = (0.9, 1.1),
                      jitter: float = 0.02) -> torch.Tensor:
    """TWIST's Ψ transforms (§3.2, "rotation, translation, per-point scaling"): each proposal's points ``xyz``
    (n, 3) turned about the vertical through the proposal's centre by a random angle and scaled by a random
    factor in ``scale``; every point moved by Gaussian noise of ``jitter`` metres. (Translation is moot: Ψ
    sees proposal-centred positions.)"""
    g = dict(generator=generator, device=xyz.device, dtype=xyz.dtype)
    centre = scatter_mean(xyz, proposal, num_proposals)
    angle = torch.rand(num_proposals, **g) * (2 * torch.pi)
    factor = scale[0] + torch.rand(num_proposals, **g) * (scale[1] - scale[0])
    cos, sin = torch.cos(angle)[proposal], torch.sin(angle)[proposal]
    d = xyz - centre[proposal]
    x = cos * d[:, 0] - sin * d[:, 1]
    y = sin * d[:, 0] + cos * d[:, 1]
    out = torch.stack([x, y, d[:, 2]], dim=1) * factor[proposal, None] + centre[proposal]
    return out + torch.randn(xyz.shape, **g) * jitter
