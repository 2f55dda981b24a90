"""SAM box prompts: the "SAM" baseline of MWSIS (AAAI 2024, Tab. 2 and Tab. 4, Sec. 4.3).

The paper's "SAM with 3D Segmentation" baseline feeds every **2D ground-truth box** of a camera
image to Segment Anything (Kirillov et al. 2023) as a box prompt, takes the single predicted mask per
box, **lifts** the mask to the LiDAR points through the point-pixel projections (a point belongs to
box ``k`` when its projection on box ``k``'s camera falls on a mask pixel), and then applies
**CCL** (keep the largest connected cluster of each box's points) to obtain 3D instance pseudo
labels. Those labels train the 3D network in place of the SPG labels (Tab. 2 row "SAM": 43.34 mAP;
Tab. 4 rows "SAM", without CCL 28.57 mAP).

This module holds only pure functions; the pipeline stage combines them with
``mwsis.pseudolabel.ccl`` (largest cluster per box). Nothing here reads files except
:func:`build_sam`, which loads a checkpoint from a **local path given by the caller** (on the command
line ``--sam-checkpoint PATH``; the official ``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth`` or
``sam_vit_b_01ec64.pth`` files work, the model type being read from the weights). Nothing is ever
downloaded. The model runs on CUDA when it is available, else on the CPU.

Conventions follow :mod:`mwsis.data.frame`: camera ids are Waymo ``CameraName`` values 1..5 (0 = no
projection); a point's projections are ``cam_id (N, 2)`` and ``cam_uv (N, 2, 2)`` ``[slot, (u, v)]``;
pixel ``i`` spans ``[i, i + 1)`` so a projection ``(u, v)`` lands on pixel ``(floor(v), floor(u))``;
boxes are ``(x1, y1, x2, y2)`` in pixels; masks are stored as pycocotools RLE (``counts`` bytes,
``size`` ``[h, w]``).

:func:`tiny_sam` builds a tiny randomly initialised SAM from segment_anything's own modules, for
tests and demos without weights (its masks are meaningless, its shapes and code paths are real).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "PointClaims",
    "build_sam",
    "infer_model_type",
    "tiny_sam",
    "make_predictor",
    "segment_boxes",
    "segment_prompts",
    "masks_to_rle",
    "rle_to_masks",
    "lift_masks_to_points",
]

# Image-encoder patch-embedding width of the three released SAM backbones.
_EMBED_DIM_TO_TYPE: dict[int, str] = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}
_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


class PointClaims(NamedTuple):
    """(point, box) pairs: point ``point[i]`` is claimed by box (mask) ``box[i]``.

    Same layout and field order as ``mwsis.pseudolabel.frustum.Claims`` (``point`` ascending, then
    ``box``; each pair once), so ``Claims(*lifted)`` converts without copying. Kept separate so this
    module does not import the association code.
    """

    point: np.ndarray  # (P,) int64 index into the frame's points
    box: np.ndarray  # (P,) int32 index into the boxes / masks
    n_points: int  # N
    n_boxes: int  # K


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------
# Building models
# --------------------------------------------------------------------------------------------


def _unwrap_state_dict(obj: Any) -> Any:
    """Accept a bare state dict or the usual ``{"model": sd}`` / ``{"state_dict": sd}`` wrappers."""
    if isinstance(obj, Mapping) and _PATCH_KEY not in obj:
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return inner
    return obj


def infer_model_type(state_dict: Mapping[str, Any]) -> str:
    """``"vit_h"``/``"vit_l"``/``"vit_b"`` from the image-encoder width in a SAM state dict.

    Raises ``ValueError`` when the dict is not a SAM state dict or the width is unknown.
    """
    w = state_dict.get(_PATCH_KEY) if isinstance(state_dict, Mapping) else None
    if w is None or not hasattr(w, "shape") or len(w.shape) != 4:
        raise ValueError(f"not a SAM state dict: no 4-d {_PATCH_KEY!r} tensor")
    dim = int(w.shape[0])
    if dim not in _EMBED_DIM_TO_TYPE:
        known = ", ".join(f"{d} ({t})" for d, t in _EMBED_DIM_TO_TYPE.items())
        raise ValueError(f"unknown SAM image-encoder width {dim}; known widths: {known}")
    return _EMBED_DIM_TO_TYPE[dim]


def build_sam(checkpoint: str | Path, model_type: str = "auto", device: str | torch.device | None = None):
    """Build a SAM (``segment_anything.modeling.Sam``, eval mode) from a LOCAL checkpoint file.

    ``model_type`` is ``"vit_h"``, ``"vit_l"``, ``"vit_b"`` or ``"auto"`` (read from the weights:
    image-encoder width 1280 / 1024 / 768, never from the file name). ``device`` defaults to CUDA
    when available, else CPU. Raises ``FileNotFoundError`` for a missing file and ``ValueError``
    (naming the path) for a file that is not a loadable SAM checkpoint of the requested type.
    """
    from segment_anything import sam_model_registry

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {str(path)!r} (give a local file; nothing is downloaded)")
    if model_type != "auto" and model_type not in _MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model_type!r}; expected 'auto' or one of {_MODEL_TYPES}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip / unsupported-global errors all mean "not a checkpoint"
        raise ValueError(f"cannot read SAM checkpoint {str(path)!r}: {type(e).__name__}: {e}") from e
    state_dict = _unwrap_state_dict(obj)
    try:
        inferred = infer_model_type(state_dict)
    except ValueError as e:
        raise ValueError(f"SAM checkpoint {str(path)!r}: {e}") from e
    if model_type == "auto":
        model_type = inferred
    elif model_type != inferred:
        raise ValueError(f"SAM checkpoint {str(path)!r} holds a {inferred} model, but model_type={model_type!r}")
    sam = sam_model_registry[model_type]()  # random init; weights loaded below
    try:
        sam.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(f"SAM checkpoint {str(path)!r} does not match a {model_type} model: {e}") from e
    return sam.to(torch.device(device) if device is not None else default_device()).eval()


def tiny_sam(seed: int = 0, image_size: int = 128, device: str | torch.device | None = "cpu"):
    """A tiny, randomly initialised SAM from segment_anything's own modules (tests and demos).

    Image encoder: ViT with patch 16, width 32, 2 blocks (one windowed, one global, relative
    positions as in the released models); prompt/transformer width 32. Deterministic for a seed
    (the global torch RNG is left untouched). ``image_size`` must be a multiple of 16 in
    [32, 256]; ``SamPredictor`` resizes the long image side to it.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if image_size % 16 or not 32 <= image_size <= 256:
        raise ValueError(f"tiny_sam image_size must be a multiple of 16 in [32, 256], got {image_size}")
    patch, width, prompt_dim = 16, 32, 32
    grid = image_size // patch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=image_size, patch_size=patch, embed_dim=width, depth=2, num_heads=2, mlp_ratio=2.0,
                out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True, global_attn_indexes=(1,), window_size=min(4, grid)),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size),
                mask_in_chans=4),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
                transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        # The released encoder zero-initialises its absolute position embedding; give the tiny one
        # random values so that masks depend on position (more informative tests).
        if sam.image_encoder.pos_embed is not None:
            torch.nn.init.normal_(sam.image_encoder.pos_embed, std=0.5)
    sam = sam.to(torch.device(device) if device is not None else default_device())
    return sam.eval()


