"""Point-to-2D-box association (pseudolabel/frustum.py)."""
import numpy as np
import pytest

from mwsis.pseudolabel.frustum import Claims, associate


def _pts(rows):
    """rows: list of ((cam0, u0, v0), (cam1, u1, v1)) -> cam_id (N,2), cam_uv (N,2,2)."""
    cam = np.array([[r[0][0], r[1][0]] for r in rows], np.int8)
    uv = np.array([[[r[0][1], r[0][2]], [r[1][1], r[1][2]]] for r in rows], np.float32)
    return cam, uv


NONE = (0, -1.0, -1.0)


def _brute(cam, uv, bcam, bxy, wh):
    """Independent oracle: loops over points, slots and boxes."""
    out = set()
    for n in range(cam.shape[0]):
        for k in range(bcam.shape[0]):
            x1, x2 = np.clip([bxy[k, 0], bxy[k, 2]], 0, wh[k, 0])
            y1, y2 = np.clip([bxy[k, 1], bxy[k, 3]], 0, wh[k, 1])
            for s in range(2):
                u, v = float(uv[n, s, 0]), float(uv[n, s, 1])
                if cam[n, s] == bcam[k] and cam[n, s] > 0 and x1 <= u < x2 and y1 <= v < y2:
                    out.add((n, k))
    return sorted(out)


def test_both_slots_half_open_bounds_and_second_slot_bug_fixed():
    bcam = np.array([1, 2, 1], np.int8)
    bxy = np.array([[10, 10, 20, 20], [0, 100, 50, 200], [100, 0, 300, 50]], np.float32)
    wh = np.array([[640, 480], [640, 480], [640, 480]])
    cam, uv = _pts([
        ((1, 10.0, 10.0), NONE),  # 0: on the closed lower corner -> box 0
        ((1, 20.0, 15.0), NONE),  # 1: u == x2 is outside
        ((1, 15.0, 20.0), NONE),  # 2: v == y2 is outside
        (NONE, (1, 15.0, 19.99)),  # 3: second slot only -> box 0
        ((2, 15.0, 15.0), (1, 15.0, 15.0)),  # 4: slot 0 on camera 2 misses box 1, slot 1 hits box 0
        # 5: the authors' slot-1 test "u1 < y2" says IN box 1 (40 < 200) but v1 = 300 >= y2: OUT
        (NONE, (2, 40.0, 300.0)),
        (NONE, (1, 19.0, 15.0)),  # 6: slot 1 -> box 0
        ((1, 15.0, 15.0), (2, 25.0, 150.0)),  # 7: the two slots hit boxes on two cameras -> 0 and 1
        # 8: the authors' test says OUT of box 2 (u1 = 150 >= y2 = 50) but v1 = 10 < 50: IN
        (NONE, (1, 150.0, 10.0)),
    ])
    c = associate(cam, uv, bcam, bxy, wh)
    pairs = list(zip(c.point.tolist(), c.box.tolist()))
    assert pairs == [(0, 0), (3, 0), (4, 0), (6, 0), (7, 0), (7, 1), (8, 2)]
    assert pairs == _brute(cam, uv, bcam, bxy, wh)
    assert c.point.dtype == np.int64 and c.box.dtype == np.int32


