"""Write the pictures of one frame (``mwsis viz frame``)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image

from ...data import viz
from ...data.click_store import click_sources, read_frame_clicks
from ...data.label_store import read_frame_labels, stages_with_labels
from ...data.store import open_dataset, write_bytes_atomic

log = logging.getLogger(__name__)


def save_png(path: Path, rgb) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def viz_frame(data: Path | str, frame_id: str, out: Path | str, points_on_images: bool = False) -> list[Path]:
    """BEV, range image and every camera (boxes + masks) of ``frame_id`` as PNGs in ``out``, every camera
    with each click set's clicks, then the same pictures for every stage that has labels (BEV by label, DCS segments, cameras with the
    projected labels and SAM masks)."""
    ds = open_dataset(data)
    frame = ds.frame(frame_id, images=True)
    out = Path(out)
    written = []
    pictures = {"bev": viz.bev(frame), "range": viz.range_view(frame)}
    for cam in frame.cameras:
        pictures[f"camera_{cam.name}"] = viz.camera_view(frame, cam.camera_id, points=points_on_images)
    for source in click_sources(ds.root):  # each click set over the boxes
        clicks = read_frame_clicks(ds, source, frame_id)
        for cam in frame.cameras:
            pictures[f"clicks-{source}_camera_{cam.name}"] = viz.camera_view(frame, cam.camera_id, masks=False,
                                                                             clicks=clicks)
    for stage in stages_with_labels(ds):
        lab = read_frame_labels(ds, stage, frame_id)
        if lab.segment is not None:
            pictures[f"{stage}_segments"] = viz.segment_view(frame, lab.segment)
        if lab.semantic is None:
            continue
        pictures[f"{stage}_bev"] = viz.bev(frame, semantic=lab.semantic, instance=lab.instance,
                                           title=f"{frame_id}: {stage} pseudo labels (magenta = ignore)")
        for cam in frame.cameras:
            sam = None
            if lab.masks2d is not None:
                m = lab.masks2d
                sam = [(int(m.box_index[k]) + 1, m.rles[k]) for k in range(len(m.rles)) if m.camera_id[k] == cam.camera_id]
            pictures[f"{stage}_camera_{cam.name}"] = viz.camera_view(
                frame, cam.camera_id, masks=False, points=True, semantic=lab.semantic, instance=lab.instance,
                label_masks=sam)
    for name, rgb in pictures.items():
        path = out / f"{frame_id}_{name}.png"
        save_png(path, rgb)
        written.append(path)
    log.info("viz: wrote %d pictures of %s to %s", len(written), frame_id, out)
    return written
