"""Configuration of the 2D branch (MWSIS §3.2 and §3.5; BoxInst/CondInst as configured by the authors).

Every default is the paper's value, or, where the paper is silent, the authors' released config
(``spec/method.md`` §7, §8, §10, §13). A note marks each place where the authors' code differs or where
we deviate on purpose. All classes are plain frozen dataclasses: there is no global or mutable state.

Iteration counts (warm-ups) are in optimiser steps at the authors' global batch of 8 (4 GPUs x 2 frames,
2962 it/epoch, method.md §13). Rescale them if you change the batch size or the number of GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet + FPN (method.md §10). ``depth`` 18/34/50/101 (torchvision ResNet).

    ``norm``: "FrozenBN" (detectron2 style; the authors use ``norm_eval=True``, i.e. frozen statistics) or
    "BN" (trainable BatchNorm, the right choice when training from random initialisation, e.g. tests).
    ``frozen_stages``: 0 none, 1 stem + res2 (the authors' value), ... as mmdet ``frozen_stages``.
    Note: the authors start from caffe-style ResNet-50 weights (BGR, std 1); we load torchvision-format
    ImageNet weights from ``weights_path`` (RGB, ImageNet mean/std), see ``Model2DConfig.pixel_mean``.
    """

    # "resnet" (the paper) or a CPU-light "regnet_x_400mf" / "regnet_x_800mf" (``depth`` then unused)
    arch: Literal["resnet", "regnet_x_400mf", "regnet_x_800mf"] = "resnet"
    depth: int = 50
    fpn_channels: int = 256
    norm: Literal["FrozenBN", "BN"] = "FrozenBN"
    frozen_stages: int = 1
    weights_path: str | None = None


@dataclass(frozen=True)
class FCOSConfig:
    """FCOS box head (Tian et al. 2019) as configured in the authors' ``CondInstBoxHead`` (method.md §10)."""

    num_convs: int = 4  # GN towers, 3x3 convs
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)  # P3..P7
    # regress ranges per level on max(l, t, r, b) in input pixels (mmdet/AdelaiDet defaults)
    size_ranges: tuple[tuple[float, float], ...] = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    center_sample_radius: float = 1.5  # in units of the level stride
    norm_reg_targets: bool = True  # regression targets divided by the level stride
    centerness_on_reg: bool = False  # authors: centerness on the classification tower (AdelaiDet: on reg)
    prior_prob: float = 0.01
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    loss_cls_weight: float = 1.0
    loss_loc_weight: float = 1.0  # GIoU, weighted by the centerness targets
    loss_ctr_weight: float = 1.0
    # inference (authors' test_cfg)
    score_thresh: float = 0.05  # on sigmoid(cls) * sigmoid(centerness)
    nms_pre: int = 1000  # candidates per level before NMS
    nms_thresh: float = 0.5
    max_per_img: int = 100


@dataclass(frozen=True)
class CondInstConfig:
    """CondInst mask branch and dynamic mask head (Tian et al. 2020; method.md §10)."""

    branch_in_levels: tuple[int, ...] = (0, 1, 2)  # P3, P4, P5 (indices into the FPN outputs)
    branch_channels: int = 128
    branch_num_convs: int = 4
    branch_norm: Literal["BN", "GN"] = "BN"  # authors/AdelaiDet: BN in the mask branch; "GN" is an option for tiny batches
    mask_channels: int = 16  # mask-feature channels at stride 8
    head_channels: int = 8  # dynamic 1x1 convs
    head_num_layers: int = 3
    rel_coords: bool = True
    sizes_of_interest: tuple[float, ...] = (64, 128, 256, 512, 1024)  # rel-coord normaliser per level
    mask_out_stride: int = 4  # logits upsampled x2 from the stride-8 mask features
    topk_per_img: int = 64  # training: each GT keeps max(64 // #GT, 1) of its positives


@dataclass(frozen=True)
class BoxInstConfig:
    """BoxInst losses (Tian et al. 2021; method.md §10). ``pairwise_warmup_iters`` is the authors' 8886
    (3 epochs at their batch); AdelaiDet uses 10000."""

    loss_prj_weight: float = 1.0
    loss_pairwise_weight: float = 1.0
    pairwise_size: int = 3
    pairwise_dilation: int = 2
    pairwise_color_thresh: float = 0.3  # LAB similarity exp(-||dLAB|| / 2) >= thresh
    pairwise_warmup_iters: int = 8886
    bottom_pixels_removed: int = 10  # rows (in original-resolution pixels) excluded from the pairwise loss


