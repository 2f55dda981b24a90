"""3D teacher inference: ``mwsis predict-3d`` (prediction shards for PVC and CSCS) and ``mwsis eval-3d``.

Evaluation follows MWSIS §4.2 with the authors' protocol (method.md §11): the evaluated points are the
TOP LiDAR's, both returns, in range and seen by a camera; semantics = argmax of the sigmoids above 0.5,
else background; instances = points shifted by their votes, CCL per class; score = mean class
probability; COCO AP over point-count IoU 0.50:0.05:0.95 (``PointInstanceAP``, equal to pycocotools'
COCOeval) and per-class IoU / mIoU over the foreground classes. Optional RSC (MWSIS §3.3) corrects
the predicted semantics inside DCS ring segments before clustering.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...data.frame import CLASS_NAMES, NUM_CLASSES
from ...crossmodal.affinity import feature_projection, project_features
from ...data.prediction_store import write_prediction_shard
from ...data.schema.predictions import FEATURE_DIM, FEATURES_SOURCE
from ...data.store import open_dataset
from ...pseudolabel.metrics import confusion_matrix, iou_from_confusion
from ...pseudolabel.point_ap import PointInstanceAP
from ...pseudolabel.points import PointSetConfig
from ...pseudolabel.spg import SPGConfig, frame_segments
from ...train3d.infer import InferConfig, cluster_instances, predict_semantic
from ...train3d.losses import decode_votes
from ...train3d.model import make_batch
from ..progress import progress_bar
from ..training.samples3d import frame_sample, iter_samples

log = logging.getLogger(__name__)


@torch.no_grad()
def model_outputs(model, sample, device, projection: torch.Tensor | None = None):
    """(probs (n, C), decoded offsets (n, C, 3)) of one sample; points outside the voxel range get 0. With
    ``projection`` (F, D) also the projected unit features (n, D) (``crossmodal.affinity``), NaN outside
    the voxel range."""
    batch = make_batch([{"xyz": sample.xyz, "intensity": sample.intensity, "elongation": sample.elongation}], device)
    out = model.outputs(batch, with_features=projection is not None)
    probs = torch.sigmoid(out["sem_logits"].float())
    valid = out.get("valid")
    if valid is not None:
        probs = torch.where(valid[:, None], probs, torch.zeros_like(probs))
    res = probs.cpu().numpy(), decode_votes(out["votes"].float()).cpu().numpy()
    if projection is None:
        return res
    feats = project_features(out["features"], projection)
    if valid is not None:
        feats = torch.where(valid[:, None], feats, torch.full_like(feats, float("nan")))
    return (*res, feats.cpu().numpy())


def export_predictions(data: Path | str, model, infer_cfg: InferConfig, rnd: int, device, info: dict,
                       show_progress: bool = True, positions: list[int] | None = None,
                       points: PointSetConfig = PointSetConfig(), features: bool = False) -> int:
    """Write the model's per-point class probabilities (float16, NaN outside ``points``, the point set the
    model trains on) as round ``rnd``; with ``features`` also its projected features as round ``rnd`` of
    ``predictions/3dfeat``, each shard before its ``3d`` shard."""
    ds = open_dataset(data)
    positions = list(range(ds.num_shards)) if positions is None else positions
    model.eval()
    projection = feature_projection(model.conv_seg.in_features, FEATURE_DIM) if features else None
    n = 0
    with progress_bar(sum(ds.manifest.shards[p].frames for p in positions), "frame", f"predict-3d round {rnd}",
                      enabled=show_progress) as bar:
        for pos in positions:
            info_s = ds.manifest.shards[pos]

            def rows(feature_rows: list | None = None):
                for s in iter_samples(ds, None, [pos], points=points):
                    probs, _, *feats = model_outputs(model, s, device, projection)
                    full = np.full((s.num_points, probs.shape[1]), np.nan, np.float32)
                    full[s.point_index] = probs
                    if feature_rows is not None:
                        f = np.full((s.num_points, FEATURE_DIM), np.nan, np.float32)
                        f[s.point_index] = feats[0]
                        feature_rows.append((s.frame_id, f))
                    bar.update(1)
                    yield s.frame_id, full

            if features:  # one pass over the shard's frames; its features are written first
                feature_rows: list = []
                prob_rows = list(rows(feature_rows))
                write_prediction_shard(ds.root, FEATURES_SOURCE, rnd, info_s.name, feature_rows, (FEATURE_DIM,),
                                       {**info, "projection_seed": 0})
                write_prediction_shard(ds.root, "3d", rnd, info_s.name, prob_rows, (NUM_CLASSES,), info)
            else:
                write_prediction_shard(ds.root, "3d", rnd, info_s.name, rows(), (NUM_CLASSES,), info)
            n += info_s.frames
    log.info("predict-3d: round %d, %d frames -> %s/predictions/3d/round=%d", rnd, n, ds.root, rnd)
    return n


def evaluate_3d(model, data: Path | str, infer_cfg: InferConfig, device, rsc: bool = False,
                rsc_skip: tuple[int, ...] = (1,), show_progress: bool = True, max_frames: int | None = None,
                points: PointSetConfig = PointSetConfig(), spg: SPGConfig = SPGConfig()) -> dict:
    """Instance AP/AP50/AP75 and semantic IoU of ``model`` on the frames of ``data`` that have ground truth,
    over ``points`` (the point set the model trains on); with ``rsc``, over ``spg``'s DCS ring segments."""
    from ...pseudolabel.rsc import rsc_correct

    ds = open_dataset(data)
    ap = PointInstanceAP(NUM_CLASSES, min_points=infer_cfg.min_points if infer_cfg.min_points > 1 else 0)
    conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64)
    frames = 0
    model.eval()
    with progress_bar(len(ds), "frame", "eval-3d", enabled=show_progress) as bar:
        for frame in ds.iter_frames(images=False):
            bar.update(1)
            if frame.gt.point_semantic is None or (max_frames is not None and frames >= max_frames):
                continue
            s = frame_sample(frame, points=points)
            probs, offsets = model_outputs(model, s, device)
            semantic = predict_semantic(probs, infer_cfg.score_thresh)
            if rsc:
                seg = frame_segments(frame.points, spg, frame.range_image_shape, points)[s.point_index]
                semantic = rsc_correct(semantic, seg, skip_classes=rsc_skip, num_classes=NUM_CLASSES)
            instance, _, scores = cluster_instances(s.xyz, semantic, offsets, probs, infer_cfg)
            conf += confusion_matrix(semantic, s.gt_semantic, NUM_CLASSES)
            ap.add((semantic, instance, scores), (s.gt_semantic, s.gt_instance))
            frames += 1
    iou = iou_from_confusion(conf)
    res = ap.compute()

    def num(x):
        return None if x is None or not np.isfinite(x) else float(x)

    per_class = {name: {"iou": num(iou[c]), **{k: num(res["per_class"].get(c, {}).get(k)) for k in ("ap", "ap50", "ap75")}}
                 for c, name in enumerate(CLASS_NAMES)}
    fg = iou[:NUM_CLASSES]
    return {"frames": frames, "ap": num(res["ap"]), "ap50": num(res["ap50"]), "ap75": num(res["ap75"]),
            "miou": num(np.nanmean(fg)) if np.isfinite(fg).any() else None, "per_class": per_class, "rsc": rsc}
