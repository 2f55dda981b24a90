"""Joint 2D-3D WSSS's 3D -> 2D feature correlation (seeds/001 Eq. 8-11)."""
from __future__ import annotations

import torch

from mwsis.crossmodal.affinity import affinity_loss, feature_projection, project_features


def test_zero_for_an_orthogonal_transform_of_the_3d_features():
    g = torch.Generator().manual_seed(0)
    z3d = torch.randn(50, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    conf = torch.rand(50, generator=g)
    assert float(affinity_loss(z3d @ q, z3d, conf, None)) < 1e-6
    assert float(affinity_loss(2.5 * z3d @ q, z3d, conf, 4096, g)) < 1e-6  # scale: features are normalised
    assert float(affinity_loss(torch.randn(50, 16, generator=g), z3d, conf, None)) > 0.05


def test_equals_the_double_sum_and_sampled_pairs_estimate_it():
    g = torch.Generator().manual_seed(1)
    z2d, z3d, conf = torch.randn(5, 8, generator=g), torch.randn(5, 16, generator=g), torch.rand(5, generator=g)
    a2 = z2d / z2d.norm(dim=1, keepdim=True)
    a3 = z3d / z3d.norm(dim=1, keepdim=True)
    brute = sum(conf[a] * conf[b] * abs(float(a2[a] @ a2[b]) - float(a3[a] @ a3[b]))
                for a in range(5) for b in range(5)) / 25
    torch.testing.assert_close(affinity_loss(z2d, z3d, conf, None), torch.as_tensor(float(brute)), rtol=1e-5, atol=1e-6)
    sampled = affinity_loss(z2d, z3d, conf, 200000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampled, torch.as_tensor(float(brute)), rtol=0.02, atol=1e-3)


def test_only_the_2d_features_get_gradient_and_confidence_zero_silences_a_point():
    g = torch.Generator().manual_seed(2)
    z2d = torch.randn(6, 8, generator=g, requires_grad=True)
    z3d = torch.randn(6, 16, generator=g, requires_grad=True)
    conf = torch.tensor([1.0, 0.8, 0.0, 0.9, 0.7, 1.0])
    affinity_loss(z2d, z3d, conf, None).backward()
    assert z3d.grad is None and z2d.grad is not None
    assert torch.all(z2d.grad[2] == 0) and (z2d.grad[[0, 1, 3, 4, 5]].abs().sum(1) > 0).all()


def test_feature_projection_is_fixed_and_orthonormal():
    p = feature_projection(32, 16)
    assert p.shape == (32, 16) and torch.equal(p, feature_projection(32, 16))
    torch.testing.assert_close(p.T @ p, torch.eye(16), atol=1e-5, rtol=0)
    assert feature_projection(8, 16).shape == (8, 16)
    f = project_features(torch.randn(10, 32), p)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(10))
