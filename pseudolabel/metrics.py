"""Point-cloud segmentation metrics of MWSIS §4.2, with the authors' protocol (method.md §11).

* Semantic: a (C+1)×(C+1) confusion matrix over the evaluated points; IoU = TP / (TP + FP + FN) per
  class, **mIoU = mean over the C foreground classes** (background excluded, as the authors do).
* Instance: COCO mask AP with pycocotools' ``COCOeval`` where each frame is a 1×N "image" and a mask
  is a 1×N binary RLE, so mask IoU is point-count IoU; IoU thresholds 0.50:0.05:0.95, area "all",
  100 detections. Ground-truth instances spanning several classes are split by class.

Predicted semantics of −1 (ignored) count as background for IoU: an ignored point is not a
foreground prediction. The fraction of ground-truth foreground points that a labelling ignored is
reported separately.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C+1, C+1) counts, rows = ground truth, cols = prediction; C = background; gt −1 is skipped."""
    c = num_classes
    keep = gt >= 0
    p = np.where(pred[keep] < 0, c, pred[keep]).astype(np.int64)
    g = gt[keep].astype(np.int64)
    return np.bincount(g * (c + 1) + p, minlength=(c + 1) ** 2).reshape(c + 1, c + 1)


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a (K, K) confusion matrix (rows prediction or truth alike): (K,) float64, NaN for a class
    with neither predictions nor truth.
    """
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(0) + conf.sum(1) - tp
    return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


@dataclass
class InstanceSet:
    """Instances of one frame over its evaluated points: boolean masks (K, N), classes and scores."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray = field(default=None)


def instances_from_labels(semantic: np.ndarray, instance: np.ndarray, num_classes: int,
                          scores: np.ndarray | None = None, inst_score: np.ndarray | None = None) -> InstanceSet:
    """Group points by (instance id > 0, foreground class); a multi-class instance splits by class.

    Scores: ``scores`` per group (in the returned order), or ``inst_score`` (K,) per instance id 1..K (the
    labels' own, e.g. TWIST's certainty; both parts of a split instance take it), else 1 for every group."""
    fg = (instance > 0) & (semantic >= 0) & (semantic < num_classes)
    key = instance[fg].astype(np.int64) * (num_classes + 1) + semantic[fg]
    uniq, inv = np.unique(key, return_inverse=True)
    idx = np.flatnonzero(fg)
    masks = np.zeros((len(uniq), len(semantic)), bool)
    masks[inv, idx] = True
    classes = (uniq % (num_classes + 1)).astype(np.int64)
    if scores is None and inst_score is not None:
        scores = np.asarray(inst_score, np.float64)[uniq // (num_classes + 1) - 1]
    return InstanceSet(masks, classes, np.ones(len(uniq)) if scores is None else scores)


def _rle_row(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.reshape(1, -1).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


class InstanceAP:
    """Accumulates frames (as compact RLEs) and computes COCO AP/AP50/AP75 overall and per class.

    Each frame is one 1×N image. A class with no ground truth gets NaN. Predictions keep their
    ``scores``; pseudo labels have none, and callers pass 1.0 for every instance (COCOeval then ranks
    ties in instance order).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.images: list[dict] = []
        self.anns: list[dict] = []
        self.dets: list[dict] = []

    def add(self, pred: InstanceSet, gt: InstanceSet) -> None:
        img_id = len(self.images) + 1
        n = gt.masks.shape[1]
        self.images.append({"id": img_id, "height": 1, "width": int(n)})
        for k in range(len(gt.classes)):
            self.anns.append({"id": len(self.anns) + 1, "image_id": img_id, "category_id": int(gt.classes[k]) + 1,
                              "segmentation": _rle_row(gt.masks[k]), "area": float(gt.masks[k].sum()),
                              "iscrowd": 0, "bbox": [0.0, 0.0, float(n), 1.0]})
        for k in range(len(pred.classes)):
            if pred.masks[k].any():
                self.dets.append({"image_id": img_id, "category_id": int(pred.classes[k]) + 1,
                                  "segmentation": _rle_row(pred.masks[k]), "score": float(pred.scores[k])})

    def compute(self) -> dict:
        nan = float("nan")
        out = {"ap": nan, "ap50": nan, "ap75": nan, "per_class": {}}
        if not self.anns:
            return out
        gt_cats = sorted({a["category_id"] for a in self.anns})
        if not self.dets:
            zero = {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
            return {**zero, "per_class": {c - 1: dict(zero) for c in gt_cats}}
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.anns,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(self.num_classes)]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            ev = COCOeval(gt, gt.loadRes(self.dets), iouType="segm")
            ev.params.areaRng = [[0, 1e10]]
            ev.params.areaRngLbl = ["all"]
            ev.evaluate()
            ev.accumulate()
        prec = ev.eval["precision"]  # [T, R, K, A, M]

        def ap(p):
            p = p[p > -1]
            return float(p.mean()) if p.size else nan

        out = {"ap": ap(prec[:, :, :, 0, -1]), "ap50": ap(prec[0, :, :, 0, -1]), "ap75": ap(prec[5, :, :, 0, -1]),
               "per_class": {}}
        for k, cat in enumerate(ev.params.catIds):
            if cat in gt_cats:
                out["per_class"][cat - 1] = {"ap": ap(prec[:, :, k, 0, -1]), "ap50": ap(prec[0, :, k, 0, -1]),
                                             "ap75": ap(prec[5, :, k, 0, -1])}
        return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one shape (any shape); NaN when both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")
