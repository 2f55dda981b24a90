"""The clicks3d stage (issue 17): 3D instances grown from one click per object."""
from __future__ import annotations

import numpy as np

from mwsis.data.frame import BACKGROUND, IGNORE, Clicks2D, Points
from mwsis.pseudolabel.clicks3d import Clicks3DConfig, click_seeds, clicks3d_labels


def _scene(objects):
    """A flat ground grid plus solid boxes of points ((x0, x1, y0, y1, z1) each), seen by camera 1 along +x
    (a pinhole: u = 320 - 300 y / x, v = 240 - 300 (z - 1.5) / x). Returns (points, object index per point,
    -1 = ground)."""
    g = np.mgrid[5:25:0.2, -6:6:0.2].reshape(2, -1).T
    parts, owner = [np.column_stack([g, np.zeros(len(g))])], [np.full(len(g), -1)]
    for k, (x0, x1, y0, y1, z1) in enumerate(objects):
        b = np.mgrid[x0:x1:0.12, y0:y1:0.12, 0.3:z1:0.12].reshape(3, -1).T
        parts.append(b), owner.append(np.full(len(b), k))
    xyz = np.concatenate(parts).astype(np.float32)
    n = len(xyz)
    uv = np.stack([320 - 300 * xyz[:, 1] / xyz[:, 0], 240 - 300 * (xyz[:, 2] - 1.5) / xyz[:, 0]], 1)
    cam_uv = np.full((n, 2, 2), -1, np.float32)
    cam_uv[:, 0] = uv
    pts = Points(xyz, np.zeros(n, np.float32), np.zeros(n, np.float32), np.linalg.norm(xyz, axis=1).astype(np.float32),
                 np.zeros(n, np.int8), np.ones(n, np.int8), np.zeros(n, np.int16), np.zeros(n, np.int16),
                 np.zeros(n, bool), np.column_stack([np.ones(n, np.int8), np.zeros(n, np.int8)]), cam_uv)
    return pts, np.concatenate(owner)


def _click(points, owner, k, cls, obj_id):
    """A click at the projection of object k's centre."""
    c = points.xyz[owner == k].mean(0)
    uv = np.array([[320 - 300 * c[1] / c[0], 240 - 300 * (c[2] - 1.5) / c[0]]], np.float32)
    return Clicks2D(np.array([1], np.int8), np.array([cls], np.int8), uv, np.array([obj_id], np.int64))


def _cat(*cs):
    return Clicks2D(*(np.concatenate([getattr(c, f) for c in cs]) for f in ("camera_id", "class_id", "uv", "object_id")))


def test_a_single_isolated_object_is_recovered_exactly():
    pts, owner = _scene([(12, 16, -1, 1, 1.5)])
    clicks = _click(pts, owner, 0, 0, 7)
    eligible = np.ones(len(pts), bool)
    sem, inst = clicks3d_labels(pts, clicks, eligible, np.full(len(pts), -1))
    assert np.array_equal(inst > 0, owner == 0) and (sem[owner == 0] == 0).all()
    assert (sem[owner == -1] == BACKGROUND).all()  # the ground, near and far, is background


def test_two_objects_and_an_object_without_points():
    pts, owner = _scene([(12, 16, -1, 1, 1.5), (8, 8.5, 3, 3.5, 1.8)])
    eligible = np.ones(len(pts), bool)
    missing = Clicks2D(np.array([1], np.int8), np.array([2], np.int8), np.array([[5000.0, 5000.0]], np.float32),
                       np.array([9], np.int64))
    clicks = _cat(_click(pts, owner, 0, 0, 7), _click(pts, owner, 1, 1, 8), missing)
    assert click_seeds(pts, clicks, eligible, 8.0)[2] == -1  # nothing projects near it: it labels nothing
    sem, inst = clicks3d_labels(pts, clicks, eligible, np.full(len(pts), -1))
    assert np.array_equal(inst == 1, owner == 0) and np.array_equal(inst == 2, owner == 1)
    assert (sem[owner == 1] == 1).all() and not (inst == 3).any()


def test_a_ring_segment_completes_the_growth():
    """An object in two parts (a gap wider than the growth radius) that one DCS segment spans: the growth
    reaches the larger part, the segment brings the other; without segments the other part stays out."""
    pts, owner = _scene([(12, 14.5, -1, 1, 1.5), (15.0, 16, -1, 1, 1.5)])
    eligible = np.ones(len(pts), bool)
    clicks = _click(pts, owner, 0, 0, 7)
    seg = np.where(owner >= 0, 1, -1)
    alone, _ = clicks3d_labels(pts, clicks, eligible, np.full(len(pts), -1))
    assert (alone[owner == 0] == 0).all() and not (alone[owner == 1] == 0).any()
    assert (alone[owner == 1] == IGNORE).all()  # near the seed, not grown, not ground: uncertain
    joined, inst = clicks3d_labels(pts, clicks, eligible, seg)
    assert np.array_equal(inst > 0, owner >= 0)
