"""Test-time semantics and instances from the segmentor output (``method.md`` §9 "Test-time semantics" and
"Test-time instances"; MWSIS §4.3, Tab. 2).

* **Semantics:** ``p = sigmoid(logits)``; a point takes class ``argmax_c p`` when that maximum exceeds
  ``score_thresh`` (0.5 for every class), else background, id C (= ``data.frame.BACKGROUND`` = 3).
* **Instances**, per class j: the points predicted j are shifted by their decoded vote for class j
  (``centre = xyz + p |p|``) and clustered with single-link CCL in **XY** (strict ``<``) with the class radius
  (vehicle 0.6, pedestrian 0.1, cyclist 0.4 m, the training CCL radii) via
  :func:`mwsis.pseudolabel.ccl.connected_components` (grid union-find: same partition as the authors' dense
  N x N matrix + scipy, without its O(N^2) memory). Every component is an instance (``min_points`` = 1,
  the authors' behaviour; raise it to drop small clusters, whose points keep their class but get instance 0).
  Score = mean of ``p_j`` over the instance's points.
* RSC (``method.md`` §6) would run between the two steps; it lives in :mod:`mwsis.pseudolabel.rsc`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..pseudolabel.ccl import CCL_RADII, connected_components
from .losses import decode_votes

__all__ = ["InferConfig", "Prediction", "predict_semantic", "cluster_instances", "predict", "predict_batch"]


@dataclass(frozen=True)
class InferConfig:
    """3D inference (method.md §9): the class score threshold, the per-class CCL radii
    that cluster the voted centres into instances, and the minimum points per instance."""
    score_thresh: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    radii: tuple[float, ...] = field(default=CCL_RADII, metadata={"range": (0.0, None), "length": 3})
    ccl_mode: Literal["xy", "xyz"] = "xy"  # authors: XY; "xyz" available
    min_points: int = field(default=1, metadata={"range": (1, None)})  # 1 = every component is an instance (authors)


@dataclass
class Prediction:
    """One frame's 3D prediction over its N points, with K instances."""
    semantic: np.ndarray  # (N,) int8: 0..C-1, or BACKGROUND (= C)
    instance: np.ndarray  # (N,) int32: 0 none, else 1..K
    inst_class: np.ndarray  # (K,) int8, class of instance k+1
    inst_score: np.ndarray  # (K,) float32, mean class probability of instance k+1
    probs: np.ndarray  # (N, C) float32 sigmoid scores


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def predict_semantic(probs: np.ndarray, score_thresh: float = 0.5) -> np.ndarray:
    """(N,) int8 thresholded argmax of per-class probabilities (N, C); background is C."""
    c = probs.shape[1]
    best = probs.argmax(axis=1)
    return np.where(probs.max(axis=1) > score_thresh, best, c).astype(np.int8)


def cluster_instances(xyz: np.ndarray, semantic: np.ndarray, offsets: np.ndarray, probs: np.ndarray,
                      cfg: InferConfig = InferConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance (N,) int32, inst_class (K,) int8, inst_score (K,) float32) from decoded per-class offsets (N, C, 3)."""
    n, c = probs.shape
    instance = np.zeros(n, np.int32)
    classes, scores = [], []
    for j in range(c):
        idx = np.flatnonzero(semantic == j)
        if idx.size == 0:
            continue
        centres = xyz[idx].astype(np.float64) + offsets[idx, j].astype(np.float64)
        lab = connected_components(centres, float(cfg.radii[j]), cfg.ccl_mode)
        counts = np.bincount(lab)
        psum = np.bincount(lab, weights=probs[idx, j].astype(np.float64), minlength=counts.size)
        keep = np.flatnonzero(counts >= max(cfg.min_points, 1))
        new_id = np.zeros(counts.size, np.int32)
        new_id[keep] = len(classes) + 1 + np.arange(keep.size, dtype=np.int32)
        instance[idx] = new_id[lab]
        classes += [j] * keep.size
        scores += list(psum[keep] / counts[keep])
    return instance, np.asarray(classes, np.int8), np.asarray(scores, np.float32)


def predict(sem_logits, votes, xyz, cfg: InferConfig = InferConfig()) -> Prediction:
    """One frame: ``sem_logits`` (N, C), ``votes`` (N, C, 3) encoded, ``xyz`` (N, 3) -> ``Prediction``."""
    logits = torch.as_tensor(_np(sem_logits), dtype=torch.float32)
    probs = torch.sigmoid(logits).numpy()
    offsets = decode_votes(torch.as_tensor(_np(votes), dtype=torch.float32)).numpy()
    semantic = predict_semantic(probs, cfg.score_thresh)
    instance, cls, score = cluster_instances(_np(xyz), semantic, offsets, probs, cfg)
    return Prediction(semantic, instance, cls, score, probs.astype(np.float32))


def predict_batch(out: dict, batch, cfg: InferConfig = InferConfig()) -> list[Prediction]:
    """Per-frame predictions from a model output dict and its ``Batch``; out-of-range points are background."""
    valid = out.get("valid")
    logits = out["sem_logits"]
    if valid is not None:  # zero logits already give p = 0.5, not > 0.5: make it explicit anyway
        logits = torch.where(valid[:, None], logits, torch.full_like(logits, -30.0))
    parts = zip(batch.split(logits), batch.split(out["votes"]), batch.split(batch.xyz))
    return [predict(lg, v, x, cfg) for lg, v, x in parts]
