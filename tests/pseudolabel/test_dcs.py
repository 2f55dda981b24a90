"""DCS ring segments (pseudolabel/dcs.py) against the plain-Python oracle (dcs_reference.py, beside this file)."""
import numpy as np
import pytest

from mwsis.pseudolabel.dcs import point_segments, range_image, ring_segments
from dcs_reference import ring_segments_reference, ring_segments_union_find_reference


def _random_rows(rng, n_ret, rows, width, max_range, empty=0.2, second=0.5):
    """Smooth random walks (so that segments form) with empties, negatives, NaNs and second returns."""
    r = np.abs(np.cumsum(rng.normal(0, 0.004 * max_range, (n_ret, rows, width)), axis=2) + max_range / 2)
    r[rng.random(r.shape) < empty] = 0
    r[rng.random(r.shape) < 0.02] = -1
    r[rng.random(r.shape) < 0.005] = np.nan
    if n_ret == 2:
        r[1][rng.random(r[1].shape) < 1 - second] = 0
        near = rng.random(r[1].shape) < 0.3  # second returns close to the first: same-column links
        r[1][near] = r[0][near] + rng.normal(0, 0.001 * max_range, near.sum())
    r[:, rng.integers(0, rows)] = 0  # one fully empty row
    return r.astype(np.float32)


def test_numba_equals_reference_on_random_rows():
    rng = np.random.default_rng(0)
    for trial in range(24):
        max_range = float(rng.choice([4.0, 12.0, 30.0, 45.0, 75.0]))  # windows 25, 20, 8, 5..6, 6
        n_ret = 1 if trial % 6 == 5 else 2
        r = _random_rows(rng, n_ret, 3, int(rng.integers(1, 300)), max_range)
        ids = ring_segments(r)
        assert ids.shape == r.shape and ids.dtype == np.int32
        assert (ids == ring_segments_reference(r)).all()
        assert ((ids == -1) == ~(r > 0)).all()
        uf = ring_segments(r, variant="union_find")
        assert (uf == ring_segments_union_find_reference(r)).all()
        assert (ring_segments(r, variant="union_find", wrap=False)
                == ring_segments_union_find_reference(r, wrap=False)).all()
        # union-find only merges: every authors' segment lies inside one union-find segment
        m = ids >= 0
        pairs = set(zip(ids[m].tolist(), uf[m].tolist()))
        assert len(pairs) == len(set(ids[m].tolist()))


def test_non_default_thresholds_and_fixed_window():
    rng = np.random.default_rng(1)
    r = _random_rows(rng, 2, 4, 200, 30.0)
    for kw in (dict(rel_thresh=0.002), dict(window_scale=2000.0), dict(window_min=2.0, window_max=4.0)):
        assert (ring_segments(r, **kw) == ring_segments_reference(r, **kw)).all()
    # a fixed window of 1: first returns look back nothing -> only same-column second->first links
    ids = ring_segments(r, window=1)
    r64 = np.where(r > 0, r, 0).astype(np.float64)
    thr = 0.0048 * r64.max(axis=(0, 2))[:, None]
    both = (r64[0] > 0) & (r64[1] > 0) & (np.abs(r64[0] - r64[1]) < thr)
    lone = (r64[1] > 0) & ~both
    assert len(np.unique(ids[0][r[0] > 0])) == (r[0] > 0).sum()  # every first return alone
    assert (ids[1][both] == ids[0][both]).all() and both.any()
    assert not np.isin(ids[1][lone], ids[0]).any() and lone.any()


def _row(width=2650, **cols):
    r = np.zeros((2, 1, width), np.float32)
    for ret_col, v in cols.items():
        ret, col = ret_col.split("_")
        r[int(ret[1]), 0, int(col)] = v
    return r


def test_method_md_example_authors_vs_union_find():
    # row max 60 m -> threshold 0.288 m, window int(clip(500/60, 12, 50)/2) = 6
    r = _row(r0_100=20.0, r0_101=20.5, r0_102=20.25, r0_2000=60.0)
    a = ring_segments(r)[0, 0, [100, 101, 102, 2000]]
    assert a[0] != a[1] and a[1] == a[2] and len(set(a.tolist())) == 3  # A, B, B (nearest attach)
    assert (a == ring_segments_reference(r)[0, 0, [100, 101, 102, 2000]]).all()
    u = ring_segments(r, variant="union_find")[0, 0, [100, 101, 102, 2000]]
    assert u[0] == u[1] == u[2] != u[3]  # the bridge merges A and B


