"""Shapes and hooks of the 2D model (tiny config, random init)."""
from __future__ import annotations

import pytest
import torch
from torchvision.models import regnet_x_400mf, resnet18

from mwsis.train2d.backbone import ResNetFPN
from mwsis.train2d.config import BackboneConfig, Model2DConfig
from mwsis.train2d.model import BoxInstModel
from mwsis.train2d.transforms import ImageTransform


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return BoxInstModel(Model2DConfig.tiny())


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 96, generator=g)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0], [50.0, 10.0, 90.0, 40.0]]), "classes": torch.tensor([0, 1]),
         "image_size": (60, 96)},
        {"boxes": torch.tensor([[20.0, 20.0, 36.0, 44.0]]), "classes": torch.tensor([2])},
    ]
    return images, targets


def test_paper_config_sizes():
    cfg = Model2DConfig()
    assert cfg.num_dynamic_params == 233 and cfg.backbone.depth == 50 and cfg.num_classes == 3
    assert cfg.fcos.center_sample_radius == 1.5 and cfg.boxinst.pairwise_color_thresh == 0.3
    assert (cfg.ipg.tau_low, cfg.ipg.tau_high, cfg.ipg.k) == (0.3, 0.7, 1.0)
    assert (cfg.cscs.weight_3d_to_2d, cfg.cscs.weight_2d_to_3d) == (0.5, 2.0)