@dataclass(frozen=True)
class IPGConfig:
    """IPG, MWSIS Eq. 1-2 (method.md §7). ``k`` is the exponent in w = s * exp(k * IoU) (authors: 1)."""

    enabled: bool = True
    k: float = 1.0
    tau_low: float = 0.3
    tau_high: float = 0.7
    warmup_iters: int = 17772  # 6 epochs at the authors' batch; the loss is off before this iteration
    loss_weight: float = 1.0  # alpha_2 in Eq. 9
    topk_per_img: int = 64  # teacher proposals per image, split evenly over its GTs


@dataclass(frozen=True)
class CopyPasteConfig:
    """SIM's online weak copy-paste (seeds/004 Eq. 9-11, extensions.md §1.2): a FIFO bank of ``bank`` recent
    images' instances with their corrected pseudo masks and score S_k; each training image gets the
    instances of one drawn entry pasted in, about ``frac`` of them clamped to [``min``, ``max``], drawn in
    proportion to S_k. ``loss_weight`` is lambda_2."""

    enabled: bool = False
    bank: int = field(default=100, metadata={"range": (1, None)})
    frac: float = field(default=0.25, metadata={"range": (0.0, 1.0)})
    min: int = field(default=1, metadata={"range": (1, None)})
    max: int = field(default=3, metadata={"range": (1, None)})
    loss_weight: float = field(default=1.0, metadata={"range": (0.0, None)})
    min_score: float = field(default=0.5, metadata={"range": (0.0, 1.0)})  # ours: instances below are not banked

    def __post_init__(self):
        if self.min > self.max:
            raise ValueError(f"copy_paste.min ({self.min}) is above copy_paste.max ({self.max})")


@dataclass(frozen=True)
class SIMConfig:
    """SIM (Li, He et al., CVPR 2023; seeds/004, extensions.md §1): class prototypes over the EMA teacher's
    mask features give a semantic map M_S that corrects each instance map before it becomes a target:
    M^ = (1 - alpha) M_S + alpha M_I (Eq. 7), thresholded with IPG's tau_low/tau_high, loss BCE + dice with
    weight lambda_1 (Eq. 8) in place of IPG's. On top of IPG: its warm-up stands in for SIM's 10k iterations.

    ``temperature``: the paper says 0.1 in the text and is best at 1.0 in its Table 8 (0.1 saturates the
    sigmoid; at 1.0 M_S stays in [0.27, 0.73] and mostly modulates M_I); both were measured (README).
    ``use_score``: the instance map's weights s exp(mu IoU) (IPG's, with the detection score) or SIM's own
    exp(mu IoU) (False). Sinkhorn's eps and iterations are unstated in the paper (SwAV's values)."""

    enabled: bool = False
    num_prototypes: int = field(default=10, metadata={"range": (1, None)})  # L
    temperature: float = field(default=0.1, metadata={"range": (1e-4, None)})  # tau of Eq. 1
    sinkhorn_eps: float = field(default=0.05, metadata={"range": (1e-4, None)})
    sinkhorn_iters: int = field(default=3, metadata={"range": (1, None)})
    proto_momentum: float = field(default=0.999, metadata={"range": (0.0, 1.0)})  # gamma of Eq. 5
    alpha: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    mu: float = field(default=5.0, metadata={"range": (0.0, None)})
    use_score: bool = True
    loss_weight: float = field(default=0.5, metadata={"range": (0.0, None)})  # lambda_1
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)


@dataclass(frozen=True)
class CSCSConfig:
    """CSCS, MWSIS Eq. 5-7 (method.md §8). ``lo``/``hi``: a (point, class) is ignored only when both the
    student and the teacher probability lie in [lo, hi]. Loss weights are alpha_3 (3D->2D, applied in the
    2D model) and alpha_6 (2D->3D, applied by the 3D trainer). The ramp is min((iter - start) / ramp, 1)
    from ``start_iter`` on (authors: 20000 and 1000)."""

    lo: float = 0.3
    hi: float = 0.7
    weight_3d_to_2d: float = 0.5  # alpha_3
    weight_2d_to_3d: float = 2.0  # alpha_6
    start_iter: int = 20000
    ramp_iters: int = 1000
    confidence_weighting: bool = False  # seeds/001 Eq. 6-7 max-score weighting (not in MWSIS)
    # Joint 2D-3D WSSS's 3D -> 2D feature correlation (seeds/001 Eq. 8-11, crossmodal/affinity.py): weight
    # (lambda; 0 = off, the paper's 1.0) and the point pairs drawn per image (N_v^2 is too many; ours)
    affinity_weight: float = field(default=0.0, metadata={"range": (0.0, None)})
    affinity_pairs: int = field(default=1024, metadata={"range": (1, None)})


