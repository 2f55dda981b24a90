"""The 3D segmentor ``VoteSegmentor`` (MWSIS §3.1, §4.2; ``method.md`` §9).

Pipeline, as the authors' ``VoteSegmentor`` (FSD/SST lineage):

1. ``DynamicScatterVFE`` (:mod:`.voxelize`): dynamic voxels, 11 -> 64 -> 64 point MLP with voxel max-pool.
2. ``SparseUNet`` (mmdet3d ``SparseUNet`` without its dense head, as SST's ``SimpleSparseUNet``): a SubM input
   conv, encoder stages ``((64,), (64,64,64), (64,64,64), (128,128,128), (256,256,256))`` whose first conv in
   stages 2-5 is a stride-2 ``SparseConv3d``, then decoder stages ``((256,256,128), (128,128,64), (64,64,64),
   (64,64,64), (64,64,64))``: lateral ``SparseBasicBlock`` on the skip, concat with the upsampled path, merge
   SubM conv, plus the channel-pair sum of the concat ("reduce_channel"), then an inverse-conv upsample (a SubM
   conv in the last stage). Conv order conv -> BN(eps 1e-3, momentum 0.01) -> ReLU; convs have no bias.
   Output: 64-d features per input voxel at full resolution.
3. ``Voxel2PointScatterNeck``: each point gets its voxel's feature plus its xyz offset from the voxel centre
   (64 + 3 = 67).
4. ``VoteSegHead``: MLP 67 -> 128 -> 128 (Linear without bias, BN, ReLU), then ``conv_seg`` Linear 128 -> C
   (one sigmoid per class, no background logit; init normal std 0.01) and ``voting`` Linear 128 -> 3C
   (one sign-sqrt encoded offset per class, see :mod:`.losses`). Dropout 0.

Widths and depths are configurable (``SegmentorConfig.tiny()`` builds a small model for tests). The decoder
must mirror the encoder: decoder stage k (deepest first) is ``(c, c, c_next)`` where ``c`` is the output width
of encoder stage L-k and ``c_next`` that of the stage above it (any width for the last stage).
Points outside the voxel range (``point2voxel == -1``) get zero outputs and ``valid = False``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..crossmodal.cscs import cscs_point_loss
from .losses import LossConfig, segmentor_loss
from .spconv_shim import ensure_spconv_cpu, set_spconv_threads
from .voxelize import DynamicScatterVFE, VoxelConfig, voxel_centres, voxelize

__all__ = ["SegmentorConfig", "Batch", "make_batch", "SparseUNet", "VoteSegmentor"]

_ENC = ((64,), (64, 64, 64), (64, 64, 64), (128, 128, 128), (256, 256, 256))
_ENC_PAD = ((1,), (1, 1, 1), (1, 1, 1), ((0, 1, 1), 1, 1), (1, 1, 1))
_DEC = ((256, 256, 128), (128, 128, 64), (64, 64, 64), (64, 64, 64), (64, 64, 64))


@dataclass(frozen=True)
class SegmentorConfig:
    """Defaults = the authors' ``mwsis_pts_model_config.py`` (``method.md`` §9)."""

    num_classes: int = 3
    point_feats: int = 2  # extra per-point inputs besides xyz: tanh(intensity), elongation
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    vfe_channels: tuple[int, ...] = (64, 64)
    base_channels: int = 64
    encoder_channels: tuple[tuple[int, ...], ...] = _ENC
    encoder_paddings: tuple | None = _ENC_PAD  # None: padding 1 everywhere
    decoder_channels: tuple[tuple[int, int, int], ...] = _DEC
    head_channels: tuple[int, ...] = (128, 128)
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01  # torch convention (= mmcv's); 0.01 makes eval-mode running stats slow to settle
    seg_init_std: float = 0.01

    @classmethod
    def tiny(cls, **kw) -> "SegmentorConfig":
        """A small 3-level model for tests and CPU smoke runs."""
        base = dict(vfe_channels=(16, 16), base_channels=16, encoder_channels=((16,), (16, 16), (32, 32)),
                    encoder_paddings=None, decoder_channels=((32, 32, 16), (16, 16, 16), (16, 16, 16)),
                    head_channels=(32, 32), bn_momentum=0.1)
        base.update(kw)
        return cls(**base)