def test_look_back_rules_first_and_second_return():
    # threshold 0.0048 * 60 = 0.288, window 6 -> look back j = 1..5 (first) / 0..5 (second)
    base = dict(r0_2000=60.0)
    # gap of 5 columns connects, 6 does not
    ids = ring_segments(_row(r0_10=20.0, r0_15=20.1, r0_30=20.0, r0_36=20.1, **base))[0, 0]
    assert ids[10] == ids[15] and ids[30] != ids[36]
    # a first return attaches to the second return of a previous column
    ids = ring_segments(_row(r0_10=30.0, r1_10=20.0, r0_11=20.1, **base))
    assert ids[0, 0, 11] == ids[1, 0, 10] != ids[0, 0, 10]
    # a second return attaches to the first return of its own column (j = 0) ...
    ids = ring_segments(_row(r0_10=20.0, r1_10=20.1, **base))
    assert ids[0, 0, 10] == ids[1, 0, 10]
    # ... and within a look-back column the first return is tried before the second return
    # (second return at 10: j=0 fails (40 m), j=1 first return 20.0 wins over the also-connected 20.4)
    r = _row(r0_9=20.0, r1_9=20.4, r0_10=40.0, r1_10=20.2, **base)
    ids = ring_segments(r)
    assert ids[1, 0, 10] == ids[0, 0, 9] != ids[1, 0, 9]
    assert len(set(ring_segments(r, variant="union_find")[:, 0, [9, 10]][[0, 1, 1], [0, 0, 1]].tolist())) == 1
    # (first return at 11: the first return of column 10 is tried before its second return)
    ids = ring_segments(_row(r0_10=20.0, r1_10=20.4, r0_11=20.2, **base))
    assert ids[0, 0, 11] == ids[0, 0, 10] != ids[1, 0, 10]
    # ids are numbered by root: rows first, then columns, first return before second
    r = np.zeros((2, 2, 50), np.float32)
    r[1, 0, 3] = 10.0
    r[0, 0, 3] = 50.0
    r[0, 1, 0] = 5.0
    ids = ring_segments(r)
    assert ids[0, 0, 3] == 0 and ids[1, 0, 3] == 1 and ids[0, 1, 0] == 2


def test_wrap_around_only_in_union_find():
    r = _row(width=100, r0_0=20.0, r0_99=20.1, r0_50=60.0)
    a = ring_segments(r)[0, 0]
    assert a[0] != a[99]
    u = ring_segments(r, variant="union_find")[0, 0]
    assert u[0] == u[99] != u[50]
    u = ring_segments(r, variant="union_find", wrap=False)[0, 0]
    assert u[0] != u[99]
    # ids by first appearance in scan order, frame-global across rows
    r2 = np.concatenate([r, r], axis=1)
    u2 = ring_segments(r2, variant="union_find")
    assert u2[0, 0, 0] == 0 and u2[0, 0, 50] == 1 and u2[0, 1, 0] == 2 and u2[0, 1, 99] == 2


def test_empty_input_shapes_and_errors():
    assert (ring_segments(np.zeros((2, 3, 10), np.float32)) == -1).all()
    assert ring_segments(np.zeros((2, 0, 10), np.float32)).shape == (2, 0, 10)
    with pytest.raises(ValueError):
        ring_segments(np.zeros((3, 2, 10), np.float32))
    with pytest.raises(ValueError):
        ring_segments(np.zeros((2, 2, 10), np.float32), variant="nope")


def test_point_helpers_round_trip():
    rng = np.random.default_rng(2)
    m, w, n = 8, 100, 500
    cells = rng.choice(2 * m * w, n, replace=False)
    ret, row, col = np.unravel_index(cells, (2, m, w))
    rngs = rng.uniform(1, 70, n).astype(np.float32)
    img = range_image(rngs, ret, row, col, (m, w))
    assert img.shape == (2, m, w) and (img[ret, row, col] == rngs).all() and (img > 0).sum() == n
    ids = ring_segments(img)
    valid = rng.random(n) < 0.8
    seg = point_segments(ids, ret, row, col, valid)
    assert seg.dtype == np.int32 and (seg[~valid] == -1).all() and (seg[valid] == ids[ret, row, col][valid]).all()
    assert (point_segments(ids, ret, row + m, col) == -1).all()  # out of the image


def test_rescan_baseline_matches_the_reference():
    from dcs_reference import ring_segments_rescan

    rng = np.random.default_rng(5)
    r = rng.uniform(5, 40, (2, 3, 150)).astype(np.float32)
    r[rng.random(r.shape) < 0.3] = 0
    r[1, :, ::3] = r[0, :, ::3] + rng.uniform(0, 0.3, (3, 50)).astype(np.float32)
    np.testing.assert_array_equal(ring_segments_rescan(r), ring_segments_reference(r))
