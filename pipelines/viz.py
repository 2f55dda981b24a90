"""Write the pictures of one frame (``mwsis viz frame``)."""
from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image

from ..data import viz
from ..data.store import open_dataset, write_bytes_atomic

log = logging.getLogger(__name__)


def _save_png(path: Path, rgb) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def viz_frame(data: Path | str, frame_id: str, out: Path | str, points_on_images: bool = False) -> list[Path]:
    """BEV, range image and every camera (boxes + masks) of ``frame_id`` as PNGs in ``out``."""
    frame = open_dataset(data).frame(frame_id, images=True)
    out = Path(out)
    written = []
    pictures = {"bev": viz.bev(frame), "range": viz.range_view(frame)}
    for cam in frame.cameras:
        pictures[f"camera_{cam.name}"] = viz.camera_view(frame, cam.camera_id, points=points_on_images)
    for name, rgb in pictures.items():
        path = out / f"{frame_id}_{name}.png"
        _save_png(path, rgb)
        written.append(path)
    log.info("viz: wrote %d pictures of %s to %s", len(written), frame_id, out)
    return written
