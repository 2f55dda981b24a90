"""TWIST's label side (Chu et al., CVPR 2023, §3; ``../shared/spec/extensions.md`` §3): pure numpy.

* ``labelled_subset``: the fully labelled fraction ρ of the frames (seeded hash of ``frame_id``: the same
  frames whatever the order or the sharding).
* ``proposal_targets``: the re-correction network's targets (Module B): per proposal the point IoU with the
  best-matching true instance (the certainty target) and that instance's class.
* ``mutate_box``: Module B's box mutation: scale a proposal's box by a factor and reselect every point inside.
* ``proposal_update`` (Module C): proposals the re-correction network is certain of (v̂ > 0.5) rewrite the
  labels of their points, object by object: every point takes the proposal's class ê_j (offsets refine
  semantics) and the centre ã_j = mean of the proposal's vote-shifted positions (semantics refine offsets;
  ``centre`` column, so the offset target of every point of the proposal is ã_j − p).
* ``naive_update``: the "naive" baseline of TWIST's ablation: per-point confidence thresholds, instances from
  the model's own clustering.

Points outside every kept proposal are ignored (TWIST leaves them unstated; ``extensions.md`` §3.2), or, in
mwsis's "hybrid" mode (our frames always carry box labels), keep their SPG labels.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from ..data.frame import BACKGROUND, IGNORE, NUM_CLASSES

__all__ = ["labelled_subset", "proposal_targets", "mutate_box", "proposal_update", "naive_update"]


def labelled_subset(frame_ids: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The ``max(1, round(fraction · len(frame_ids)))`` frames with the smallest sha256 of ``"seed:frame_id"``,
    in ``frame_ids`` order (none when ``fraction`` is 0)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label fraction must lie in [0, 1], got {fraction}")
    if fraction == 0.0 or not len(frame_ids):
        return []
    k = min(len(frame_ids), max(1, int(round(fraction * len(frame_ids)))))
    rank = sorted(frame_ids, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).digest())
    chosen = set(rank[:k])
    return [f for f in frame_ids if f in chosen]


def proposal_targets(proposal: np.ndarray, gt_semantic: np.ndarray,
                     gt_instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per proposal, (iou (K,) float32, gt_class (K,) int8): the point IoU with the true instance it overlaps
    most (by IoU) and that instance's class (-1 where it overlaps none).

    proposal: (N,) int32, 0 = no proposal, j = proposal j-1 (K = proposal.max()); gt_semantic (N,) int8 and
    gt_instance (N,) int (0 = none; an instance id is unique within a frame).
    """
    proposal = np.asarray(proposal, np.int64)
    k = int(proposal.max(initial=0))
    iou, cls = np.zeros(k, np.float32), np.full(k, -1, np.int8)
    sem = np.asarray(gt_semantic)
    gt = np.where((sem >= 0) & (sem < NUM_CLASSES), np.asarray(gt_instance, np.int64), 0)
    if k == 0 or not (gt > 0).any():
        return iou, cls
    ids, gt_dense = np.unique(gt, return_inverse=True)  # gt_dense 0 is "no instance" when ids[0] == 0
    gt_size = np.bincount(gt_dense, minlength=ids.size)
    prop_size = np.bincount(proposal, minlength=k + 1)
    both = (proposal > 0) & (ids[gt_dense] > 0)
    pairs, inter = np.unique(np.stack([proposal[both], gt_dense[both]]), axis=1, return_counts=True)
    if not pairs.size:
        return iou, cls
    p, g = pairs
    pair_iou = inter / (prop_size[p] + gt_size[g] - inter)
    order = np.lexsort((-pair_iou, p))  # per proposal, the best IoU first
    first = order[np.r_[True, p[order][1:] != p[order][:-1]]]
    iou[p[first] - 1] = pair_iou[first]
    sem_of = np.zeros(ids.size, np.int8)
    sem_of[gt_dense] = np.asarray(gt_semantic, np.int8)
    cls[p[first] - 1] = sem_of[g[first]]
    return iou, cls


def mutate_box(xyz: np.ndarray, members: np.ndarray, scale: float) -> np.ndarray:
    """Indices of the points of ``xyz`` (N, 3) inside the axis-aligned box of ``xyz[members]`` scaled by
    ``scale`` about its centre (TWIST Module B's mutation, ratio in [0.7, 1.3])."""
    pts = np.asarray(xyz)[np.asarray(members)]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * scale
    inside = np.all(np.abs(np.asarray(xyz) - centre) <= half, axis=1)
    return np.flatnonzero(inside)


