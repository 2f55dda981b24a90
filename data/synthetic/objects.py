"""Articulated object and street-furniture models built from primitives, in an object-local frame.

Local frame: x forward (the object's heading), y left, z up, origin on the ground under the object's
centre. Shapes follow typical real dimensions (Waymo label statistics: cars ~4.5 x 1.9 x 1.5 m,
pedestrians ~0.8 x 0.8 x 1.75 m boxes, cyclists ~1.8 x 0.8 x 1.75 m) and are deliberately *not* boxes:
a vehicle is body + cabin + four wheels (ground is visible under it), a pedestrian has legs, torso, arms
and head (background shows between the legs), a cyclist is a rider on a bicycle with thin wheels.
"""
from __future__ import annotations

import math

import numpy as np

from .raycast import KIND_BOX, KIND_CYLINDER, KIND_ELLIPSOID, LIDAR_FOLIAGE, LIDAR_GLASS, LIDAR_OPAQUE
from .texture import TEX_FACADE, TEX_FOLIAGE, TEX_GLASS, TEX_NOISE, TEX_PAINT, TEX_STRIPES, TEX_WHEEL

_I3 = np.eye(3)


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


_WHEEL_ROT = rot_x(math.pi / 2)  # cylinder axis (local z) along the object's y axis


def basis_z(v: np.ndarray) -> np.ndarray:
    """A rotation whose local z axis is ``v`` (normalised) and local x stays as horizontal-forward as possible."""
    z = v / np.linalg.norm(v)
    ref = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(ref, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


class Parts:
    """An append-only list of primitives in one local frame (rows of tuples, converted in bulk later)."""

    def __init__(self, seed: int = 0):
        self.rows: list[tuple] = []
        self.seed = int(seed)

    def add(self, kind, center, half, color, refl, tex=(TEX_NOISE, 2.0, 0.1), rot=_I3, lidar=LIDAR_OPAQUE):
        kind_t, freq, amp = tex
        self.rows.append((kind, tuple(center), rot, tuple(half), tuple(color), refl,
                          (kind_t, freq, amp, self.seed + len(self.rows)), lidar))

    def segment(self, p0, p1, width, depth, color, refl, tex=(TEX_NOISE, 2.0, 0.1)):
        """A box from point p0 to p1 (a limb or a tube): length along p1 - p0, ``depth`` x ``width`` across."""
        p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        v = p1 - p0
        self.add(KIND_BOX, (p0 + p1) / 2, (depth / 2, width / 2, np.linalg.norm(v) / 2), color, refl, tex, basis_z(v))


def _jitter(rng, rgb, amount=0.06):
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0.02, 0.98)) for c in rgb)


_PAINTS = ((0.92, 0.92, 0.9), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.35, 0.36, 0.38), (0.65, 0.08, 0.07),
           (0.1, 0.2, 0.55), (0.05, 0.1, 0.25), (0.15, 0.35, 0.2), (0.75, 0.68, 0.5), (0.9, 0.75, 0.1))
_CLOTHES = ((0.1, 0.1, 0.12), (0.2, 0.25, 0.45), (0.6, 0.1, 0.12), (0.85, 0.85, 0.82), (0.3, 0.45, 0.25),
            (0.55, 0.45, 0.3), (0.9, 0.6, 0.1), (0.35, 0.2, 0.45), (0.15, 0.4, 0.6), (0.5, 0.5, 0.52))
_SKIN = ((0.85, 0.68, 0.55), (0.65, 0.48, 0.35), (0.45, 0.3, 0.2), (0.92, 0.78, 0.68))
_WALLS = ((0.7, 0.45, 0.35), (0.8, 0.75, 0.65), (0.6, 0.6, 0.62), (0.88, 0.86, 0.8), (0.5, 0.35, 0.28),
          (0.75, 0.7, 0.55), (0.45, 0.5, 0.55))


