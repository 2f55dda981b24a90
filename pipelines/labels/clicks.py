"""Click sets of a dataset (``DATASET/clicks/<source>/``, ``data.schema.clicks``): derived from its boxes and
true masks for experiments (``data.clicks``), or imported from a COCO-style keypoints file.

The COCO-style file (``docs/examples/clicks.coco.json``): standard ``images``, ``annotations`` and
``categories``, where
- each image names its frame and camera: ``"frame_id"`` (the dataset's frame id) and ``"camera_id"``;
- each category's ``name`` is one of the dataset's classes (``vehicle``, ``pedestrian``, ``cyclist``);
- each annotation has ``image_id``, ``category_id`` and ``keypoints`` ``[u, v, visibility]`` (the first
  keypoint with visibility > 0 is the click; u, v in pixels of the original image, continuous coordinates),
  and optionally ``object_id`` (default: the annotation's ``id``).
Images of frames the dataset does not have are an error; frames without clicks get none.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from ...data.click_store import ClickShard, check_clicks, write_click_shard
from ...data.clicks import box_centre_clicks, mask_centre_clicks, random_mask_clicks
from ...data.frame import Clicks2D
from ...data.store import open_dataset
from ... import __version__
from ..progress import progress_bar

log = logging.getLogger(__name__)
DERIVED = ("box-centre", "mask-centre", "mask-random")


def derived_source(how: str, seed: int = 0) -> str:
    """The click set's name: ``box-centre``, ``mask-centre`` or ``mask-random-s<seed>``."""
    if how not in DERIVED:
        raise ValueError(f"clicks: unknown derivation {how!r} (choose from {', '.join(DERIVED)})")
    return f"{how}-s{seed}" if how == "mask-random" else how


def derive_clicks(data: Path | str, how: str, seed: int = 0, show_progress: bool = True) -> str:
    """Write the click set ``derived_source(how, seed)`` for every frame of ``data``; returns its name.
    Mask-based clicks need the frames' true masks (an error names the first frame without them)."""
    ds = open_dataset(data)
    source = derived_source(how, seed)
    total = 0
    with progress_bar(len(ds), "frame", f"clicks {source}", enabled=show_progress) as bar:
        for pos in range(ds.num_shards):
            info = ds.manifest.shards[pos]

            def rows():
                nonlocal total
                for i, frame in enumerate(ds.shard(pos).iter_frames(images=False)):
                    if how == "box-centre":
                        clicks = box_centre_clicks(frame.boxes2d)
                    elif frame.gt.masks is None:
                        raise ValueError(f"{info.path}: frame {frame.frame_id} has no true masks (field gt_masks): "
                                         f"{how} clicks are derived from them; use box-centre")
                    elif how == "mask-centre":
                        clicks = mask_centre_clicks(frame.boxes2d, frame.gt.masks)
                    else:
                        rng = np.random.default_rng([seed, pos, i])
                        clicks = random_mask_clicks(frame.boxes2d, frame.gt.masks, rng)
                    total += len(clicks)
                    bar.update(1)
                    yield frame.frame_id, clicks

            write_click_shard(ds.root, source, info.name, rows(),
                              {"derived_from": how, "seed": seed, "version": __version__, "frames": info.sha256})
    log.info("clicks: %s, %d clicks on %d frames -> %s/clicks/%s", source, total, len(ds), ds.root, source)
    return source


def _coco_clicks(path: Path, class_names: list[str]) -> dict[str, Clicks2D]:
    """{frame id: clicks} from a COCO-style keypoints file; errors name the file, the entry and the field."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    images, cats = {}, {}
    for k, im in enumerate(doc.get("images", [])):
        missing = [f for f in ("id", "frame_id", "camera_id") if f not in im]
        if missing:
            raise ValueError(f"{path}: images[{k}] lacks field {missing[0]!r}")
        images[im["id"]] = (str(im["frame_id"]), int(im["camera_id"]))
    for k, c in enumerate(doc.get("categories", [])):
        if c.get("name") not in class_names:
            raise ValueError(f"{path}: categories[{k}].name {c.get('name')!r} is not a class of the dataset "
                             f"({', '.join(class_names)})")
        cats[c["id"]] = class_names.index(c["name"])
    per_frame: dict[str, list] = defaultdict(list)
    for k, a in enumerate(doc.get("annotations", [])):
        where = f"{path}: annotations[{k}]"
        if a.get("image_id") not in images:
            raise ValueError(f"{where}.image_id {a.get('image_id')!r} is not in images")
        if a.get("category_id") not in cats:
            raise ValueError(f"{where}.category_id {a.get('category_id')!r} is not in categories")
        kp = a.get("keypoints") or []
        if len(kp) % 3 or not kp:
            raise ValueError(f"{where}.keypoints must be [u, v, visibility, ...], got {kp!r}")
        vis = [(kp[i], kp[i + 1]) for i in range(0, len(kp), 3) if kp[i + 2] > 0]
        if not vis:
            continue  # no visible keypoint: no click
        frame_id, cam = images[a["image_id"]]
        per_frame[frame_id].append((cam, cats[a["category_id"]], *vis[0], int(a.get("object_id", a.get("id", k)))))
    return {f: Clicks2D(np.array([r[0] for r in rs], np.int8), np.array([r[1] for r in rs], np.int8),
                        np.array([[r[2], r[3]] for r in rs], np.float32), np.array([r[4] for r in rs], np.int64))
            for f, rs in per_frame.items()}


def import_coco_clicks(data: Path | str, path: Path | str, source: str = "coco", show_progress: bool = True) -> int:
    """Write click set ``source`` from a COCO-style keypoints file (module docstring); every click is checked
    against the dataset before anything is written. Returns the number of clicks."""
    ds, path = open_dataset(data), Path(path)
    clicks = _coco_clicks(path, list(ds.manifest.class_names))
    unknown = sorted(set(clicks) - set(ds.frame_ids))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} image(s) of frames not in {ds.root}, e.g. frame_id {unknown[0]!r}")
    cameras = {int(c["camera_id"]): (int(c["width"]), int(c["height"])) for c in ds.manifest.sensors.get("cameras", [])}
    for fid, c in clicks.items():
        problem = check_clicks(c, cameras, len(ds.manifest.class_names))
        if problem:
            raise ValueError(f"{path}: frame {fid}, field keypoints: {problem}")
    with progress_bar(ds.num_shards, "shard", f"clicks {source}", enabled=show_progress) as bar:
        for pos in range(ds.num_shards):
            info = ds.manifest.shards[pos]
            ids = [f.frame_id for f in ds.shard(pos).iter_frames(images=False)]
            write_click_shard(ds.root, source, info.name, ((f, clicks.get(f, Clicks2D.empty())) for f in ids),
                              {"imported_from": str(path), "version": __version__, "frames": info.sha256})
            bar.update(1)
    n = sum(len(c) for c in clicks.values())
    log.info("clicks: %s, %d clicks imported from %s", source, n, path)
    return n


def count_clicks(data: Path | str, source: str) -> int:
    """Clicks in a click set (read and verified)."""
    ds = open_dataset(data)
    return sum(len(c) for pos in range(ds.num_shards) for _, c in ClickShard(ds, source, ds.manifest.shards[pos].name))
