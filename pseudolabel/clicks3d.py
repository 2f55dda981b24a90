"""3D pseudo labels from one click per object (issue 17; beyond WISE, which is 2D only).

Without a box there is no frustum: the click says *which* object and *what* class, not how far it extends. Per
object (its clicks in every camera, grouped by ``object_id``), on the eligible points:

1. **Seed**: among the eligible points projected within ``seed_px`` pixels of the click in that camera, the
   nearest projection (``seed_rule="nearest"``) or the nearest to the sensor (``"front"``). A click with no
   point that near (an object the LiDAR missed) labels nothing.
2. **Ground**: the points within ``extent`` of the seed (horizontally) that lie less than
   ``ground_clearance`` above the local ground (the 5th percentile of their heights) are not the object.
3. **Grow**: the connected component of the seed among the remaining points within ``extent`` (single
   link in 3D, ``grow_radius`` per class).
4. **Ring segments** (Eq. 3 with the component in place of the frustum): a DCS segment with at least
   ``fg_thresh_seg`` of its candidate points in the component joins whole (within ``extent``); one with less
   than ``bg_thresh_seg`` leaves it.
5. **Overlaps**, as SPG's exclusive rule: objects are grown nearest seed first (an occluder before what it
   hides) and the points an object takes are withdrawn from the others.

Points of no object are background, except those near a seed (within ``extent``) that the growth left out
and that are not ground: ignored (an object's missed part, or its unclicked neighbour). Instance k + 1 is
the object of the frame's click k (its first click).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..data.frame import BACKGROUND, IGNORE, Clicks2D, Points
from .ccl import connected_components


@dataclass(frozen=True)
class Clicks3DConfig:
    """The ``clicks3d`` stage. ``source``: the click set (``mwsis clicks``). ``extent`` (per class, metres):
    how far from its seed an object may reach (about half a large object's length)."""

    source: str = "box-centre"
    seed_px: float = field(default=8.0, metadata={"range": (0.0, None)})
    # the seed among the points projected within seed_px: the nearest projection, or the nearest in range
    # ("front": the surface in front, what a click near an object's border most likely means)
    seed_rule: Literal["nearest", "front"] = "nearest"
    extent: tuple[float, ...] = field(default=(3.5, 1.0, 1.5), metadata={"length": 3, "range": (0.0, None)})
    # single-link radius of the growth, in 3D (Eq. 4's CCL radii are for clustering inside a frustum, in xy;
    # the pedestrian's 0.1 m would stop a 3D growth at the next scan line)
    grow_radius: tuple[float, ...] = field(default=(0.6, 0.3, 0.4), metadata={"length": 3, "range": (0.0, None)})
    ground_clearance: float = field(default=0.25, metadata={"range": (0.0, None)})
    fg_thresh_seg: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    bg_thresh_seg: float = field(default=0.1, metadata={"range": (0.0, 1.0)})


def click_seeds(points: Points, clicks: Clicks2D, eligible: np.ndarray, seed_px: float,
                rule: str = "nearest") -> np.ndarray:
    """(K,) each click's seed among the eligible points projected within ``seed_px`` pixels of it in its
    camera (either projection): the nearest projection (``rule="nearest"``) or the point nearest the sensor
    (``"front"``); -1 where there is none."""
    seeds = np.full(len(clicks), -1, np.int64)
    for k in range(len(clicks)):
        near, dist = [], []
        for slot in range(2):
            sel = np.flatnonzero(eligible & (points.cam_id[:, slot] == clicks.camera_id[k]))
            d = np.hypot(*(points.cam_uv[sel, slot] - clicks.uv[k]).T)
            near.append(sel[d <= seed_px]), dist.append(d[d <= seed_px])
        cand, d = np.concatenate(near), np.concatenate(dist)
        if len(cand):
            key = d if rule == "nearest" else points.range[cand]
            seeds[k] = int(cand[np.argmin(key)])
    return seeds


def grow_object(xyz: np.ndarray, seed: int, candidates: np.ndarray, radius: float) -> np.ndarray:
    """The points (indices) of the connected component (3D single link, ``radius``) of ``seed`` among
    ``candidates`` (indices, holding ``seed``)."""
    comp = connected_components(xyz[candidates], radius, mode="xyz")
    return candidates[comp == comp[np.flatnonzero(candidates == seed)[0]]]


def clicks3d_labels(points: Points, clicks: Clicks2D, eligible: np.ndarray, segment: np.ndarray,
                    cfg: Clicks3DConfig = Clicks3DConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(semantic (N,) int8, instance (N,) int32) of a frame from its clicks (module docstring). ``segment``
    (N,) DCS ring-segment ids (-1 none)."""
    n, xyz = len(eligible), points.xyz
    semantic = np.where(eligible, BACKGROUND, IGNORE).astype(np.int8)
    instance = np.zeros(n, np.int32)
    seeds = click_seeds(points, clicks, eligible, cfg.seed_px, cfg.seed_rule)
    objects: dict[int, list[int]] = {}
    for k in range(len(clicks)):
        if seeds[k] >= 0:
            objects.setdefault(int(clicks.object_id[k]), []).append(k)
    rng = np.linalg.norm(xyz, axis=1)
    order = sorted(objects.values(), key=lambda ks: min(rng[seeds[k]] for k in ks))  # nearest seed first
    taken = ~eligible
    for ks in order:
        k0, cls = ks[0], int(clicks.class_id[ks[0]])
        ext = cfg.extent[cls]
        near = np.zeros(n, bool)
        for k in ks:
            near |= np.hypot(*(xyz[:, :2] - xyz[seeds[k], :2]).T) <= ext
        near &= eligible
        ground = xyz[:, 2] < np.percentile(xyz[near, 2], 5) + cfg.ground_clearance
        cand_mask = near & ~ground & ~taken
        member = np.zeros(n, bool)
        for k in ks:
            if cand_mask[seeds[k]] and not member[seeds[k]]:
                member[grow_object(xyz, int(seeds[k]), np.flatnonzero(cand_mask), cfg.grow_radius[cls])] = True
        segs = np.unique(segment[member & (segment >= 0)])
        for s in segs:
            in_seg = cand_mask & (segment == s)
            share = member[in_seg].mean()
            if share >= cfg.fg_thresh_seg:
                member |= in_seg
            elif share < cfg.bg_thresh_seg:
                member &= ~in_seg
        semantic[near & ~ground & ~taken & ~member] = IGNORE
        semantic[member], instance[member] = cls, k0 + 1
        taken |= member
    return semantic, instance