def vehicle(rng: np.random.Generator, seed: int, kind: str) -> Parts:
    """Body + cabin (glass) + four wheels. Ground clearance leaves a gap under the body."""
    p = Parts(seed)
    dims = {"car": (4.2, 4.9, 1.75, 1.9, 1.42, 1.5), "suv": (4.5, 5.0, 1.85, 2.0, 1.65, 1.85),
            "van": (4.9, 5.5, 1.9, 2.05, 1.95, 2.3), "truck": (7.0, 8.5, 2.3, 2.5, 2.9, 3.4)}[kind]
    L, W, H = rng.uniform(dims[0], dims[1]), rng.uniform(dims[2], dims[3]), rng.uniform(dims[4], dims[5])
    paint = _jitter(rng, _PAINTS[rng.integers(len(_PAINTS))], 0.04)
    tex = (TEX_PAINT, rng.uniform(0.8, 3.0), rng.uniform(0.04, 0.12))
    rw = {"car": 0.32, "suv": 0.36, "van": 0.36, "truck": 0.48}[kind] * rng.uniform(0.95, 1.05)
    clear = rw * rng.uniform(0.75, 0.95)
    belt = {"car": 0.95, "suv": 1.05, "van": 1.05, "truck": 1.2}[kind] * rng.uniform(0.95, 1.05)
    glass = (0.1, 0.12, 0.15)
    if kind == "truck":  # box cargo body behind a cab
        cab = 2.0
        p.add(KIND_BOX, (L / 2 - cab / 2, 0, (clear + belt) / 2), (cab / 2, W / 2, (belt - clear) / 2), paint, 0.4, tex)
        p.add(KIND_BOX, (L / 2 - cab / 2 - 0.1, 0, belt + 0.45), (cab / 2 - 0.1, W / 2 - 0.05, 0.45), glass, 0.1,
              (TEX_GLASS, 1, 0), lidar=LIDAR_GLASS)
        cargo = _jitter(rng, _PAINTS[rng.integers(3)], 0.05)
        p.add(KIND_BOX, (-cab / 2 - 0.05, 0, (clear + H) / 2), ((L - cab - 0.1) / 2, W / 2, (H - clear) / 2), cargo,
              0.5, (TEX_PAINT, rng.uniform(0.5, 2), 0.08))
    else:
        p.add(KIND_BOX, (0, 0, (clear + belt) / 2), (L / 2, W / 2, (belt - clear) / 2), paint, 0.4, tex)
        frac = {"car": 0.5, "suv": 0.62, "van": 0.8}[kind] * rng.uniform(0.92, 1.05)
        off = {"car": -0.06, "suv": -0.08, "van": -0.05}[kind] * L
        p.add(KIND_BOX, (off, 0, (belt + H) / 2), (frac * L / 2, W / 2 - 0.07, (H - belt) / 2), glass, 0.1,
              (TEX_GLASS, 1, 0), lidar=LIDAR_GLASS)
        roof = 0.06
        p.add(KIND_BOX, (off, 0, H - roof / 2), (frac * L / 2 - 0.05, W / 2 - 0.09, roof / 2 + 0.005), paint, 0.4, tex)
    axle = L / 2 - rw - rng.uniform(0.45, 0.75)
    for sx in (1.0, -1.0):
        for sy in (1.0, -1.0):
            p.add(KIND_CYLINDER, (sx * axle, sy * (W / 2 - 0.09), rw), (rw, rw, 0.11), (0.05, 0.05, 0.05), 0.05,
                  (TEX_WHEEL, rw, 0.0), _WHEEL_ROT)
    return p


def pedestrian(rng: np.random.Generator, seed: int, phase: float, walking: bool) -> Parts:
    """Legs, torso, arms and head; walking pedestrians swing legs and arms with ``phase`` (radians)."""
    p = Parts(seed)
    H = rng.uniform(1.1, 1.35) if rng.random() < 0.1 else rng.uniform(1.55, 1.92)
    k = H / 1.75
    shirt = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    pants = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.03)
    shirt_tex = (TEX_STRIPES, rng.uniform(3, 9), rng.uniform(0.0, 0.35))
    leg, hip_w, torso_h, torso_w = 0.86 * k, 0.1 * k, 0.56 * k, rng.uniform(0.36, 0.46) * k
    swing = 0.35 * math.sin(phase) if walking else 0.0
    for side, sgn in ((1.0, 1.0), (-1.0, -1.0)):
        hip = np.array([0.0, side * hip_w, leg])
        a = sgn * swing
        foot = hip + leg * np.array([math.sin(a), 0.0, -math.cos(a)])
        p.segment(foot, hip, 0.14 * k, 0.15 * k, pants, 0.25, (TEX_NOISE, 6.0, 0.15))
    p.add(KIND_BOX, (0, 0, leg + torso_h / 2), (0.12 * k, torso_w / 2, torso_h / 2), shirt, 0.3, shirt_tex)
    for side, sgn in ((1.0, -1.0), (-1.0, 1.0)):
        sh = np.array([0.0, side * (torso_w / 2 + 0.05 * k), leg + torso_h - 0.05 * k])
        a = sgn * swing * 0.8
        hand = sh + 0.6 * k * np.array([math.sin(a), side * 0.05, -math.cos(a)])
        p.segment(hand, sh, 0.09 * k, 0.09 * k, shirt, 0.3, shirt_tex)
    hr = 0.115 * k
    p.add(KIND_ELLIPSOID, (0.01, 0, leg + torso_h + 0.05 * k + hr), (0.095 * k, 0.085 * k, hr), skin, 0.3,
          (TEX_NOISE, 8.0, 0.1))
    if rng.random() < 0.3:  # backpack: part of the person, as in Waymo's labels
        p.add(KIND_BOX, (-0.12 * k - 0.08, 0, leg + torso_h * 0.6), (0.08, torso_w / 2 - 0.03, 0.2 * k),
              _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))]), 0.25)
    return p


