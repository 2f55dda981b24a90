"""KITTI 3D-object files as text and bytes: parsers and writers, no filesystem access.

``data_formats.md`` §E.1 (``velodyne/NNNNNN.bin``), §E.2 (``calib/NNNNNN.txt``) and §E.3
(``label_2/NNNNNN.txt``). Every parser takes the file's content plus ``where`` (the path, used only in
messages) and raises :class:`KittiFormatError` naming the file and, for text files, the line.
The writers produce the same layout (used by ``data/synthetic/export_kitti.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# §E.3 types; which of our classes (0 vehicle, 1 pedestrian, 2 cyclist) each becomes. Types missing here
# (Tram, Misc, DontCare, anything unknown) give no 2D box and no ground-truth instance.
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
KITTI_CLASS_MAP: dict[str, int] = {"Car": 0, "Van": 0, "Truck": 0, "Pedestrian": 1, "Person_sitting": 1, "Cyclist": 2}

# Key aliases: the KITTI tracking benchmark spells two of the object benchmark's keys differently.
_CALIB_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}
_CALIB_SIZES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12, "Tr_imu_to_velo": 12}
_CALIB_REQUIRED = ("P2", "R0_rect", "Tr_velo_to_cam")


class KittiFormatError(ValueError):
    """A KITTI file is missing or malformed. ``path`` and ``line`` (1-based, 0 = whole file) say where."""

    def __init__(self, path: str, problem: str, line: int = 0):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}{f' line {line}' if line else ''}: {problem}")


@dataclass
class KittiCalib:
    """§E.2 matrices: ``P`` maps 'P0'..'P3' to 3x4, ``R0_rect`` 3x3, ``Tr_velo_to_cam`` 3x4 (float64)."""

    P: dict[str, np.ndarray]
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray | None = None

    def rect_from_velo(self) -> np.ndarray:
        """4x4 Velodyne -> rectified camera-0 coordinates: ``R0_rect · Tr_velo_to_cam`` (§E.2)."""
        R0, Tr = np.eye(4), np.eye(4)
        R0[:3, :3], Tr[:3, :] = self.R0_rect, self.Tr_velo_to_cam
        return R0 @ Tr


@dataclass
class KittiObject:
    """One §E.3 label line. ``line`` is its 1-based line number; ``object_id`` (= line index + 1) is stable."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: np.ndarray  # (4,) left, top, right, bottom, image_2 pixels
    hwl: np.ndarray  # (3,) height, width, length, metres (the file's order)
    location: np.ndarray  # (3,) bottom-face centre in rectified camera-0 coordinates
    rotation_y: float
    line: int
    score: float | None = None

    @property
    def object_id(self) -> int:
        return self.line

    @property
    def class_id(self) -> int | None:
        return KITTI_CLASS_MAP.get(self.type)


def parse_velodyne(data: bytes, where: str) -> np.ndarray:
    """(N, 4) float32 ``x, y, z, reflectance`` from a headerless little-endian float32 scan (§E.1)."""
    if len(data) % 16:
        raise KittiFormatError(where, f"{len(data)} bytes is not a multiple of 16 (4 float32 per point): "
                                      "truncated or not a KITTI velodyne scan")
    if not data:
        raise KittiFormatError(where, "empty scan (0 points)")
    pts = np.frombuffer(data, dtype="<f4").reshape(-1, 4).astype(np.float32)
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise KittiFormatError(where, f"{int(bad.sum())} points with non-finite values "
                                      f"(first: point {int(np.argmax(bad))})")
    return pts


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _floats(tokens: list[str], where: str, line: int, what: str) -> np.ndarray:
    try:
        vals = np.array([float(t) for t in tokens], np.float64)
    except ValueError:
        raise KittiFormatError(where, f"{what}: not a number in {' '.join(tokens)!r}", line) from None
    if not np.isfinite(vals).all():
        raise KittiFormatError(where, f"{what}: non-finite value in {' '.join(tokens)!r}", line)
    return vals


