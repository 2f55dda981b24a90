"""PointSetConfig: one rule for which points are labelled, trained on and evaluated (pseudolabel/points.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mwsis.data.frame import TOP_LIDAR
from mwsis.pseudolabel.points import POINT_RANGE, PointSetConfig, in_range


def _expected(p, point_range=POINT_RANGE, nlz=True, camera=True):
    """The rule written out point by point, independently of the vectorised code."""
    out = []
    for i in range(len(p)):
        x = p.xyz[i]
        ok = p.laser_id[i] == TOP_LIDAR and all(point_range[d] < x[d] < point_range[d + 3] for d in range(3))
        ok = ok and (not camera or bool((p.cam_id[i] > 0).any())) and (not nlz or not p.nlz[i])
        out.append(bool(ok))
    return np.array(out)


def test_eligible_and_evaluated_follow_the_rule_point_by_point(toy):
    p = toy(n=2000, seed=3).points
    p.laser_id[::7] = 2  # some side-LiDAR points
    p.xyz[::11, 2] = 9.0  # some above the slab
    p.xyz[5, 0] = np.nan  # NaN coordinates are out
    ps = PointSetConfig()
    assert (ps.eligible(p) == _expected(p)).all()
    assert (ps.evaluated(p) == _expected(p, nlz=False)).all()  # evaluation keeps NLZ points (method.md §11)
    assert ps.evaluated(p).sum() > ps.eligible(p).sum() > 0
    narrow = PointSetConfig(point_range=(-5, -5, -1, 5, 5, 1), drop_nlz=False, need_camera=False)
    assert (narrow.eligible(p) == _expected(p, (-5, -5, -1, 5, 5, 1), nlz=False, camera=False)).all()
    assert 0 < narrow.eligible(p).sum() < (p.laser_id == TOP_LIDAR).sum()


def test_in_range_is_strict():
    xyz = np.array([[-80.0, 0, 0], [-79.99, 0, 0], [0, 0, 4.0], [0, 0, 3.99]], np.float32)
    assert in_range(xyz).tolist() == [False, True, False, True]


@pytest.mark.parametrize("bad", [(0, 0, 0, 0, 1, 1), (1, -1, -1, -1, 1, 1), (-1, -1, -1, 1, 1)])
def test_a_point_range_that_holds_no_point_is_refused(bad):
    with pytest.raises(ValueError, match="point_range"):
        PointSetConfig(point_range=bad)


def test_values_become_float_tuples():
    ps = PointSetConfig(point_range=[-1, -2, -3, 1, 2, 3])
    assert ps.point_range == (-1.0, -2.0, -3.0, 1.0, 2.0, 3.0) and all(type(v) is float for v in ps.point_range)
