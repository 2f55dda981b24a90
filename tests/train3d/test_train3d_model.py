"""VoteSegmentor: batch building, shapes, voxel order, backward (train3d/model.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mwsis.train3d.model import SegmentorConfig, SparseUNet, VoteSegmentor, make_batch
from mwsis.train3d.voxelize import voxelize


@pytest.fixture(autouse=True)
def _one_thread():
    # two torch threads on a shared 2-core machine can stall badly; one thread is fast and deterministic
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _frames(n_frames=2, n=1500, seed=0, far=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_frames):
        xyz = np.concatenate([rng.uniform(-15, 15, (n, 2)), rng.uniform(-1.5, 2.0, (n, 1))], 1).astype(np.float32)
        xyz[:far] = [100.0, 0.0, 0.0]
        out.append(dict(xyz=xyz, intensity=rng.uniform(0, 3, n).astype(np.float32),
                        elongation=rng.random(n).astype(np.float32),
                        semantic=rng.integers(-1, 4, n), instance=rng.integers(0, 4, n)))
    return out


def test_make_batch_concatenates_and_splits():
    frames = _frames(3, 100)
    frames[1] = {**frames[1], "xyz": frames[1]["xyz"][:40], "intensity": frames[1]["intensity"][:40],
                 "elongation": frames[1]["elongation"][:40], "semantic": frames[1]["semantic"][:40],
                 "instance": frames[1]["instance"][:40]}
    b = make_batch(frames)
    assert b.xyz.shape == (240, 3) and b.xyz.dtype == torch.float32
    assert b.feats.shape == (240, 2)
    assert b.batch_size == 3 and b.offsets == [0, 100, 140, 240]
    assert torch.allclose(b.feats[:100, 0], torch.tanh(torch.as_tensor(frames[0]["intensity"])))
    assert b.semantic.dtype == torch.long and b.instance.shape == (240,)
    parts = b.split(b.xyz)
    assert [p.shape[0] for p in parts] == [100, 40, 100]
    assert np.allclose(parts[2].numpy(), frames[2]["xyz"])
    no_labels = make_batch([{k: v for k, v in f.items() if k not in ("semantic", "instance")} for f in frames])
    assert no_labels.semantic is None and no_labels.instance is None


def test_default_config_is_the_authors_plan():
    cfg = SegmentorConfig()
    assert cfg.encoder_channels[-1] == (256, 256, 256) and cfg.decoder_channels[0] == (256, 256, 128)
    assert cfg.vfe_channels == (64, 64) and cfg.head_channels == (128, 128)
    assert cfg.voxel.sparse_shape == [32, 640, 640]


def test_mismatched_decoder_is_rejected():
    cfg = SegmentorConfig.tiny(decoder_channels=((32, 32, 16), (8, 8, 16), (16, 16, 16)))
    with pytest.raises(ValueError, match="decoder stage 1"):
        SparseUNet(16, cfg)


def test_tiny_model_shapes_backward_and_voxel_order():
    torch.manual_seed(0)
    b = make_batch(_frames(2, 1500, far=7))
    model = VoteSegmentor(SegmentorConfig.tiny())
    out = model.outputs(b)  # training mode: model(b) would return the losses
    n = b.xyz.shape[0]
    assert out["sem_logits"].shape == (n, 3) and out["votes"].shape == (n, 3, 3)
    valid = out["valid"]
    assert valid.sum() == n - 14 and not valid[:7].any()
    assert (out["sem_logits"][~valid] == 0).all() and (out["votes"][~valid] == 0).all()
    loss = out["sem_logits"][valid].sigmoid().mean() + out["votes"][valid].abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    # the UNet returns features in the order of the input voxels (the neck indexes them by point2voxel)
    import spconv.pytorch as sp

    vox = voxelize(b.xyz, b.batch_idx, model.cfg.voxel)
    x = sp.SparseConvTensor(model.vfe(b.xyz, b.feats, vox), vox.coords, model.cfg.voxel.sparse_shape, 2)
    y = model.backbone(x)
    assert torch.equal(y.indices, vox.coords) and y.features.shape[1] == 16


def test_training_mode_returns_the_weighted_losses_eval_mode_the_outputs():
    torch.manual_seed(0)
    b = make_batch(_frames(2, 800, seed=3))
    model = VoteSegmentor(SegmentorConfig.tiny())
    losses = model(b)
    assert set(losses) == {"loss_sem", "loss_vote"} and all(v.ndim == 0 and v > 0 for v in losses.values())
    targets = torch.full((b.xyz.shape[0], 3), float("nan"))
    targets[:100] = 0.9
    with_cscs = model(b, targets, 2.0)
    assert with_cscs["loss_cscs"] > 0 and torch.allclose(with_cscs["loss_sem"], losses["loss_sem"])
    assert set(model.eval()(b)) == {"sem_logits", "votes", "valid"}


def test_eval_mode_is_deterministic_and_frame_independent():
    torch.manual_seed(0)
    frames = _frames(2, 800, seed=3)
    model = VoteSegmentor(SegmentorConfig.tiny()).eval()
    with torch.no_grad():
        both = model(make_batch(frames))
        first = model(make_batch(frames[:1]))
    assert torch.allclose(both["sem_logits"][:800], first["sem_logits"], atol=1e-5)
    assert torch.allclose(both["votes"][:800], first["votes"], atol=1e-5)