def test_overlapping_boxes_recorded_once_each_and_same_camera_both_slots():
    bcam = np.array([1, 1, 1], np.int8)
    bxy = np.array([[0, 0, 100, 100], [50, 50, 150, 150], [200, 200, 300, 300]], np.float32)
    wh = np.full((3, 2), 1000)
    cam, uv = _pts([
        ((1, 60.0, 60.0), NONE),  # in boxes 0 and 1
        ((1, 60.0, 60.0), (1, 250.0, 250.0)),  # slot 0 -> 0, 1; slot 1 -> 2
        ((1, 10.0, 10.0), (1, 20.0, 20.0)),  # both slots in box 0: recorded once
    ])
    c = associate(cam, uv, bcam, bxy, wh)
    assert list(zip(c.point.tolist(), c.box.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert c.counts.tolist() == [2, 3, 1]
    assert c.box_counts.tolist() == [3, 2, 1]
    assert c.indptr.tolist() == [0, 2, 5, 6]


def test_clipping_degenerate_and_outside_boxes():
    bcam = np.array([1, 1, 1, 1, 1], np.int8)
    bxy = np.array([
        [-50, -50, 10, 10],  # partly outside: clipped to [0,10)x[0,10)
        [90, 90, 200, 200],  # partly outside a 100x100 image: clipped to [90,100)
        [300, 300, 400, 400],  # wholly outside: empty
        [5, 5, 5, 50],  # zero width
        [30, 30, 20, 40],  # inverted
    ], np.float32)
    wh = np.full((5, 2), 100)
    cam, uv = _pts([
        ((1, 0.0, 0.0), NONE),  # box 0
        ((1, -1.0, 5.0), NONE),  # outside the image: u < 0 clipped box starts at 0
        ((1, 99.5, 99.5), NONE),  # box 1
        ((1, 100.0, 95.0), NONE),  # u == image width: outside the clipped box 1
        ((1, 350.0, 350.0), NONE),  # only the unclipped box 2 would contain it
        ((1, 5.0, 20.0), NONE),  # degenerate box 3
        ((1, 25.0, 35.0), NONE),  # inverted box 4
    ])
    c = associate(cam, uv, bcam, bxy, wh)
    assert list(zip(c.point.tolist(), c.box.tolist())) == [(0, 0), (2, 1)]
    assert c.box_counts.tolist() == [1, 1, 0, 0, 0]
    # per-box image sizes: box 1 on a bigger image keeps its full extent
    wh2 = wh.copy()
    wh2[1] = (1000, 1000)
    c2 = associate(cam, uv, bcam, bxy, wh2)
    assert (3, 1) in list(zip(c2.point.tolist(), c2.box.tolist()))


def test_points_without_projection_valid_mask_no_boxes_and_empty_box():
    cam, uv = _pts([(NONE, NONE), ((1, 5.0, 5.0), NONE), ((3, 5.0, 5.0), NONE)])
    bcam = np.array([1, 2], np.int8)
    bxy = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    wh = np.full((2, 2), 100)
    c = associate(cam, uv, bcam, bxy, wh)
    assert c.point.tolist() == [1] and c.box.tolist() == [0]
    assert c.in_any_box().tolist() == [False, True, False]
    assert c.box_counts.tolist() == [1, 0]  # box on camera 2 claims nothing
    c = associate(cam, uv, bcam, bxy, wh, valid=np.array([True, False, True]))
    assert len(c) == 0 and c.n_points == 3 and c.n_boxes == 2
    c = associate(cam, uv, np.zeros(0, np.int8), np.zeros((0, 4), np.float32), np.zeros((0, 2)))
    assert len(c) == 0 and c.counts.tolist() == [0, 0, 0] and c.in_any_box(3).sum() == 0
    with pytest.raises(ValueError):
        associate(cam, uv, bcam, bxy, np.zeros((3, 2)))


def test_random_against_brute_force_and_by_box_grouping():
    rng = np.random.default_rng(1)
    n, k = 3000, 40
    cam = rng.integers(0, 6, (n, 2)).astype(np.int8)
    cam[rng.random(n) < 0.3, 1] = 0
    uv = np.where(cam[..., None] > 0, rng.uniform(-20, 220, (n, 2, 2)), -1).astype(np.float32)
    uv[:50] = np.round(uv[:50])  # integer coordinates hit box edges exactly
    bcam = rng.integers(0, 7, k).astype(np.int8)  # includes camera 0 (never matches) and 6 (no points)
    x = rng.uniform(-30, 230, (k, 2))
    y = rng.uniform(-30, 230, (k, 2))
    bxy = np.round(np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1)).astype(np.float32)
    wh = rng.integers(150, 260, (k, 2))
    c = associate(cam, uv, bcam, bxy, wh)
    assert list(zip(c.point.tolist(), c.box.tolist())) == _brute(cam, uv, bcam, bxy, wh)
    order, ptr = c.by_box()
    for b in range(k):
        idx = order[ptr[b]:ptr[b + 1]]
        assert (c.box[idx] == b).all() and np.all(np.diff(c.point[idx]) > 0)
    sub = c.select(c.box % 2 == 0)
    assert isinstance(sub, Claims) and (sub.box % 2 == 0).all() and sub.n_points == n


def test_more_pairs_than_the_first_buffer():
    # 10 points x 300 identical boxes = 3000 pairs > the initial 2 * N + 1024 capacity -> exact retry
    cam, uv = _pts([((1, 5.0 + i, 5.0), NONE) for i in range(10)])
    k = 300
    c = associate(cam, uv, np.ones(k, np.int8), np.tile([[0, 0, 50, 50]], (k, 1)).astype(np.float32),
                  np.full((k, 2), 100))
    assert len(c) == 3000 and (c.counts == k).all()
    assert (c.point == np.repeat(np.arange(10), k)).all() and (c.box == np.tile(np.arange(k), 10)).all()
