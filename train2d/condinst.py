"""CondInst mask branch and dynamic mask head (Tian et al. 2020; method.md §10).

* ``MaskBranch``: P3, P4, P5 each refined by a 3x3 conv (norm, ReLU) to ``branch_channels``, upsampled to
  stride 8 and summed; ``branch_num_convs`` 3x3 convs; a 1x1 conv to ``mask_channels`` (16).
* ``DynamicMaskHead``: per instance, the mask features plus 2 relative-coordinate channels (instance location
  minus cell centre, divided by the level's size of interest) go through three dynamic 1x1 convs
  (16+2 -> 8 -> 8 -> 1, ReLU between; 233 generated parameters), giving logits at stride 8, upsampled x2 to
  stride 4 (``mask_out_stride``).

Upsampling uses ``F.interpolate(bilinear, align_corners=False)``, which is exact for our cell convention
(a cell at stride s covers [j*s, (j+1)*s)); AdelaiDet's ``aligned_bilinear`` does the same job for
detectron2's integer-centre convention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CondInstConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "GN":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}")


def _conv_norm_relu(cin: int, cout: int, k: int, norm: str) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, _norm(norm, cout), nn.ReLU(inplace=True))


class MaskBranch(nn.Module):
    """``forward(fpn_feats) -> (B, mask_channels, H/8, W/8)``."""

    def __init__(self, in_channels: int, cfg: CondInstConfig):
        super().__init__()
        self.levels = cfg.branch_in_levels
        ch = cfg.branch_channels
        self.refine = nn.ModuleList(_conv_norm_relu(in_channels, ch, 3, cfg.branch_norm) for _ in self.levels)
        self.tower = nn.Sequential(*[_conv_norm_relu(ch, ch, 3, cfg.branch_norm)
                                     for _ in range(cfg.branch_num_convs)])
        self.out = nn.Conv2d(ch, cfg.mask_channels, 1)
        nn.init.kaiming_uniform_(self.out.weight, a=1)
        nn.init.zeros_(self.out.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = None
        for conv, level in zip(self.refine, self.levels):
            y = conv(feats[level])
            if x is None:
                x = y
            else:
                y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + y
        return self.out(self.tower(x))


def parse_dynamic_params(params: torch.Tensor, dims: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split (N, P) generated parameters into per-layer weights (N, out, in) and biases (N, out, 1):
    all weights first, then all biases (AdelaiDet layout)."""
    n = params.shape[0]
    w_sizes = [a * b for a, b in zip(dims[:-1], dims[1:])]
    b_sizes = dims[1:]
    chunks = torch.split(params, w_sizes + b_sizes, dim=1)
    L = len(w_sizes)
    weights = [chunks[i].reshape(n, dims[i + 1], dims[i]) for i in range(L)]
    biases = [chunks[L + i].reshape(n, dims[i + 1], 1) for i in range(L)]
    return weights, biases


class DynamicMaskHead(nn.Module):
    """Parameter-free module applying the generated per-instance convs.

    ``forward(mask_feats (B,C,h,w), params (N,P), locations (N,2), levels (N,), im_inds (N,),
    mask_feat_stride) -> (N, h*up, w*up)`` mask logits at stride ``mask_out_stride``.
    """

    def __init__(self, cfg: CondInstConfig):
        super().__init__()
        self.cfg = cfg
        cin = cfg.mask_channels + (2 if cfg.rel_coords else 0)
        self.dims = [cin] + [cfg.head_channels] * (cfg.head_num_layers - 1) + [1]
        self.register_buffer("sizes_of_interest", torch.tensor(cfg.sizes_of_interest, dtype=torch.float32),
                             persistent=False)

    @property
    def num_params(self) -> int:
        return sum(a * b + b for a, b in zip(self.dims[:-1], self.dims[1:]))

    def forward(self, mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor,
                levels: torch.Tensor, im_inds: torch.Tensor, mask_feat_stride: int = 8) -> torch.Tensor:
        B, C, h, w = mask_feats.shape
        n = params.shape[0]
        up = mask_feat_stride // self.cfg.mask_out_stride
        if n == 0:
            return mask_feats.new_zeros(0, h * up, w * up)
        x = mask_feats[im_inds].reshape(n, C, h * w)
        if self.cfg.rel_coords:
            xs = torch.arange(w, device=x.device, dtype=x.dtype) * mask_feat_stride + mask_feat_stride / 2
            ys = torch.arange(h, device=x.device, dtype=x.dtype) * mask_feat_stride + mask_feat_stride / 2
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([xx.reshape(-1), yy.reshape(-1)])  # (2, hw)
            rel = (locations[:, :, None] - grid[None]) / self.sizes_of_interest[levels][:, None, None]
            x = torch.cat([rel.to(x.dtype), x], dim=1)
        weights, biases = parse_dynamic_params(params, self.dims)
        for i, (wt, bs) in enumerate(zip(weights, biases)):
            x = torch.bmm(wt, x) + bs
            if i < len(weights) - 1:
                x = F.relu(x)
        logits = x.reshape(n, 1, h, w)
        if up > 1:
            logits = F.interpolate(logits, scale_factor=up, mode="bilinear", align_corners=False)
        return logits[:, 0]
