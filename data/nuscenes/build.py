"""One nuScenes keyframe -> one :class:`Frame` (``formats_more.md`` §1.3-1.10; issue 18).

* points: the keyframe's LIDAR_TOP ``.pcd.bin`` (float32 x y z intensity ring, sensor frame), moved to the
  vehicle frame at LiDAR time with the LiDAR's calibrated_sensor; ``intensity`` / 255; one return; ``range``
  from the sensor. Rows come from the ring column after sorting the ring values by their median elevation
  (the column is a laser id, not guaranteed to follow elevation), columns from the azimuth seen from the
  sensor in vehicle-aligned axes (:mod:`mwsis.data.folder.rows`).
* cameras: the keyframe's six CAM_* images; ``vehicle_from_camera = inv(E_lidar) . E_cam . C_cam`` (E the
  ego poses at LiDAR and camera time, C the camera's calibrated_sensor), so projecting the LiDAR-time points
  reproduces the devkit's five-step chain (§1.5); OpenCV axes turned into Waymo's, pixel centres moved to
  ``i + 0.5``; no distortion (images are rectified). Camera ids: FRONT 1, FRONT_LEFT 2, FRONT_RIGHT 3,
  BACK_LEFT 4, BACK_RIGHT 5, BACK 6.
* 2D boxes: every annotation of a mapped class, projected as the devkit's 2D export does (§1.8,
  :func:`.geometry.box_2d`); object id = the instance's position in ``instance.json`` + 1 (stable, unique).
* ground truth: the annotations' 3D boxes in the vehicle frame, and per-point labels when the lidarseg (or
  panoptic) add-on is present: classes by :data:`CATEGORY_CLASSES`, a bicycle (and a person on it) inside a
  with-rider bicycle box is that cyclist, a thing point's instance is the box of its class that contains it
  (IGNORE when none does).
"""
from __future__ import annotations

import io
import math

import numpy as np

from ..folder.rows import FAR, RowRecoveryError, group_medians, recover_rows
from ..frame import BACKGROUND, IGNORE, TOP_LIDAR, Boxes2D, Boxes3D, Camera, Frame, GroundTruth, Lidar, Points, \
    project_to_cameras
from ..kitti.build import points_in_boxes
from ..kitti.geometry import PIXEL_SHIFT, WAYMO_FROM_OPENCV
from ..kitti.rings import anchor_rows
from .geometry import box_2d, box_corners, pose, quat_to_matrix, transform
from .tables import CAMERAS, LIDAR, NuScenesFormatError, Tables

CAMERA_IDS = {c: i + 1 for i, c in enumerate(CAMERAS)}
BEAMS = 32  # HDL-32E
HDL32_INCLINATIONS = np.radians(np.linspace(10.67, -30.67, BEAMS))  # nominal, 4/3 deg apart
VEHICLE = ("vehicle.car", "vehicle.truck", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.construction",
           "vehicle.trailer", "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle")
PEDESTRIAN = ("human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
              "human.pedestrian.police_officer", "human.pedestrian.personal_mobility")
IGNORED = ("human.pedestrian.stroller", "human.pedestrian.wheelchair", "noise", "vehicle.ego")
BICYCLE = "vehicle.bicycle"
WITH_RIDER = "cycle.with_rider"
#: nuScenes category -> mwsis class (§1.9); a bicycle is a cyclist only with a rider; unlisted = background
CATEGORY_CLASSES = {**{c: 0 for c in VEHICLE}, **{c: 1 for c in PEDESTRIAN}, **{c: IGNORE for c in IGNORED}}


def annotation_class(category: str, attributes: set[str]) -> int | None:
    """mwsis class of an annotation box, or None (no box: ignored or background categories)."""
    if category == BICYCLE:
        return 2 if WITH_RIDER in attributes else None
    c = CATEGORY_CLASSES.get(category)
    return c if c is not None and c >= 0 else None


def _visibility(annotation: dict, tables: Tables) -> int:
    tok = annotation["visibility_token"]
    if not tok:
        return 0
    level = str(tables.get("visibility", tok, field_="visibility_token")["token"])
    return int(level) if level.isdigit() else 0


