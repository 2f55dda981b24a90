"""3D augmentation consistency (train3d/augment.py)."""
from __future__ import annotations

import numpy as np
import torch

from mwsis.train3d.augment import AugmentConfig, augment_frame, random_affine
from mwsis.train3d.losses import decode_votes, instance_centres, vote_targets


def _scene(rng, n=300):
    xyz = rng.normal(0, 10, (n, 3)).astype(np.float32)
    inst = rng.integers(0, 5, n).astype(np.int64)
    sem = np.where(inst > 0, inst % 3, 3).astype(np.int64)
    vt = vote_targets(torch.as_tensor(xyz), torch.as_tensor(inst)).numpy()  # encoded
    raw = np.nan_to_num(instance_centres(torch.as_tensor(xyz), torch.as_tensor(inst)).numpy() - xyz)
    return dict(xyz=xyz, instance=inst, semantic=sem, vote_target=vt, offset=raw, frame_id="f0",
                intensity=rng.random(n).astype(np.float32))


def test_affine_is_rotation_scale_flip():
    rng = np.random.default_rng(0)
    cfg = AugmentConfig()
    for _ in range(20):
        a = random_affine(rng, cfg)
        s = abs(np.linalg.det(a.linear)) ** (1 / 3)
        assert cfg.scale_range[0] <= s <= cfg.scale_range[1]
        assert np.allclose(a.linear[2], [0, 0, s]) and np.allclose(a.linear[:2, 2], 0)  # about z: z only scaled
        q = a.linear / s
        assert np.allclose(q @ q.T, np.eye(3))


def test_labels_and_votes_follow_the_points():
    rng = np.random.default_rng(1)
    f = _scene(rng)
    out = augment_frame(f, np.random.default_rng(7), offset_keys=("offset",), encoded_offset_keys=("vote_target",))
    perm = out["point_index"]
    assert sorted(perm.tolist()) == list(range(300)) and not np.array_equal(perm, np.arange(300))  # shuffled
    assert out["frame_id"] == "f0"
    assert np.array_equal(out["instance"], f["instance"][perm]) and np.array_equal(out["semantic"], f["semantic"][perm])
    assert np.array_equal(out["intensity"], f["intensity"][perm])
    assert np.allclose(out["xyz"], out["affine"].points(f["xyz"])[perm], atol=1e-5)
    # distances are scaled uniformly: a rigid map up to scale
    d0 = np.linalg.norm(f["xyz"][perm][:50] - f["xyz"][perm][50:100], axis=1)
    d1 = np.linalg.norm(out["xyz"][:50] - out["xyz"][50:100], axis=1)
    assert np.allclose(d1 / d0, (d1 / d0)[0], rtol=1e-4)
    # decoded transformed votes still point at the instance centres of the augmented cloud
    xyz, inst = torch.as_tensor(out["xyz"]), torch.as_tensor(out["instance"])
    centre = instance_centres(xyz, inst).numpy()
    has = out["instance"] > 0
    tip = out["xyz"] + decode_votes(torch.as_tensor(out["vote_target"])).numpy()
    assert np.allclose(tip[has], centre[has], atol=1e-3)
    assert np.allclose((out["xyz"] + out["offset"])[has], centre[has], atol=1e-3)
    # ... and equal the targets recomputed after augmentation
    assert np.allclose(out["vote_target"], vote_targets(xyz, inst).numpy(), atol=1e-3)


def test_seeded_and_configurable():
    f = _scene(np.random.default_rng(2))
    a = augment_frame(f, np.random.default_rng(5))
    b = augment_frame(f, np.random.default_rng(5))
    c = augment_frame(f, np.random.default_rng(6))
    assert np.array_equal(a["xyz"], b["xyz"]) and not np.allclose(a["xyz"], c["xyz"])
    ident = AugmentConfig(rot_range=(0, 0), scale_range=(1, 1), translation_std=(0, 0, 0), flip_x_prob=0,
                          flip_y_prob=0, shuffle=False)
    same = augment_frame(f, np.random.default_rng(5), ident)
    assert np.allclose(same["xyz"], f["xyz"]) and np.array_equal(same["point_index"], np.arange(300))
    flip = AugmentConfig(rot_range=(0, 0), scale_range=(1, 1), translation_std=(0, 0, 0), flip_x_prob=1.0,
                         flip_y_prob=0.0, shuffle=False)
    fl = augment_frame(f, np.random.default_rng(5), flip)
    assert np.allclose(fl["xyz"], f["xyz"] * np.array([-1, 1, 1], np.float32))


def test_a_given_centre_moves_with_its_points():
    """TWIST's centres travel as per-point offsets: after any augmentation, point + offset is the transformed
    centre (and NaN rows, points without a given centre, stay NaN)."""
    from mwsis.train3d.augment import AugmentConfig, augment_frame

    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(50, 3)).astype(np.float32) * 5
    centre = np.array([2.0, -1.0, 0.5], np.float32)
    off = np.where((np.arange(50) < 30)[:, None], centre - xyz, np.nan).astype(np.float32)
    out = augment_frame({"xyz": xyz, "centre_offset": off}, rng, AugmentConfig(), offset_keys=("centre_offset",))
    moved = out["affine"].points(centre[None])[0]
    given = out["centre_offset"][:, 0] == out["centre_offset"][:, 0]
    assert given.sum() == 30 and np.allclose(out["xyz"][given] + out["centre_offset"][given], moved, atol=1e-4)