def make_predictor(sam):
    """``segment_anything.SamPredictor`` for a model (convenience, keeps imports local)."""
    from segment_anything import SamPredictor

    return SamPredictor(sam)


# --------------------------------------------------------------------------------------------
# Prompting
# --------------------------------------------------------------------------------------------


def segment_boxes(predictor, image: np.ndarray, boxes_xyxy: np.ndarray, batch_size: int = 64
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One mask per box prompt: ``(masks (K, H, W) bool, scores (K,) float32)``: ``segment_prompts``
    with boxes alone."""
    return segment_prompts(predictor, image, boxes_xyxy, None, batch_size)


def segment_prompts(predictor, image: np.ndarray, boxes_xyxy: np.ndarray | None, points_uv: np.ndarray | None,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One mask per prompt: ``(masks (K, H, W) bool, scores (K,) float32)``.

    ``predictor`` is a ``SamPredictor``; ``image`` an (H, W, 3) uint8 RGB image. Prompt k is the box
    ``boxes_xyxy[k]`` ``(x1, y1, x2, y2)`` and/or the foreground point ``points_uv[k]`` (a click, pixels):
    either array may be None, and a NaN row means "no box" / "no point" for that prompt. The image is
    embedded once (``predictor.set_image``), then the prompts go through ``predict_torch`` in batches of
    ``batch_size`` with ``multimask_output=False``, grouped by kind (box, point, both). Boxes are clipped to
    the image; a prompt with neither a box with area inside the image nor a point inside it gets an empty
    mask and score 0 without reaching the model. ``K == 0`` returns empty arrays without running the model.
    Scores are SAM's predicted IoU.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    h, w = int(image.shape[0]), int(image.shape[1])
    k = len(boxes_xyxy) if boxes_xyxy is not None else (len(points_uv) if points_uv is not None else 0)
    boxes = (np.full((k, 4), np.nan, np.float32) if boxes_xyxy is None
             else np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy())
    points = (np.full((k, 2), np.nan, np.float32) if points_uv is None
              else np.asarray(points_uv, dtype=np.float32).reshape(-1, 2).copy())
    if len(boxes) != len(points):
        raise ValueError(f"{len(boxes)} boxes and {len(points)} points: one of each per prompt")
    masks = np.zeros((k, h, w), dtype=bool)
    scores = np.zeros(k, dtype=np.float32)
    if k == 0:
        return masks, scores
    if np.isinf(boxes).any() or np.isinf(points).any():
        raise ValueError("prompts contain infinite values")
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, float(w))
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, float(h))
    has_box = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # False for NaN rows
    has_point = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    if not (has_box | has_point).any():
        return masks, scores
    dev = predictor.device
    with torch.inference_mode():
        predictor.set_image(image)
        for kind in ((True, False), (False, True), (True, True)):
            group = np.flatnonzero((has_box == kind[0]) & (has_point == kind[1]))
            for start in range(0, group.size, batch_size):
                idx = group[start:start + batch_size]
                b = (predictor.transform.apply_boxes_torch(torch.as_tensor(boxes[idx], device=dev), (h, w))
                     if kind[0] else None)
                c = (predictor.transform.apply_coords_torch(torch.as_tensor(points[idx, None], device=dev), (h, w))
                     if kind[1] else None)
                lab = torch.ones(len(idx), 1, device=dev) if kind[1] else None
                m, iou, _ = predictor.predict_torch(point_coords=c, point_labels=lab, boxes=b, multimask_output=False)
                masks[idx] = m[:, 0].cpu().numpy()
                scores[idx] = iou[:, 0].float().cpu().numpy()
    return masks, scores


# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------


def masks_to_rle(masks: np.ndarray) -> list[dict]:
    """(K, H, W) masks -> K pycocotools RLEs ``{"size": [h, w], "counts": bytes}``.

    The inverse is ``pycocotools.mask.decode`` (per RLE, or on the list: (H, W, K)); see
    :func:`rle_to_masks`.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))  # (H, W, K)
    rles = mask_utils.encode(fortran)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"]} for r in rles]


