"""Camera-image samples of the 2D branch: each camera image of a frame with its boxes is one sample.

Optional extras ride along: SAM masks (``labels/sam``) as 2D pseudo masks, and for CSCS 3D → 2D the 3D
teacher's per-point probabilities (``predictions/3d/round=R``) at the points' projections into this camera.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from ...data.click_store import ClickShard
from ...data.frame import Clicks2D, Frame
from ...data.schema.labels import FrameLabels
from ...data.label_store import LabelShard
from ...data.prediction_store import PredictionShard
from ...data.schema.predictions import FEATURES_SOURCE
from ...data.store import Dataset, ShardError
from ...train2d.crop import crop_boxes, crop_points, crop_window
from ...train2d.wise import hull_mask
from ...train2d.transforms import (MAX_LONG_SIDE, TEST_SCALE, TRAIN_SHORT_SIDES, prepare_image,
                                   sample_train_scale)
from .sample_order import prediction_row, shuffled_shards


@dataclass
class Sample2D:
    frame_id: str
    camera_id: int
    image: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (K, 4) float32 x1 y1 x2 y2, original pixels
    classes: np.ndarray  # (K,) int64
    box_index: np.ndarray  # (K,) index into the frame's boxes2d
    sam_masks: list | None = None  # K RLEs (or None per box) from the sam stage
    points_uv: np.ndarray | None = None  # (P, 2) projections into this camera
    points_prob: np.ndarray | None = None  # (P, C) 3D teacher probabilities of those points
    points_feat: np.ndarray | None = None  # (P, D) 3D teacher features of those points (predictions/3dfeat)
    gt_masks: list | None = None  # K RLEs: the true instance mask of each box (full supervision)
    proposals: list | None = None  # WISE: K RLEs (or None), each click's proposal; ``boxes`` holds the clicks


def box_gt_masks(frame: Frame, camera_id: int, box_index: np.ndarray) -> list[dict]:
    """The ground-truth mask RLE of each box (matched by camera and object id); a clear error when one is missing."""
    m = frame.gt.masks
    if m is None:
        raise ValueError(f"frame {frame.frame_id}: --masks gt needs ground-truth instance masks, but the frame has none")
    by_object = {int(o): r for c, o, r in zip(m.camera_id, m.object_id, m.rles) if int(c) == camera_id}
    out = []
    for k in box_index:
        oid = int(frame.boxes2d.object_id[k])
        if oid not in by_object:
            raise ValueError(f"frame {frame.frame_id}, camera {camera_id}: box {int(k)} (object_id {oid}) has no "
                             f"ground-truth mask (field masks2d)")
        out.append(by_object[oid])
    return out


def camera_samples(frame: Frame, sam=None, probs_3d: np.ndarray | None = None, with_empty: bool = False,
                   gt_masks: bool = False, feats_3d: np.ndarray | None = None) -> list[Sample2D]:
    """The frame's camera images that have boxes (all of them with ``with_empty``); ``gt_masks`` attaches
    each box's true mask; ``probs_3d`` (N, C) / ``feats_3d`` (N, D) the 3D teacher's probabilities and
    features of the points projected into each camera (points where either is NaN are left out)."""
    out = []
    b = frame.boxes2d
    for cam in frame.cameras:
        idx = np.flatnonzero(b.camera_id == cam.camera_id)
        if not len(idx) and not with_empty:
            continue
        s = Sample2D(frame.frame_id, cam.camera_id, cam.image(), b.xyxy[idx].astype(np.float32),
                     b.class_id[idx].astype(np.int64), idx)
        if sam is not None and sam.masks2d is not None:
            by_box = {int(k): r for k, r in zip(sam.masks2d.box_index, sam.masks2d.rles)}
            s.sam_masks = [by_box.get(int(k)) for k in idx]
        if gt_masks:
            s.gt_masks = box_gt_masks(frame, cam.camera_id, idx)
        if probs_3d is not None:
            uv, pr, ft = [], [], []
            for slot in range(2):
                sel = frame.points.cam_id[:, slot] == cam.camera_id
                ok = sel & ~np.isnan(probs_3d).any(axis=1)
                if feats_3d is not None:
                    ok &= ~np.isnan(feats_3d).any(axis=1)
                    ft.append(feats_3d[ok])
                uv.append(frame.points.cam_uv[ok, slot])
                pr.append(probs_3d[ok])
            s.points_uv, s.points_prob = np.concatenate(uv).astype(np.float32), np.concatenate(pr).astype(np.float32)
            if feats_3d is not None:
                s.points_feat = np.concatenate(ft).astype(np.float32)
        out.append(s)
    return out


def click_samples(frame: Frame, clicks: Clicks2D, labels: FrameLabels, proposals: str) -> list[Sample2D]:
    """WISE's samples: the frame's camera images with clicks, each click a degenerate box (u, v, u, v) with its
    class (``box_index``: the click's index), and its proposal RLE (None without one): "clicks3d" the filled
    hull (``wise.hull_mask``) of its lifted 3D instance's points projected into this camera (the stage's
    instance k + 1 is the object of click k); "sam" the ``sam`` stage's mask of the click (``prompts: clicks``)."""
    from pycocotools import mask as mask_utils

    if proposals == "clicks3d":
        inst = labels.instance
        if inst is None or len(inst) != len(frame.points) or int(inst.max(initial=0)) > len(clicks):
            raise ValueError(f"frame {frame.frame_id}: labels/clicks3d field instance does not fit the frame's "
                             f"{len(frame.points)} points and {len(clicks)} clicks (made from another click set?)")
        owner = np.full(len(inst), -1, np.int64)  # the object id of each point's instance
        owner[inst > 0] = clicks.object_id[inst[inst > 0] - 1]
    else:
        m = labels.masks2d
        by_click = {int(k): r for k, r in zip(m.box_index, m.rles)} if m is not None else {}
    out = []
    for cam in frame.cameras:
        idx = np.flatnonzero(clicks.camera_id == cam.camera_id)
        if not len(idx):
            continue
        image = cam.image()
        rles = []
        for k in idx:
            if proposals != "clicks3d":
                rles.append(by_click.get(int(k)))
                continue
            uv = [frame.points.cam_uv[(owner == clicks.object_id[k]) & (frame.points.cam_id[:, slot] == cam.camera_id),
                                      slot] for slot in range(2)]
            mask = hull_mask(np.concatenate(uv), image.shape[:2])
            rles.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))) if mask.any() else None)
        uv = clicks.uv[idx].astype(np.float32)
        out.append(Sample2D(frame.frame_id, cam.camera_id, image, np.concatenate([uv, uv], 1),
                            clicks.class_id[idx].astype(np.int64), idx, proposals=rles))
    return out


