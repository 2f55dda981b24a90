"""Waymo enumerations (data_formats.md D) and the MWSIS class groupings (method.md §1, §11, §12).

Our classes are ``Frame``'s: 0 vehicle, 1 pedestrian, 2 cyclist, ``BACKGROUND`` = 3, ``IGNORE`` = -1.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from ..frame import BACKGROUND, IGNORE

# D.1 / D.2
LASER_NAMES = {0: "UNKNOWN", 1: "TOP", 2: "FRONT", 3: "SIDE_LEFT", 4: "SIDE_RIGHT", 5: "REAR"}
CAMERA_NAMES = {0: "UNKNOWN", 1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}

# D.3 box types. Note 3 = SIGN and 4 = CYCLIST. 2D labels never carry signs; both are dropped.
TYPE_UNKNOWN, TYPE_VEHICLE, TYPE_PEDESTRIAN, TYPE_SIGN, TYPE_CYCLIST = 0, 1, 2, 3, 4
BOX_TYPE_TO_CLASS = {TYPE_VEHICLE: 0, TYPE_PEDESTRIAN: 1, TYPE_CYCLIST: 2}
CLASS_TO_BOX_TYPE = {v: k for k, v in BOX_TYPE_TO_CLASS.items()}

# D.6 LiDAR semantic classes, grouped as the authors' 3D GT (method.md §11): vehicle = CAR, TRUCK, BUS,
# OTHER_VEHICLE, MOTORCYCLIST, MOTORCYCLE; pedestrian = PEDESTRIAN; cyclist = BICYCLIST. BICYCLE (12)
# is not a cyclist there, so it falls to background like every other labelled class. 0 = UNDEFINED.
LIDAR_SEG_NUM_CLASSES = 23
LIDAR_SEG_GROUPS = {0: (1, 2, 3, 4, 5, 13), 1: (7,), 2: (6,)}
# Representative raw classes the exporter writes for our classes (inverse direction, one per class).
LIDAR_SEG_OF_CLASS = {0: 1, 1: 7, 2: 6, BACKGROUND: 18, IGNORE: 0}  # CAR, PEDESTRIAN, BICYCLIST, ROAD, UNDEFINED

# D.7 camera panoptic classes, grouped as the authors' 2D mask GT (method.md §11): vehicle = CAR, TRUCK,
# BUS, OTHER_LARGE_VEHICLE, MOTORCYCLE, TRAILER, MOTORCYCLIST; pedestrian = PEDESTRIAN,
# PEDESTRIAN_OBJECT; cyclist = BICYCLE, CYCLIST. Other classes are "stuff": no instance mask.
CAMERA_SEG_NUM_CLASSES = 29
CAMERA_SEG_GROUPS = {0: (2, 3, 4, 5, 7, 8, 11), 1: (9, 16), 2: (6, 10)}
CAMERA_SEG_OF_CLASS = {0: 2, 1: 9, 2: 10, BACKGROUND: 20}  # CAR, PEDESTRIAN, CYCLIST, ROAD


def _lut(groups: dict[int, tuple[int, ...]], n: int, other: int, undefined: int) -> np.ndarray:
    lut = np.full(n, other, np.int8)
    lut[0] = undefined
    for cls, raws in groups.items():
        lut[list(raws)] = cls
    return lut


LIDAR_SEG_LUT = _lut(LIDAR_SEG_GROUPS, LIDAR_SEG_NUM_CLASSES, BACKGROUND, IGNORE)
CAMERA_SEG_LUT = _lut(CAMERA_SEG_GROUPS, CAMERA_SEG_NUM_CLASSES, IGNORE, IGNORE)  # IGNORE here: not a thing


def box_classes(types: np.ndarray) -> np.ndarray:
    """(K,) int8 class per Waymo box type; -1 for types we do not keep (UNKNOWN, SIGN, anything else)."""
    t = np.asarray(types, np.int64)
    out = np.full(t.shape, -1, np.int8)
    for typ, cls in BOX_TYPE_TO_CLASS.items():
        out[t == typ] = cls
    return out


def lidar_seg_to_points(instance: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-point (instance_id, Segmentation.Type) -> (semantic int8, instance int32).

    Labelled classes outside the groups become BACKGROUND, UNDEFINED (0) and unknown values IGNORE.
    Instances are kept only on our three classes and only when positive (the authors skip 0 and -1).
    """
    raw = np.asarray(semantic, np.int64)
    known = (raw >= 0) & (raw < LIDAR_SEG_NUM_CLASSES)
    sem = np.where(known, LIDAR_SEG_LUT[np.where(known, raw, 0)], IGNORE).astype(np.int8)
    inst = np.asarray(instance, np.int64)
    inst = np.where((sem >= 0) & (sem < BACKGROUND) & (inst > 0), inst, 0).astype(np.int32)
    return sem, inst


def points_to_lidar_seg(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lidar_seg_to_points` for the exporter: (N, 2) int32 (instance_id, raw class)."""
    sem = np.asarray(semantic, np.int64)
    raw = np.zeros(sem.shape, np.int32)
    for cls, r in LIDAR_SEG_OF_CLASS.items():
        raw[sem == cls] = r
    return np.stack([np.asarray(instance, np.int32), raw], axis=1)


def panoptic_to_masks(panoptic: np.ndarray, divisor: int, local_ids=None, global_ids=None) -> list[tuple]:
    """Instance masks of one camera's panoptic label (A.10, D.8): [(object_id, class_id, rle), ...].

    ``semantic = label // divisor``, ``instance = label % divisor`` (0 = no instance). Only our three
    class groups give masks. The object id is the instance's global id (consistent across cameras
    and frames of a sequence) when the mapping has one, else the local id. An instance that spans
    classes of different groups is split by class, as the authors' GT builder does. Masks are sorted
    by (object id, class).
    """
    if divisor <= 0:
        raise ValueError(f"panoptic label divisor {divisor} must be positive")
    lab = np.asarray(panoptic, np.int64)
    sem, inst = lab // divisor, lab % divisor
    known = sem < CAMERA_SEG_NUM_CLASSES
    cls = np.where(known, CAMERA_SEG_LUT[np.where(known, sem, 0)], IGNORE)
    thing = (cls >= 0) & (inst > 0)
    if not thing.any():
        return []
    mapping = {int(l): int(g) for l, g in zip(local_ids if local_ids is not None else [],
                                               global_ids if global_ids is not None else []) if int(g) > 0}
    key = inst * 8 + cls  # one key per (instance, class group); classes are < 8
    out = []
    for k in np.unique(key[thing]):
        local, c = divmod(int(k), 8)
        mask = thing & (key == k)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        out.append((mapping.get(local, local), c, {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]}))
    out.sort(key=lambda m: (m[0], m[1]))
    return out