def cyclist(rng: np.random.Generator, seed: int, phase: float) -> Parts:
    """Rider on a bicycle: thin disc wheels, tube frame, handlebar, pedalling legs, arms to the bar."""
    p = Parts(seed)
    k = rng.uniform(0.92, 1.08)
    frame = _jitter(rng, _PAINTS[rng.integers(len(_PAINTS))])
    rw, base = 0.34, 0.52
    for x in (base, -base):
        p.add(KIND_CYLINDER, (x, 0, rw), (rw, rw, 0.025), (0.06, 0.06, 0.06), 0.1, (TEX_WHEEL, rw * 0.3, 0.0),
              _WHEEL_ROT)
    crank, seat, bar = np.array([0.0, 0, 0.32]), np.array([-0.18, 0, 0.92 * k]), np.array([0.42, 0, 1.0 * k])
    tex = (TEX_NOISE, 4.0, 0.1)
    p.segment((-base, 0, rw), crank, 0.04, 0.04, frame, 0.45, tex)
    p.segment(crank, seat, 0.04, 0.04, frame, 0.45, tex)
    p.segment(seat + [0.05, 0, -0.1], bar + [-0.05, 0, -0.08], 0.045, 0.045, frame, 0.45, tex)
    p.segment((base, 0, rw), bar, 0.04, 0.04, frame, 0.45, tex)
    p.add(KIND_BOX, tuple(bar + [0.0, 0, 0.03]), (0.03, 0.28, 0.02), (0.1, 0.1, 0.1), 0.3)
    shirt = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    pants = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
    hip = seat + [0.0, 0, 0.06]
    shoulder = hip + k * np.array([0.3, 0, 0.5])
    for side, ph in ((1.0, phase), (-1.0, phase + math.pi)):
        pedal = crank + np.array([0.17 * math.cos(ph), side * 0.13, 0.17 * math.sin(ph)])
        knee = (hip + pedal) / 2 + np.array([0.22 * k, 0, 0.08])
        p.segment(hip + [0, side * 0.1, 0], knee + [0, side * 0.11, 0], 0.14 * k, 0.14 * k, pants, 0.25)
        p.segment(knee + [0, side * 0.11, 0], pedal, 0.11 * k, 0.11 * k, pants, 0.25)
        p.segment(shoulder + [0, side * 0.2 * k, 0], bar + [0, side * 0.24, 0.04], 0.08, 0.08, shirt, 0.3)
    p.segment(hip, shoulder, 0.4 * k, 0.22 * k, shirt, 0.3, (TEX_STRIPES, rng.uniform(3, 8), rng.uniform(0, 0.35)))
    head = shoulder + k * np.array([0.1, 0, 0.2])
    helmet = _jitter(rng, _PAINTS[rng.integers(len(_PAINTS))])
    p.add(KIND_ELLIPSOID, tuple(head), (0.13 * k, 0.1 * k, 0.12 * k), helmet, 0.35, (TEX_NOISE, 6.0, 0.15))
    return p


def tree(rng: np.random.Generator, seed: int) -> Parts:
    """Trunk cylinder and one or two ellipsoid crowns (foliage: LiDAR beams partly pass through)."""
    p = Parts(seed)
    h, r = rng.uniform(2.7, 3.8), rng.uniform(0.12, 0.22)
    p.add(KIND_CYLINDER, (0, 0, h / 2 - 0.2), (r, r, h / 2 + 0.2), (0.3, 0.22, 0.15), 0.2, (TEX_NOISE, 5.0, 0.3))
    rh, rv = rng.uniform(1.3, 2.4), rng.uniform(1.4, 2.6)
    green = _jitter(rng, (0.2, 0.38, 0.12), 0.05)
    p.add(KIND_ELLIPSOID, (0, 0, h + rv * 0.75), (rh, rh * rng.uniform(0.85, 1.0), rv), green, 0.15,
          (TEX_FOLIAGE, rng.uniform(2, 4), 0.7), lidar=LIDAR_FOLIAGE)
    if rng.random() < 0.5:
        q = rh * 0.5
        p.add(KIND_ELLIPSOID, (rng.uniform(-q, q), rng.uniform(-q, q), h + rv * 1.4), (rh * 0.7, rh * 0.7, rv * 0.6),
              green, 0.15, (TEX_FOLIAGE, rng.uniform(2, 4), 0.7), lidar=LIDAR_FOLIAGE)
    return p


