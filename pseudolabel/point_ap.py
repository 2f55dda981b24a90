"""Fast COCO-equivalent instance AP for point masks (MWSIS §4.2, authors' protocol, method.md §11).

``PointInstanceAP`` reproduces pycocotools' ``COCOeval`` (segm, one 1×N image per frame) exactly but from
sparse point memberships; ``tests/pseudolabel/test_metrics_ap.py`` checks the equivalence with ``metrics.InstanceAP``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import InstanceSet

# ------------------------------------------------------------------------------------------------
# Fast point-instance AP: COCOeval's semantics without pycocotools, dense masks or RLEs.
# ------------------------------------------------------------------------------------------------

# Exactly pycocotools' ``Params`` values. ``np.arange(0.5, 0.96, 0.05)`` differs from them in the last
# bit from 0.6 on (0.6000000000000001, 0.7000000000000002, ...), which changes matches at IoUs such
# as 7/10 that point counts hit all the time.
COCO_IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
COCO_REC_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass
class PointInstances:
    """Instances of one frame as sparse (point, instance) membership pairs; no pair may repeat.

    ``classes`` and ``scores`` are per instance (K,); ``num_points`` is N. ``disjoint`` (no point in
    two instances) is computed when left None.
    """

    point: np.ndarray
    inst: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    num_points: int
    disjoint: bool | None = None

    @classmethod
    def from_labels(cls, semantic: np.ndarray, instance: np.ndarray, num_classes: int,
                    scores: np.ndarray | None = None, point_scores: np.ndarray | None = None) -> "PointInstances":
        """Same grouping and instance order as :func:`instances_from_labels` (key instance·(C+1)+class).

        ``scores``: (K,) per instance in that order; or ``point_scores``: (N,) averaged per instance;
        default 1.0.
        """
        semantic, instance = np.asarray(semantic), np.asarray(instance)
        fg = (instance > 0) & (semantic >= 0) & (semantic < num_classes)
        idx = np.flatnonzero(fg)
        key = instance[idx].astype(np.int64) * (num_classes + 1) + semantic[idx].astype(np.int64)
        if key.size and 0 <= key.min() and key.max() < 4 * len(semantic) + 1024:  # O(N) ranks, sorted order
            present = np.bincount(key) > 0
            uniq = np.flatnonzero(present)
            inv = (np.cumsum(present) - 1)[key]
        else:
            uniq, inv = np.unique(key, return_inverse=True)
            inv = inv.reshape(-1).astype(np.int64)
        k = len(uniq)
        if scores is not None:
            sc = np.asarray(scores, np.float64).reshape(-1)
            if len(sc) != k:
                raise ValueError(f"{len(sc)} scores for {k} instances")
        elif point_scores is not None:
            ps = np.asarray(point_scores, np.float64)[idx]
            sc = np.bincount(inv, ps, minlength=k) / np.maximum(np.bincount(inv, minlength=k), 1)
        else:
            sc = np.ones(k)
        return cls(idx.astype(np.int64), inv, (uniq % (num_classes + 1)).astype(np.int64), sc, len(semantic), True)

    @classmethod
    def from_instance_set(cls, s: InstanceSet) -> "PointInstances":
        masks = np.asarray(s.masks, bool)
        inst, point = np.nonzero(masks)
        k = masks.shape[0]
        sc = np.ones(k) if s.scores is None else np.asarray(s.scores, np.float64).reshape(-1)
        return cls(point.astype(np.int64), inst.astype(np.int64), np.asarray(s.classes, np.int64).reshape(-1), sc,
                   int(masks.shape[1]), None)

    def is_disjoint(self) -> bool:
        if self.disjoint is None:
            self.disjoint = bool(self.point.size == 0 or np.bincount(self.point).max() <= 1)
        return self.disjoint


def _as_point_instances(x, num_classes: int) -> PointInstances:
    if isinstance(x, PointInstances):
        return x
    if isinstance(x, InstanceSet):
        return PointInstances.from_instance_set(x)
    if isinstance(x, (tuple, list)) and len(x) in (2, 3):
        return PointInstances.from_labels(x[0], x[1], num_classes, scores=x[2] if len(x) == 3 else None)
    raise TypeError(f"expected PointInstances, InstanceSet or (semantic, instance[, scores]), got {type(x)}")


def _intersections(p: PointInstances, g: PointInstances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred instance, gt instance, shared point count) for every pair sharing at least one point."""
    kp, kg = len(p.classes), len(g.classes)
    empty = np.zeros(0, np.int64)
    if p.point.size == 0 or g.point.size == 0:
        return empty, empty, empty
    n = int(max(p.num_points, g.num_points, p.point.max() + 1, g.point.max() + 1))
    if g.is_disjoint() or p.is_disjoint():
        (a_pt, a_in), (b_pt, b_in) = ((p.point, p.inst), (g.point, g.inst))
        swap = not g.is_disjoint()
        if swap:
            (a_pt, a_in), (b_pt, b_in) = (b_pt, b_in), (a_pt, a_in)
        lookup = np.full(n, -1, np.int64)
        lookup[b_pt] = b_in
        other = lookup[a_pt]
        ok = other >= 0
        a, b = a_in[ok], other[ok]
        if swap:
            a, b = b, a
    else:  # both overlap: sort-merge join on the point index
        order = np.argsort(g.point, kind="stable")
        gp, gi = g.point[order], g.inst[order]
        lo = np.searchsorted(gp, p.point, "left")
        cnt = np.searchsorted(gp, p.point, "right") - lo
        total = int(cnt.sum())
        a = np.repeat(p.inst, cnt)
        starts = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
        b = gi[starts + np.arange(total)]
    key = a * kg + b
    if kp * kg <= max(4 * key.size, 1 << 20):
        counts = np.bincount(key, minlength=kp * kg)
        nz = np.flatnonzero(counts)
        return nz // kg, nz % kg, counts[nz]
    uniq, counts = np.unique(key, return_counts=True)
    return uniq // kg, uniq % kg, counts