def rle_to_masks(rles: Sequence[dict]) -> np.ndarray:
    """Inverse of :func:`masks_to_rle` (all RLEs of one size): (K, H, W) bool."""
    from pycocotools import mask as mask_utils

    if len(rles) == 0:
        raise ValueError("cannot infer the mask size of an empty RLE list")
    return mask_utils.decode(list(rles)).transpose(2, 0, 1).astype(bool)


# --------------------------------------------------------------------------------------------
# Lifting 2D masks to points
# --------------------------------------------------------------------------------------------


def _wh_for(image_wh, cam: int, k: int) -> tuple[int, int] | None:
    if image_wh is None:
        return None
    if isinstance(image_wh, Mapping):
        if cam not in image_wh:
            raise ValueError(f"image_wh has no size for camera {cam}")
        wh = image_wh[cam]
    elif np.ndim(image_wh) == 2:  # (K, 2) per mask, as frustum.associate takes it
        wh = image_wh[k]
    else:
        wh = image_wh
    return int(wh[0]), int(wh[1])


def lift_masks_to_points(cam_id: np.ndarray, cam_uv: np.ndarray, mask_camera: np.ndarray,
                         masks_or_rles: np.ndarray | Sequence[dict],
                         image_wh: tuple[int, int] | np.ndarray | Mapping[int, tuple[int, int]] | None = None,
                         valid: np.ndarray | None = None) -> PointClaims:
    """Claims of points by 2D masks through their camera projections.

    Point ``n`` is claimed by mask ``k`` when, for a slot ``s`` in {0, 1},
    ``cam_id[n, s] == mask_camera[k] != 0`` and the mask pixel
    ``(floor(cam_uv[n, s, 1]), floor(cam_uv[n, s, 0]))`` lies in the image and is set.

    Args:
        cam_id: (N, 2) int camera of each projection slot (0 = none).
        cam_uv: (N, 2, 2) float ``[slot, (u, v)]`` pixel coordinates.
        mask_camera: (K,) camera id of each mask.
        masks_or_rles: (K, H, W) bool masks, or K pycocotools RLEs (their own ``size`` each).
        image_wh: ``(width, height)`` of every camera, a (K, 2) array per mask (as
            ``frustum.associate``), or ``{camera_id: (width, height)}``; each mask must have that
            size (a ``ValueError`` otherwise). ``None``: the masks' own sizes.
        valid: optional (N,) bool; points where it is false claim nothing (e.g. not TOP lidar).

    Returns:
        :class:`PointClaims` ``(point (P,) int64, box (P,) int32, n_points, n_boxes)``, sorted by
        point then box (the ``frustum.Claims`` layout).
        Vectorised per camera: the camera's projections are sorted by pixel row once, then each
        mask only visits the projections whose row is in the mask's row span.
    """
    cam_id = np.asarray(cam_id)
    cam_uv = np.asarray(cam_uv)
    n = cam_id.shape[0]
    if cam_id.shape != (n, 2) or cam_uv.shape != (n, 2, 2):
        raise ValueError(f"cam_id must be (N, 2) and cam_uv (N, 2, 2); got {cam_id.shape} and {cam_uv.shape}")
    mask_camera = np.asarray(mask_camera).reshape(-1).astype(np.int64)
    k_total = mask_camera.shape[0]
    is_rle = not isinstance(masks_or_rles, np.ndarray)
    if is_rle:
        if len(masks_or_rles) != k_total:
            raise ValueError(f"{len(masks_or_rles)} RLEs for {k_total} mask cameras")
    else:
        if masks_or_rles.ndim != 3 or masks_or_rles.shape[0] != k_total:
            raise ValueError(f"masks must be (K={k_total}, H, W), got shape {masks_or_rles.shape}")
    empty = PointClaims(np.zeros(0, np.int64), np.zeros(0, np.int32), n, k_total)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool).reshape(-1)
        if valid.shape[0] != n:
            raise ValueError(f"valid has {valid.shape[0]} entries for {n} points")
    if k_total == 0 or n == 0:
        return empty

    # All valid projections, flattened over slots: (point index, camera, row, col).
    cid = cam_id.reshape(-1).astype(np.int64)
    u = cam_uv[..., 0].reshape(-1).astype(np.float64)
    v = cam_uv[..., 1].reshape(-1).astype(np.float64)
    ok = (cid != 0) & (u >= 0) & (v >= 0) & (u < 2.0**31) & (v < 2.0**31)  # NaN fails
    if valid is not None:
        ok &= np.repeat(valid, 2)
    flat = np.flatnonzero(ok)
    p_point = (flat // 2).astype(np.int64)
    p_cam = cid[flat]
    p_col = np.floor(u[flat]).astype(np.int64)
    p_row = np.floor(v[flat]).astype(np.int64)

    from pycocotools import mask as mask_utils

    out_points: list[np.ndarray] = []
    out_boxes: list[np.ndarray] = []
    for cam in np.unique(mask_camera):
        if cam == 0:
            continue
        ks = np.flatnonzero(mask_camera == cam)
        sel = np.flatnonzero(p_cam == cam)
        if sel.size == 0:
            continue
        order = np.argsort(p_row[sel], kind="stable")
        c_point, c_row, c_col = p_point[sel][order], p_row[sel][order], p_col[sel][order]
        for k in ks:
            wh = _wh_for(image_wh, int(cam), int(k))
            if is_rle:
                rle = masks_or_rles[k]
                mh, mw = int(rle["size"][0]), int(rle["size"][1])
                if wh is not None and (mw, mh) != wh:
                    raise ValueError(f"mask {k} (camera {cam}) is {mw}x{mh}, image_wh says {wh[0]}x{wh[1]}")
                mask = mask_utils.decode(rle).astype(bool)
            else:
                mask = masks_or_rles[k].astype(bool, copy=False)
                mh, mw = mask.shape
                if wh is not None and (mw, mh) != wh:
                    raise ValueError(f"mask {k} (camera {cam}) is {mw}x{mh}, image_wh says {wh[0]}x{wh[1]}")
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                continue
            lo, hi = np.searchsorted(c_row, [rows[0], rows[-1] + 1])
            if hi <= lo:
                continue
            r, c, pt = c_row[lo:hi], c_col[lo:hi], c_point[lo:hi]
            inside = c < mw  # rows are inside [0, mh) by construction
            r, c, pt = r[inside], c[inside], pt[inside]
            hit = mask[r, c]
            if not hit.any():
                continue
            pts = np.unique(pt[hit])  # both slots on the same mask count once
            out_points.append(pts)
            out_boxes.append(np.full(pts.size, k, np.int32))
    if not out_points:
        return empty
    point = np.concatenate(out_points)
    box = np.concatenate(out_boxes)
    order = np.lexsort((box, point))
    return PointClaims(point[order].astype(np.int64), box[order].astype(np.int32), n, k_total)