def proposal_update(shifted: np.ndarray, proposal: np.ndarray, proposal_class: np.ndarray, certainty: np.ndarray,
                    certainty_thresh: float = 0.5, base_semantic: np.ndarray | None = None,
                    base_instance: np.ndarray | None = None):
    """Module C: labels from the proposals whose certainty exceeds ``certainty_thresh``.

    Args:
        shifted: (N, 3) vote-shifted positions p + ô of every point (the model's decoded vote for its class).
        proposal: (N,) int32, 0 = none, j = proposal j-1.
        proposal_class: (K,) int class per proposal (the re-correction network's ê_j).
        certainty: (K,) float, v̂_j in [0, 1].
        base_semantic, base_instance: (N,) the labels of points outside every kept proposal ("hybrid");
            None: those points are ignored.

    Returns:
        semantic (N,) int8, instance (N,) int32 (kept proposals first, 1..K', then the base instances that keep
        points), centre (I, 3) float32 per instance (ã_j; NaN for base instances: their mean position is
        the target, as for SPG labels), inst_score (I,) float32 (v̂_j; 1 for base instances).
    """
    proposal = np.asarray(proposal, np.int64)
    n, k = proposal.shape[0], len(certainty)
    keep = np.asarray(certainty, np.float64) > certainty_thresh
    new_id = np.zeros(k + 1, np.int64)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    inst = new_id[proposal]
    covered = inst > 0
    semantic = np.full(n, IGNORE, np.int8)
    semantic[covered] = np.asarray(proposal_class, np.int8)[proposal[covered] - 1]
    kept = int(keep.sum())
    counts = np.bincount(inst, minlength=kept + 1)[1:]
    centre = np.stack([np.bincount(inst, weights=np.asarray(shifted, np.float64)[:, d], minlength=kept + 1)[1:]
                       for d in range(3)], axis=1) / np.maximum(counts, 1)[:, None]
    scores = np.asarray(certainty, np.float32)[keep]
    return _keep_base(semantic, inst, centre, scores, ~covered, base_semantic, base_instance)


def _keep_base(semantic, inst, centre, scores, rest, base_semantic, base_instance):
    """The hybrid mode: the ``rest`` points take their base labels (none given: they stay as they are), base
    instances numbered after the update's own, with a NaN centre (their mean position is the target, as for
    SPG labels) and score 1."""
    if base_semantic is not None:
        n = len(semantic)
        semantic[rest] = np.asarray(base_semantic, np.int8)[rest]
        base = np.where(rest, np.asarray(base_instance if base_instance is not None else np.zeros(n), np.int64), 0)
        ids = np.unique(base[base > 0])
        inst[rest & (base > 0)] = len(scores) + 1 + np.searchsorted(ids, base[rest & (base > 0)])
        centre = np.concatenate([centre, np.full((ids.size, 3), np.nan)])
        scores = np.concatenate([scores, np.ones(ids.size, np.float32)])
    return semantic, inst.astype(np.int32), centre.astype(np.float32), np.asarray(scores, np.float32)


def naive_update(probs: np.ndarray, instance: np.ndarray, shifted: np.ndarray, low: float = 0.4,
                 high: float = 0.6, base_semantic: np.ndarray | None = None, base_instance: np.ndarray | None = None):
    """The naive baseline: a point whose top class probability is at least ``high`` takes that class, one at
    most ``low`` is background, the rest are ignored (or, given ``base_*``, keep their base labels: the hybrid
    mode); instances are the model's clusters (``instance`` (N,), from ``infer.cluster_instances``) restricted
    to the confident points, with the mean shifted position as centre and the mean top probability as score.
    Returns what ``proposal_update`` returns."""
    probs = np.asarray(probs, np.float64)
    top, arg = probs.max(axis=1), probs.argmax(axis=1)
    semantic = np.full(len(top), IGNORE, np.int8)
    semantic[top >= high] = arg[top >= high]
    semantic[top <= low] = BACKGROUND
    inst = np.where(top >= high, np.asarray(instance, np.int64), 0)
    ids, dense = np.unique(inst, return_inverse=True)
    dense = dense if ids[0] == 0 else dense + 1  # 0 stays "none"
    m = int(dense.max(initial=0))
    counts = np.maximum(np.bincount(dense, minlength=m + 1)[1:], 1)
    centre = np.stack([np.bincount(dense, weights=np.asarray(shifted, np.float64)[:, d], minlength=m + 1)[1:]
                       for d in range(3)], axis=1) / counts[:, None]
    score = np.bincount(dense, weights=top, minlength=m + 1)[1:] / counts
    return _keep_base(semantic, dense.astype(np.int64), centre, score, semantic == IGNORE, base_semantic,
                      base_instance)


def proposal_quality(proposal: np.ndarray, proposal_class: np.ndarray, keep: np.ndarray, gt_semantic: np.ndarray,
                     gt_instance: np.ndarray, num_classes: int, iou_thresh: float = 0.5) -> np.ndarray:
    """Diagnostics of a round (not part of TWIST): per class c (the class Ψ gives), counts of
    [kept proposals, kept ones that match a true instance of class c with point IoU >= ``iou_thresh``,
    proposals dropped, dropped ones that match]. (N,) proposal ids (0 none, j = proposal j-1), (K,) classes
    and keep flags, (N,) true semantics and instances (0 none) -> (C, 4) int64; summed over frames, the
    precision of what a round keeps and of what it drops, per class."""
    proposal = np.asarray(proposal, np.int64)
    out = np.zeros((num_classes, 4), np.int64)
    gt_key = np.where(gt_instance > 0, gt_instance.astype(np.int64), 0)
    for j in range(len(keep)):
        members = proposal == j + 1
        c = int(proposal_class[j])
        if not members.any() or not 0 <= c < num_classes:
            continue
        ids, counts = np.unique(gt_key[members], return_counts=True)
        match = False
        for g, inter in zip(ids, counts):
            if g == 0:
                continue
            truth = gt_key == g
            if np.bincount(gt_semantic[truth].clip(0)).argmax() != c:
                continue
            match |= inter / (members.sum() + truth.sum() - inter) >= iou_thresh
        col = 0 if keep[j] else 2
        out[c, col] += 1
        out[c, col + 1] += int(match)
    return out
