"""One KITTI 3D-object sample -> one :class:`Frame` (``data_formats.md`` §E).

:func:`kitti_frame` is pure (parsed arrays in, frame out); :func:`read_kitti_frame` reads the four
files of a sample (``velodyne/``, ``calib/``, ``label_2/``, ``image_2/``) and calls it.

What a converted frame holds:

* points: the scan in file order, Velodyne frame = vehicle frame; ``intensity`` = reflectance,
  ``elongation`` 0, ``return_index`` 0, ``laser_id`` 1 (TOP), ``nlz`` False, ``range`` = distance from
  the sensor; ``row``/``col`` recovered from scan order and azimuth (:mod:`.rings`); projection slot 0
  is camera 1 (FRONT = image_2) where ``P2 · R0_rect · Tr_velo_to_cam`` lands in front and inside the
  image, slot 1 unused.
* one camera, FRONT (id 1), from the calibration (:mod:`.geometry`); the image bytes as stored.
* 2D boxes from label_2: Car/Van/Truck -> vehicle, Pedestrian/Person_sitting -> pedestrian,
  Cyclist -> cyclist; ``object_id`` = line number (line index + 1), stable across reruns. Tram, Misc,
  DontCare and unknown types give no box. A box names pixels left..right inclusive, so it becomes
  [left, right + 1) (:mod:`.geometry`, pixel convention); boxes are clipped to the image and empty
  ones dropped (both reported in the notes).
* ground truth **derived from the 3D boxes** (KITTI has no per-point labels): a point inside a
  labelled box is that object (semantic = class, instance = object_id, first line wins on overlap);
  a point inside a Tram/Misc box, inside a DontCare region, or outside image_2 (KITTI labels only what
  image_2 sees) is IGNORE; every other point is BACKGROUND. ``gt.boxes3d`` holds the labelled boxes.
  Box-derived labels are approximate: boxes sit on the ground, so the road inside a box's footprint
  falls in it. Points less than ``ground_margin`` (5 cm) above a box's bottom face are therefore
  IGNORE (on the synthetic export they were 98 % road, and 14 % of all in-box points); other stray
  points inside a box (a wall, a kerb) still count as the object.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..frame import BACKGROUND, IGNORE, TOP_LIDAR, Boxes2D, Boxes3D, Frame, GroundTruth, Lidar, Points
from .formats import (KITTI_TYPES, KittiCalib, KittiFormatError, KittiObject, parse_calib, parse_label,
                      parse_velodyne)
from .geometry import box_to_edges, boxes3d_from_labels, kitti_camera, project_velo
from .rings import recover_rings

FRONT = 1  # Waymo CameraName of image_2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def points_in_boxes(xyz: np.ndarray, boxes: Boxes3D) -> np.ndarray:
    """(N,) int64: index of the first box containing each point, -1 for none. Boxes are tested only on
    points within their bounding square, so memory stays O(N) (``Boxes3D.contains`` is O(N K))."""
    owner = np.full(xyz.shape[0], -1, np.int64)
    for k in range(len(boxes)):
        c, half = boxes.center[k].astype(np.float64), boxes.size[k].astype(np.float64) / 2
        r = float(np.hypot(half[0], half[1]))
        near = np.flatnonzero((np.abs(xyz[:, 0] - c[0]) <= r) & (np.abs(xyz[:, 1] - c[1]) <= r) & (owner < 0))
        if near.size:
            one = Boxes3D(boxes.object_id[k:k + 1], boxes.class_id[k:k + 1], boxes.center[k:k + 1],
                          boxes.size[k:k + 1], boxes.heading[k:k + 1])
            owner[near[one.contains(xyz[near])[:, 0]]] = k
    return owner


def _boxes2d(objects: list[KittiObject], width: int, height: int, where: str, notes: list[str]) -> Boxes2D:
    keep, xyxy, clipped = [], [], []
    for o in objects:
        edges = box_to_edges(o.bbox)
        b = np.clip(edges, [0, 0, 0, 0], [width, height, width, height])
        if b[2] <= b[0] or b[3] <= b[1]:
            notes.append(f"{where} line {o.line}: {o.type} box {o.bbox.round(2).tolist()} is empty inside the "
                         f"{width}x{height} image: dropped")
            continue
        if not np.array_equal(b, edges):
            clipped.append(o.line)
        keep.append(o)
        xyxy.append(b)
    if clipped:
        notes.append(f"{where}: boxes of lines {clipped} clipped to the {width}x{height} image")
    return Boxes2D(np.full(len(keep), FRONT, np.int8), np.array([o.class_id for o in keep], np.int8),
                   np.array(xyxy, np.float32).reshape(-1, 4), np.array([o.object_id for o in keep], np.int64))


def box_ground_truth(xyz: np.ndarray, uv: np.ndarray, in_image: np.ndarray, calib: KittiCalib,
                     objects: list[KittiObject], ground_margin: float = 0.05) -> tuple[np.ndarray, np.ndarray, Boxes3D]:
    """Per-point (semantic, instance) from the label boxes, and the labelled 3D boxes (module docstring)."""
    labelled = [o for o in objects if o.class_id is not None]
    other = [o for o in objects if o.class_id is None and o.type != "DontCare"]
    boxes = boxes3d_from_labels(calib, labelled)
    semantic = np.where(in_image, BACKGROUND, IGNORE).astype(np.int8)
    instance = np.zeros(xyz.shape[0], np.int32)
    for o in objects:
        if o.type == "DontCare":  # regions with unlabelled objects: no verdict on what projects there
            x1, y1, x2, y2 = box_to_edges(o.bbox)
            inside = in_image & (uv[:, 0] >= x1) & (uv[:, 0] < x2) & (uv[:, 1] >= y1) & (uv[:, 1] < y2)
            semantic[inside] = IGNORE
    if other:
        semantic[points_in_boxes(xyz, boxes3d_from_labels(calib, other)) >= 0] = IGNORE
    owner = points_in_boxes(xyz, boxes)
    hit = owner >= 0
    semantic[hit] = boxes.class_id[owner[hit]]
    instance[hit] = boxes.object_id[owner[hit]]
    bottom = boxes.center[:, 2].astype(np.float64) - boxes.size[:, 2] / 2.0
    contact = hit & (xyz[:, 2] - bottom[np.maximum(owner, 0)] < ground_margin)
    semantic[contact], instance[contact] = IGNORE, 0
    return semantic, instance, boxes


def kitti_frame(index: int, scan: np.ndarray, calib: KittiCalib, objects: list[KittiObject] | None,
                image_bytes: bytes, image_size: tuple[int, int], image_format: str = "png", columns: int = 2048,
                reference: np.ndarray | None = None, where: dict[str, str] | None = None) -> tuple[Frame, list[str]]:
    """Build frame ``kitti-{index:06d}`` from a parsed sample; returns (frame, notes on what was changed).

    ``objects`` None means no label file (test split): no boxes and no ground truth. ``where`` maps
    'calib' / 'label' to file paths for messages. ``columns`` is the range-image width W.
    """
    where = where or {}
    label_where = where.get("label", "label_2")
    notes: list[str] = []
    xyz = np.ascontiguousarray(scan[:, :3], dtype=np.float32)
    rng = np.linalg.norm(xyz.astype(np.float64), axis=1)
    rec = recover_rings(xyz, columns, reference)
    if rec.non_monotone:
        notes.append(f"{rec.non_monotone} of {rec.rings} recovered rings are not below the previous ring "
                     "(scan order damaged?)")
    if rec.shared > 0.005 * len(xyz):  # denser azimuth sampling than W columns: DCS would lose points
        notes.append(f"{rec.shared} of {len(xyz)} points share a range-image pixel with a ring neighbour; "
                     f"a larger --columns than {columns} keeps them apart")
    width, height = image_size
    cam = kitti_camera(calib, width, height, image_bytes, image_format, FRONT, where.get("calib", "calib"))
    uv, valid = project_velo(calib, xyz, width, height)
    n = xyz.shape[0]
    cam_id = np.zeros((n, 2), np.int8)
    cam_uv = np.full((n, 2, 2), -1.0, np.float32)
    cam_id[valid, 0] = FRONT
    cam_uv[valid, 0] = uv[valid]
    points = Points(xyz=xyz, intensity=np.ascontiguousarray(scan[:, 3], dtype=np.float32),
                    elongation=np.zeros(n, np.float32), range=rng.astype(np.float32),
                    return_index=np.zeros(n, np.int8), laser_id=np.full(n, TOP_LIDAR, np.int8), row=rec.row,
                    col=rec.col, nlz=np.zeros(n, bool), cam_id=cam_id, cam_uv=cam_uv)
    lidar = Lidar(TOP_LIDAR, len(rec.inclinations), int(columns), np.eye(4), rec.inclinations)
    boxes2d, gt = Boxes2D.empty(), GroundTruth()
    if objects is not None:
        for o in objects:
            if o.class_id is not None and (np.asarray(o.hwl) <= 0).any():
                raise KittiFormatError(label_where, f"{o.type} with non-positive dimensions h w l = {o.hwl.tolist()}",
                                       o.line)
        unknown = sorted({o.type for o in objects if o.type not in KITTI_TYPES})
        if unknown:  # Tram and Misc are dropped by design; a type KITTI does not have is worth a word
            notes.append(f"{label_where}: unknown object types, treated like Misc: {', '.join(unknown)}")
        boxes2d = _boxes2d([o for o in objects if o.class_id is not None], width, height, label_where, notes)
        semantic, instance, boxes3d = box_ground_truth(xyz, uv, valid, calib, objects)
        gt = GroundTruth(point_semantic=semantic, point_instance=instance, boxes3d=boxes3d)
    frame = Frame(frame_id=f"kitti-{index:06d}", sequence="kitti", index=int(index), timestamp_us=0, points=points,
                  lidars=[lidar], cameras=[cam], boxes2d=boxes2d, gt=gt)
    return frame, notes


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KittiFormatError(str(path), "missing") from None
    except OSError as e:
        raise KittiFormatError(str(path), f"cannot read ({e.strerror or e})") from None


def _text(path: Path) -> str:
    try:
        return _read(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise KittiFormatError(str(path), f"not a text file ({e})") from None


def image_path(src: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        p = src / "image_2" / f"{stem}{suffix}"
        if p.exists():
            return p
    return src / "image_2" / f"{stem}.png"


def read_kitti_frame(src: Path | str, stem: str, index: int, columns: int = 2048,
                     reference: np.ndarray | None = None) -> tuple[Frame, list[str]]:
    """Read sample ``stem`` of a KITTI training-layout directory ``src``; see :func:`kitti_frame`.

    label_2 is optional as a directory (test split); a missing label file inside it is an error.
    """
    from PIL import Image, UnidentifiedImageError

    src = Path(src)
    velo = src / "velodyne" / f"{stem}.bin"
    calib_p, label_p, img_p = src / "calib" / f"{stem}.txt", src / "label_2" / f"{stem}.txt", image_path(src, stem)
    scan = parse_velodyne(_read(velo), str(velo))
    calib = parse_calib(_text(calib_p), str(calib_p))
    objects = parse_label(_text(label_p), str(label_p)) if (src / "label_2").is_dir() else None
    data = _read(img_p)
    try:
        with Image.open(io.BytesIO(data)) as im:  # the header is enough for the size
            size, fmt = im.size, (im.format or "png").lower()
    except (UnidentifiedImageError, OSError):
        # PIL's message names its BytesIO, not the file: say what the bytes are instead
        raise KittiFormatError(str(img_p), f"not a readable image: {len(data)} bytes starting {data[:8]!r}, "
                                           "expected PNG or JPEG data") from None
    return kitti_frame(index, scan, calib, objects, data, size, "jpeg" if fmt == "jpg" else fmt, columns, reference,
                       {"calib": str(calib_p), "label": str(label_p)})
