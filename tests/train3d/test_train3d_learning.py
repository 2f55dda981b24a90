"""Learning test: a tiny VoteSegmentor trained with the MWSIS losses on synthetic frames segments them.

Targets are the synthetic ground truth (``point_semantic``/``point_instance``) on the authors' point set
(``points.eligible_mask``: TOP, camera-projected, in range), standing in for pseudo labels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mwsis.data.synthetic import make_frame
from mwsis.data.synthetic.config import preset
from mwsis.pseudolabel.points import eligible_mask
from mwsis.train3d.ema import EMATeacher
from mwsis.train3d.infer import predict_batch
from mwsis.train3d.model import SegmentorConfig, VoteSegmentor, make_batch

STEPS = 120


@pytest.fixture(autouse=True)
def _one_thread():
    # OpenMP teams larger than the free cores stall on a shared 2-core machine (see train3d/spconv_shim.py):
    # one torch thread (the model passes it on to spconv) and one numba thread for the synthetic renderer
    import numba

    n, nb = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    numba.set_num_threads(nb)


def _frame(i: int) -> dict:
    f = make_frame(preset("tiny"), 0, 0, i)
    p = f.points
    m = eligible_mask(p.xyz, p.laser_id, p.cam_id, p.nlz)
    return dict(xyz=p.xyz[m], intensity=p.intensity[m], elongation=p.elongation[m],
                semantic=f.gt.point_semantic[m].astype(np.int64), instance=f.gt.point_instance[m].astype(np.int64))


def _fg_miou(preds, frames) -> float:
    return float(np.mean(_class_ious(preds, frames)))


def _class_ious(preds, frames) -> list[float]:
    """Per foreground class IoU over all frames (NaN-free: a class absent everywhere scores 0)."""
    ious = []
    for c in range(3):
        tp = fp = fn = 0
        for p, f in zip(preds, frames):
            g, s = f["semantic"], p.semantic
            tp += int(((s == c) & (g == c)).sum())
            fp += int(((s == c) & (g != c) & (g >= 0)).sum())
            fn += int(((s != c) & (g == c)).sum())
        ious.append(tp / max(tp + fp + fn, 1))
    return ious


def _instance_recall(preds, frames, min_points: int = 10) -> float:
    """Fraction of GT instances (>= min_points) matched by a predicted instance with point IoU >= 0.5."""
    hit = total = 0
    for p, f in zip(preds, frames):
        g = f["instance"]
        for gid in np.unique(g[g > 0]):
            gm = g == gid
            if gm.sum() < min_points:
                continue
            total += 1
            ids, inter = np.unique(p.instance[gm], return_counts=True)
            ious = [c / ((p.instance == i) | gm).sum() for i, c in zip(ids, inter) if i > 0]
            hit += bool(ious) and max(ious) >= 0.5
    return hit / max(total, 1)


def test_tiny_segmentor_learns_synthetic_frames():
    train = [_frame(i) for i in range(8)]
    held_out = [_frame(i) for i in (20, 21)]
    assert all(((f["semantic"] >= 0) & (f["semantic"] < 3)).sum() > 100 for f in train)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = VoteSegmentor(SegmentorConfig.tiny())
    teacher = EMATeacher(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(1, STEPS + 1):
        batch = make_batch([train[i] for i in rng.choice(len(train), 2, replace=False)])
        model.train()
        loss = model(batch)  # training mode, targets in the batch: the losses
        opt.zero_grad()
        (loss["loss_sem"] + loss["loss_vote"]).backward()
        opt.step()
        teacher.update(model, step)
        losses.append([loss["loss_sem"].item(), loss["loss_vote"].item()])
    losses = np.asarray(losses)
    assert losses[-20:, 0].mean() < 0.2 * losses[:20, 0].mean()  # focal term
    assert losses[-20:, 1].mean() < 0.6 * losses[:20, 1].mean()  # vote term

    model.eval()
    with torch.no_grad():
        bt = make_batch(train)
        fit = predict_batch(model(bt), bt)
        bh = make_batch(held_out)
        gen = predict_batch(model(bh), bh)
        bt_teacher = predict_batch(teacher(bt), bt)
    assert _fg_miou(fit, train) >= 0.8
    # every class, not just the mean: a class that stops being learnt fails here by name
    for name, iou in zip(("vehicle", "pedestrian", "cyclist"), _class_ious(fit, train)):
        assert iou >= 0.6, f"{name} IoU {iou:.2f} on the training frames"
    assert _instance_recall(fit, train) >= 0.5
    assert _fg_miou(gen, held_out) >= 0.4  # unseen frames: well above chance (about 0)
    assert len(bt_teacher) == 8  # the EMA teacher runs on the same batch
