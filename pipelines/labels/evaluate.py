"""Pseudo-label quality against ground truth (``mwsis eval-labels``): one row per stage, like MWSIS Tab. 4."""
from __future__ import annotations

import logging
import math

import numpy as np

from ...data.frame import CLASS_NAMES, NUM_CLASSES
from ...data.label_store import LabelShard, stages_with_labels
from ...data.store import Dataset, StoreError, open_dataset
from ...pseudolabel.metrics import InstanceAP, confusion_matrix, instances_from_labels, iou_from_confusion, mask_iou
from ..progress import progress_bar

log = logging.getLogger(__name__)


class _StageScore:
    def __init__(self):
        self.conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64)
        self.ap = InstanceAP(NUM_CLASSES)
        self.fg = 0
        self.fg_ignored = 0
        self.mask_ious: list[float] = []
        self.scored = False  # the labels rank their instances (``FrameLabels.inst_score``)

    def result(self) -> dict:
        iou = iou_from_confusion(self.conf)
        ap = self.ap.compute()
        per_class = {}
        for c, name in enumerate(CLASS_NAMES):
            pc = ap["per_class"].get(c, {})
            per_class[name] = {"iou": _num(iou[c]), "ap": _num(pc.get("ap")), "ap50": _num(pc.get("ap50")),
                               "ap75": _num(pc.get("ap75"))}
        fg_iou = iou[:NUM_CLASSES]
        out = {"miou": _num(np.nanmean(fg_iou)) if np.isfinite(fg_iou).any() else None,
               "ap": _num(ap["ap"]), "ap50": _num(ap["ap50"]), "ap75": _num(ap["ap75"]),
               "per_class": per_class, "background_iou": _num(iou[NUM_CLASSES]),
               "ignored_foreground_fraction": self.fg_ignored / self.fg if self.fg else None,
               "ap_score_convention": ("each pseudo instance scores its labels' inst_score" if self.scored else
                                       "every pseudo instance scores 1.0; COCOeval ranks ties in instance order")}
        if self.mask_ious:
            out["sam_mask_iou"] = float(np.mean(self.mask_ious))
            out["sam_masks"] = len(self.mask_ious)
        return out


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _sam_mask_ious(frame, labels) -> list[float]:
    """IoU of each SAM mask with the ground-truth mask of the same object on the same camera."""
    gt, m = frame.gt.masks, labels.masks2d
    if gt is None or m is None:
        return []
    index = {(int(c), int(o)): k for k, (c, o) in enumerate(zip(gt.camera_id, gt.object_id))}
    out = []
    for k in range(len(m.rles)):
        obj = int(frame.boxes2d.object_id[m.box_index[k]])
        j = index.get((int(m.camera_id[k]), obj))
        if j is not None:
            from pycocotools import mask as mask_utils

            out.append(mask_iou(mask_utils.decode(m.rles[k]).astype(bool), gt.decode(j)))
    return out


#: SPG variants scored in memory by ``evaluate_labels(variants=True)``: the paper's settings (our default)
#: against the authors' code values and the union-find DCS (issue: "measure which is better").
SPG_VARIANTS = {
    "spg[paper]": {},
    "spg[authors thresholds]": {"fg_thresh": 0.05, "bg_inclusive": True},
    "spg[authors overlaps]": {"exclusive": False, "overlap": "last"},
    "spg[authors all]": {"fg_thresh": 0.05, "bg_inclusive": True, "exclusive": False, "overlap": "last"},
    "spg[union-find DCS]": {"dcs_variant": "union_find"},
}


def _variant_labels(frame, config):
    """The ``dcs`` and ``spg`` stages' own frame functions, with the variant's config (a ``StagesConfig``)."""
    from .stages import STAGES

    cfg = config.sections(STAGES["spg"].sections)
    dcs = STAGES["dcs"].label_frame(frame, {}, cfg, None)
    labels = STAGES["spg"].label_frame(frame, {"dcs": dcs}, cfg, None)
    return labels.semantic, labels.instance


def recorded_stages_config(ds: Dataset):
    """The ``StagesConfig`` the dataset's ``spg`` labels were made with (recorded in their shards), else None."""
    from .stages import StagesConfig

    for info in ds.manifest.shards:
        try:
            recorded = LabelShard(ds, "spg", info.name).metadata.get("config")
        except StoreError:
            continue
        if recorded:
            return StagesConfig.resolve(recorded)
    return None


