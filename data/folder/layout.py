"""The sensor-folder layout (``formats_more.md`` §2.2-2.4, issue 18): parse its index, calibration and label
files into plain values, every problem named by file, frame and field. Pure: text or parsed YAML/JSON in.

::

    ROOT/dataset.yaml                  conventions, point columns, class map
    ROOT/calib/<calib_id>.yaml         the lidar's extrinsic (and beam inclinations), every camera
    ROOT/logs/<log_id>/frames.jsonl    one JSON object per frame, in time order
    ROOT/logs/<log_id>/lidar/...       one point file per frame: .npy, .bin, .pcd, .las or .laz
    ROOT/logs/<log_id>/cameras/<CAM>/  one image per frame and camera (PNG or JPEG)
    ROOT/logs/<log_id>/boxes2d/<CAM>.json   COCO detection file of that camera (optional)
    ROOT/logs/<log_id>/clicks/<CAM>.json    COCO keypoints, one click per object (optional)
    ROOT/logs/<log_id>/gt/...          optional per-point ground truth (.npy, mwsis ids)

Conventions (stated once, here and in docs/data.md): metres, radians, microseconds; the vehicle frame is
x forward, y left, z up; 4x4 matrices are row-major ``parent_from_child``; a camera's extrinsic maps camera
to vehicle coordinates in either ``opencv`` axes (x right, y down, z forward; pixel centres at integers) or
``waymo`` axes (x forward, y left, z up; pixel ``i`` spans ``[i, i+1)``); COCO boxes are ``[x, y, w, h]``
with pixel ``i`` spanning ``[i, i+1)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..frame import CAMERA_NAMES, CLASS_NAMES, NUM_CLASSES
from ..kitti.geometry import PIXEL_SHIFT, WAYMO_FROM_OPENCV

FORMAT_VERSION = 1
POINT_SUFFIXES = (".npy", ".bin", ".pcd", ".las", ".laz")
# the per-point columns a point file may carry; x, y, z are required
POINT_COLUMNS = ("x", "y", "z", "intensity", "elongation", "return", "ring")
BIN_DTYPES = ("float32", "float64")
CAMERA_IDS = {name: cid for cid, name in CAMERA_NAMES.items()}


class FolderFormatError(ValueError):
    """A file of the layout is missing or malformed: ``path``, optional ``frame`` and ``field`` say where."""

    def __init__(self, path: str, field_: str, problem: str, frame: str | None = None):
        self.path, self.field, self.problem, self.frame = str(path), field_, problem, frame
        where = f"{path}" + (f": frame {frame}" if frame else "") + (f": {field_}" if field_ else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # process pools pickle exceptions by their args
        return type(self), (self.path, self.field, self.problem, self.frame)


@dataclass(frozen=True)
class PointSchema:
    """How point files are read: columns of headerless files, their frame, ring numbering, range-image size."""

    columns: tuple[str, ...] = ("x", "y", "z", "intensity")  # .bin and plain 2D .npy column order
    bin_dtype: str = "float32"
    frame: str = "lidar"  # "lidar" or "vehicle": the coordinates the files hold
    ring_order: str = "top_first"  # ring 0 is the highest beam ("top_first") or the lowest ("bottom_first")
    beams: int | None = None  # beams of the sensor (rows M); needed to recover rows from scan order
    azimuth_columns: int = 2048  # range-image width W
    intensity_scale: float = 1.0  # stored intensity x scale = mwsis intensity (LAS: 1/65535 applied first)


@dataclass(frozen=True)
class DatasetSpec:
    """``dataset.yaml``: the point schema and the class map (category name -> mwsis class or ``ignore``)."""

    points: PointSchema
    classes: dict[str, int | None]  # None: an ignored category (no box)


@dataclass
class CameraCalib:
    camera_id: int
    name: str
    width: int
    height: int
    intrinsic: np.ndarray  # (3, 3), our pixel convention
    distortion: np.ndarray  # (5,) k1 k2 p1 p2 k3
    extrinsic: np.ndarray  # (4, 4) vehicle_from_camera, Waymo axes


@dataclass
class Calib:
    vehicle_from_lidar: np.ndarray  # (4, 4)
    inclinations: np.ndarray | None  # (M,) radians, highest beam first; None when not known
    cameras: dict[str, CameraCalib] = field(default_factory=dict)


@dataclass
class FrameEntry:
    """One line of ``frames.jsonl``; paths relative to the log directory."""

    frame_id: str
    timestamp_us: int
    lidar: str
    calib: str
    cameras: dict[str, str]
    semantic: str | None = None
    instance: str | None = None
    line: int = 0


def _need(d: dict, key: str, path: str, where: str, kind=None, frame: str | None = None):
    if not isinstance(d, dict) or key not in d:
        raise FolderFormatError(path, f"{where}{key}", "missing", frame)
    v = d[key]
    if kind is not None and not isinstance(v, kind) or isinstance(v, bool) and kind in (int, float, (int, float)):
        raise FolderFormatError(path, f"{where}{key}", f"expected {getattr(kind, '__name__', 'a number')}, "
                                                      f"got {v!r}", frame)
    return v


def _choice(value, options, path: str, key: str):
    if value not in options:
        raise FolderFormatError(path, key, f"{value!r} is not one of {', '.join(map(str, options))}")
    return value


def parse_dataset(doc, path: str) -> DatasetSpec:
    """``dataset.yaml`` (already loaded) -> :class:`DatasetSpec`; unknown keys are errors (a typo would
    otherwise silently fall back to a default)."""
    if not isinstance(doc, dict):
        raise FolderFormatError(path, "", "expected a YAML mapping")
    unknown = sorted(set(doc) - {"format_version", "points", "classes"})
    if unknown:
        raise FolderFormatError(path, unknown[0], "unknown key (known: format_version, points, classes)")
    version = _need(doc, "format_version", path, "", int)
    if version != FORMAT_VERSION:
        raise FolderFormatError(path, "format_version", f"{version}: this mwsis reads version {FORMAT_VERSION}")
    pts = doc.get("points") or {}
    defaults = PointSchema()
    unknown = sorted(set(pts) - set(PointSchema.__dataclass_fields__))
    if unknown:
        raise FolderFormatError(path, f"points.{unknown[0]}", f"unknown key (known: "
                                f"{', '.join(PointSchema.__dataclass_fields__)})")
    cols = tuple(pts.get("columns", defaults.columns))
    bad = [c for c in cols if c not in POINT_COLUMNS]
    if bad or len(set(cols)) != len(cols) or not {"x", "y", "z"} <= set(cols):
        raise FolderFormatError(path, "points.columns", f"{list(cols)}: names from {', '.join(POINT_COLUMNS)}, "
                                                        "each once, x y z required")
    beams = pts.get("beams")
    if beams is not None and (not isinstance(beams, int) or isinstance(beams, bool) or not 1 <= beams <= 512):
        raise FolderFormatError(path, "points.beams", f"{beams!r}: an integer from 1 to 512")
    width = pts.get("azimuth_columns", defaults.azimuth_columns)
    if not isinstance(width, int) or isinstance(width, bool) or not 8 <= width <= 32767:
        raise FolderFormatError(path, "points.azimuth_columns", f"{width!r}: an integer from 8 to 32767")
    scale = pts.get("intensity_scale", defaults.intensity_scale)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise FolderFormatError(path, "points.intensity_scale", f"{scale!r}: a positive number")
    schema = PointSchema(cols, _choice(pts.get("bin_dtype", defaults.bin_dtype), BIN_DTYPES, path, "points.bin_dtype"),
                         _choice(pts.get("frame", defaults.frame), ("lidar", "vehicle"), path, "points.frame"),
                         _choice(pts.get("ring_order", defaults.ring_order), ("top_first", "bottom_first"), path,
                                 "points.ring_order"), beams, width, float(scale))
    classes: dict[str, int | None] = {c: i for i, c in enumerate(CLASS_NAMES)}
    for name, target in (doc.get("classes") or {}).items():
        if target != "ignore" and target not in CLASS_NAMES:
            raise FolderFormatError(path, f"classes.{name}", f"{target!r}: one of {', '.join(CLASS_NAMES)} or ignore")
        classes[str(name)] = None if target == "ignore" else CLASS_NAMES.index(target)
    return DatasetSpec(schema, classes)


def _matrix(v, shape: tuple[int, ...], path: str, key: str) -> np.ndarray:
    try:
        m = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        raise FolderFormatError(path, key, f"not a {shape} array of numbers") from None
    if m.shape != shape or not np.isfinite(m).all():
        raise FolderFormatError(path, key, f"expected a finite {'x'.join(map(str, shape))} array, got shape {m.shape}")
    return m


def _rigid(v, path: str, key: str) -> np.ndarray:
    m = _matrix(v, (4, 4), path, key)
    r = m[:3, :3]
    if not np.allclose(m[3], [0, 0, 0, 1]) or not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise FolderFormatError(path, key, "not a rigid transform (rotation with det +1, last row 0 0 0 1)")
    return m


def parse_camera(name: str, doc, path: str) -> CameraCalib:
    """One camera of a calibration file (module docstring for its conventions)."""
    key = f"cameras.{name}."
    cid = doc.get("id", CAMERA_IDS.get(name)) if isinstance(doc, dict) else None
    if cid is None:
        raise FolderFormatError(path, f"{key}id", f"missing: camera {name!r} is not a Waymo camera name "
                                f"({', '.join(CAMERA_IDS)}); give it an id from 6 to 99")
    if not isinstance(cid, int) or isinstance(cid, bool) or not 1 <= cid <= 99:
        raise FolderFormatError(path, f"{key}id", f"{cid!r}: an integer from 1 to 99")
    w, h = (_need(doc, k, path, key, int) for k in ("width", "height"))
    if w < 1 or h < 1:
        raise FolderFormatError(path, f"{key}width", f"image size {w}x{h} must be positive")
    fx, fy, cx, cy = (float(_need(doc, k, path, key, (int, float))) for k in ("fx", "fy", "cx", "cy"))
    if fx <= 0 or fy <= 0:
        raise FolderFormatError(path, f"{key}fx", f"focal lengths must be positive, got fx {fx}, fy {fy}")
    axes = _choice(doc.get("axes", "opencv"), ("opencv", "waymo"), path, f"{key}axes")
    ext = _rigid(_need(doc, "vehicle_from_camera", path, key), path, f"{key}vehicle_from_camera")
    dist = _matrix(doc.get("distortion", [0.0] * 5), (5,), path, f"{key}distortion")
    if axes == "opencv":  # vehicle_from_waymo = vehicle_from_opencv . opencv_from_waymo; pixel centres to i + 0.5
        ext = ext.copy()
        ext[:3, :3] = ext[:3, :3] @ WAYMO_FROM_OPENCV.T
        cx, cy = cx + PIXEL_SHIFT, cy + PIXEL_SHIFT
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return CameraCalib(int(cid), name, int(w), int(h), K, dist, ext)


def parse_calib(doc, path: str) -> Calib:
    """``calib/<id>.yaml`` (already loaded) -> :class:`Calib`."""
    if not isinstance(doc, dict):
        raise FolderFormatError(path, "", "expected a YAML mapping")
    lidar = _need(doc, "lidar", path, "", dict)
    ext = _rigid(_need(lidar, "vehicle_from_lidar", path, "lidar."), path, "lidar.vehicle_from_lidar")
    incl = None
    if lidar.get("inclinations_deg") is not None:
        incl = np.radians(_matrix(lidar["inclinations_deg"], (len(lidar["inclinations_deg"]),), path,
                                  "lidar.inclinations_deg"))
        if len(incl) < 2 or np.any(np.diff(incl) >= 0):
            raise FolderFormatError(path, "lidar.inclinations_deg", "at least 2 values, strictly decreasing "
                                    "(highest beam first)")
    cams = {}
    for name, cdoc in (doc.get("cameras") or {}).items():
        cam = parse_camera(str(name), cdoc, path)
        if any(c.camera_id == cam.camera_id for c in cams.values()):
            raise FolderFormatError(path, f"cameras.{name}.id", f"id {cam.camera_id} is used by another camera")
        cams[str(name)] = cam
    return Calib(ext, incl, cams)


def parse_frames(text: str, path: str) -> list[FrameEntry]:
    """``frames.jsonl`` -> entries in file order; frame ids unique, timestamps not decreasing."""
    out: list[FrameEntry] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {line_no}"
        try:
            d = json.loads(line)
        except ValueError as e:
            raise FolderFormatError(where, "", f"not a JSON object ({e})") from None
        fid = _need(d, "frame_id", where, "", str)
        ts = _need(d, "timestamp_us", where, "", int, fid)
        cams = d.get("cameras", {})
        if not isinstance(cams, dict) or not all(isinstance(v, str) for v in cams.values()):
            raise FolderFormatError(where, "cameras", "expected {camera name: image path}", fid)
        gt = d.get("gt") or {}
        if not isinstance(gt, dict) or not all(isinstance(gt.get(k, ""), str) for k in ("semantic", "instance")):
            raise FolderFormatError(where, "gt", "expected {\"semantic\": path, \"instance\": path}", fid)
        out.append(FrameEntry(fid, int(ts), _need(d, "lidar", where, "", str, fid), _need(d, "calib", where, "", str,
                              fid), dict(cams), gt.get("semantic"), gt.get("instance"), line_no))
        if out[-1].frame_id in {e.frame_id for e in out[:-1]}:
            raise FolderFormatError(where, "frame_id", "appears twice in the log", fid)
        if len(out) > 1 and ts < out[-2].timestamp_us:
            raise FolderFormatError(where, "timestamp_us", f"{ts} is before the previous frame's "
                                    f"{out[-2].timestamp_us}: frames must be in time order", fid)
    if not out:
        raise FolderFormatError(path, "", "no frames")
    return out


@dataclass
class CocoBox:
    class_id: int
    xyxy: tuple[float, float, float, float]
    object_id: int


def _coco_annotations(doc, path: str, classes: dict[str, int | None]):
    """(field prefix, frame id, class or None, object id, annotation) of every annotation of a per-camera COCO
    file, checked: its image, its category (mapped by ``classes``) and its object id (``track_id``, else ``id``)."""
    if not isinstance(doc, dict):
        raise FolderFormatError(path, "", "expected a JSON object with images, categories, annotations")
    images, cats = {}, {}
    for k, im in enumerate(doc.get("images", [])):
        images[_need(im, "id", path, f"images[{k}].")] = str(_need(im, "frame_id", path, f"images[{k}].", str))
    for k, c in enumerate(doc.get("categories", [])):
        name = _need(c, "name", path, f"categories[{k}].", str)
        if name not in classes:
            raise FolderFormatError(path, f"categories[{k}].name", f"{name!r} is neither a class "
                                    f"({', '.join(CLASS_NAMES)}) nor mapped in dataset.yaml's classes")
        cats[_need(c, "id", path, f"categories[{k}].")] = classes[name]
    for k, a in enumerate(doc.get("annotations", [])):
        key = f"annotations[{k}]."
        image = _need(a, "image_id", path, key)
        if image not in images:
            raise FolderFormatError(path, f"{key}image_id", f"{image!r} is not in images")
        cat = _need(a, "category_id", path, key)
        if cat not in cats:
            raise FolderFormatError(path, f"{key}category_id", f"{cat!r} is not in categories", images[image])
        oid = a.get("track_id", a.get("id"))
        if not isinstance(oid, int) or isinstance(oid, bool) or oid < 1:
            raise FolderFormatError(path, f"{key}track_id", f"{oid!r}: a positive integer object id "
                                    "(track_id, else id)", images[image])
        yield key, images[image], cats[cat], int(oid), a


def parse_coco_boxes(doc, path: str, classes: dict[str, int | None]) -> dict[str, list[CocoBox]]:
    """A camera's COCO detection file -> {frame id: boxes}; ``classes`` maps category names (``ignore``:
    None, dropped). Boxes ``[x, y, w, h]``; the object id is ``track_id`` when given, else the annotation id."""
    out: dict[str, list[CocoBox]] = {}
    for key, fid, cls, oid, a in _coco_annotations(doc, path, classes):
        bbox = _need(a, "bbox", path, key, list, fid)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox) \
                or bbox[2] <= 0 or bbox[3] <= 0:
            raise FolderFormatError(path, f"{key}bbox", f"{bbox!r}: [x, y, w, h] with w, h > 0", fid)
        if cls is not None:
            x, y, w, h = (float(v) for v in bbox)
            out.setdefault(fid, []).append(CocoBox(cls, (x, y, x + w, y + h), oid))
    return out


def parse_coco_clicks(doc, path: str, classes: dict[str, int | None]) -> dict[str, list[tuple[int, float, float, int]]]:
    """A camera's COCO keypoints file of clicks -> {frame id: [(class, u, v, object id)]}: the first visible
    keypoint ``[u, v, visibility]`` of each annotation, in image pixels (pixel ``i`` spans ``[i, i+1)``)."""
    out: dict[str, list[tuple[int, float, float, int]]] = {}
    for key, fid, cls, oid, a in _coco_annotations(doc, path, classes):
        kp = _need(a, "keypoints", path, key, list, fid)
        if not kp or len(kp) % 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in kp):
            raise FolderFormatError(path, f"{key}keypoints", f"{kp!r}: [u, v, visibility, ...] numbers", fid)
        visible = [(float(kp[i]), float(kp[i + 1])) for i in range(0, len(kp), 3) if kp[i + 2] > 0]
        if cls is not None and visible:
            out.setdefault(fid, []).append((cls, *visible[0], oid))
    return out


def check_semantic(sem: np.ndarray, path: str, frame: str) -> None:
    bad = (sem < -1) | (sem > NUM_CLASSES)
    if bad.any():
        raise FolderFormatError(path, "semantic", f"{int(bad.sum())} values outside -1..{NUM_CLASSES} "
                                f"(first {int(sem[bad][0])}): mwsis ids, {NUM_CLASSES} background, -1 ignore", frame)