def street_light(rng: np.random.Generator, seed: int) -> Parts:
    """Pole with an arm reaching over the road (+y local) and a lamp head."""
    p = Parts(seed)
    h = rng.uniform(5.5, 8.0)
    grey = _jitter(rng, (0.35, 0.37, 0.38), 0.05)
    p.add(KIND_CYLINDER, (0, 0, h / 2 - 0.2), (0.09, 0.09, h / 2 + 0.2), grey, 0.45, (TEX_NOISE, 3.0, 0.1))
    arm = rng.uniform(1.2, 2.2)
    p.add(KIND_BOX, (0, arm / 2, h - 0.1), (0.05, arm / 2, 0.05), grey, 0.45)
    p.add(KIND_BOX, (0, arm, h - 0.2), (0.25, 0.15, 0.08), (0.8, 0.8, 0.75), 0.5)
    return p


def sign(rng: np.random.Generator, seed: int) -> Parts:
    """Thin pole and a retro-reflective plate (bright in LiDAR intensity)."""
    p = Parts(seed)
    h = rng.uniform(2.2, 2.8)
    p.add(KIND_CYLINDER, (0, 0, h / 2 - 0.2), (0.04, 0.04, h / 2 + 0.2), (0.5, 0.5, 0.5), 0.45)
    col = ((0.8, 0.1, 0.1), (0.1, 0.3, 0.75), (0.9, 0.9, 0.9), (0.95, 0.8, 0.1))[rng.integers(4)]
    p.add(KIND_BOX, (0.05, 0, h + 0.3), (0.02, 0.32, 0.32), col, 1.2, (TEX_NOISE, 5.0, 0.05))
    return p


def clutter(rng: np.random.Generator, seed: int) -> Parts:
    """A rubbish bin, a hydrant or a planter: small background objects near pedestrians."""
    p = Parts(seed)
    which = rng.integers(3)
    if which == 0:
        col = _jitter(rng, (0.15, 0.3, 0.2))
        p.add(KIND_BOX, (0, 0, 0.45), (0.28, 0.28, 0.45), col, 0.3)
    elif which == 1:
        p.add(KIND_CYLINDER, (0, 0, 0.3), (0.12, 0.12, 0.3), (0.75, 0.12, 0.1), 0.4)
        p.add(KIND_ELLIPSOID, (0, 0, 0.62), (0.1, 0.1, 0.08), (0.75, 0.12, 0.1), 0.4)
    else:
        p.add(KIND_BOX, (0, 0, 0.3), (0.5, 0.5, 0.3), (0.55, 0.5, 0.45), 0.3)
        p.add(KIND_ELLIPSOID, (0, 0, 0.75), (0.45, 0.45, 0.4), (0.25, 0.4, 0.15), 0.15, (TEX_FOLIAGE, 4.0, 0.7))
    return p


def building(rng: np.random.Generator, seed: int, length: float, depth: float, height: float) -> Parts:
    """A block sunk 1 m into the ground (so slopes never show its base), windowed facade, maybe an awning."""
    p = Parts(seed)
    wall = _jitter(rng, _WALLS[rng.integers(len(_WALLS))], 0.05)
    p.add(KIND_BOX, (0, 0, height / 2 - 1.0), (length / 2, depth / 2, height / 2 + 0.0), wall, rng.uniform(0.25, 0.45),
          (TEX_FACADE, rng.uniform(2.2, 3.6), 0.25))
    if rng.random() < 0.35:  # shop awning over the sidewalk (facade is at local y = -depth / 2)
        col = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))])
        w = rng.uniform(0.4, 0.8) * length
        p.add(KIND_BOX, (rng.uniform(-1, 1) * (length - w) / 2, -depth / 2 - 0.6, 3.0), (w / 2, 0.6, 0.06), col, 0.3,
              (TEX_STRIPES, 0.0, 0.0))
    return p


def wall(rng: np.random.Generator, seed: int, length: float) -> Parts:
    """A garden or boundary wall between buildings."""
    p = Parts(seed)
    h = rng.uniform(0.8, 2.2)
    col = _jitter(rng, _WALLS[rng.integers(len(_WALLS))], 0.05)
    p.add(KIND_BOX, (0, 0, h / 2 - 0.5), (length / 2, 0.15, h / 2 + 0.5), col, 0.35, (TEX_NOISE, 2.0, 0.2))
    return p
