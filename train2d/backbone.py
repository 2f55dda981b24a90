"""ResNet + FPN backbone producing P3-P7 (FCOS, Tian et al. 2019; MWSIS §4.2, method.md §10).

``BackboneConfig.arch = "regnet_x_400mf"`` swaps the ResNet for torchvision's RegNetX-400MF (Radosavovic et
al. 2020), a CPU deviation: forward + backward of two 320x480 images on one core take 0.69 s against
ResNet-18's 2.28 s (bench measured on the 2-core development machine), so a CPU run can afford the steps
that a model trained from random initialisation needs. The paper's ResNet-50 stays the default.

torchvision ResNet C3-C5 feed a torchvision ``FeaturePyramidNetwork``; P6 and P7 come from the FPN's P5
output (mmdet ``add_extra_convs='on_output'``) with a ReLU before the P7 conv (``relu_before_extra_convs``),
as in the authors' config. Same structure as detectron2's ``build_fcos_resnet_fpn_backbone``.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import regnet, resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from .config import BackboneConfig

_RESNETS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101,
            152: resnet.resnet152}
# RegNet: (constructor, C3-C5 widths); block2-block4 have strides 8, 16, 32 like ResNet's layer2-layer4
_REGNETS = {"regnet_x_400mf": (regnet.regnet_x_400mf, [64, 160, 400]),
            "regnet_x_800mf": (regnet.regnet_x_800mf, [128, 288, 672])}
ARCHS = ("resnet", *_REGNETS)


def load_resnet_weights(model: nn.Module, weights_path: str | Path) -> None:
    """Load ImageNet weights in torchvision format (``resnet50-*.pth``, ``regnet_x_400mf-*.pth`` or a dict
    with ``state_dict``/``model``) from a local file. The classifier (``fc.*``) is ignored; every other
    backbone key must be present."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ResNet weights file not found: {path}. Pass a local torchvision-format ImageNet checkpoint "
            "(e.g. resnet50-0676ba61.pth); nothing is downloaded.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: not a torchvision checkpoint of this backbone "
                         f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")


class ResNetFPN(nn.Module):
    """``forward(images (B,3,H,W)) -> [P3, P4, P5, P6, P7]`` with strides 8..128, ``cfg.fpn_channels`` each."""

    strides = (8, 16, 32, 64, 128)

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        norm = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d}[cfg.norm]
        if cfg.arch == "resnet":
            if cfg.depth not in _RESNETS:
                raise ValueError(f"unsupported ResNet depth {cfg.depth}; choose from {sorted(_RESNETS)}")
            body = _RESNETS[cfg.depth](weights=None, norm_layer=norm)
            if cfg.weights_path:
                load_resnet_weights(body, cfg.weights_path)
            stages = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
            returns = {"layer2": "c3", "layer3": "c4", "layer4": "c5"}
            expansion = 4 if cfg.depth >= 50 else 1
            in_channels = [128 * expansion, 256 * expansion, 512 * expansion]
        elif cfg.arch in _REGNETS:
            make, in_channels = _REGNETS[cfg.arch]
            body = make(weights=None, norm_layer=norm)
            if cfg.weights_path:
                load_resnet_weights(body, cfg.weights_path)
            stages = [["stem"], ["block1"], ["block2"], ["block3"], ["block4"]]
            # flatten the trunk so that IntermediateLayerGetter sees the blocks as children
            body = nn.Sequential(OrderedDict([("stem", body.stem), *body.trunk_output.named_children()]))
            returns = {"block2": "c3", "block3": "c4", "block4": "c5"}
        else:
            raise ValueError(f"unsupported backbone arch {cfg.arch!r}; choose from {list(ARCHS)}")
        for names in stages[: cfg.frozen_stages + 1] if cfg.frozen_stages > 0 else []:
            for name in names:
                for p in getattr(body, name).parameters():
                    p.requires_grad_(False)
        self.body = IntermediateLayerGetter(body, returns)
        c = cfg.fpn_channels
        # LastLevelP6P7(c, c) uses the FPN P5 output (in == out) and applies ReLU before P7.
        self.fpn = FeaturePyramidNetwork(in_channels, c, extra_blocks=LastLevelP6P7(c, c))
        self.out_channels = c

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.fpn(self.body(images))
        return list(feats.values())  # c3, c4, c5 (now P3-P5), p6, p7