@dataclass
class Batch:
    """A batch of point clouds, concatenated. ``feats`` = [tanh(intensity), elongation] by default."""

    xyz: torch.Tensor  # (N, 3) float32
    feats: torch.Tensor  # (N, F) float32
    batch_idx: torch.Tensor  # (N,) long, frame of each point
    batch_size: int
    semantic: torch.Tensor | None = None  # (N,) long targets: 0..C-1, BACKGROUND (=C), IGNORE (-1)
    instance: torch.Tensor | None = None  # (N,) long, 0 none; ids are per frame
    centre_offset: torch.Tensor | None = None  # (N, 3) to a given instance centre (NaN: the instance's mean)

    @property
    def offsets(self) -> list[int]:
        counts = torch.bincount(self.batch_idx, minlength=self.batch_size).tolist()
        return [0] + list(np.cumsum(counts))

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-frame slices of a per-point tensor (points of a frame are contiguous, as ``make_batch`` builds)."""
        o = self.offsets
        return [x[o[i]:o[i + 1]] for i in range(self.batch_size)]

    def to(self, device) -> "Batch":
        mv = (lambda t: None if t is None else t.to(device))
        return Batch(mv(self.xyz), mv(self.feats), mv(self.batch_idx), self.batch_size, mv(self.semantic),
                     mv(self.instance), mv(self.centre_offset))


def _t(a, dtype) -> torch.Tensor:
    return a.to(dtype) if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), dtype=dtype)


def make_batch(frames: Sequence[Mapping], device: str | torch.device = "cpu") -> Batch:
    """Concatenate per-frame dicts of numpy arrays (or tensors) into a ``Batch``.

    Each dict has ``xyz`` (n, 3) and either ``feats`` (n, F) ready-made, or raw ``intensity`` (n,) and
    ``elongation`` (n,) (the batch stores tanh(intensity), as the authors' ``LoadPoints``). Optional
    ``semantic`` (n,) and ``instance`` (n,) targets are carried along when every frame has them;
    ``centre_offset`` (n, 3) when any frame has it (NaN for the others).
    """
    xyz, feats, bidx, sem, inst, centre = [], [], [], [], [], []
    for i, f in enumerate(frames):
        p = _t(f["xyz"], torch.float32).reshape(-1, 3)
        if "feats" in f:
            ft = _t(f["feats"], torch.float32).reshape(p.shape[0], -1)
        else:
            ft = torch.stack([torch.tanh(_t(f["intensity"], torch.float32)), _t(f["elongation"], torch.float32)], 1)
        xyz.append(p)
        feats.append(ft)
        bidx.append(torch.full((p.shape[0],), i, dtype=torch.long))
        sem.append(None if f.get("semantic") is None else _t(f["semantic"], torch.long))
        inst.append(None if f.get("instance") is None else _t(f["instance"], torch.long))
        centre.append(torch.full_like(p, float("nan")) if f.get("centre_offset") is None
                      else _t(f["centre_offset"], torch.float32).reshape(-1, 3))
    has = (lambda xs: len(xs) > 0 and all(x is not None for x in xs))
    any_centre = any(f.get("centre_offset") is not None for f in frames)
    return Batch(torch.cat(xyz), torch.cat(feats), torch.cat(bidx), len(frames),
                 torch.cat(sem) if has(sem) else None, torch.cat(inst) if has(inst) else None,
                 torch.cat(centre) if any_centre else None).to(device)


def _norm_act(c: int, cfg: SegmentorConfig) -> list[nn.Module]:
    return [nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum), nn.ReLU(inplace=True)]


class SparseBasicBlock(nn.Module):
    """Residual block of two SubM 3x3x3 convs (mmdet3d ``SparseBasicBlock``)."""

    def __init__(self, c: int, key: str, cfg: SegmentorConfig):
        super().__init__()
        import spconv.pytorch as sp

        self.conv1 = sp.SubMConv3d(c, c, 3, padding=1, bias=False, indice_key=key)
        self.bn1 = nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.conv2 = sp.SubMConv3d(c, c, 3, padding=1, bias=False, indice_key=key)
        self.bn2 = nn.BatchNorm1d(c, eps=cfg.bn_eps, momentum=cfg.bn_momentum)

    def forward(self, x):
        identity = x.features
        out = self.conv1(x)
        out = out.replace_feature(torch.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(torch.relu(self.bn2(out.features) + identity))


class SparseUNet(nn.Module):
    """mmdet3d ``SparseUNet`` encoder/decoder without the dense head; see the module docstring."""

    def __init__(self, in_channels: int, cfg: SegmentorConfig):
        super().__init__()
        import spconv.pytorch as sp

        enc, dec = cfg.encoder_channels, cfg.decoder_channels
        if len(enc) != len(dec):
            raise ValueError(f"encoder has {len(enc)} stages but decoder {len(dec)}")
        self.conv_input = sp.SparseSequential(
            sp.SubMConv3d(in_channels, cfg.base_channels, 3, padding=1, bias=False, indice_key="subm1"),
            *_norm_act(cfg.base_channels, cfg))
        self.encoder = nn.ModuleList()
        cin, outs = cfg.base_channels, []
        for i, blocks in enumerate(enc):
            layers = []
            for j, cout in enumerate(blocks):
                pad = 1 if cfg.encoder_paddings is None else cfg.encoder_paddings[i][j]
                if i > 0 and j == 0:
                    conv = sp.SparseConv3d(cin, cout, 3, stride=2, padding=pad, bias=False, indice_key=f"spconv{i + 1}")
                else:
                    conv = sp.SubMConv3d(cin, cout, 3, padding=pad, bias=False, indice_key=f"subm{i + 1}")
                layers += [conv, *_norm_act(cout, cfg)]
                cin = cout
            self.encoder.append(sp.SparseSequential(*layers))
            outs.append(cin)
        n = len(enc)
        self.lateral, self.merge, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for k, (c_lat, c_merge, c_up) in enumerate(dec):
            level = n - k  # 1-based encoder stage this decoder stage joins
            if not (c_lat == c_merge == cin == outs[level - 1]):
                raise ValueError(f"decoder stage {k} {dec[k]}: needs (c, c, *) with c = {outs[level - 1]} "
                                 f"(encoder stage {level} output) = incoming width {cin}")
            self.lateral.append(SparseBasicBlock(c_lat, f"subm{level}", cfg))
            self.merge.append(sp.SparseSequential(
                sp.SubMConv3d(2 * c_lat, c_merge, 3, padding=1, bias=False, indice_key=f"subm{level}"),
                *_norm_act(c_merge, cfg)))
            if level > 1:
                up = sp.SparseInverseConv3d(c_merge, c_up, 3, bias=False, indice_key=f"spconv{level}")
            else:
                up = sp.SubMConv3d(c_merge, c_up, 3, padding=1, bias=False, indice_key="subm1")
            self.upsample.append(sp.SparseSequential(up, *_norm_act(c_up, cfg)))
            cin = c_up
        self.out_channels = cin

    def forward(self, x):
        x = self.conv_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for k in range(len(self.lateral)):
            lat = self.lateral[k](skips[-1 - k])
            cat = lat.replace_feature(torch.cat([x.features, lat.features], dim=1))
            merged = self.merge[k](cat)
            n, c = merged.features.shape
            reduced = cat.features.view(n, c, -1).sum(dim=2)  # mmdet3d reduce_channel
            x = self.upsample[k](merged.replace_feature(merged.features + reduced))
        return x


class VoteSegmentor(nn.Module):
    """VFE -> SparseUNet -> voxel-to-point neck -> vote/segmentation head (``method.md`` §9)."""

    def __init__(self, cfg: SegmentorConfig = SegmentorConfig(), loss: LossConfig = LossConfig()):
        super().__init__()
        ensure_spconv_cpu()
        self.cfg = cfg
        self.loss_cfg = loss
        self.vfe = DynamicScatterVFE(3 + cfg.point_feats, cfg.vfe_channels, cfg.voxel, cfg.bn_eps, cfg.bn_momentum)
        self.backbone = SparseUNet(self.vfe.out_channels, cfg)
        layers, cin = [], self.backbone.out_channels + 3
        for c in cfg.head_channels:
            layers += [nn.Linear(cin, c, bias=False), *_norm_act(c, cfg)]
            cin = c
        self.head_mlp = nn.Sequential(*layers)
        self.conv_seg = nn.Linear(cin, cfg.num_classes)
        self.voting = nn.Linear(cin, 3 * cfg.num_classes)
        nn.init.normal_(self.conv_seg.weight, std=cfg.seg_init_std)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, batch: Batch, cscs_targets: torch.Tensor | None = None, cscs_weight: float = 0.0,
                cscs_form: str = "soft", confidence_weighting: bool = False,
                background_below: float = 0.5) -> dict[str, torch.Tensor]:
        """torchvision's contract. In eval mode, or for a batch without targets: ``outputs(batch)``. In training
        mode with targets (``batch.semantic``, ``batch.instance``): the weighted losses of Eq. 10,
        dict(loss_sem, loss_vote), plus ``loss_cscs`` = ``cscs_weight`` x Eq. 6 when ``cscs_targets``
        (N, 2, C), the 2D teacher's probabilities at the points' projections (NaN: none), are given, in the
        form ``cscs_form`` (``crossmodal.cscs.cscs_point_loss``). Losses are computed in fp32."""
        out = self.outputs(batch)
        if not self.training or batch.semantic is None:
            return out
        out = {k: (v.float() if v.is_floating_point() else v) for k, v in out.items()}
        with torch.autocast(batch.xyz.device.type, enabled=False):
            losses = segmentor_loss(out, batch.xyz, batch.semantic, batch.instance, batch.batch_idx, self.loss_cfg,
                                    None if batch.centre_offset is None else batch.xyz + batch.centre_offset)
            del losses["loss"]  # the trainer sums what the model returns
            if cscs_targets is not None:
                losses["loss_cscs"] = cscs_weight * cscs_point_loss(out["sem_logits"], cscs_targets, out["valid"],
                                                                    cscs_form, confidence_weighting, background_below)
        return losses

    def outputs(self, batch: Batch, with_features: bool = False) -> dict[str, torch.Tensor]:
        """dict(sem_logits (N, C), votes (N, C, 3) sign-sqrt encoded offsets, valid (N,) bool), and with
        ``with_features`` the per-point features (N, F) the heads read (TWIST's re-correction input; 0 where
        not valid)."""
        import spconv.pytorch as sp

        cfg = self.cfg
        if batch.xyz.device.type == "cpu":
            set_spconv_threads(torch.get_num_threads())  # keep spconv's own OpenMP pool in step with torch's
        vox = voxelize(batch.xyz, batch.batch_idx, cfg.voxel)
        n, c = batch.xyz.shape[0], cfg.num_classes
        valid = vox.valid
        if vox.num_voxels == 0:
            out = dict(sem_logits=batch.xyz.new_zeros((n, c)), votes=batch.xyz.new_zeros((n, c, 3)), valid=valid)
            if with_features:
                out["features"] = batch.xyz.new_zeros((n, self.conv_seg.in_features))
            return out
        vfeat = self.vfe(batch.xyz, batch.feats, vox)
        x = sp.SparseConvTensor(vfeat.contiguous(), vox.coords.contiguous(), cfg.voxel.sparse_shape, batch.batch_size)
        y = self.backbone(x)
        idx = vox.point2voxel[valid]
        to_centre = batch.xyz[valid] - voxel_centres(vox.coords, cfg.voxel)[idx]
        h = self.head_mlp(torch.cat([y.features[idx], to_centre.to(y.features.dtype)], dim=1))
        seg, vote = self.conv_seg(h), self.voting(h).view(-1, c, 3)  # dtype follows autocast, if any
        sem = seg.new_zeros((n, c)).index_put((valid,), seg)
        votes = vote.new_zeros((n, c, 3)).index_put((valid,), vote)
        out = dict(sem_logits=sem, votes=votes, valid=valid)
        if with_features:
            out["features"] = h.new_zeros((n, h.shape[1])).index_put((valid,), h)
        return out
