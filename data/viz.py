"""Pictures of a frame as RGB arrays: bird's-eye view, range image, cameras with boxes and masks.

Pure functions (frame in, ``uint8`` array out); ``pipelines/report/viz.py`` writes them to PNG. Every
picture takes optional per-point ``semantic``/``instance`` arrays so later stages can draw their
pseudo labels with the same code as the ground truth.
"""
from __future__ import annotations

import numpy as np

from .frame import BACKGROUND, CLASS_NAMES, IGNORE, TOP_LIDAR, Frame

CLASS_COLORS = np.array([[230, 60, 40], [40, 120, 240], [250, 190, 20]], np.uint8)  # vehicle, ped, cyclist
BG_COLOR = np.array([150, 150, 150], np.uint8)
IGNORE_COLOR = np.array([255, 0, 255], np.uint8)


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """A stable, well-spread colour per positive id (golden-ratio hue walk); grey for 0."""
    ids = np.asarray(ids, np.int64)
    hue = (ids * 0.61803398875) % 1.0
    h6 = hue * 6
    x = 1 - np.abs(h6 % 2 - 1)
    z = np.zeros_like(hue)
    one = np.ones_like(hue)
    sectors = [(one, x, z), (x, one, z), (z, one, x), (z, x, one), (x, z, one), (one, z, x)]
    k = np.clip(h6.astype(int), 0, 5)
    rgb = np.zeros(ids.shape + (3,))
    for s, (r, g, b) in enumerate(sectors):
        m = k == s
        rgb[m] = np.stack([r[m], g[m], b[m]], -1)
    out = (60 + 195 * rgb).astype(np.uint8)
    out[ids <= 0] = BG_COLOR
    return out


def point_colors(frame: Frame, semantic: np.ndarray | None = None, instance: np.ndarray | None = None) -> np.ndarray:
    """Per-point colours: by instance when given, else by semantic class, else by height."""
    semantic = frame.gt.point_semantic if semantic is None and instance is None else semantic
    instance = frame.gt.point_instance if instance is None and semantic is None else instance
    n = len(frame.points)
    if instance is not None:
        colors = instance_colors(instance)
    elif semantic is not None:
        colors = np.tile(BG_COLOR, (n, 1))
        fg = (semantic >= 0) & (semantic < BACKGROUND)
        colors[fg] = CLASS_COLORS[semantic[fg]]
    else:
        z = frame.points.xyz[:, 2]
        t = np.clip((z - z.min()) / max(np.ptp(z), 1e-6), 0, 1)
        colors = np.stack([255 * t, 80 + 100 * (1 - t), 255 * (1 - t)], 1).astype(np.uint8)
    if semantic is not None:
        colors[semantic == IGNORE] = IGNORE_COLOR
    return colors


def _figure_to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return arr


def bev(frame: Frame, semantic=None, instance=None, extent: float = 60.0, title: str | None = None) -> np.ndarray:
    """Bird's-eye view (x up, y left), points coloured by instance, ground-truth 3D boxes outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xyz = frame.points.xyz
    colors = point_colors(frame, semantic, instance) / 255.0
    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    order = np.argsort((colors == BG_COLOR / 255.0).all(1))[::-1]  # background first, objects on top
    ax.scatter(-xyz[order, 1], xyz[order, 0], s=0.4, c=colors[order], linewidths=0)
    b3 = frame.gt.boxes3d
    if b3 is not None:
        for i in range(len(b3)):
            c, s = np.cos(b3.heading[i]), np.sin(b3.heading[i])
            l, w = b3.size[i, 0] / 2, b3.size[i, 1] / 2
            corners = np.array([[l, w], [l, -w], [-l, -w], [-l, w], [l, w]]) @ np.array([[c, s], [-s, c]])
            corners += b3.center[i, :2]
            ax.plot(-corners[:, 1], corners[:, 0], lw=0.8, color=CLASS_COLORS[b3.class_id[i]] / 255.0)
    ax.plot([0], [0], marker="^", color="k")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("-y (m, right)")
    ax.set_ylabel("x (m, forward)")
    ax.set_title(title or f"{frame.frame_id}: bird's-eye view ({len(xyz)} points)")
    return _figure_to_array(fig)


def range_view(frame: Frame, semantic=None, instance=None, laser_id: int = TOP_LIDAR) -> np.ndarray:
    """The range image of both returns (rows = beams, row 0 highest) and the instance image below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lid = frame.lidar(laser_id)
    rng = frame.range_image(laser_id)
    sel = frame.points.laser_id == laser_id
    colors = point_colors(frame, semantic, instance)[sel]
    inst_img = np.zeros((lid.height, lid.width, 3), np.uint8)
    first = frame.points.return_index[sel] == 0
    inst_img[frame.points.row[sel][first], frame.points.col[sel][first]] = colors[first]
    aspect = max(lid.width / lid.height / 12, 1.0)
    fig, axes = plt.subplots(3, 1, figsize=(14, 6), dpi=110)
    for r, ax in enumerate(axes[:2]):
        img = np.where(rng[r] > 0, rng[r], np.nan)
        ax.imshow(img, cmap="turbo", aspect=aspect, interpolation="nearest")
        ax.set_title(f"range, return {r + 1} ({int((rng[r] > 0).sum())} pixels)")
    axes[2].imshow(inst_img, aspect=aspect, interpolation="nearest")
    axes[2].set_title("first return coloured by instance")
    for ax in axes:
        ax.set_yticks([])
    fig.tight_layout()
    return _figure_to_array(fig)


