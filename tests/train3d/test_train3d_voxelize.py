"""Dynamic voxelisation and the DynamicScatterVFE encoder (train3d/voxelize.py)."""
from __future__ import annotations

import numpy as np
import torch

from mwsis.train3d.voxelize import DynamicScatterVFE, VoxelConfig, point_offsets, scatter_max, voxelize


def test_default_grid_matches_authors():
    cfg = VoxelConfig()
    assert cfg.grid_size == (640, 640, 30)
    assert cfg.sparse_shape == [32, 640, 640]


def test_same_voxel_same_index_and_coords():
    cfg = VoxelConfig()
    xyz = torch.tensor([[0.01, 0.01, 0.01], [0.24, 0.2, 0.19],  # voxel (320, 320, 10)
                        [0.26, 0.01, 0.01],  # next voxel in x
                        [0.01, 0.01, 0.01],  # same place, other frame
                        [-79.9, 79.9, -1.99]], dtype=torch.float32)
    b = torch.tensor([0, 0, 0, 1, 1])
    vox = voxelize(xyz, b, cfg)
    p2v = vox.point2voxel
    assert p2v[0] == p2v[1]
    assert len({int(p2v[0]), int(p2v[2]), int(p2v[3]), int(p2v[4])}) == 4
    assert vox.num_voxels == 4
    assert vox.coords[p2v[0]].tolist() == [0, 10, 320, 320]  # [b, z, y, x]
    assert vox.coords[p2v[2]].tolist() == [0, 10, 320, 321]
    assert vox.coords[p2v[3]].tolist() == [1, 10, 320, 320]
    assert vox.coords[p2v[4]].tolist() == [1, 0, 639, 0]


def test_out_of_range_points_are_flagged():
    xyz = torch.tensor([[0.0, 0.0, 0.0], [80.0, 0.0, 0.0], [0.0, -80.01, 0.0], [0.0, 0.0, 4.5],
                        [0.0, 0.0, -2.0], [float("nan"), 0.0, 0.0]])
    vox = voxelize(xyz, torch.zeros(6, dtype=torch.long))
    assert vox.valid.tolist() == [True, False, False, False, True, False]
    assert (vox.point2voxel[~vox.valid] == -1).all()
    assert vox.num_voxels == 2


def test_offsets_to_voxel_mean_and_centre():
    cfg = VoxelConfig(voxel_size=(1.0, 1.0, 1.0), point_range=(0.0, 0.0, 0.0, 4.0, 4.0, 4.0))
    xyz = torch.tensor([[0.2, 0.2, 0.2], [0.6, 0.4, 0.8], [2.5, 2.5, 2.5], [9.0, 0.0, 0.0]])
    vox = voxelize(xyz, torch.zeros(4, dtype=torch.long), cfg)
    to_mean, to_centre = point_offsets(xyz, vox, cfg)
    mean = torch.tensor([0.4, 0.3, 0.5])
    assert torch.allclose(to_mean[0], xyz[0] - mean) and torch.allclose(to_mean[1], xyz[1] - mean)
    assert torch.allclose(to_mean[2], torch.zeros(3))
    assert torch.allclose(to_centre[0], xyz[0] - 0.5) and torch.allclose(to_centre[1], xyz[1] - 0.5)
    assert torch.allclose(to_centre[2], torch.zeros(3), atol=1e-6)
    assert torch.equal(to_mean[3], torch.zeros(3)) and torch.equal(to_centre[3], torch.zeros(3))


def test_scatter_max_matches_loop():
    rng = np.random.default_rng(0)
    src = torch.tensor(rng.normal(size=(50, 4)), dtype=torch.float32)
    idx = torch.tensor(rng.integers(0, 7, 50))
    out = scatter_max(src, idx, 7)
    for g in range(7):
        m = idx == g
        ref = src[m].max(dim=0).values if m.any() else torch.zeros(4)
        assert torch.equal(out[g], ref)


def test_vfe_shapes_pooling_and_grad():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    xyz = torch.tensor(rng.uniform(-3, 3, (400, 3)), dtype=torch.float32)
    xyz[-5:] = 100.0  # out of range
    feats = torch.rand(400, 2, requires_grad=True)
    vox = voxelize(xyz, torch.zeros(400, dtype=torch.long))
    vfe = DynamicScatterVFE(5, (16, 8))
    assert vfe.in_channels == 11
    assert vfe.layers[0][0].in_features == 11 and vfe.layers[1][0].in_features == 32  # concat of pooled
    out = vfe(xyz, feats, vox)
    assert out.shape == (vox.num_voxels, 8)
    assert (out >= 0).all()  # max of ReLU outputs
    out.sum().backward()
    assert torch.isfinite(feats.grad).all()
    assert feats.grad[-5:].abs().sum() == 0  # out-of-range points do not feed any voxel
