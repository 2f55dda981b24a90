"""PVC - Point-based Voting label Correction (MWSIS Sec. 3.3, Fig. 5; authors' code ``method.md`` §5).

The teacher's per-point class probabilities of the newest ``H`` rounds (epochs) are kept per frame. Each
round casts one vote per point:

* ``max_c p[c] < tau_low``               -> background (``C``),
* ``tau_low <= max_c p[c] <= tau_high``   -> no vote (the point is unreliable in that round),
* ``max_c p[c] > tau_high``              -> ``argmax_c p[c]`` (first index on ties).

The boundaries follow the paper ("scores greater than tau_h or less than tau_l") and the authors' code
(ignore iff ``0.4 <= m <= 0.6``): a maximum of exactly ``tau_low`` or exactly ``tau_high`` casts no vote.
The comparison is made in the history's dtype (a float32 store compares against float32 ``0.6``, as the
authors' torch code does).

A point's label is overridden by the voted label when at least ``min_agree`` (``T_h``) rounds vote for
it and no other label gets as many votes; the default ``min_agree=None`` means **all** ``H`` rounds, the
authors' unanimous rule (any missing or no-vote round then blocks the change). The override applies
whatever the base label was (fg -> bg, bg -> fg, class change) and turns ignored points (-1) into
supervised ones.

Deliberate difference from the authors' code: a round in which a point has **no prediction** (NaN, a
negative value such as the authors' ``-1`` fill of a fresh history file, or ``valid == False``) casts no
vote. The authors read their ``-1`` fill as ``max = -1 < 0.4``, i.e. a unanimous background vote, so a
frame whose history was never written (or was recreated) is relabelled entirely as background; here a
point without history keeps its base label.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = -1


@dataclass(frozen=True)
class PVCConfig:
    """The vote (paper: tau_l 0.4, tau_h 0.6, N_his 4; authors: T_h = 4 of 4). Declared once: the ``pvc``
    stage adds the labels it corrects (``pipelines.stages.PVCStageConfig``), the 3D trainer when it votes
    (``pipelines.train3d.PVCLoopConfig``: start epoch, period)."""

    history: int = field(default=4, metadata={"range": (1, None)})  # N_his: newest rounds voting
    tau_low: float = field(default=0.4, metadata={"range": (0.0, 1.0)})  # max prob below -> background vote
    tau_high: float = field(default=0.6, metadata={"range": (0.0, 1.0)})  # above -> class vote; between -> none
    min_agree: int | None = field(default=None, metadata={"range": (1, None)})  # T_h; None = all available rounds

    def vote(self, history: np.ndarray, base_semantic: np.ndarray, base_instance: np.ndarray | None = None,
             valid: np.ndarray | None = None):
        """:func:`pvc_vote` over the newest ``self.history`` rounds of ``history`` (newest first)."""
        h = history[: self.history]
        v = None if valid is None else valid[: self.history]
        return pvc_vote(h, base_semantic, base_instance, valid=v, tau_low=self.tau_low, tau_high=self.tau_high,
                        min_agree=self.min_agree)


def round_votes(history: np.ndarray, valid: np.ndarray | None = None, *, tau_low: float = 0.4,
                tau_high: float = 0.6) -> np.ndarray:
    """Per-round votes, int64 (H, N): 0..C-1 a class, C background, -1 no vote (unreliable or missing).

    ``history`` is (H, N, C) class probabilities. A round is missing for a point when any of its C values
    is NaN or negative, or where ``valid`` (H, N) is False.
    """
    history = np.asarray(history)
    if history.ndim != 3:
        raise ValueError(f"history must be (H, N, C), got shape {history.shape}")
    if not np.issubdtype(history.dtype, np.floating):
        history = history.astype(np.float64)
    c = history.shape[2]
    missing = np.isnan(history).any(axis=2) | (history < 0).any(axis=2)
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != history.shape[:2]:
            raise ValueError(f"valid must be (H, N) = {history.shape[:2]}, got {valid.shape}")
        missing |= ~valid
    if c == 0:
        return np.full(history.shape[:2], IGNORE, np.int64)
    filled = np.where(np.isnan(history), -np.inf, history)
    arg = filled.argmax(axis=2)
    m = np.take_along_axis(filled, arg[..., None], axis=2)[..., 0]
    lo, hi = history.dtype.type(tau_low), history.dtype.type(tau_high)
    votes = np.where(m < lo, c, np.where(m > hi, arg, IGNORE)).astype(np.int64)
    votes[missing] = IGNORE
    return votes


def pvc_vote(history: np.ndarray, base_semantic: np.ndarray, base_instance: np.ndarray | None = None, *,
             valid: np.ndarray | None = None, tau_low: float = 0.4, tau_high: float = 0.6,
             min_agree: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Correct one frame's pseudo labels with the teacher's prediction history.

    Args:
        history: (H, N, C) float class probabilities of the newest H rounds; NaN or negative values
            (the authors' ``-1`` fill) mark a round without a prediction for that point.
        base_semantic: (N,) SPG pseudo labels in {-1 ignore, 0..C-1, C background}.
        base_instance: (N,) instance ids (0 = none) or None.
        valid: optional (H, N) bool, False where a round has no prediction for the point.
        tau_low, tau_high: reliability thresholds (module docstring for the boundaries).
        min_agree: T_h, the number of rounds that must vote for the same label; None = all H rounds
            (the authors' unanimity). Must be >= 1.

    Returns:
        ``(semantic, instance)`` new arrays with the input dtypes (``instance`` is None when
        ``base_instance`` is None). For every point whose label the vote sets:

        * voted background -> instance 0;
        * voted class k and the base label was already k -> the base instance id is kept;
        * voted class k and the base label was something else (background, ignore, another class)
          -> instance 0: the point gets semantic supervision for class k but belongs to no pseudo
          instance (there is no box/cluster that says which object it is).

        Points without a decisive vote, including points with no history at all, keep their base
        labels (the authors turn points without history into background, which we do not copy).
    """
    base_semantic = np.asarray(base_semantic)
    history = np.asarray(history)
    if history.ndim != 3 or history.shape[1] != base_semantic.shape[0]:
        raise ValueError(f"history {history.shape} does not match {base_semantic.shape[0]} points")
    h, _, c = history.shape
    need = h if min_agree is None else int(min_agree)
    if need < 1:
        raise ValueError("min_agree must be >= 1")
    semantic = base_semantic.copy()
    instance = None if base_instance is None else np.asarray(base_instance).copy()
    if h == 0 or need > h or base_semantic.size == 0:
        return semantic, instance

    votes = round_votes(history, valid, tau_low=tau_low, tau_high=tau_high)  # (H, N)
    counts = np.stack([(votes == k).sum(axis=0) for k in range(c + 1)], axis=1)  # (N, C+1), loop over labels
    label = counts.argmax(axis=1)
    best = counts[np.arange(len(label)), label]
    runner_up = np.partition(counts, -2, axis=1)[:, -2] if c >= 1 else np.zeros_like(best)
    decided = (best >= need) & (best > runner_up)

    if instance is not None:
        keep_inst = decided & (label < c) & (base_semantic == label)
        instance[decided & ~keep_inst] = 0
    semantic[decided] = label[decided].astype(semantic.dtype, copy=False)
    return semantic, instance