def _read(path, token: str = "") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NuScenesFormatError(str(path), "missing", token) from None
    except OSError as e:
        raise NuScenesFormatError(str(path), f"cannot read ({e.strerror or e})", token) from None


def parse_pcd_bin(data: bytes, where: str) -> np.ndarray:
    """(N, 5) float32 x y z intensity ring of a LIDAR_TOP ``.pcd.bin`` (§1.4)."""
    if len(data) == 0 or len(data) % 20:
        raise NuScenesFormatError(where, f"{len(data)} bytes is not a positive multiple of 20 (5 float32 per point: "
                                  "x y z intensity ring)")
    a = np.frombuffer(data, "<f4").reshape(-1, 5)
    bad = ~np.isfinite(a).all(1)
    if bad.any():
        raise NuScenesFormatError(where, f"{int(bad.sum())} points with non-finite values (first: point "
                                  f"{int(np.argmax(bad))})")
    ring = a[:, 4]
    if np.any(ring != np.round(ring)) or ring.min() < 0 or ring.max() >= BEAMS:
        raise NuScenesFormatError(where, f"ring column (5th value) must hold integers 0..{BEAMS - 1}")
    return a


def rows_by_elevation(ring: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(N,) row per point: ring values ordered by their median elevation, highest first, placed on the 32
    nominal beams (``rings.anchor_rows``; all 32 present is the identity on the order)."""
    elev = np.arctan2(direction[:, 2], np.hypot(direction[:, 0], direction[:, 1]))
    far = np.linalg.norm(direction, axis=1) > FAR
    all_med = group_medians(ring, elev, far, BEAMS)
    ids = np.flatnonzero(np.isfinite(all_med))
    med = all_med[ids]
    order = np.argsort(-med, kind="stable")
    lut = np.zeros(BEAMS, np.int64)
    lut[ids[order]] = anchor_rows(med[order], HDL32_INCLINATIONS)
    return lut[ring]


def _camera(tables: Tables, sd_tok: str, E_lidar: np.ndarray) -> tuple[Camera, np.ndarray, np.ndarray]:
    """The camera of a keyframe sample_data, and (cam_from_global, K in OpenCV pixels) for its 2D boxes."""
    sd = tables.get("sample_data", sd_tok)
    cs = tables.get("calibrated_sensor", sd["calibrated_sensor_token"])
    where = str(tables.table_path("calibrated_sensor"))
    K = np.asarray(cs["camera_intrinsic"], np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise NuScenesFormatError(where, "expected a 3x3 intrinsic matrix with positive focal lengths",
                                  sd["calibrated_sensor_token"], "camera_intrinsic")
    ego = tables.get("ego_pose", sd["ego_pose_token"], field_="ego_pose_token")
    E_cam = pose(ego["translation"], ego["rotation"])
    C_cam = pose(cs["translation"], cs["rotation"])
    vehicle_from_cam = np.linalg.inv(E_lidar) @ E_cam @ C_cam
    vehicle_from_cam[:3, :3] = vehicle_from_cam[:3, :3] @ WAYMO_FROM_OPENCV.T
    path = tables.root / sd["filename"]
    data = _read(path, sd_tok)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            size, fmt = im.size, (im.format or "").lower()
    except (UnidentifiedImageError, OSError):
        raise NuScenesFormatError(str(path), f"not a readable image ({len(data)} bytes)", sd_tok) from None
    w, h = int(sd.get("width") or size[0]), int(sd.get("height") or size[1])
    if size != (w, h):
        raise NuScenesFormatError(str(path), f"image is {size[0]}x{size[1]}, sample_data says {w}x{h}", sd_tok)
    Kw = K.copy()
    Kw[:2, 2] += PIXEL_SHIFT
    channel = tables.channel_of[sd["calibrated_sensor_token"]]
    cam = Camera(CAMERA_IDS[channel], w, h, Kw, np.zeros(5), vehicle_from_cam, data, "jpeg" if fmt == "jpeg" else fmt)
    return cam, np.linalg.inv(E_cam @ C_cam), Kw


def _point_labels(tables: Tables, seg: np.ndarray, xyz: np.ndarray, boxes: Boxes3D, where: str) -> tuple:
    """(semantic, instance) from per-point category indices (module docstring)."""
    names = {int(c["index"]): c["name"] for c in tables.by_token["category"].values() if "index" in c}
    if not names:
        raise NuScenesFormatError(str(tables.table_path("category")), "no 'index' fields: the lidarseg add-on "
                                  "replaces category.json with one that has them", "", "index")
    lut = np.full(max(max(names), int(seg.max())) + 1, BACKGROUND, np.int64)
    for idx, name in names.items():
        lut[idx] = IGNORE if name == BICYCLE else CATEGORY_CLASSES.get(name, BACKGROUND)
    unknown = sorted(set(np.unique(seg).tolist()) - set(names))
    if unknown:
        raise NuScenesFormatError(where, f"label value {unknown[0]} is no category index")
    sem = lut[seg]
    inst = np.zeros(len(seg), np.int64)
    bicycle_or_human = np.isin(seg, [i for i, n in names.items() if n == BICYCLE or n.startswith("human.")])
    for cls in (2, 0, 1):  # cyclists first: their riders are human points inside a cyclist box
        sel = np.flatnonzero(boxes.class_id == cls)
        if not len(sel):
            continue
        own = Boxes3D(boxes.object_id[sel], boxes.class_id[sel], boxes.center[sel], boxes.size[sel], boxes.heading[sel])
        cand = (bicycle_or_human if cls == 2 else sem == cls) & (inst == 0)
        idx = np.flatnonzero(cand)
        owner = points_in_boxes(xyz[idx], own)
        hit = owner >= 0
        sem[idx[hit]], inst[idx[hit]] = cls, own.object_id[owner[hit]]
    thing = (sem >= 0) & (sem < BACKGROUND)
    sem[thing & (inst == 0)] = IGNORE  # a thing point no box of its class claims
    return sem.astype(np.int8), inst.astype(np.int32)


def nuscenes_frame(tables: Tables, sample_token: str, index: int, columns: int,
                   min_visibility: int = 0) -> tuple[Frame, list[str]]:
    """The frame of one keyframe sample; returns (frame, notes).

    ``min_visibility``: 2D boxes only for annotations whose visibility level (1: 0-40 %, 2: 40-60 %, 3: 60-80 %,
    4: 80-100 % of the object visible over all six cameras) is at least this; 0 keeps every one, as the
    devkit's 2D export does. Boxes of hidden objects are noise to box supervision. The 3D ground truth keeps
    every annotation.
    """
    notes: list[str] = []
    sample = tables.get("sample", sample_token)
    scene = tables.get("scene", sample["scene_token"], field_="scene_token")
    data = tables.keyframe_data.get(sample_token, {})
    if LIDAR not in data:
        raise NuScenesFormatError(str(tables.table_path("sample_data")), f"no keyframe {LIDAR} sample_data",
                                  sample_token)
    sd = tables.get("sample_data", data[LIDAR])
    cs = tables.get("calibrated_sensor", sd["calibrated_sensor_token"])
    C_lidar = pose(cs["translation"], cs["rotation"])
    ego = tables.get("ego_pose", sd["ego_pose_token"], field_="ego_pose_token")
    E_lidar = pose(ego["translation"], ego["rotation"])
    path = tables.root / sd["filename"]
    scan = parse_pcd_bin(_read(path, data[LIDAR]), str(path))
    xyz = transform(C_lidar, scan[:, :3])
    direction = xyz - C_lidar[:3, 3]  # from the sensor, in vehicle-aligned axes
    ring = scan[:, 4].astype(np.int64)
    try:
        rows = recover_rows(direction, columns, ring=rows_by_elevation(ring, direction), beams=BEAMS)
    except RowRecoveryError as e:
        raise NuScenesFormatError(str(path), str(e), data[LIDAR]) from None
    if rows.shared > 0.005 * len(xyz):
        notes.append(f"{path}: {rows.shared} points share a range-image pixel; a larger --columns than {columns} "
                     "keeps them apart")
    cams, geo = [], {}
    for channel in CAMERAS:
        if channel in data:
            cam, cam_from_global, K = _camera(tables, data[channel], E_lidar)
            cams.append(cam)
            geo[cam.camera_id] = (cam_from_global, K, cam.width, cam.height)
    n = len(xyz)
    cam_id, cam_uv = project_to_cameras(xyz, cams)
    points = Points(xyz=xyz.astype(np.float32), intensity=(scan[:, 3] / 255.0).astype(np.float32),
                    elongation=np.zeros(n, np.float32), range=np.linalg.norm(direction, axis=1).astype(np.float32),
                    return_index=np.zeros(n, np.int8), laser_id=np.full(n, TOP_LIDAR, np.int8), row=rows.row,
                    col=rows.col, nlz=np.zeros(n, bool), cam_id=cam_id, cam_uv=cam_uv)
    lidar_from_global = np.linalg.inv(E_lidar)
    b2 = {"camera_id": [], "class_id": [], "xyxy": [], "object_id": []}
    b3 = {"object_id": [], "class_id": [], "center": [], "size": [], "heading": []}
    for a_tok in tables.annotations.get(sample_token, []):
        ann = tables.get("sample_annotation", a_tok)
        cls = annotation_class(tables.category_name(ann), tables.attribute_names(ann))
        if cls is None:
            continue
        oid = tables.object_id[ann["instance_token"]]
        R = quat_to_matrix(ann["rotation"])
        corners = box_corners(ann["translation"], ann["size"], R)
        boxed = geo if _visibility(ann, tables) >= min_visibility else {}  # 2D boxes only for visible enough ones
        for cid, (cam_from_global, K, w, h) in boxed.items():
            box = box_2d(transform(cam_from_global, corners), K, w, h)
            if box is not None:
                b2["camera_id"].append(cid), b2["class_id"].append(cls), b2["xyxy"].append(box)
                b2["object_id"].append(oid)
        Rv = lidar_from_global[:3, :3] @ R
        w_, l_, h_ = (float(v) for v in ann["size"])
        b3["object_id"].append(oid), b3["class_id"].append(cls)
        b3["center"].append(transform(lidar_from_global, np.asarray(ann["translation"])[None])[0])
        b3["size"].append([l_, w_, h_]), b3["heading"].append(math.atan2(Rv[1, 0], Rv[0, 0]))
    boxes2d = (Boxes2D(np.array(b2["camera_id"], np.int8), np.array(b2["class_id"], np.int8),
                       np.array(b2["xyxy"], np.float32).reshape(-1, 4), np.array(b2["object_id"], np.int64))
               if b2["camera_id"] else Boxes2D.empty())
    boxes3d = Boxes3D(np.array(b3["object_id"], np.int64), np.array(b3["class_id"], np.int8),
                      np.array(b3["center"], np.float32).reshape(-1, 3),
                      np.array(b3["size"], np.float32).reshape(-1, 3), np.array(b3["heading"], np.float32))
    gt = GroundTruth(boxes3d=boxes3d)
    lidarseg, panoptic = tables.lidarseg.get(data[LIDAR]), tables.panoptic.get(data[LIDAR])
    if lidarseg or panoptic:
        seg_path = tables.root / (lidarseg or panoptic)
        raw = _read(seg_path, data[LIDAR])
        try:  # lidarseg: uint8 category index per point; panoptic: uint16 index * 1000 + instance (§1.10)
            seg = np.frombuffer(raw, np.uint8) if lidarseg else np.load(io.BytesIO(raw))["data"] // 1000
            seg = seg.astype(np.int64)
        except (ValueError, OSError, KeyError, EOFError) as e:
            raise NuScenesFormatError(str(seg_path), f"not a readable panoptic .npz with key 'data' ({e})",
                                      data[LIDAR]) from None
        if len(seg) != n:
            raise NuScenesFormatError(str(seg_path), f"{len(seg)} labels for {n} points", data[LIDAR])
        sem, inst = _point_labels(tables, seg, xyz, boxes3d, str(seg_path))
        gt = GroundTruth(point_semantic=sem, point_instance=inst, boxes3d=boxes3d)
    frame = Frame(frame_id=f"{scene['name']}-{index:06d}", sequence=scene["name"], index=int(index),
                  timestamp_us=int(sample["timestamp"]), points=points,
                  lidars=[Lidar(TOP_LIDAR, BEAMS, int(columns), C_lidar, rows.inclinations)], cameras=cams,
                  boxes2d=boxes2d, gt=gt)
    return frame, notes
