"""Checks a frame before it is written, so bad input fails loudly and names the frame and field.

Bad input is what real logs contain: empty sweeps, NaN coordinates, projections into cameras the
frame does not have, boxes outside the image, ground truth of the wrong length, duplicated ids.
"""
from __future__ import annotations

import numpy as np

from .frame import NUM_CLASSES, Frame


class FrameError(ValueError):
    """A frame is unusable. ``frame_id`` and ``field`` say where."""

    def __init__(self, frame_id: str, field: str, problem: str):
        self.frame_id, self.field, self.problem = frame_id, field, problem
        super().__init__(f"frame {frame_id}: {field}: {problem}")


def validate_frame(frame: Frame, box_tolerance_px: float = 1.0, on_read: bool = False) -> None:
    """Raise ``FrameError`` on the first problem found; return None for a usable frame.

    Writers call it before a frame is written, ``data.store.Shard`` after every frame it decodes (``on_read``),
    so shards from any writer meet the same rules. The checks are vectorised passes over the per-point
    arrays (shapes, finiteness, row/column bounds) and the per-box arrays. ``on_read`` lets a frame without
    points through: a reader that cannot use it (a trainer) skips it with a warning instead."""
    fid = frame.frame_id

    def fail(field: str, problem: str):
        raise FrameError(fid, field, problem)

    p = frame.points
    n = len(p)
    if n == 0 and not on_read:
        fail("points", "the frame has no LiDAR points")
    expected = {"intensity": (n,), "elongation": (n,), "range": (n,), "return_index": (n,), "laser_id": (n,),
                "row": (n,), "col": (n,), "nlz": (n,), "cam_id": (n, 2), "cam_uv": (n, 2, 2), "xyz": (n, 3)}
    for name, shape in expected.items():
        if getattr(p, name) is None:
            if on_read and name in ("intensity", "elongation"):
                continue  # read without it (schema.frames.OPTIONAL_COLUMNS)
            fail(f"points.{name}", "missing (None)")
        if getattr(p, name).shape != shape:
            fail(f"points.{name}", f"shape {getattr(p, name).shape}, expected {shape}")
    for name in ("xyz", "range", "intensity", "elongation"):
        if getattr(p, name) is None:  # left out on read (checked above)
            continue
        finite = np.isfinite(getattr(p, name))
        if not finite.all():  # one reduction on the common path; the details only for the message
            bad = ~finite.reshape(n, -1).all(axis=1)
            fail(f"points.{name}", f"{int(bad.sum())} points with non-finite values (first: point {int(np.argmax(bad))})")

    # ids are small integers: bincount instead of np.unique (a sort of every point, on every read)
    lidars = {l.laser_id: l for l in frame.lidars}
    if n and p.laser_id.min() < 0:
        fail("points.laser_id", f"negative lidar id {int(p.laser_id.min())}")
    present = np.flatnonzero(np.bincount(p.laser_id)) if n else []
    unknown = sorted(set(int(x) for x in present) - set(lidars))
    if unknown:
        fail("points.laser_id", f"points from lidar {unknown[0]} but the frame has lidars {sorted(lidars)}")
    for lid in frame.lidars:
        if len(lid.inclinations) != lid.height:
            fail(f"lidars[{lid.laser_id}].inclinations", f"{len(lid.inclinations)} values for {lid.height} rows")
    if n:  # each point against its own lidar's range-image size, in one pass per field
        size = np.zeros((max(lidars, default=0) + 1, 2), np.int64)
        for lid in frame.lidars:
            size[lid.laser_id] = (lid.height, lid.width)
        for field, dim in (("row", 0), ("col", 1)):
            v = getattr(p, field)
            lim = size[present[0], dim] if len(present) == 1 else size[p.laser_id, dim]  # one lidar: a scalar
            out = (v < 0) | (v >= lim)
            if out.any():
                lid = lidars[int(p.laser_id[np.argmax(out)])]
                what = "rows" if field == "row" else "columns"
                fail(f"points.{field}", f"{what} outside [0, {int(size[lid.laser_id, dim])}) for lidar {lid.laser_id}")

    cams = {c.camera_id: c for c in frame.cameras}
    if len(cams) != len(frame.cameras):
        fail("cameras", "duplicated camera ids")
    cam = p.cam_id.ravel()
    cam = cam[cam > 0]
    used = np.flatnonzero(np.bincount(cam)) if len(cam) else []
    missing = sorted(set(int(c) for c in used) - set(cams))
    if missing:
        fail("points.cam_id", f"projections into cameras {missing} that the frame does not have (has {sorted(cams)})")

    b = frame.boxes2d
    for cid in np.unique(b.camera_id):
        if int(cid) not in cams:
            fail("boxes2d.camera_id", f"boxes on camera {int(cid)} that the frame does not have (has {sorted(cams)})")
    if len(b):
        if not np.isfinite(b.xyxy).all():
            fail("boxes2d.xyxy", "non-finite box coordinates")
        if ((b.class_id < 0) | (b.class_id >= NUM_CLASSES)).any():
            fail("boxes2d.class_id", f"class ids outside [0, {NUM_CLASSES})")
        if ((b.xyxy[:, 2] <= b.xyxy[:, 0]) | (b.xyxy[:, 3] <= b.xyxy[:, 1])).any():
            fail("boxes2d.xyxy", "boxes with x2 <= x1 or y2 <= y1")
        w = np.array([cams[int(c)].width for c in b.camera_id])
        h = np.array([cams[int(c)].height for c in b.camera_id])
        t = box_tolerance_px
        out = (b.xyxy[:, 0] < -t) | (b.xyxy[:, 1] < -t) | (b.xyxy[:, 2] > w + t) | (b.xyxy[:, 3] > h + t)
        if out.any():
            i = int(np.argmax(out))
            fail("boxes2d.xyxy", f"box {i} {b.xyxy[i].tolist()} lies outside camera {int(b.camera_id[i])}'s "
                                 f"{int(w[i])}x{int(h[i])} image")
        key = b.camera_id.astype(np.int64) * (1 << 40) + b.object_id
        if len(np.unique(key)) != len(key):
            fail("boxes2d.object_id", "the same object id appears twice on one camera")

    gt = frame.gt
    for name in ("point_semantic", "point_instance"):
        arr = getattr(gt, name)
        if arr is not None and arr.shape != (n,):
            fail(f"gt.{name}", f"{arr.shape[0]} labels for {n} points")
    if gt.masks is not None:
        for i, rle in enumerate(gt.masks.rles):
            cid = int(gt.masks.camera_id[i])
            cam = cams.get(cid)
            if cam is None:
                fail("gt.masks.camera_id", f"mask {i} on camera {cid} that the frame does not have")
            if list(rle["size"]) != [cam.height, cam.width]:
                fail("gt.masks.size", f"mask {i} is {rle['size']}, camera {cid} is {[cam.height, cam.width]}")
    if gt.boxes3d is not None and len(np.unique(gt.boxes3d.object_id)) != len(gt.boxes3d):
        fail("gt.boxes3d.object_id", "duplicated object ids")
