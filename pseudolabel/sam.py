"""The SAM baseline on one frame (MWSIS Tab. 2 and Tab. 4 "SAM", §4.3): box prompts -> masks -> points -> Eq. 4.

``sam_frame`` is the frame-level entry, beside ``spg.spg_frame``: every camera's 2D boxes go to SAM as box
prompts (one ``set_image`` per camera, the boxes batched), each mask is lifted to the LiDAR points that
project onto it, and CCL keeps the largest cluster per box (``spg.ccl_labels``, Eq. 4). The building
blocks (loading SAM, prompting, lifting, RLE) are in ``sam_prompt``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from ..data.frame import Boxes2D, Camera, Clicks2D, Points
from .frustum import Claims
from .points import PointSetConfig
from .spg import PAPER_POINTS, SPGConfig, ccl_labels


@dataclass(frozen=True)
class SAMConfig:
    """SAM box prompts. ``checkpoint``: a local vit_h/l/b file, or "tiny" for a tiny randomly initialised
    SAM (tests and plumbing checks only: its masks are meaningless). None skips the stage."""

    checkpoint: str | None = None
    model_type: Literal["auto", "vit_h", "vit_l", "vit_b"] = "auto"  # vit_h | vit_l | vit_b | auto (from the weights)
    batch_size: int = field(default=64, metadata={"range": (1, None)})  # boxes per predict_torch call
    device: str | None = None  # default: CUDA when available
    # what prompts SAM: the 2D boxes (MWSIS), one click per object (``clicks``: the click set; masks and
    # instances per click), or both (each box with its object's click in that camera, where there is one)
    prompts: Literal["boxes", "clicks", "boxes+clicks"] = "boxes"
    clicks: str = "box-centre"  # the click set (``mwsis clicks``) for the click prompts


class SAMFrameLabels(NamedTuple):
    """``sam_frame``'s result: per-point labels of the frame's N points and one mask per box (K masks)."""
    semantic: np.ndarray  # (N,) int8
    instance: np.ndarray  # (N,) int32, 0 = none, else box index + 1
    camera_id: np.ndarray  # (K,) int8: per mask, its camera
    box_index: np.ndarray  # (K,) int32: per mask, the frame box it answers
    score: np.ndarray  # (K,) float32: SAM's predicted IoU
    rles: list  # K pycocotools RLEs at the camera's resolution


def sam_predictor(cfg: SAMConfig):
    """A ``SamPredictor`` for ``cfg`` (the weights at ``cfg.checkpoint``, or the seeded tiny model)."""
    from .sam_prompt import build_sam, make_predictor, tiny_sam

    sam = tiny_sam(seed=0) if cfg.checkpoint == "tiny" else build_sam(cfg.checkpoint, cfg.model_type, cfg.device)
    return make_predictor(sam)


def _click_prompts(boxes2d: Boxes2D, clicks: Clicks2D | None, prompts: str):
    """(prompt objects, their boxes (K, 4) with NaN rows, their points (K, 2) with NaN rows): the frame's boxes
    (each with its object's click in its camera, for "boxes+clicks"), or its clicks alone."""
    if prompts == "clicks":
        return clicks, np.full((len(clicks), 4), np.nan, np.float32), clicks.uv
    pts = np.full((len(boxes2d), 2), np.nan, np.float32)
    if prompts == "boxes+clicks" and clicks is not None:
        at = {(int(c), int(o)): uv for c, o, uv in zip(clicks.camera_id, clicks.object_id, clicks.uv)}
        for k, (c, o) in enumerate(zip(boxes2d.camera_id, boxes2d.object_id)):
            pts[k] = at.get((int(c), int(o)), pts[k])
    return boxes2d, boxes2d.xyxy.astype(np.float32), pts


def sam_frame(points: Points, boxes2d: Boxes2D, cameras: list[Camera], predictor, cfg: SPGConfig = SPGConfig(),
              batch_size: int = 64, point_set: PointSetConfig = PAPER_POINTS, clicks: Clicks2D | None = None,
              prompts: str = "boxes") -> SAMFrameLabels:
    """SAM labels of one frame.

    Args:
        points: the frame's N points (``cam_id``, ``cam_uv`` say where they project).
        boxes2d: its K 2D boxes.
        cameras: its cameras, images loaded.
        predictor: from ``sam_predictor``.
        cfg: the CCL radii and overlap rules of Eq. 4.
        batch_size: prompts per SAM call.
        point_set: which points are labelled.
        clicks, prompts: ``SAMConfig.prompts``. With "clicks" every mask, claim and instance belongs to a
            click (instance = click index + 1, ``box_index`` = the click index).
    """
    from .sam_prompt import lift_masks_to_points, masks_to_rle, segment_prompts

    if prompts != "boxes" and clicks is None:
        raise ValueError(f"SAM prompts {prompts!r} need a click set")
    objs, prompt_boxes, prompt_points = _click_prompts(boxes2d, clicks, prompts)
    cam_ids, box_idx, scores, rles, point_l, box_l = [], [], [], [], [], []
    eligible = point_set.eligible(points)
    for cam in cameras:
        idx = np.flatnonzero(objs.camera_id == cam.camera_id)
        if not len(idx):
            continue
        masks, sc = segment_prompts(predictor, cam.image(), prompt_boxes[idx], prompt_points[idx],
                                    batch_size=batch_size)
        lifted = lift_masks_to_points(points.cam_id, points.cam_uv, np.full(len(idx), cam.camera_id),
                                      masks, (cam.width, cam.height), valid=eligible)
        point_l.append(lifted.point)
        box_l.append(idx[lifted.box].astype(np.int32))  # mask k of this camera -> frame box index
        cam_ids.append(np.full(len(idx), cam.camera_id, np.int8))
        box_idx.append(idx.astype(np.int32))
        scores.append(sc.astype(np.float32))
        rles += masks_to_rle(masks)
    cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
    point, box = cat(point_l, np.int64), cat(box_l, np.int32)
    order = np.lexsort((box, point))
    claims = Claims(point[order], box[order], len(points), len(objs))
    sem, inst = ccl_labels(points.xyz, claims, objs.class_id, eligible, points.range, cfg, box_owner=objs.object_id)
    return SAMFrameLabels(sem, inst, cat(cam_ids, np.int8), cat(box_idx, np.int32), cat(scores, np.float32), rles)
