"""EMA teacher momentum ramp and update (train3d/ema.py)."""
from __future__ import annotations

import math

import torch
from torch import nn

from mwsis.train3d.ema import EMAConfig, EMATeacher, ema_momentum


def test_authors_ramp_values():
    assert ema_momentum(0) == 0.0
    assert abs(ema_momentum(2500) - (1 - math.exp(-1))) < 1e-12  # ~0.632 at 2.5k iterations
    assert abs(ema_momentum(1) - (1 - math.exp(-2 / 5000))) < 1e-12
    assert ema_momentum(17000) < 0.999 and ema_momentum(17400) == 0.999  # cap reached at ~17.3k
    assert ema_momentum(10 ** 6) == 0.999
    assert abs(ema_momentum(100, EMAConfig(ramp=5000, batch_per_gpu=8)) - (1 - math.exp(-800 / 5000))) < 1e-12
    steps = [ema_momentum(s) for s in range(0, 20000, 500)]
    assert all(a <= b for a, b in zip(steps, steps[1:]))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_teacher_moves_towards_student_by_the_momentum():
    student = _net()
    teacher = EMATeacher(student)
    assert not teacher.model.training and all(not p.requires_grad for p in teacher.model.parameters())
    t0 = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()
    student(torch.randn(16, 4))  # moves BN running stats and num_batches_tracked
    s = student.state_dict()
    d = teacher.update(student, 2500)
    assert abs(d - (1 - math.exp(-1))) < 1e-12
    for k, v in teacher.model.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, d * t0[k] + (1 - d) * s[k], atol=1e-6), k
        else:
            assert torch.equal(v, s[k]), k
    w_before = (teacher.model[0].weight - student[0].weight).abs().sum()
    teacher.update(student, 2500)
    assert (teacher.model[0].weight - student[0].weight).abs().sum() < w_before  # closer each step
    assert not teacher.model.training
    # gradients never flow into the teacher
    y = teacher(torch.randn(3, 4))
    assert not y.requires_grad
    assert teacher.update(student, 0) == 0.0 and torch.allclose(teacher.model[0].weight, student[0].weight)
