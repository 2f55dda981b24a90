"""Ψ, TWIST's re-correction network (train3d/twist.py): its loss, and that it learns to rank proposals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mwsis.data.frame import NUM_CLASSES
from mwsis.data.store import open_dataset
from mwsis.pseudolabel.twist_update import mutate_box, proposal_targets
from mwsis.train3d.twist import RecorrectionConfig, RecorrectionNet, augment_proposals, recorrection_loss


def test_certainty_loss_is_soft_bce_and_class_loss_is_masked_at_iou_half():
    cls = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    cert = torch.tensor([0.3, -1.2, 2.0])
    iou = torch.tensor([0.9, 0.5, 0.2])
    gt = torch.tensor([0, 1, 2])
    out = recorrection_loss(cls, cert, iou, gt)
    p = torch.sigmoid(cert)
    bce = -(iou * p.log() + (1 - iou) * (1 - p).log()).mean()
    assert out["loss_sc"].item() == pytest.approx(bce.item(), rel=1e-6)
    # only the first proposal has IoU > 0.5: the class loss is its cross-entropy alone
    assert out["loss_sem"].item() == pytest.approx(torch.nn.functional.cross_entropy(cls[:1], gt[:1]).item(), rel=1e-6)
    none = recorrection_loss(cls, cert, torch.full((3,), 0.5), gt)
    assert none["loss_sem"].item() == 0.0  # IoU 0.5 is not above the threshold


def _corrupted_proposals(frame, rng, per_instance=4):
    """GT instances damaged as a clustering damages them: exact, cropped, split, merged with the nearest
    other instance, grown by box mutation. Returns [(point indices, iou, class)]."""
    p = frame.points
    sem, inst = frame.gt.point_semantic, frame.gt.point_instance
    objs = [i for i in np.unique(inst[(sem >= 0) & (sem < NUM_CLASSES)]) if i > 0 and (inst == i).sum() >= 8]
    centres = {i: p.xyz[inst == i].mean(axis=0) for i in objs}
    out = []
    for i in objs:
        idx = np.flatnonzero(inst == i)
        for _ in range(per_instance):
            kind = rng.integers(5)
            if kind == 1:  # crop along the longest axis
                ax = np.ptp(p.xyz[idx], axis=0).argmax()
                cut = np.quantile(p.xyz[idx, ax], rng.uniform(0.3, 0.8))
                members = idx[p.xyz[idx, ax] <= cut]
            elif kind == 2:  # split in two across a random horizontal direction: one side
                a = rng.uniform(0, np.pi)
                d = p.xyz[idx, 0] * np.cos(a) + p.xyz[idx, 1] * np.sin(a)
                members = idx[d <= np.median(d)]
            elif kind == 3 and len(objs) > 1:  # merge with the nearest other object
                j = min((o for o in objs if o != i), key=lambda o: np.linalg.norm(centres[o] - centres[i]))
                members = np.concatenate([idx, np.flatnonzero(inst == j)])
            elif kind == 4:
                members = mutate_box(p.xyz, idx, rng.uniform(1.1, 1.6))
            else:
                members = idx
            prop = np.zeros(len(sem), np.int32)
            prop[members] = 1
            iou, cls = proposal_targets(prop, sem, inst)
            out.append((members, float(iou[0]), int(cls[0])))
    return out


def _batch(frame, props):
    xyz = torch.as_tensor(np.concatenate([frame.points.xyz[m] for m, _, _ in props]), dtype=torch.float32)
    feats = torch.as_tensor(np.concatenate([frame.points.intensity[m, None] for m, _, _ in props]), dtype=torch.float32)
    owner = torch.as_tensor(np.concatenate([np.full(len(m), k) for k, (m, _, _) in enumerate(props)]))
    iou = torch.tensor([v for _, v, _ in props])
    cls = torch.tensor([c for _, _, c in props])
    return xyz, feats, owner, iou, cls


@pytest.fixture(scope="module")
def twelve_frames(tmp_path_factory):
    from mwsis.pipelines.convert.synth import synth_dataset

    out = tmp_path_factory.mktemp("twist") / "ds"
    synth_dataset(out, "tiny", frames=12, seed=5, frames_per_sequence=2, workers=1, show_progress=False)
    ds = open_dataset(out)
    return [ds.frame(f, images=False) for f in ds.frame_ids]


def test_psi_learns_to_rank_corrupted_proposals_by_their_iou(twelve_frames):
    """The spec's bound: after 200 CPU steps on GT-derived proposals corrupted by merges, splits and crops
    (nine tiny frames, with TWIST's transforms), Spearman(v̂, IoU) > 0.5 on the proposals of three held-out
    frames (measured 0.56 with seeds 0 and 1; 0.36-0.42 with 0.1 m voxels)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, held_out = twelve_frames[:-3], twelve_frames[-3:]
    net = RecorrectionNet(1, RecorrectionConfig())
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    net.train()
    pools = [_corrupted_proposals(f, rng) for f in train]  # made once; batches draw from them
    for step in range(200):
        frame, pool = train[step % len(train)], pools[step % len(train)]
        props = [pool[k] for k in rng.choice(len(pool), size=min(64, len(pool)), replace=False)]
        xyz, feats, owner, iou, cls = _batch(frame, props)
        c, v = net(augment_proposals(xyz, owner, len(props)), feats, owner, len(props))
        loss = sum(recorrection_loss(c, v, iou, cls).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    certainty, iou = [], []
    for k, frame in enumerate(held_out):
        props = _corrupted_proposals(frame, np.random.default_rng(100 + k))
        xyz, feats, owner, target, _ = _batch(frame, props)
        with torch.no_grad():
            certainty.append(torch.sigmoid(net(xyz, feats, owner, len(props))[1]).numpy())
        iou.append(target.numpy())
    certainty, iou = np.concatenate(certainty), np.concatenate(iou)
    rho = spearmanr(certainty, iou).statistic
    assert len(iou) >= 100 and np.ptp(iou) > 0.5
    assert rho > 0.5, f"Spearman {rho:.2f} over {len(iou)} held-out proposals"


def test_augmentation_turns_and_scales_each_proposal_about_its_centre():
    g = torch.Generator().manual_seed(0)
    xyz = torch.tensor([[0.0, 0, 0], [2, 0, 0], [10, 10, 1], [10, 12, 1]])
    owner = torch.tensor([0, 0, 1, 1])
    out = augment_proposals(xyz, owner, 2, g, scale=(1.0, 1.0), jitter=0.0)
    assert torch.allclose(out[:2].mean(0), xyz[:2].mean(0), atol=1e-5)  # centres stay
    assert torch.allclose((out[0] - out[1]).norm(), torch.tensor(2.0), atol=1e-5)  # a rigid turn
    assert torch.allclose(out[:, 2], xyz[:, 2]) and not torch.allclose(out, xyz)
