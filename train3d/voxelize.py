"""Dynamic voxelisation and the DynamicScatterVFE point encoder (``method.md`` §9, MWSIS §3.1/§4.2).

* **Voxelisation** is dynamic (no cap on points per voxel, the authors' ``max_num_points=-1``): voxel
  (0.25, 0.25, 0.2) m, range [-80, -80, -2, 80, 80, 4] -> a 640 x 640 x 30 grid whose z is padded to 32
  for the UNet (sparse shape ``[z, y, x] = [32, 640, 640]``).
* **Out-of-range points** (outside the half-open cells ``[lo, hi)`` of the range; the authors'
  ``PointsRangeFilter`` removes them beforehand with strict inequalities) are *flagged*, not removed:
  their ``point2voxel`` index is -1 so that per-point outputs stay aligned with the input. The encoder
  gives them no voxel; the model marks them invalid and the losses skip them.
* **Encoder input** per point, 11 values with the default 2 extra features: x, y, z, tanh(intensity),
  elongation (the caller supplies tanh(intensity), see ``model.make_batch``), the offset to the mean of
  the points of its voxel (3) and the offset to its voxel's centre (3).
* **Encoder** (``DynamicScatterVFE``, feat_channels [64, 64]): Linear(no bias) + BatchNorm1d(eps 1e-3,
  momentum 0.01) + ReLU per layer; after every layer but the last the point features are max-pooled per
  voxel and the pooled vector is concatenated back to each point (11 -> 64, then 128 -> 64); the last
  layer's output is max-pooled to give one feature per voxel. The authors pool with ``torch_scatter``;
  here ``torch.Tensor.scatter_reduce(..., "amax")``, no compiled extra. BN is torch's BatchNorm1d (the
  authors' naiveSyncBN1d is a synchronised BN; single process here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["VoxelConfig", "Voxels", "voxelize", "scatter_max", "scatter_mean", "DynamicScatterVFE"]


@dataclass(frozen=True)
class VoxelConfig:
    """The voxel grid (method.md §9): size per axis, the point range it covers and the padding
    of the sparse shape."""
    voxel_size: tuple[float, float, float] = (0.25, 0.25, 0.2)  # x, y, z metres (authors' config)
    point_range: tuple[float, ...] = (-80.0, -80.0, -2.0, 80.0, 80.0, 4.0)  # x0, y0, z0, x1, y1, z1
    pad_multiple: int = 16  # grid sizes are padded up to a multiple (z: 30 -> 32, as the authors' [32, 640, 640])

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(x, y, z) number of real cells."""
        return tuple(int(round((self.point_range[d + 3] - self.point_range[d]) / self.voxel_size[d])) for d in range(3))

    @property
    def sparse_shape(self) -> list[int]:
        """[z, y, x] spatial shape given to spconv, each padded up to ``pad_multiple``."""
        m = max(int(self.pad_multiple), 1)
        gx, gy, gz = self.grid_size
        return [int(math.ceil(g / m) * m) for g in (gz, gy, gx)]


@dataclass
class Voxels:
    """A batch's occupied voxels and each point's voxel."""
    coords: torch.Tensor  # (M, 4) int32 [batch, z, y, x], sorted by (batch, z, y, x)
    point2voxel: torch.Tensor  # (N,) long voxel index of each point, -1 for out-of-range points
    num_voxels: int

    @property
    def valid(self) -> torch.Tensor:
        return self.point2voxel >= 0