def iter_camera_samples(ds: Dataset, positions: list[int], rng: np.random.Generator | None = None,
                        sam: bool = False, cscs_round: int | None = None, gt_masks: bool = False,
                        features: bool = False, wise=None) -> Iterator[Sample2D]:
    """Samples shard by shard (shuffled shard and frame order with ``rng``; bounded memory). ``cscs_round``:
    the 3D teacher's probabilities of that round at the projections, and with ``features`` its features
    (``predictions/3dfeat`` of the same round: ``predict-3d --features``). ``wise`` (a ``WISEConfig``): click
    samples instead (``click_samples``) from its click set and proposal stage."""
    if wise is not None:
        yield from _iter_click_samples(ds, positions, rng, wise)
        return
    for info, shard, rows in shuffled_shards(ds, positions, rng):
        sam_shard = LabelShard(ds, "sam", info.name) if sam else None
        pred = PredictionShard(ds, "3d", cscs_round, info.name) if cscs_round is not None else None
        feat = (PredictionShard(ds, FEATURES_SOURCE, cscs_round, info.name)
                if cscs_round is not None and features else None)
        for i in rows:
            frame = shard.frame(int(i), images=True)
            lab = sam_shard.labels(int(i)) if sam_shard else None
            probs = prediction_row(pred, int(i), frame.frame_id) if pred is not None else None
            feats = prediction_row(feat, int(i), frame.frame_id) if feat is not None else None
            yield from camera_samples(frame, lab, probs, gt_masks=gt_masks, feats_3d=feats)


def check_click_inputs(ds: Dataset, positions: list[int], wise) -> None:
    """Raise naming the file unless the click set and the proposal stage exist for these shards, and the
    proposals were made from the same click set."""
    for p in positions:
        name = ds.manifest.shards[p].name
        ClickShard(ds, wise.clicks, name)
        lab = LabelShard(ds, wise.proposals, name)
        used = [k.split("/", 1)[1] for k in (lab.metadata.get("inputs") or {}) if k.startswith("clicks/")]
        if used != [wise.clicks]:
            raise ShardError(lab.path, f"WISE proposals from stage '{wise.proposals}' were made from click set(s) "
                                       f"{used or 'none'}, but model.wise.clicks is '{wise.clicks}' (run the stage "
                                       f"with that click set)")


def _iter_click_samples(ds: Dataset, positions: list[int], rng, wise) -> Iterator[Sample2D]:
    for info, shard, rows in shuffled_shards(ds, positions, rng):
        clicks, props = ClickShard(ds, wise.clicks, info.name), LabelShard(ds, wise.proposals, info.name)
        for i in rows:
            frame = shard.frame(int(i), images=True)
            lab = props.labels(int(i))
            if lab.frame_id != frame.frame_id:
                raise ShardError(props.path, f"row {int(i)} holds frame {lab.frame_id}, expected {frame.frame_id}")
            yield from click_samples(frame, clicks.clicks(int(i), frame.frame_id)[1], lab, wise.proposals)


def crop_sample(s: Sample2D, window: tuple[int, int, int, int]) -> Sample2D:
    """``s`` cut to ``window`` (top, left, height, width; ``train2d.crop``): the image, the boxes with at least
    two pixels inside (and their masks), and the LiDAR projections inside."""
    from pycocotools import mask as mask_utils

    top, left, h, w = window
    boxes, keep = crop_boxes(s.boxes, window)
    idx = np.flatnonzero(keep)

    def cut(rles):
        if rles is None:
            return None
        out = []
        for k in idx:
            r = rles[k]
            m = None if r is None else mask_utils.decode(r)[top:top + h, left:left + w]
            out.append(None if m is None else mask_utils.encode(np.asfortranarray(m)))
        return out

    c = replace(s, image=np.ascontiguousarray(s.image[top:top + h, left:left + w]), boxes=boxes,
                classes=s.classes[keep], box_index=s.box_index[keep], sam_masks=cut(s.sam_masks),
                gt_masks=cut(s.gt_masks))
    if s.points_uv is not None:
        c.points_uv, inside = crop_points(s.points_uv, window)
        c.points_prob = s.points_prob[inside]
        if s.points_feat is not None:
            c.points_feat = s.points_feat[inside]
    return c


def prepare_sample(s: Sample2D, cfg, rng: np.random.Generator, train: bool) -> dict:
    """One sample as the network input (``transforms.prepare_image``) with its targets; ``train``: the
    training crop (``cfg.train_crop``), multi-scale size and flip drawn from ``rng``; else the test scale.
    ``cfg``: a ``Train2DConfig``."""
    if train and cfg.train_crop:
        s = crop_sample(s, crop_window(s.boxes, s.classes, s.image.shape[:2], cfg.train_crop, rng,
                                       cfg.crop_class_balance))
    if train:
        scale = sample_train_scale(rng, cfg.train_short_sides or TRAIN_SHORT_SIDES, cfg.max_long_side or MAX_LONG_SIDE)
    else:
        scale = cfg.test_scale or TEST_SCALE
    flip = bool(train and rng.random() < cfg.flip_prob)
    out = prepare_image(s.image, s.boxes, scale=scale, flip=flip, pixel_mean=cfg.model.pixel_mean,
                        pixel_std=cfg.model.pixel_std, bgr=cfg.model.bgr)
    out["classes"] = torch.as_tensor(s.classes)
    if s.points_uv is not None:
        out["points_uv"] = torch.as_tensor(s.points_uv)
        out["points_teacher_prob"] = torch.as_tensor(s.points_prob)
        if s.points_feat is not None:
            out["points_feat_3d"] = torch.as_tensor(s.points_feat)
    if s.sam_masks is not None:
        out["sam_masks"] = s.sam_masks
    if s.gt_masks is not None:
        out["gt_masks"] = s.gt_masks
    if s.proposals is not None:
        out["proposals"] = s.proposals
    return out
