"""RSC - Ring Segment-based label Correction of the 3D predictions (MWSIS Sec. 3.3; ``method.md`` §6).

Inside every DCS ring segment (:mod:`.dcs`) the predicted labels vote:

* **T1 (background rule)**: if the segment's background-predicted points outnumber ``t_bg`` times its
  points of the segment's foreground class ``c`` (``n_bg > t_bg * n_c``), the whole segment becomes
  background. The authors' code uses a ratio of 1 (``t_bg = 1.0``; a commented alternative 1.5). Among
  the segment's background and class-``c`` points this is "background fraction > t_bg / (1 + t_bg)",
  i.e. > 0.5 at the default.
* **T2 (foreground rule)**, otherwise: if at least ``t_fg`` of the segment's points are class ``c``
  (``n_c >= t_fg * |segment|``), the whole segment becomes class ``c``. Authors: ``t_fg = 0.7``
  (a commented alternative 0.8).

Only segments holding at least one point of a non-skipped foreground class are considered (as in the
authors' loop). ``skip_classes`` never trigger a correction (the authors skip pedestrians: "rs reduces
accuracy for pedestrians"); with ``keep_skipped=True`` (default, our choice) points predicted a skipped
class are also never overwritten, while the authors' code relabels the whole segment, pedestrians
included (``keep_skipped=False``). Segment id -1 (no segment) is never touched.

Foreground class of a segment: ``mode="majority"`` (default) takes the non-skipped foreground class with
the most points in the segment (the lowest class id on ties), so one class decides per segment.
``mode="authors"`` reproduces the authors' loop: every non-skipped class in increasing id order applies
both rules with its own count, later classes overwriting earlier ones, all counts taken from the
uncorrected prediction. The two differ only in segments holding two non-skipped foreground classes.

The authors' RSC (disabled in their release) would crash because its ring ids come from DCS over all
points while the predictions cover the evaluated subset; here ``segment_id`` must be given for exactly
the points of ``pred_semantic`` (a length mismatch raises ``ValueError``). Everything is a handful of
``bincount`` calls over the points, no per-segment loop.
"""
from __future__ import annotations

import numpy as np

RSC_T1 = 1.0  # authors: segment -> background when n_bg > 1.0 * n_class
RSC_T2 = 0.7  # authors: segment -> class when n_class >= 0.7 * |segment|


def _compact(segment_id: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Segment index in [0, S) for the valid points (direct ids when they are small, else ranks)."""
    seg = segment_id[valid].astype(np.int64, copy=False)
    if seg.size == 0:
        return seg, 0
    top = int(seg.max())
    if top < 4 * seg.size + 1024:
        return seg, top + 1
    uniq, inv = np.unique(seg, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def rsc_correct(pred_semantic: np.ndarray, segment_id: np.ndarray, *, t_bg: float = RSC_T1, t_fg: float = RSC_T2,
                skip_classes: tuple[int, ...] = (1,), num_classes: int = 3, mode: str = "majority",
                keep_skipped: bool = True) -> np.ndarray:
    """Ring-segment correction of one frame's predicted semantics.

    Args:
        pred_semantic: (N,) predicted labels in {0..C-1, C background}; other values (e.g. -1) are
            counted in the segment size but vote for nothing.
        segment_id: (N,) DCS ring-segment id of the same N points, -1 = no segment.
        t_bg: T1, background-to-class ratio (module docstring). t_fg: T2, class fraction of the segment.
        skip_classes: foreground classes that never trigger a correction (authors: pedestrian).
        num_classes: C; background is C.
        mode: ``"majority"`` or ``"authors"`` (module docstring).
        keep_skipped: points predicted a skipped class keep their label.

    Returns:
        A new array with the shape and dtype of ``pred_semantic``.
    """
    pred = np.asarray(pred_semantic)
    segment_id = np.asarray(segment_id)
    if pred.shape != segment_id.shape or pred.ndim != 1:
        raise ValueError(f"pred_semantic {pred.shape} and segment_id {segment_id.shape} must be the same (N,) "
                         "point set")
    if mode not in ("majority", "authors"):
        raise ValueError(f"unknown mode {mode!r}")
    out = pred.copy()
    c = int(num_classes)
    classes = [k for k in range(c) if k not in set(skip_classes)]
    valid = segment_id >= 0
    seg, n_seg = _compact(segment_id, valid)
    if n_seg == 0 or not classes:
        return out

    lab = pred[valid].astype(np.int64, copy=False)
    size = np.bincount(seg, minlength=n_seg)
    voting = (lab >= 0) & (lab <= c)
    cnt = np.bincount(seg[voting] * (c + 1) + lab[voting], minlength=n_seg * (c + 1)).reshape(n_seg, c + 1)
    n_bg = cnt[:, c]
    new = np.full(n_seg, -2, np.int64)  # -2: unchanged
    if mode == "majority":
        sub = cnt[:, classes]
        j = sub.argmax(axis=1)
        n_c = sub[np.arange(n_seg), j]
        to_bg = (n_c > 0) & (n_bg > t_bg * n_c)
        to_fg = (n_c > 0) & ~to_bg & (n_c >= t_fg * size)
        new[to_bg] = c
        new[to_fg] = np.asarray(classes)[j[to_fg]]
    else:
        for k in classes:  # loop over classes, not segments
            n_k = cnt[:, k]
            to_bg = (n_k > 0) & (n_bg > t_bg * n_k)
            to_fg = (n_k > 0) & ~to_bg & (n_k >= t_fg * size)
            new[to_bg] = c
            new[to_fg] = k

    point_new = new[seg]
    change = point_new != -2
    if keep_skipped and len(classes) < c:
        change &= ~np.isin(lab, [k for k in range(c) if k not in classes])
    idx = np.flatnonzero(valid)[change]
    out[idx] = point_new[change].astype(out.dtype, copy=False)
    return out
