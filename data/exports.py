"""Point-label export formats (issue 18): pure encoders from a frame's points and per-point labels to the bytes
of formats other tools read. ``pipelines/labels/export.py`` writes them.

* **SemanticKITTI**: ``velodyne/NNNNNN.bin`` float32 (x, y, z, remission) per point, and
  ``labels/NNNNNN.label`` uint32 per point, the semantic id in the low 16 bits and the instance id in the
  high 16 bits. Ids follow SemanticKITTI's raw label ids where one fits: vehicle 10 (car), pedestrian 30
  (person), cyclist 31 (bicyclist); background 99 (other-object: our background is every non-object class);
  ignore 0 (unlabeled). The export also writes the map (``SEMANTICKITTI_NAMES``) beside the files.
* **LAS 1.4** (point format 6; ``.laz`` compressed with lazrs): ASPRS classification, our classes as user
  codes (vehicle 64, pedestrian 65, cyclist 66), background 1 (unclassified), ignore 0 (never classified);
  extra dimensions ``instance`` (uint32), ``score`` (float32, the instance's score; 1 where the stage ranks
  none) and ``mwsis_class`` (int8, our semantic id). Needs the ``formats`` extra (laspy).
* **PLY** (binary little-endian): per vertex x, y, z (float), red, green, blue (uchar: the class colour,
  grey for background, magenta for ignore), class (char: 0..C-1, C background, -1 ignore), instance (int).
"""
from __future__ import annotations

import numpy as np

from .frame import BACKGROUND, IGNORE, NUM_CLASSES

SEMANTICKITTI_IDS = {0: 10, 1: 30, 2: 31, BACKGROUND: 99, IGNORE: 0}  # our semantic -> SemanticKITTI raw id
SEMANTICKITTI_NAMES = {10: "vehicle (car)", 30: "pedestrian (person)", 31: "cyclist (bicyclist)",
                       99: "background (other-object)", 0: "ignore (unlabeled)"}
PLY_COLORS = np.array([[230, 60, 40], [40, 120, 240], [250, 190, 20], [150, 150, 150], [255, 0, 255]], np.uint8)


def semantickitti_arrays(xyz: np.ndarray, intensity: np.ndarray, semantic: np.ndarray,
                         instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) points, (N,) intensity, semantic, instance -> (scan (N, 4) float32, label (N,) uint32)."""
    if np.any(instance < 0) or np.any(instance > 0xFFFF):
        raise ValueError("instance ids must lie in [0, 65535] for SemanticKITTI's 16 bits")
    lut = np.zeros(NUM_CLASSES + 2, np.uint32)  # index semantic + 1 (IGNORE = -1 -> 0)
    for ours, theirs in SEMANTICKITTI_IDS.items():
        lut[ours + 1] = theirs
    sem = lut[np.asarray(semantic, np.int64) + 1]
    scan = np.column_stack([np.asarray(xyz, np.float32), np.asarray(intensity, np.float32)])
    return scan, (sem | (np.asarray(instance, np.uint32) << 16)).astype(np.uint32)


def decode_semantickitti_label(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint32 labels -> (SemanticKITTI semantic id (N,), instance id (N,))."""
    label = np.asarray(label, np.uint32)
    return (label & 0xFFFF).astype(np.int64), (label >> 16).astype(np.int64)


PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                      ("class", "i1"), ("instance", "<i4")])
_PLY_TYPES = {"<f4": "float", "u1": "uchar", "i1": "char", "<i4": "int"}


def ply_bytes(xyz: np.ndarray, semantic: np.ndarray, instance: np.ndarray, comment: str = "") -> bytes:
    """A binary little-endian PLY of the labelled points (module docstring)."""
    n = len(xyz)
    v = np.zeros(n, PLY_DTYPE)
    v["x"], v["y"], v["z"] = (np.asarray(xyz, np.float32)[:, i] for i in range(3))
    sem = np.asarray(semantic, np.int64)
    rgb = PLY_COLORS[np.where(sem < 0, NUM_CLASSES + 1, sem)]
    v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v["class"], v["instance"] = sem.astype(np.int8), np.asarray(instance, np.int32)
    props = "".join(f"property {_PLY_TYPES[PLY_DTYPE[name].str.replace('|', '')]} {name}\n"
                    for name in PLY_DTYPE.names)
    header = ("ply\nformat binary_little_endian 1.0\n" + (f"comment {comment}\n" if comment else "")
              + f"element vertex {n}\n{props}end_header\n")
    return header.encode() + v.tobytes()


def read_ply(data: bytes) -> np.ndarray:
    """The vertices of a PLY written by ``ply_bytes`` (a structured array of ``PLY_DTYPE``)."""
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode()
    n = int(next(line.split()[2] for line in header.splitlines() if line.startswith("element vertex")))
    return np.frombuffer(data[end:], PLY_DTYPE, count=n)


LAS_CLASSES = {0: 64, 1: 65, 2: 66, BACKGROUND: 1, IGNORE: 0}


def las_file(xyz: np.ndarray, intensity: np.ndarray, semantic: np.ndarray, instance: np.ndarray,
             inst_score: np.ndarray | None = None):
    """A ``laspy.LasData`` (LAS 1.4, point format 6) of the labelled points (module docstring); write it with
    ``.write(path)`` (``.laz``: compressed). Coordinates at millimetre scale."""
    import laspy

    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.floor(np.asarray(xyz, np.float64).min(0)) if len(xyz) else np.zeros(3)
    header.add_extra_dims([laspy.ExtraBytesParams("instance", np.uint32), laspy.ExtraBytesParams("score", np.float32),
                           laspy.ExtraBytesParams("mwsis_class", np.int8)])
    las = laspy.LasData(header)
    xyz = np.asarray(xyz, np.float64)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.intensity = np.clip(np.asarray(intensity, np.float64) * 65535, 0, 65535).astype(np.uint16)
    sem = np.asarray(semantic, np.int64)
    lut = np.zeros(NUM_CLASSES + 2, np.uint8)
    for ours, theirs in LAS_CLASSES.items():
        lut[ours + 1] = theirs
    las.classification = lut[sem + 1]
    inst = np.asarray(instance, np.int64)
    score = np.ones(len(inst), np.float32)
    if inst_score is not None and len(inst_score):
        has = inst > 0
        score[has] = np.asarray(inst_score, np.float32)[np.clip(inst[has] - 1, 0, len(inst_score) - 1)]
    las.instance, las.score, las.mwsis_class = inst.astype(np.uint32), score, sem.astype(np.int8)
    return las
