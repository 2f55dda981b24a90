"""2D teacher inference: ``mwsis predict-2d`` (CSCS 2D → 3D targets) and ``mwsis eval-2d`` (COCO mask AP).

predict-2d (MWSIS Eq. 6): for each camera image, the EMA teacher's IPG pseudo-mask probabilities of the
frame's boxes are merged per class (max over the class's boxes) and sampled bilinearly at each LiDAR
point's projections, through the same resize/flip/padding as the network input (``train2d.cscs``).
Output per point: (2 projection slots, C classes), NaN where a slot has no projection.

eval-2d (method.md §11): one COCO image per camera image at the original resolution; ground-truth
masks of at most 200 pixels are dropped, as the authors do; predicted masks (probability > 0.5) score
by their box confidence; pycocotools ``COCOeval`` (segm), overall and per class.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ...data.frame import CLASS_NAMES, NUM_CLASSES
from ...data.prediction_store import write_prediction_shard
from ...data.store import open_dataset
from ...train2d.cscs import sample_at_projections
from ...train2d.transforms import collate
from ..progress import progress_bar
from ..training.samples2d import camera_samples, prepare_sample

if TYPE_CHECKING:
    from ..training.train2d import Train2DConfig

log = logging.getLogger(__name__)
MIN_GT_PIXELS = 200  # authors: instances with <= 200 px are dropped from 2D evaluation


@torch.no_grad()
def frame_point_probs(model, frame, cfg: Train2DConfig, device) -> np.ndarray:
    """(N, 2, C) 2D teacher class probabilities at each point's two projections (NaN where none, and for the
    classes without a box in that camera)."""
    probs = np.full((len(frame.points), 2, NUM_CLASSES), np.nan, np.float32)
    rng = np.random.default_rng(0)
    for s in camera_samples(frame, with_empty=True):
        images, targets = collate([prepare_sample(s, cfg, rng, train=False)])
        t = targets[0]
        t["boxes"], t["classes"] = t["boxes"].to(device), t["classes"].to(device)
        out = model.ipg_teacher_outputs(images.to(device), [t])
        maps, present = out["class_maps"][0].float(), out["class_present"][0].cpu().numpy()
        for slot in range(2):
            sel = np.flatnonzero(frame.points.cam_id[:, slot] == s.camera_id)
            if not len(sel):
                continue
            uv = torch.as_tensor(frame.points.cam_uv[sel, slot], dtype=torch.float32, device=device)
            vals, inside = sample_at_projections(maps, uv, t["transform"], stride=4)
            v = vals.cpu().numpy()
            v[~inside.cpu().numpy()] = np.nan
            v[:, ~present] = np.nan  # a class without a box in this camera: no teacher (method.md §8)
            probs[sel, slot] = v
    return probs


def export_predictions_2d(data: Path | str, model, cfg: Train2DConfig, rnd: int, device, info: dict,
                          show_progress: bool = True, positions: list[int] | None = None) -> int:
    """Write round ``rnd`` for the shards at ``positions`` (all by default; a DDP rank passes its own)."""
    if cfg.model.wise.enabled:
        raise ValueError("predict-2d exports a box model's per-box class maps (for CSCS 2D -> 3D); a WISE run "
                         "(model.wise, trained from clicks) has no boxes to condition them on")
    ds = open_dataset(data)
    positions = list(range(ds.num_shards)) if positions is None else positions
    frames = sum(ds.manifest.shards[p].frames for p in positions)
    model.eval()
    with progress_bar(frames, "frame", f"predict-2d round {rnd}", enabled=show_progress) as bar:
        for pos in positions:
            shard = ds.shard(pos)

            def rows():
                for frame in shard.iter_frames(images=True):
                    bar.update(1)
                    yield frame.frame_id, frame_point_probs(model, frame, cfg, device)

            write_prediction_shard(ds.root, "2d", rnd, shard.info.name, rows(), (2, NUM_CLASSES), info)
    log.info("predict-2d: round %d, %d frames -> %s/predictions/2d/round=%d", rnd, frames, ds.root, rnd)
    return frames


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_mask_ap(images: list[dict], gts: list[dict], dets: list[dict], iou_type: str = "segm") -> dict:
    """COCOeval ``iou_type`` (segm; bbox for the box AP diagnostic) over prepared lists (categories 1..C);
    per-class AP from the precision array."""
    out = {"ap": None, "ap50": None, "ap75": None, "per_class": {}}
    if not gts:
        return out
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gts,
                  "categories": [{"id": c + 1, "name": n} for c, n in enumerate(CLASS_NAMES)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return {**out, "ap": 0.0, "ap50": 0.0, "ap75": 0.0}
        ev = COCOeval(gt, gt.loadRes(dets), iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K], area all, 100 dets

    def ap(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    out.update(ap=ap(prec), ap50=ap(prec[0]), ap75=ap(prec[5]))
    for k, cat in enumerate(ev.params.catIds):
        out["per_class"][CLASS_NAMES[cat - 1]] = {"ap": ap(prec[:, :, k]), "ap50": ap(prec[0, :, k]),
                                                  "ap75": ap(prec[5, :, k])}
    return out


@torch.no_grad()
def coco_images(ds, detect, show_progress: bool = True, desc: str = "eval-2d") -> tuple[list, list, list]:
    """COCO ``images`` (each with its ``frame_id`` and ``camera_id``), ground-truth ``annotations`` (masks of
    more than ``MIN_GT_PIXELS`` pixels, method.md §11) and detections over every camera image of the frames
    with ground-truth masks. ``detect(frame, sample)`` gives one image's detections: dicts with
    ``category_id``, ``segmentation`` (RLE), ``score`` and optionally ``bbox``."""
    images, gts, dets = [], [], []
    with progress_bar(len(ds), "frame", desc, enabled=show_progress) as bar:
        for frame in ds.iter_frames(images=True):
            bar.update(1)
            m = frame.gt.masks
            if m is None:
                continue
            for s in camera_samples(frame, with_empty=True):
                img_id = len(images) + 1
                h, w = s.image.shape[:2]
                images.append({"id": img_id, "height": h, "width": w, "frame_id": frame.frame_id,
                               "camera_id": int(s.camera_id)})
                for k in np.flatnonzero(m.camera_id == s.camera_id):
                    mask = m.decode(int(k))
                    if mask.sum() <= MIN_GT_PIXELS:
                        continue
                    gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": int(m.class_id[k]) + 1,
                                "segmentation": _rle(mask), "area": float(mask.sum()), "iscrowd": 0,
                                "bbox": list(mask_utils.toBbox(_rle(mask)))})
                dets += [{"image_id": img_id, **d} for d in detect(frame, s)]
    return images, gts, dets


def model_detector(model, cfg: Train2DConfig, device):
    """``coco_images``'s ``detect`` for a 2D model's predictions (masks at 0.5, box score)."""
    rng = np.random.default_rng(0)
    model.eval()

    def detect(frame, s) -> list[dict]:
        batch, targets = collate([prepare_sample(s, cfg, rng, train=False)])
        pred = model.predict(batch.to(device), transforms=[targets[0]["transform"]])[0]
        return [{"category_id": int(pred["classes"][j]) + 1, "segmentation": _rle(pred["masks"][j].cpu().numpy() > 0.5),
                 "score": float(pred["scores"][j]), "bbox": _xywh(pred["boxes"][j].cpu().numpy())}
                for j in range(len(pred["scores"]))]

    return detect


def evaluate_2d(model, data: Path | str, cfg: Train2DConfig, device, show_progress: bool = True,
                box_ap: bool = False) -> dict:
    """COCO mask AP (method.md §11). ``box_ap``: also the COCO box AP of the same detections against the GT
    masks' boxes (``res["box"]``), a diagnostic that separates detection from mask quality."""
    images, gts, dets = coco_images(open_dataset(data), model_detector(model, cfg, device), show_progress)
    # loadRes takes the "bbox" branch when a det has one: each evaluation gets only its own key
    res = coco_mask_ap(images, gts, [{k: v for k, v in d.items() if k != "bbox"} for d in dets])
    if box_ap:
        res["box"] = coco_mask_ap(images, gts, [{k: v for k, v in d.items() if k != "segmentation"} for d in dets],
                                  "bbox")
    res.update(images=len(images), gt_instances=len(gts), detections=len(dets))
    return res