def camera_view(frame: Frame, camera_id: int, masks: bool = True, points: bool = False,
                semantic=None, instance=None, label_masks: list[tuple[int, dict]] | None = None,
                clicks=None) -> np.ndarray:
    """A camera image with its 2D boxes (class colour, object id) and masks overlaid.

    ``masks``: draw the ground-truth masks; ``label_masks``: (colour id, RLE) pairs to draw instead
    (e.g. a stage's SAM masks); ``points``: the projected points, coloured like ``point_colors``;
    ``clicks``: a ``Clicks2D`` (any cameras), drawn as class-coloured rings with a white centre.
    """
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    cam = frame.camera(camera_id)
    img = cam.image().astype(np.float32)
    gt = frame.gt.masks
    overlay: list[tuple[int, np.ndarray]] = []
    if label_masks is not None:
        overlay = [(cid, mask_utils.decode(rle).astype(bool)) for cid, rle in label_masks]
    elif masks and gt is not None:
        overlay = [(int(gt.object_id[i]), gt.decode(int(i))) for i in np.flatnonzero(gt.camera_id == camera_id)]
    for cid, m in overlay:
        img[m] = 0.5 * img[m] + 0.5 * instance_colors(np.array([cid]))[0]
    if points:
        colors = point_colors(frame, semantic, instance)
        for slot in range(2):
            sel = frame.points.cam_id[:, slot] == camera_id
            uv = np.floor(frame.points.cam_uv[sel, slot]).astype(int)
            ok = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
            img[uv[ok, 1], uv[ok, 0]] = colors[sel][ok]
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    boxes = frame.boxes2d.of_camera(camera_id)
    for i in range(len(boxes)):
        x1, y1, x2, y2 = boxes.xyxy[i].tolist()
        color = tuple(int(c) for c in CLASS_COLORS[boxes.class_id[i]])
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=color, width=2)
        draw.text((x1 + 2, y1 + 1), f"{CLASS_NAMES[boxes.class_id[i]]} {boxes.object_id[i]}", fill=color)
    n_clicks = 0
    if clicks is not None:
        mine = clicks.of_camera(camera_id)
        n_clicks = len(mine)
        for (u, v), k in zip(mine.uv.tolist(), mine.class_id):
            color = tuple(int(c) for c in CLASS_COLORS[k])
            draw.ellipse([u - 5, v - 5, u + 5, v + 5], outline=color, width=2)
            draw.ellipse([u - 1.5, v - 1.5, u + 1.5, v + 1.5], fill=(255, 255, 255))
    extra = f", {n_clicks} clicks" if clicks is not None else ""
    draw.text((4, 4), f"{cam.name} ({len(boxes)} boxes{extra})", fill=(255, 255, 255))
    return np.asarray(pil)


def segment_view(frame: Frame, segment: np.ndarray, laser_id: int = TOP_LIDAR) -> np.ndarray:
    """The range image (first return on top, second below) coloured by DCS ring segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lid = frame.lidar(laser_id)
    sel = (frame.points.laser_id == laser_id) & (segment >= 0)
    img = np.zeros((2, lid.height, lid.width, 3), np.uint8)
    p = frame.points
    img[p.return_index[sel], p.row[sel], p.col[sel]] = instance_colors(segment[sel].astype(np.int64) + 1)
    aspect = max(lid.width / lid.height / 12, 1.0)
    fig, axes = plt.subplots(2, 1, figsize=(14, 4), dpi=110)
    for r, ax in enumerate(axes):
        ax.imshow(img[r], aspect=aspect, interpolation="nearest")
        ax.set_title(f"DCS ring segments, return {r + 1} ({len(np.unique(segment[sel]))} segments in the frame)")
        ax.set_yticks([])
    fig.tight_layout()
    return _figure_to_array(fig)