def parse_calib(text: str, where: str) -> KittiCalib:
    """§E.2: ``key: v1 v2 ...`` lines; needs P2, R0_rect and Tr_velo_to_cam (tracking-style aliases accepted)."""
    found: dict[str, np.ndarray] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        key, sep, rest = raw.partition(":")
        key = key.strip()
        if not sep or not key:
            raise KittiFormatError(where, f"expected 'key: numbers', got {raw.strip()[:60]!r}", i)
        key = _CALIB_ALIASES.get(key, key)
        vals = _floats(rest.split(), where, i, key)
        if key in _CALIB_SIZES and vals.size != _CALIB_SIZES[key]:
            raise KittiFormatError(where, f"{key}: {vals.size} numbers, expected {_CALIB_SIZES[key]}", i)
        found[key] = vals
    missing = [k for k in _CALIB_REQUIRED if k not in found]
    if missing:
        raise KittiFormatError(where, f"missing {', '.join(missing)} (has {', '.join(found) or 'nothing'})")
    P = {k: found[k].reshape(3, 4) for k in ("P0", "P1", "P2", "P3") if k in found}
    imu = found.get("Tr_imu_to_velo")
    return KittiCalib(P, found["R0_rect"].reshape(3, 3), found["Tr_velo_to_cam"].reshape(3, 4),
                      None if imu is None else imu.reshape(3, 4))


def parse_label(text: str, where: str) -> list[KittiObject]:
    """§E.3: one object per line, 15 fields (16 with a score). Blank lines are skipped; a malformed line
    (wrong field count, a number that does not parse, an inverted 2D box) raises naming its line."""
    out: list[KittiObject] = []
    for i, raw in enumerate(text.splitlines(), 1):
        tok = raw.split()
        if not tok:
            continue
        if len(tok) not in (15, 16):
            raise KittiFormatError(where, f"{len(tok)} fields, expected 15 (type, truncated, occluded, alpha, "
                                          "bbox x4, h w l, x y z, rotation_y) or 16 with a score", i)
        typ = tok[0]
        if _is_number(typ):
            raise KittiFormatError(where, f"the first field must be the object type, got the number {typ!r}", i)
        v = _floats(tok[1:], where, i, typ)
        if v[1] != round(v[1]):
            raise KittiFormatError(where, f"occluded must be an integer 0..3, got {tok[2]!r}", i)
        bbox = v[3:7]
        if typ != "DontCare" and (bbox[2] < bbox[0] or bbox[3] < bbox[1]):
            raise KittiFormatError(where, f"2D box {bbox.tolist()} has right < left or bottom < top", i)
        out.append(KittiObject(typ, float(v[0]), int(v[1]), float(v[2]), bbox, v[7:10], v[10:13], float(v[13]),
                               line=i, score=float(v[14]) if len(v) == 15 else None))
    return out


# ------------------------------------------------------------------------------------------- writers
def _num(x: float) -> str:
    return f"{x:.12e}"  # more digits than KITTI's %.6e so round trips are exact to float64 noise


def format_calib(calib: KittiCalib) -> str:
    """The calib file text, keys in KITTI's order (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo)."""
    rows = [(k, calib.P[k]) for k in ("P0", "P1", "P2", "P3") if k in calib.P]
    rows += [("R0_rect", calib.R0_rect), ("Tr_velo_to_cam", calib.Tr_velo_to_cam)]
    if calib.Tr_imu_to_velo is not None:
        rows.append(("Tr_imu_to_velo", calib.Tr_imu_to_velo))
    return "".join(f"{k}: {' '.join(_num(float(x)) for x in np.ravel(m))}\n" for k, m in rows)


def format_label_line(obj: KittiObject) -> str:
    """One §E.3 line; 2D box and 3D fields with 2 decimals more than KITTI so round trips are tight."""
    def f(x: float, d: int = 4) -> str:
        return f"{x:.{d}f}"

    fields = [obj.type, f(obj.truncated, 2), str(int(obj.occluded)), f(obj.alpha)]
    fields += [f(x) for x in obj.bbox] + [f(x) for x in obj.hwl] + [f(x) for x in obj.location] + [f(obj.rotation_y)]
    if obj.score is not None:
        fields.append(f(obj.score))
    return " ".join(fields)


def dontcare(bbox, line: int) -> KittiObject:
    """A DontCare row with §E.3's placeholders (-1 truncated/occluded/dims, -10 angles, -1000 location)."""
    return KittiObject("DontCare", -1.0, -1, -10.0, np.asarray(bbox, np.float64), np.full(3, -1.0),
                       np.full(3, -1000.0), -10.0, line)


def wrap_angle(a: float) -> float:
    """Wrap to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi
