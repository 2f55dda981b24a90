"""Procedural street scenes: a straight street with lanes, curbs, sidewalks, buildings and traffic.

The scene of one sequence is unbounded along the street (world x) and generated lazily: content is
organised in *streams* (the parked cars of the left kerb, the walkers of one sidewalk lane, the cars
of one traffic lane, ...). Each stream has a fixed lateral band and speed, and is cut into chunks along
its own moving coordinate ``s = x - v t``; chunk k is drawn from
``SeedSequence([seed, sequence, stream tag, k])``. So any frame can be built on its own (a pure function
of seed, sequence and index), frames of a sequence share the same objects, objects in one stream never
collide (same speed), and streams never collide with each other (disjoint bands).

The ego vehicle drives in the inner right-hand lane at ``ego_step`` metres per frame; the vehicle frame
is the world translated to the ego's position on the ground (no rotation: the street runs along x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..frame import BACKGROUND
from . import objects as ob
from .config import SynthConfig
from .raycast import KIND_BOX, NGROUND_WAVES, Prims, ground_height
from .texture import TEX_NOISE, TEX_PAVING

VEHICLE, PEDESTRIAN, CYCLIST = 0, 1, 2
_CHUNK_OFFSET = 2048  # chunk index offset: keeps SeedSequence entropy and object ids non-negative


@dataclass
class Stream:
    tag: int  # unique small int: seeds the stream and prefixes its object ids
    what: str  # builder: parked, lane, bike, walker, group, furniture, buildings, road
    side: float  # +1 left of the centre line, -1 right
    y: float  # band centre (world y)
    speed: float  # m/s along +x
    slot: float  # metres per slot (at most one object or group per slot)
    chunk: float  # metres per chunk
    p: float  # probability a slot is occupied
    jitter: float = 0.5  # fraction of the slot an object's position varies over (keeps neighbours apart)


@dataclass
class Scene:
    """One frame's world: primitives and labelled objects (world frame), ground and ego pose."""

    prims: Prims
    ground: np.ndarray  # ground parameters (raycast.ground_height)
    layout: np.ndarray  # road layout vector (texture.ground_material)
    ego: np.ndarray  # (3,) world position of the vehicle-frame origin
    sun: np.ndarray  # (3,) unit vector towards the sun
    object_id: np.ndarray  # (K,) int64
    class_id: np.ndarray  # (K,) int8
    box_center: np.ndarray  # (K, 3) world
    box_size: np.ndarray  # (K, 3) length, width, height
    box_heading: np.ndarray  # (K,)


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(e) for e in entropy]))


def ground_params(cfg: SynthConfig, seed: int, sequence: int) -> np.ndarray:
    """A slope along the street (up to ``cfg.max_grade``, 2 % by default) plus a few centimetre-scale bumps.
    The vehicle frame stays level, so a slope is also what a pitched sensor sees."""
    rng = _rng(seed, sequence, 1)
    g = [0.0, rng.uniform(-cfg.max_grade, cfg.max_grade), 0.0]
    for _ in range(NGROUND_WAVES):
        lam, th = rng.uniform(3.0, 15.0), rng.uniform(0, math.pi)
        k = 2 * math.pi / lam
        g += [rng.uniform(0.008, 0.02), k * math.cos(th), k * math.sin(th), rng.uniform(0, 2 * math.pi)]
    return np.array(g, np.float64)


def streams(cfg: SynthConfig) -> list[Stream]:
    """Every content stream of the street, from the cross-section in ``cfg``."""
    lw, n = cfg.lane_width, cfg.lanes_per_direction
    traffic = n * lw
    road = cfg.road_half_width
    ego_speed = cfg.ego_step / cfg.frame_dt
    inner = road + 0.25  # curb stone is 0.25 m wide
    free = cfg.sidewalk_width - 0.25 - 0.9  # sidewalk beyond the furniture band
    out: list[Stream] = [Stream(1, "road", 0, 0, 0, 10.0, 20.0, 1.0)]
    tag = 2
    for side in (1.0, -1.0):
        fwd = side < 0  # right-hand traffic: the right side drives towards +x
        out += [
            Stream(tag, "buildings", side, side * (road + cfg.sidewalk_width), 0, 60.0, 60.0, 1.0),
            Stream(tag + 1, "furniture", side, side * (inner + 0.45), 0, 7.0, 35.0, cfg.p_furniture),
            Stream(tag + 2, "parked", side, side * (traffic + cfg.bike_lane_width + cfg.parking_width / 2), 0,
                   7.0, 42.0, cfg.p_parked, 0.2),
            Stream(tag + 3, "bike", side, side * (traffic + cfg.bike_lane_width / 2), 4.5 if fwd else -4.5,
                   10.0, 40.0, cfg.p_cyclist, 0.7),
            Stream(tag + 4, "walker", side, side * (inner + 0.9 + 0.22 * free), 1.3, 4.0, 40.0, cfg.p_walker, 0.7),
            Stream(tag + 5, "walker", side, side * (inner + 0.9 + 0.5 * free), -1.2, 4.0, 40.0, cfg.p_walker, 0.7),
            Stream(tag + 6, "group", side, side * (inner + 0.9 + 0.8 * free), 0, 8.0, 40.0, cfg.p_group, 0.45),
        ]
        tag += 7
        for i in range(n):
            if fwd:
                speed = ego_speed if i == 0 else 0.7 * ego_speed
            else:
                speed = -(8.0 + 1.5 * i)
            out.append(Stream(tag, "lane", side, side * (i + 0.5) * lw, speed, 14.0, 42.0, cfg.p_moving, 0.35))
            tag += 1
    return out


class _Builder:
    """Accumulates placed primitives and labelled objects for one frame."""

    def __init__(self):
        self.rows: list[tuple] = []  # (parts row, world position, yaw rotation, inst, sem)
        self.objects: list[tuple] = []  # (object_id, class_id, center, size, heading)

    def place(self, parts: ob.Parts, pos, yaw: float, inst: int = 0, sem: int = BACKGROUND, pitch: float = 0.0):
        """Put a local-frame part list at ``pos`` with heading ``yaw``; labelled objects get a tight 3D box."""
        R = ob.rot_z(yaw) @ ob.rot_y(-pitch) if pitch else ob.rot_z(yaw)
        pos = np.asarray(pos, np.float64)
        for row in parts.rows:
            self.rows.append((row, pos, R, inst, sem))
        if inst > 0:
            lo, hi = _local_extent(parts)
            pad = 0.01  # labelled boxes are never perfectly tight; also covers float32 rounding
            c = (lo + hi) / 2
            self.objects.append((inst, sem, pos + R @ c, hi - lo + 2 * pad, yaw))

    def build(self) -> tuple[Prims, tuple]:
        rows = self.rows
        P = len(rows)
        kind = np.array([r[0][0] for r in rows], np.int8)
        c_loc = np.array([r[0][1] for r in rows], np.float64).reshape(P, 3)
        r_loc = np.array([r[0][2] for r in rows], np.float64).reshape(P, 3, 3)
        pos = np.array([r[1] for r in rows], np.float64).reshape(P, 3)
        R = np.array([r[2] for r in rows], np.float64).reshape(P, 3, 3)
        prims = Prims(
            kind=kind,
            center=pos + np.einsum("pij,pj->pi", R, c_loc),
            rot=np.ascontiguousarray(np.einsum("pij,pjk->pik", R, r_loc)),
            half=np.array([r[0][3] for r in rows], np.float64).reshape(P, 3),
            inst=np.array([r[3] for r in rows], np.int32),
            sem=np.array([r[4] for r in rows], np.int8),
            color=np.array([r[0][4] for r in rows], np.float32).reshape(P, 3),
            refl=np.array([r[0][5] for r in rows], np.float32),
            tex=np.array([r[0][6] for r in rows], np.float32).reshape(P, 4),
            lidar_mode=np.array([r[0][7] for r in rows], np.int8),
        )
        objs = self.objects
        K = len(objs)
        boxes = (np.array([o[0] for o in objs], np.int64), np.array([o[1] for o in objs], np.int8),
                 np.array([o[2] for o in objs], np.float64).reshape(K, 3),
                 np.array([o[3] for o in objs], np.float64).reshape(K, 3), np.array([o[4] for o in objs], np.float64))
        return prims, boxes


def _local_extent(parts: ob.Parts) -> tuple[np.ndarray, np.ndarray]:
    """Tight axis-aligned extent (in the object's frame) of all its parts: boxes exactly, cylinders and
    ellipsoids by their exact support along each axis."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for kind, c, R, h, *_ in parts.rows:
        c, h = np.asarray(c), np.asarray(h)
        if kind == KIND_BOX:
            e = np.abs(R) @ h
        elif kind == ob.KIND_CYLINDER:
            a = R[:, 2]
            e = h[2] * np.abs(a) + h[0] * np.sqrt(np.clip(1 - a * a, 0, 1))
        else:
            e = np.sqrt((R * R) @ (h * h))
        lo, hi = np.minimum(lo, c - e), np.maximum(hi, c + e)
    return lo, hi


def _object_id(tag: int, chunk: int, j: int) -> int:
    """Stable positive id (fits int32): stream tag, chunk index and slot index."""
    return ((tag * 4096 + (chunk + _CHUNK_OFFSET) % 4096) * 64 + j) + 1


def _emit_stream(b: _Builder, cfg: SynthConfig, st: Stream, seed: int, sequence: int, g: np.ndarray,
                 t: float, x_lo: float, x_hi: float) -> None:
    """Generate the chunks of one stream that can reach [x_lo, x_hi] at time t and place their content."""
    shift = st.speed * t
    margin = st.slot
    k0 = math.floor((x_lo - shift - margin) / st.chunk)
    k1 = math.floor((x_hi - shift + margin) / st.chunk)
    plane = lambda x: g[0] + g[1] * x  # noqa: E731  (sidewalk top follows the plane, not the bumps)
    for k in range(k0, k1 + 1):
        rng = _rng(seed, sequence, 100 + st.tag, k + _CHUNK_OFFSET)
        nslots = int(round(st.chunk / st.slot))
        occupied = rng.random(nslots) < st.p
        jitter = rng.random(nslots)
        if st.what == "buildings":
            _buildings(b, cfg, st, rng, k, g)
            continue
        for j in range(nslots):
            if st.what == "road":  # contiguous 10 m segments, no randomness in their placement
                x = k * st.chunk + (j + 0.5) * st.slot
                if x_lo - st.slot <= x <= x_hi + st.slot:
                    _road_segment(b, cfg, x, g)
                continue
            if not occupied[j]:
                continue
            s = k * st.chunk + (j + 0.5 + st.jitter * (jitter[j] - 0.5)) * st.slot
            x = s + shift
            if not (x_lo <= x <= x_hi):
                continue
            if st.what == "lane" and st.speed == cfg.ego_step / cfg.frame_dt and st.side < 0 and abs(s) < 10.0:
                continue  # the ego itself drives here; its stream coordinate is s = 0 at every frame
            orng = _rng(seed, sequence, 100 + st.tag, k + _CHUNK_OFFSET, j + 1)
            _place_item(b, cfg, st, orng, lambda m, k=k, j=j: _object_id(st.tag, k, 4 * j + m), x, t, g, plane)


def _place_item(b, cfg, st, rng, ids, x, t, g, plane):
    """One slot's content: a vehicle, a cyclist, a walker, a standing group or street furniture.

    ``ids(m)`` is the object id of the slot's m-th member (groups have several people).
    """
    oid = ids(0)
    heading = 0.0 if st.speed > 0 or (st.speed == 0 and st.side < 0) else math.pi
    y = st.y + rng.uniform(-0.15, 0.15)
    on_walk = plane(x) + cfg.curb_height
    if st.what in ("lane", "parked"):
        kinds = ("car", "suv", "van", "truck") if st.what == "lane" else ("car", "suv", "van")
        probs = (0.6, 0.25, 0.1, 0.05) if st.what == "lane" else (0.65, 0.25, 0.1)
        parts = ob.vehicle(rng, oid * 16, kinds[rng.choice(len(kinds), p=probs)])
        yaw = heading + rng.normal(0, 0.03 if st.what == "parked" else 0.01)
        b.place(parts, (x, y, ground_height(g, x, y) - 0.01), yaw, oid, VEHICLE)
    elif st.what == "bike":
        parts = ob.cyclist(rng, oid * 16, rng.uniform(0, 6.3) + 6.0 * t)
        b.place(parts, (x, y, ground_height(g, x, y) - 0.005), heading + rng.normal(0, 0.03), oid, CYCLIST)
    elif st.what == "walker":
        heading = 0.0 if st.speed > 0 else math.pi
        parts = ob.pedestrian(rng, oid * 16, rng.uniform(0, 6.3) + 7.0 * t, walking=True)
        b.place(parts, (x, st.y + rng.uniform(-0.2, 0.2), on_walk), heading + rng.normal(0, 0.05), oid, PEDESTRIAN)
    elif st.what == "group":
        n = int(rng.integers(2, 5))
        gx = np.concatenate([[0.0], np.cumsum(rng.uniform(0.6, 1.1, n - 1))])
        gx -= gx.mean()  # people 0.6-1.1 m apart centre to centre (0.3-0.8 m between bodies)
        for m in range(n):
            py = st.y + st.side * rng.uniform(-0.35, 0.3)
            parts = ob.pedestrian(rng, ids(m) * 16, 0.0, walking=rng.random() < 0.2)
            b.place(parts, (x + gx[m], py, on_walk), rng.uniform(0, 2 * math.pi), ids(m), PEDESTRIAN)
    elif st.what == "furniture":
        r = rng.random()
        yaw = 0.0 if st.side < 0 else math.pi  # local +y points at the road
        if r < 0.45:
            parts = ob.tree(rng, oid * 16)
        elif r < 0.7:
            parts = ob.street_light(rng, oid * 16)
        elif r < 0.82:
            parts = ob.sign(rng, oid * 16)
            yaw += math.pi / 2
        else:
            parts = ob.clutter(rng, oid * 16)
        b.place(parts, (x, st.y + rng.uniform(-0.1, 0.1), on_walk), yaw)


def _road_segment(b: _Builder, cfg: SynthConfig, x: float, g: np.ndarray) -> None:
    """Curb stones and sidewalk slabs for 10 m of street, pitched to follow the ground slope."""
    L = 10.0
    pitch = math.atan(g[1])
    top = g[0] + g[1] * x + cfg.curb_height
    for side in (1.0, -1.0):
        p = ob.Parts(int(abs(x) * 10) + (7 if side > 0 else 3))
        y0 = cfg.road_half_width
        curb_w, walk_w = 0.25, cfg.sidewalk_width - 0.25
        p.add(KIND_BOX, (0, side * (y0 + curb_w / 2), -0.3), (L / 2 / math.cos(pitch), curb_w / 2, 0.3),
              (0.72, 0.72, 0.7), 0.4, (TEX_NOISE, 3.0, 0.1))
        p.add(KIND_BOX, (0, side * (y0 + curb_w + walk_w / 2), -0.3 - 0.005),
              (L / 2 / math.cos(pitch), walk_w / 2, 0.3), (0.62, 0.6, 0.57), 0.3, (TEX_PAVING, 1.2, 0.2))
        b.place(p, (x, 0.0, top), 0.0, pitch=pitch)


def _buildings(b: _Builder, cfg: SynthConfig, st: Stream, rng: np.random.Generator, k: int, g) -> None:
    """Sequential facades along one side of a chunk: buildings of random width and set-back, with alleys
    closed by walls or left open (so the ground behind shows through)."""
    x = k * st.chunk
    end = x + st.chunk
    yaw = 0.0 if st.side > 0 else math.pi  # building facade is at local -y: face the street
    j = 0
    while end - x > 3.0:
        w = min(rng.uniform(8.0, 26.0), end - x)
        if rng.random() < 0.2:  # alley, optionally walled
            w = min(rng.uniform(3.0, 8.0), end - x)
            if rng.random() < 0.6:
                y = st.y + st.side * rng.uniform(0.2, 1.5)
                b.place(ob.wall(rng, (k * 64 + j) * 16, w - 0.1), (x + w / 2, y, g[0] + g[1] * (x + w / 2)), yaw)
        else:
            depth = rng.uniform(8.0, 20.0)
            h = rng.uniform(*cfg.building_height)
            setback = rng.uniform(0.0, 4.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.5)
            y = st.y + st.side * (setback + depth / 2)
            xc = x + w / 2
            base = g[0] + g[1] * xc - abs(g[1]) * w / 2
            b.place(ob.building(rng, (k * 64 + j) * 16, w - 0.2, depth, h), (xc, y, base), yaw)
        x += w
        j += 1


def build_scene(cfg: SynthConfig, seed: int, sequence: int, index: int) -> Scene:
    """The world around the ego vehicle at frame ``index`` of a sequence (primitives in world frame)."""
    g = ground_params(cfg, seed, sequence)
    srng = _rng(seed, sequence, 2)
    az, el = srng.uniform(-math.pi, math.pi), srng.uniform(0.5, 1.1)
    sun = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    t = index * cfg.frame_dt
    ex, ey = index * cfg.ego_step, -cfg.lane_width / 2
    ego = np.array([ex, ey, ground_height(g, ex, ey)])
    x_lo, x_hi = ex - cfg.behind_distance, ex + max(cfg.view_distance, cfg.max_range) + 5.0
    b = _Builder()
    for st in streams(cfg):
        _emit_stream(b, cfg, st, seed, sequence, g, t, x_lo, x_hi)
    prims, (oid, cls, center, size, heading) = b.build()
    layout = np.array([cfg.lane_width, cfg.lanes_per_direction, cfg.bike_lane_width, cfg.parking_width,
                       cfg.road_half_width, cfg.road_half_width + cfg.sidewalk_width,
                       (seed * 7919 + sequence) % 100000], np.float64)
    return Scene(prims, g, layout, ego, sun, oid, cls, center, size, heading)