class PointInstanceAP:
    """COCO mask AP of point instances, identical to :class:`metrics.InstanceAP` (pycocotools ``COCOeval``,
    ``iouType='segm'``, one 1×N image per frame, area "all") but computed from sparse memberships.

    Reproduced semantics: per frame and category, detections sorted by descending score (stable, ties
    in input order as COCOeval's mergesort) and cut to ``max_dets``; for each IoU threshold ``t``
    (capped at 1 − 1e-10) each detection in turn takes, among the not yet matched ground truths with
    IoU ≥ t, the one with the highest IoU (the last one in input order on equal IoUs, as COCOeval's
    loop does); no crowd, nothing ignored. Accumulation pools the frames of a category (stable sort by
    descending score, ties by frame then rank), precision is made monotone and read at the 101 recall
    thresholds (0 beyond the reached recall). A category without ground truth gets −1 (excluded from
    the means; absent from ``per_class``); one with ground truth but no detection gets 0.

    ``add`` computes the IoUs and the matching of a frame at once and keeps only per-detection records
    (class, score, rank, matched per threshold), so memory does not grow with the point count. Point
    IoU uses ``bincount`` over (prediction, ground truth) pairs of each point: O(points), not O(K·N).
    Greedy matching is vectorised; a Python loop runs only for a (frame, category, threshold) where a
    detection or a ground truth has several candidates (overlapping masks, or IoU exactly 0.5 ties).

    ``min_points`` drops ground-truth and predicted instances with fewer points (0: off; empty
    predictions are always dropped, as :class:`InstanceAP` does). ``iou_thresholds=None`` uses
    COCOeval's exact values (``COCO_IOU_THRESHOLDS``); "ap50"/"ap75" are NaN if 0.5/0.75 is absent.
    """

    def __init__(self, num_classes: int, iou_thresholds=None, max_dets: int = 100, min_points: int = 0):
        thr = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, np.float64).reshape(-1)
        if thr.size == 0 or (thr <= 0).any() or (thr > 1).any():
            raise ValueError("IoU thresholds must lie in (0, 1]")
        self.num_classes = int(num_classes)
        self.iou_thresholds = thr
        self.max_dets = int(max_dets)
        self.min_points = int(min_points)
        self._thr = np.minimum(thr, 1 - 1e-10)
        self.num_frames = 0
        self.gt_count = np.zeros(self.num_classes, np.int64)
        self._dets: list[tuple] = []  # (frame, class, score, rank, matched (T, D))

    def add(self, pred, gt) -> None:
        """One frame: ``pred``/``gt`` are PointInstances, InstanceSet or (semantic, instance[, scores])."""
        c = self.num_classes
        frame = self.num_frames
        self.num_frames += 1
        p, g = _as_point_instances(pred, c), _as_point_instances(gt, c)
        kp, kg = len(p.classes), len(g.classes)
        psize = np.bincount(p.inst, minlength=kp)
        gsize = np.bincount(g.inst, minlength=kg)
        gkeep = (gsize >= self.min_points) & (g.classes >= 0) & (g.classes < c)
        self.gt_count += np.bincount(g.classes[gkeep], minlength=c)[:c]
        pkeep = (psize >= max(1, self.min_points)) & (p.classes >= 0) & (p.classes < c)
        d_idx = np.flatnonzero(pkeep)
        if d_idx.size == 0:
            return
        dcls, dsc = p.classes[d_idx], p.scores[d_idx].astype(np.float64)
        order = np.lexsort((d_idx, -dsc, dcls))  # class, then descending score, then input order
        d_idx, dcls, dsc = d_idx[order], dcls[order], dsc[order]
        rank = np.arange(len(d_idx)) - np.searchsorted(dcls, dcls, "left")
        cut = rank < self.max_dets
        d_idx, dcls, dsc, rank = d_idx[cut], dcls[cut], dsc[cut], rank[cut]
        n_det = len(d_idx)
        matched = np.zeros((len(self._thr), n_det), bool)

        pi, gi, inter = _intersections(p, g)
        det_pos = np.full(kp, -1, np.int64)
        det_pos[d_idx] = np.arange(n_det)
        dpos = det_pos[pi]
        ok = (dpos >= 0) & gkeep[gi]
        ok[ok] = p.classes[pi[ok]] == g.classes[gi[ok]]
        dpos, gi, inter = dpos[ok], gi[ok], inter[ok]
        if dpos.size:
            union = psize[d_idx[dpos]] + gsize[gi] - inter
            iou = inter.astype(np.float64) / union.astype(np.float64)
            self._match(matched, dpos, gi, iou, dcls, g.classes, gkeep, n_det, kg)
        self._dets.append((np.full(n_det, frame, np.int64), dcls, dsc, rank, matched))

    def _match(self, matched, dpos, gi, iou, dcls, gcls, gkeep, n_det, kg) -> None:
        for t, thr in enumerate(self._thr):
            cand = iou >= thr
            if not cand.any():
                continue
            cd, cg, civ = dpos[cand], gi[cand], iou[cand]
            nd = np.bincount(cd, minlength=n_det)
            ng = np.bincount(cg, minlength=kg)
            bad = (nd[cd] > 1) | (ng[cg] > 1)
            if not bad.any():
                matched[t, cd] = True
                continue
            bad_cls = np.unique(dcls[cd[bad]])
            simple = ~np.isin(dcls[cd], bad_cls)
            matched[t, cd[simple]] = True
            for k in bad_cls:  # exact greedy loop of COCOeval.evaluateImg for this category
                dets_k = np.flatnonzero(dcls == k)  # already in score order
                gts_k = np.flatnonzero(gkeep & (gcls == k))
                gpos = np.full(kg, -1, np.int64)
                gpos[gts_k] = np.arange(len(gts_k))
                dloc = np.full(n_det, -1, np.int64)
                dloc[dets_k] = np.arange(len(dets_k))
                sel = dcls[cd] == k
                m = np.full((len(dets_k), len(gts_k)), -1.0)
                m[dloc[cd[sel]], gpos[cg[sel]]] = civ[sel]
                taken = np.zeros(len(gts_k), bool)
                for r in range(len(dets_k)):
                    row = np.where(taken, -1.0, m[r])
                    best = row.max()
                    if best < 0:
                        continue
                    j = len(row) - 1 - int(np.argmax(row[::-1] == best))
                    taken[j] = True
                    matched[t, dets_k[r]] = True

    def precision(self) -> np.ndarray:
        """COCOeval's ``eval['precision'][:, :, :, area all, maxDets]``: (T, 101, C), −1 where no GT."""
        t_n, r_n, c = len(self._thr), len(COCO_REC_THRESHOLDS), self.num_classes
        prec = -np.ones((t_n, r_n, c))
        if self._dets:
            frame, dcls, dsc, rank, matched = (np.concatenate(x, axis=-1) for x in zip(*self._dets))
        else:
            frame = dcls = rank = np.zeros(0, np.int64)
            dsc, matched = np.zeros(0), np.zeros((t_n, 0), bool)
        for k in range(c):
            npig = int(self.gt_count[k])
            if npig == 0:
                continue
            sel = np.flatnonzero(dcls == k)
            nd = len(sel)
            if nd == 0:
                prec[:, :, k] = 0.0
                continue
            order = sel[np.lexsort((rank[sel], frame[sel], -dsc[sel]))]
            tps = matched[:, order]
            tp_sum = np.cumsum(tps, axis=1).astype(float)
            fp_sum = np.cumsum(~tps, axis=1).astype(float)
            rc = tp_sum / npig
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(t_n):
                inds = np.searchsorted(rc[t], COCO_REC_THRESHOLDS, side="left")
                prec[t, :, k] = np.where(inds < nd, pr[t, np.minimum(inds, nd - 1)], 0.0)
        return prec

    def compute(self) -> dict:
        """``{"ap", "ap50", "ap75", "per_class": {class: {...}}}`` like :meth:`InstanceAP.compute`."""
        nan = float("nan")
        prec = self.precision()
        t50 = np.flatnonzero(np.isclose(self.iou_thresholds, 0.5))
        t75 = np.flatnonzero(np.isclose(self.iou_thresholds, 0.75))

        def ap(p):
            p = p[p > -1]
            return float(p.mean()) if p.size else nan

        def summary(p):  # p: (T, R, ...)
            return {"ap": ap(p), "ap50": ap(p[t50[0]]) if t50.size else nan,
                    "ap75": ap(p[t75[0]]) if t75.size else nan}

        out = summary(prec)
        out["per_class"] = {k: summary(prec[:, :, k]) for k in range(self.num_classes) if self.gt_count[k] > 0}
        return out


def point_instance_ap(preds, gts, num_classes: int, iou_thresholds=None, max_dets: int = 100,
                      min_points: int = 0) -> dict:
    """COCO-style AP/AP50/AP75, overall and per class, of point-mask instances over frames.

    ``preds``/``gts``: sequences (one item per frame) of :class:`PointInstances`, :class:`InstanceSet`
    or ``(semantic, instance[, scores])`` label arrays. Same numbers as :class:`InstanceAP` (pycocotools
    COCOeval); see :class:`PointInstanceAP`. ``iou_thresholds=None``: COCOeval's 0.50:0.05:0.95.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} prediction frames for {len(gts)} ground-truth frames")
    acc = PointInstanceAP(num_classes, iou_thresholds, max_dets, min_points)
    for p, g in zip(preds, gts):
        acc.add(p, g)
    return acc.compute()