def test_backbone_levels_and_weights_file(tmp_path):
    bb = ResNetFPN(BackboneConfig(depth=18, fpn_channels=32, norm="BN", frozen_stages=1))
    feats = bb(torch.randn(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(f.shape[1] == 32 for f in feats)
    assert not any(p.requires_grad for p in bb.body.layer1.parameters())
    assert all(p.requires_grad for p in bb.body.layer2.parameters())
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        ResNetFPN(BackboneConfig(depth=18, weights_path=str(tmp_path / "missing.pth")))
    ref = resnet18()
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    loaded = ResNetFPN(BackboneConfig(depth=18, norm="BN", weights_path=str(tmp_path / "r18.pth")))
    assert torch.equal(loaded.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)


def test_regnet_backbone_levels_frozen_stages_and_weights(tmp_path):
    cfg = BackboneConfig(arch="regnet_x_400mf", fpn_channels=32, norm="BN", frozen_stages=1)
    bb = ResNetFPN(cfg)
    feats = bb(torch.randn(1, 3, 128, 192))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert not any(p.requires_grad for p in bb.body.block1.parameters())
    assert all(p.requires_grad for p in bb.body.block2.parameters())
    ref = regnet_x_400mf()
    torch.save(ref.state_dict(), tmp_path / "rx.pth")
    loaded = ResNetFPN(BackboneConfig(arch="regnet_x_400mf", norm="BN", weights_path=str(tmp_path / "rx.pth")))
    assert torch.equal(loaded.body.block3[0].proj[0].weight, ref.trunk_output.block3[0].proj[0].weight)
    with pytest.raises(ValueError, match="not a torchvision checkpoint"):
        ResNetFPN(BackboneConfig(depth=18, norm="BN", weights_path=str(tmp_path / "rx.pth")))
    with pytest.raises(ValueError, match="unsupported backbone arch 'vgg'"):
        ResNetFPN(BackboneConfig(arch="vgg"))


def test_forward_losses_backward_and_predict_shapes(tiny):
    images, targets = _batch()
    tiny.train()
    losses = tiny(images, targets, iteration=5)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_prj", "loss_pairwise"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert losses["loss_prj"] > 0 and losses["loss_pairwise"] > 0
    tiny.zero_grad()
    sum(losses.values()).backward()
    for name in ("head.controller.weight", "mask_branch.out.weight", "head.cls_logits.weight",
                 "backbone.body.layer4.0.conv1.weight"):
        assert tiny.get_parameter(name).grad.abs().sum() > 0, name

    tiny.eval()  # random init scores are ~0.01: threshold 0 keeps some detections
    res = tiny.predict(images, image_sizes=[(60, 96), (64, 96)], score_thresh=0.0)
    assert len(res) == 2
    for r, (h, w) in zip(res, [(60, 96), (64, 96)]):
        k = r["boxes"].shape[0]
        assert 0 < k <= 100 and r["masks"].shape == (k, h, w) and r["scores"].shape == (k,)
        assert r["classes"].shape == (k,) and (r["masks"] >= 0).all() and (r["masks"] <= 1).all()
        assert (r["boxes"][:, 2] <= w).all() and (r["boxes"][:, 3] <= h).all()


def test_predict_maps_back_to_original_image(tiny):
    tiny.eval()
    tf = ImageTransform((40, 50), (60, 75), flip=True, pad_size=(64, 96))
    res = tiny.predict(torch.randn(1, 3, 64, 96), transforms=[tf], score_thresh=0.0)[0]
    assert res["boxes"].shape[0] > 0
    assert res["masks"].shape[1:] == (40, 50)
    assert (res["boxes"][:, 2] <= 50 + 1e-4).all() and (res["boxes"][:, 3] <= 40 + 1e-4).all()


def test_ipg_teacher_outputs_and_pseudo_loss(tiny):
    images, targets = _batch()
    tiny.train()
    t_out = tiny.ipg_teacher_outputs(images, targets)
    assert [m.shape for m in t_out["pseudo_masks"]] == [(2, 16, 24), (1, 16, 24)]
    assert all(v.all() for v in t_out["pseudo_valid"])  # every box got FCOS positives
    assert t_out["class_maps"][0].shape == (3, 16, 24) and t_out["class_present"][0].tolist() == [True, True, False]
    with torch.no_grad():
        per_box = tiny.mask_probs_for_boxes(images, targets)
    assert all(0 <= float(m.min()) and float(m.max()) <= 1 for m, _ in per_box)

    # a confident hand-made teacher: the box interior (cells) 1, the rest 0
    fake = {"pseudo_masks": [], "pseudo_valid": []}
    for t in targets:
        maps = torch.zeros(len(t["boxes"]), 16, 24)
        for k, (x0, y0, x1, y1) in enumerate((t["boxes"] / 4).round().long().tolist()):
            maps[k, y0:y1, x0:x1] = 1.0
        fake["pseudo_masks"].append(maps), fake["pseudo_valid"].append(torch.ones(len(t["boxes"]), dtype=torch.bool))
    losses = tiny(images, targets, teacher_outputs=fake, iteration=10)
    assert losses["loss_pseudo"] > 0.5  # random masks vs a confident target: BCE + dice well above 0
    off = tiny(images, targets, teacher_outputs=fake, iteration=-1)  # before the IPG warm-up (0 here)
    assert off["loss_pseudo"] == 0
    saved, tiny.cfg = tiny.cfg, Model2DConfig.tiny(ipg=Model2DConfig().ipg)  # the paper's warm-up gate
    try:
        assert tiny(images, targets, teacher_outputs=fake, iteration=17771)["loss_pseudo"] == 0
        assert tiny(images, targets, teacher_outputs=fake, iteration=17772)["loss_pseudo"] > 0.5
    finally:
        tiny.cfg = saved


def test_cscs_3d_to_2d_hook(tiny):
    images, targets = _batch()
    tiny.train()
    tf = ImageTransform((64, 96), (64, 96), flip=False, pad_size=(64, 96))
    g = torch.Generator().manual_seed(3)
    for t in targets:
        t["transform"] = tf
        t["points_uv"] = torch.rand(50, 2, generator=g) * torch.tensor([96.0, 64.0])
        t["points_teacher_prob"] = (torch.rand(50, 3, generator=g) > 0.5).float() * 0.98 + 0.01
    losses = tiny(images, targets, iteration=10)
    assert losses["loss_cscs_3d_to_2d"] > 0
    tiny.zero_grad()
    losses["loss_cscs_3d_to_2d"].backward()
    assert tiny.head.controller.weight.grad.abs().sum() > 0
    saved, tiny.cfg = tiny.cfg, Model2DConfig.tiny(cscs=Model2DConfig().cscs)
    try:
        assert tiny(images, targets, iteration=19999)["loss_cscs_3d_to_2d"] == 0  # before start_kd_loss_iters
    finally:
        tiny.cfg = saved


def test_empty_image_and_fallback_for_boxes_without_positives(tiny):
    images, targets = _batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long)}
    tiny.train()
    losses = tiny(images, targets, iteration=5)
    assert all(torch.isfinite(v) for v in losses.values())
    # a 3x3-pixel box holds no location strictly inside its centre region on any level: no FCOS positives
    tiny_box = [{"boxes": torch.tensor([[41.0, 21.0, 44.0, 24.0]]), "classes": torch.tensor([1])}]
    with torch.no_grad():
        maps, valid = tiny.mask_probs_for_boxes(images[:1], tiny_box)[0]
        assert not valid[0] and maps[0].abs().sum() == 0
        maps, valid = tiny.mask_probs_for_boxes(images[:1], tiny_box, fallback=True)[0]
    assert valid[0] and maps[0].max() > 0


def test_bf16_autocast_keeps_the_mask_losses_finite(tiny, monkeypatch):
    """Under bf16 autocast (the CPU regime's cpu_bf16) the mask logits and losses are fp32: in bf16 a clamp to
    1 - 1e-5 is 1 and log(1 - p) is -inf, which stopped the first IPG step of the bf16 runs."""
    import mwsis.train2d.model as model_mod
    from mwsis.train2d.ipg import ipg_loss

    saturated = torch.full((1, 4, 4), 20.0, dtype=torch.bfloat16)
    target = torch.zeros(1, 4, 4)
    assert not torch.isfinite(ipg_loss(saturated, target)["bce"])  # the hazard itself
    seen = []
    monkeypatch.setattr(model_mod, "ipg_loss", lambda logits, *a: seen.append(logits.dtype) or ipg_loss(logits, *a))
    images, targets = _batch()
    fake = {"pseudo_masks": [torch.zeros(len(t["boxes"]), 16, 24) for t in targets],
            "pseudo_valid": [torch.ones(len(t["boxes"]), dtype=torch.bool) for t in targets]}
    tiny.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = tiny(images, targets, teacher_outputs=fake, iteration=10)
    assert seen == [torch.float32] and all(torch.isfinite(v) for v in losses.values())
    assert all(v.dtype == torch.float32 for v in losses.values())