def evaluate_labels(ds: Dataset | str, stages: list[str] | None = None, show_progress: bool = True,
                    variants: bool = False, config=None, exclude_frames: frozenset[str] = frozenset()) -> dict:
    """Score every stage with per-point labels against the ground truth. JSON-ready dict.

    ``config``: the ``StagesConfig`` the labels were made with (default: the one recorded in the ``spg``
    label shards, else the paper's). Its ``points`` give the evaluated point set (``evaluated``: the labelled
    set with NLZ points kept), and ``variants`` (SPG computed in memory with each of ``SPG_VARIANTS`` on top
    of its ``spg``) start from it, so ``spg[paper]`` equals the stored ``spg`` row whatever config made them
    (e.g. ``--config kitti``). ``exclude_frames``: frame ids left out (e.g. TWIST's fully labelled frames, when
    scoring a round's labels of the others).
    """
    from dataclasses import replace

    from .stages import StagesConfig

    ds = open_dataset(ds) if not isinstance(ds, Dataset) else ds
    config = config or recorded_stages_config(ds) or StagesConfig()
    variant_cfgs = {v: replace(config, spg=replace(config.spg, **o)) for v, o in SPG_VARIANTS.items()}
    stages = stages or stages_with_labels(ds)
    scores = {s: _StageScore() for s in stages}
    if variants:
        scores.update({v: _StageScore() for v in SPG_VARIANTS})
    frames = 0
    with progress_bar(total=len(ds), unit="frame", desc="eval-labels", enabled=show_progress) as bar:
        for shard in ds.iter_shards():
            label_shards = {s: LabelShard(ds, s, shard.info.name) for s in stages}
            for i, frame in enumerate(shard.iter_frames(images=False)):
                bar.update(1)
                if (frame.gt.point_semantic is None or frame.gt.point_instance is None
                        or frame.frame_id in exclude_frames):
                    continue
                frames += 1
                keep = config.points.evaluated(frame.points)
                gt_sem = frame.gt.point_semantic[keep]
                gt_set = instances_from_labels(gt_sem, frame.gt.point_instance[keep], NUM_CLASSES)
                gt_fg = (gt_sem >= 0) & (gt_sem < NUM_CLASSES)
                predictions = []
                for stage, ls in label_shards.items():
                    lab = ls.labels(i)
                    if lab.frame_id != frame.frame_id:
                        raise ValueError(f"{ls.path}: row {i} is frame {lab.frame_id}, expected {frame.frame_id}")
                    scores[stage].mask_ious += _sam_mask_ious(frame, lab)
                    if lab.semantic is not None:  # ranked by the labels' own instance scores where they have them
                        predictions.append((stage, lab.semantic, lab.instance, lab.inst_score))
                if variants:
                    predictions += [(v, *_variant_labels(frame, c), None) for v, c in variant_cfgs.items()]
                for stage, sem, inst, inst_score in predictions:
                    sc = scores[stage]
                    sc.scored |= inst_score is not None
                    sem, inst = sem[keep], inst[keep]
                    sc.conf += confusion_matrix(sem, gt_sem, NUM_CLASSES)
                    sc.ap.add(instances_from_labels(sem, inst, NUM_CLASSES, inst_score=inst_score), gt_set)
                    sc.fg += int(gt_fg.sum())
                    sc.fg_ignored += int((gt_fg & (sem < 0)).sum())
    out: dict = {"frames": frames}
    for stage, sc in scores.items():
        if sc.conf.sum() or sc.mask_ious:
            out[stage] = sc.result()
    log.info("eval-labels: %d frames with ground truth, stages %s", frames, [s for s in out if s != "frames"])
    return out


def format_table(result: dict) -> str:
    """A text table in the shape of MWSIS Tab. 4 (percentages)."""
    def pct(x):
        return "   -  " if x is None else f"{100 * x:6.2f}"

    head = (f"{'stage':<24}{'mAP':>7}{'AP50':>7}{'AP75':>7}{'mIoU':>7}"
            + "".join(f"{'IoU ' + n[:3]:>8}" for n in CLASS_NAMES) + f"{'ign.fg%':>8}{'SAM mIoU2D':>11}")
    lines = [f"pseudo-label quality on {result['frames']} frames with ground truth", head, "-" * len(head)]
    for stage, r in result.items():
        if stage == "frames":
            continue
        lines.append(f"{stage:<24}{pct(r.get('ap')):>7}{pct(r.get('ap50')):>7}{pct(r.get('ap75')):>7}"
                     f"{pct(r.get('miou')):>7}"
                     + "".join(f"{pct(r['per_class'][n]['iou']):>8}" for n in CLASS_NAMES)
                     + f"{pct(r.get('ignored_foreground_fraction')):>8}{pct(r.get('sam_mask_iou')):>11}")
    return "\n".join(lines)