def voxelize(xyz: torch.Tensor, batch_idx: torch.Tensor, cfg: VoxelConfig = VoxelConfig()) -> Voxels:
    """Dynamic voxelisation of a batch of points (``xyz`` (N, 3), ``batch_idx`` (N,) long)."""
    lo = torch.tensor(cfg.point_range[:3], dtype=torch.float64, device=xyz.device)
    vs = torch.tensor(cfg.voxel_size, dtype=torch.float64, device=xyz.device)
    grid = torch.tensor(cfg.grid_size, dtype=torch.int64, device=xyz.device)
    cell = torch.floor((xyz.detach().to(torch.float64) - lo) / vs).to(torch.int64)  # (N, 3) x, y, z
    ok = ((cell >= 0) & (cell < grid)).all(dim=1) & torch.isfinite(xyz.detach()).all(dim=1)
    b = batch_idx.to(torch.int64)
    gx, gy, gz = (int(g) for g in cfg.grid_size)
    key = ((b * gz + cell[:, 2]) * gy + cell[:, 1]) * gx + cell[:, 0]
    point2voxel = torch.full((xyz.shape[0],), -1, dtype=torch.int64, device=xyz.device)
    if bool(ok.any()):
        uniq, inv = torch.unique(key[ok], sorted=True, return_inverse=True)
        point2voxel[ok] = inv
    else:
        uniq = key.new_zeros(0)
    x = uniq % gx
    y = (uniq // gx) % gy
    z = (uniq // (gx * gy)) % gz
    bb = uniq // (gx * gy * gz)
    coords = torch.stack([bb, z, y, x], dim=1).to(torch.int32)
    return Voxels(coords=coords, point2voxel=point2voxel, num_voxels=int(uniq.shape[0]))


def scatter_max(src: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """(num, C) per-group max of ``src`` (n, C) rows grouped by ``index`` (n,); empty groups give 0."""
    out = src.new_zeros((num, src.shape[1]))
    idx = index.view(-1, 1).expand(-1, src.shape[1])
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    """(num, C) per-group mean of ``src`` (n, C); empty groups give 0."""
    s = src.new_zeros((num, src.shape[1])).index_add_(0, index, src)
    cnt = src.new_zeros(num).index_add_(0, index, torch.ones_like(index, dtype=src.dtype))
    return s / cnt.clamp_min(1).unsqueeze(1)


def voxel_centres(coords: torch.Tensor, cfg: VoxelConfig) -> torch.Tensor:
    """(M, 3) xyz centres of voxels given as [b, z, y, x] coords."""
    vs = torch.tensor(cfg.voxel_size, dtype=torch.float32, device=coords.device)
    lo = torch.tensor(cfg.point_range[:3], dtype=torch.float32, device=coords.device)
    return (coords[:, [3, 2, 1]].to(torch.float32) + 0.5) * vs + lo


def point_offsets(xyz: torch.Tensor, vox: Voxels, cfg: VoxelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(offset to voxel mean, offset to voxel centre), each (N, 3); zeros for out-of-range points."""
    valid = vox.valid
    idx = vox.point2voxel[valid]
    p = xyz[valid]
    to_mean = torch.zeros_like(xyz)
    to_centre = torch.zeros_like(xyz)
    to_mean[valid] = p - scatter_mean(p, idx, vox.num_voxels)[idx]
    to_centre[valid] = p - voxel_centres(vox.coords, cfg)[idx]
    return to_mean, to_centre


def _mlp_layer(cin: int, cout: int, eps: float, momentum: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout, eps=eps, momentum=momentum),
                         nn.ReLU(inplace=True))


class DynamicScatterVFE(nn.Module):
    """Point encoder -> one feature per voxel (``method.md`` §9 "VFE"); see the module docstring."""

    def __init__(self, in_channels: int = 5, feat_channels: tuple[int, ...] = (64, 64),
                 cfg: VoxelConfig = VoxelConfig(), bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels + 6  # + offset to voxel mean (3) + offset to voxel centre (3)
        layers, cin = [], self.in_channels
        for i, cout in enumerate(feat_channels):
            layers.append(_mlp_layer(cin * (2 if i > 0 else 1), cout, bn_eps, bn_momentum))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.out_channels = feat_channels[-1]

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor, vox: Voxels) -> torch.Tensor:
        """(M, C_out) voxel features from ``xyz`` (N, 3), extra ``feats`` (N, F) and ``vox``."""
        valid = vox.valid
        idx = vox.point2voxel[valid]
        to_mean, to_centre = point_offsets(xyz, vox, self.cfg)
        x = torch.cat([xyz, feats, to_mean, to_centre], dim=1)[valid]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            pooled = scatter_max(x, idx, vox.num_voxels)
            if i + 1 < len(self.layers):
                x = torch.cat([x, pooled[idx]], dim=1)
        return pooled
