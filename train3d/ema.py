"""EMA (mean-teacher) copy of the 3D segmentor (MWSIS §3 "teacher segmentor updated by EMA", §3.4;
``method.md`` §7 "EMA teacher momentum", §13).

Momentum ramp of the authors' code (``mwsis.py:425-453``)::

    d(step) = clamp(1 - exp(-step * batch_per_gpu / ramp), 0, max_momentum)
    teacher <- d * teacher + (1 - d) * student

with ``ramp = 5000``, ``batch_per_gpu = 2`` (so ``d = 1 - exp(-step / 2500)``: 0.63 at 2.5k steps, 0.999
from about 17.3k) and ``max_momentum = 0.999``. The authors update before each forward from iteration 2 on;
at small ``step`` d is ~0, so the teacher starts as a copy of the student. Rescale ``batch_per_gpu`` /
``ramp`` if the batch layout changes (``method.md`` §13).

Every floating-point entry of the ``state_dict`` is averaged (parameters *and* BN running statistics, as
the authors); non-float buffers (BN ``num_batches_tracked``) are copied. Deliberate difference: the authors
run the teacher by swapping weights in place **in training mode** (BN batch statistics, running stats
updated by the teacher forward; ``method.md`` §13 item 10); here the teacher is a separate module kept in
**eval mode** with gradients off, so it uses its averaged running statistics.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["EMAConfig", "ema_momentum", "EMATeacher"]


@dataclass(frozen=True)
class EMAConfig:
    """Mean-teacher EMA (MWSIS §3.5): momentum ramped towards ``max_momentum`` over ``ramp`` steps."""
    ramp: float = field(default=5000.0, metadata={"range": (1e-09, None)})
    batch_per_gpu: int = field(default=2, metadata={"range": (1, None)})
    max_momentum: float = field(default=0.999, metadata={"range": (0.0, 1.0)})


def ema_momentum(step: int, cfg: EMAConfig = EMAConfig()) -> float:
    """``clamp(1 - exp(-step * batch_per_gpu / ramp), 0, max_momentum)``."""
    d = 1.0 - math.exp(-float(step) * cfg.batch_per_gpu / cfg.ramp)
    return min(max(d, 0.0), cfg.max_momentum)


class EMATeacher:
    """Holds ``model``, an eval-mode, gradient-free EMA copy of a student module."""

    def __init__(self, student: nn.Module, cfg: EMAConfig = EMAConfig()):
        self.cfg = cfg
        self.model = copy.deepcopy(student)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def momentum(self, step: int) -> float:
        return ema_momentum(step, self.cfg)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """One EMA step with momentum ``d(step)``; returns d."""
        d = self.momentum(step)
        src = student.state_dict()
        for k, t in self.model.state_dict().items():
            s = src[k].detach()
            if t.dtype.is_floating_point:
                t.mul_(d).add_(s.to(t.dtype), alpha=1.0 - d)
            else:
                t.copy_(s)
        self.model.eval()
        return d

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        self.model.eval()
        return self.model(*args, **kwargs)