@dataclass(frozen=True)
class WISEConfig:
    """WISE (seeds/002 §3, extensions.md §4): the 2D model from one click per object instead of boxes
    (``train2d.wise_model``). ``lam``: L_W = lam L_L + (1 - lam) L_E (the paper: 0.1). ``clicks``: the click
    set (``mwsis clicks``). ``proposals``: the pseudo masks the E-Net pairs are drawn from, per click:
    "clicks3d" (the ``clicks3d`` stage's lifted instance, projected into the image and filled: a multimodal
    proposal) or "sam" (the ``sam`` stage run with ``prompts: clicks``); the paper's SharpMask proposals are
    not available. ``min_blob_px``: L-Net blobs smaller than this (at stride 4) yield no object at inference;
    ``kmeans_iters``: Lloyd iterations of the background-seed k-means."""

    enabled: bool = False
    embed_dim: int = field(default=64, metadata={"range": (1, None)})
    lam: float = field(default=0.1, metadata={"range": (0.0, 1.0)})
    clicks: str = "box-centre"
    proposals: Literal["clicks3d", "sam"] = "clicks3d"
    min_blob_px: int = field(default=2, metadata={"range": (1, None)})
    kmeans_iters: int = field(default=10, metadata={"range": (1, None)})


@dataclass(frozen=True)
class Model2DConfig:
    """The whole 2D model. ``Model2DConfig()`` is the paper's ResNet-50 model; ``Model2DConfig.tiny()`` a
    narrow ResNet-18 variant for tests and CPU smoke runs.

    Pixel normalisation: input images are RGB in [0, 255], normalised as (x - mean) / std, torchvision
    ImageNet statistics (matches torchvision weights). The authors use caffe BGR mean
    (103.53, 116.28, 123.675) with std 1 for their caffe ResNet; set ``pixel_mean``/``pixel_std``/``bgr``
    accordingly if you load such weights. The model needs these values to rebuild colours for the
    pairwise LAB affinity when targets carry no ``image_rgb``.
    """

    num_classes: int = 3  # Car, Pedestrian, Cyclist
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fcos: FCOSConfig = field(default_factory=FCOSConfig)
    condinst: CondInstConfig = field(default_factory=CondInstConfig)
    boxinst: BoxInstConfig = field(default_factory=BoxInstConfig)
    ipg: IPGConfig = field(default_factory=IPGConfig)
    cscs: CSCSConfig = field(default_factory=CSCSConfig)
    sim: SIMConfig = field(default_factory=SIMConfig)
    wise: WISEConfig = field(default_factory=WISEConfig)
    head_channels: int = 256  # FCOS tower width (= FPN channels in the paper)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    bgr: bool = False  # True if the network input channels are BGR (caffe weights)
    size_divisibility: int = 32

    def __post_init__(self):
        if (self.sim.enabled or self.sim.copy_paste.enabled) and not self.ipg.enabled:
            raise ValueError("model.sim needs model.ipg.enabled: SIM corrects IPG's instance maps and uses its "
                             "warm-up and thresholds")
        if self.sim.copy_paste.enabled and not self.sim.enabled:
            raise ValueError("model.sim.copy_paste needs model.sim.enabled: it pastes SIM's corrected masks")
        if self.wise.enabled and (self.ipg.enabled or self.sim.enabled or self.cscs.affinity_weight > 0):
            raise ValueError("model.wise learns from clicks, without boxes: turn model.ipg (and sim, "
                             "cscs.affinity_weight) off, they are box methods")

    @staticmethod
    def tiny(**overrides) -> "Model2DConfig":
        """ResNet-18 (trainable BN, nothing frozen), 64-channel FPN/heads, 2 tower convs, 2 mask-branch convs
        of 64 channels, GN in the mask branch. IPG/CSCS warm-ups 0; pairwise warm-up 100 steps (keep one:
        with the pairwise term at full weight from step 0 it drives the still-uniform masks to saturation
        before the projection term has shaped them, and training can lock into degenerate masks).
        Pass overrides to change any field."""
        cfg = Model2DConfig(
            backbone=BackboneConfig(depth=18, fpn_channels=64, norm="BN", frozen_stages=0),
            fcos=FCOSConfig(num_convs=2),
            condinst=CondInstConfig(branch_channels=64, branch_num_convs=2, branch_norm="GN"),
            boxinst=BoxInstConfig(pairwise_warmup_iters=100, bottom_pixels_removed=0),
            ipg=IPGConfig(warmup_iters=0),
            cscs=CSCSConfig(start_iter=0, ramp_iters=0),
            head_channels=64,
        )
        return replace(cfg, **overrides)

    @property
    def num_dynamic_params(self) -> int:
        """Generated parameters per instance: 233 for the paper's head (16+2 -> 8 -> 8 -> 1)."""
        c = self.condinst
        cin = c.mask_channels + (2 if c.rel_coords else 0)
        dims = [cin] + [c.head_channels] * (c.head_num_layers - 1) + [1]
        return sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))
