"""Connected components and largest cluster per box (pseudolabel/ccl.py)."""
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components as scipy_cc
from scipy.spatial.distance import cdist

from mwsis.pseudolabel.ccl import connected_components, largest_component_per_box
from mwsis.pseudolabel.frustum import Claims


def _scipy_labels(xyz, r, mode):
    x = np.asarray(xyz, np.float64)[:, : 2 if mode == "xy" else 3]
    _, lab = scipy_cc(csr_matrix(cdist(x, x) < r), directed=False)
    return lab


def _same_partition(a, b):
    # a bijection between labels <=> the pairs (a, b) are as many as the labels on each side
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_equals_scipy_on_random_clouds(mode):
    rng = np.random.default_rng(0)
    for trial in range(12):
        n = int(rng.integers(1, 600))
        xyz = rng.uniform(-3, 3, (n, 3)).astype(np.float32)
        xyz[: n // 5] = xyz[rng.integers(0, n, n // 5)]  # duplicates
        if trial % 3 == 0:
            xyz[:, 2] *= 10  # z spread makes xy and xyz differ
        for r in (0.05, 0.1, 0.4, 0.6, 2.0):
            lab = connected_components(xyz, r, mode)
            ref = _scipy_labels(xyz, r, mode)
            assert lab.dtype == np.int32 and lab.shape == (n,)
            assert _same_partition(lab, ref)
            assert (lab == ref).all()  # same first-appearance numbering as scipy


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_strict_radius_on_exact_grid_ties(mode):
    # points exactly `r` apart are NOT adjacent; closer ones are
    g = np.arange(10, dtype=np.float64) * 0.5
    xyz = np.stack(np.meshgrid(g, g, [0.0, 0.5]), -1).reshape(-1, 3)
    lab = connected_components(xyz, 0.5, mode)
    assert len(np.unique(lab)) == len(xyz) // (2 if mode == "xy" else 1)  # xy: the two z layers coincide
    assert (lab == _scipy_labels(xyz, 0.5, mode)).all()
    lab = connected_components(xyz, 0.5000001, mode)
    assert len(np.unique(lab)) == 1
    # a dense sub-voxel cluster plus a far point, and a big translation (large coordinates)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.normal(0, 0.02, (300, 3)), [[50, 50, 1]]]) + 70
    assert (connected_components(pts, 0.1, mode) == _scipy_labels(pts, 0.1, mode)).all()


def test_edge_cases():
    assert connected_components(np.zeros((0, 3)), 0.5).shape == (0,)
    assert connected_components(np.zeros((1, 3)), 0.5).tolist() == [0]
    assert connected_components(np.zeros((4, 3)), 0.0).tolist() == [0, 1, 2, 3]  # r <= 0: singletons
    assert connected_components(np.zeros((4, 3)), 1e-9).tolist() == [0, 0, 0, 0]  # duplicates: distance 0
    with pytest.raises(ValueError):
        connected_components(np.zeros((4, 3)), 0.5, mode="z")
    with pytest.raises(ValueError):
        connected_components(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), 0.5)
    # xy mode ignores z, so a NaN there is harmless; 2-column input works too
    assert connected_components(np.array([[0.0, 0.0, np.nan], [0.1, 0.0, 0.0]]), 0.5).tolist() == [0, 0]
    assert connected_components(np.array([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0]]), 0.5).tolist() == [0, 0, 1]


def _claims(pairs, n, k):
    pairs = sorted(pairs)
    return Claims(np.array([p for p, _ in pairs], np.int64), np.array([b for _, b in pairs], np.int32), n, k)


def test_largest_component_per_box_class_radii_and_ties():
    # x positions; box 0 (vehicle, 0.6 m) and box 1 (pedestrian, 0.1 m) claim the same points
    x = np.array([0.0, 0.3, 0.55, 5.0, 5.05, 5.5, 9.0, 9.5, 20.0, 20.5])
    xyz = np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)
    pairs = [(i, 0) for i in range(6)] + [(i, 1) for i in range(6)]
    pairs += [(6, 2), (7, 2)]  # box 2 (cyclist 0.4 m): two singletons -> tie -> lowest point wins
    pairs += [(8, 3), (9, 3)]  # box 3 (vehicle): 0.5 apart -> one cluster
    c = _claims(pairs, 10, 5)  # box 4 claims nothing
    keep = largest_component_per_box(xyz, c, np.array([0, 1, 2, 0, 1]))
    kept = {(int(p), int(b)) for p, b, k in zip(c.point, c.box, keep) if k}
    # vehicle: {0, .3, .55} (3) vs {5, 5.05, 5.5} (3): tie -> component of point 0
    assert {p for p, b in kept if b == 0} == {0, 1, 2}
    # pedestrian 0.1 m: {5.0, 5.05} is the only pair closer than 0.1 -> largest
    assert {p for p, b in kept if b == 1} == {3, 4}
    assert {p for p, b in kept if b == 2} == {6}
    assert {p for p, b in kept if b == 3} == {8, 9}
    # pair_mask removes points before clustering; masked pairs are never kept
    mask = ~((c.box == 0) & (c.point <= 1))
    keep2 = largest_component_per_box(xyz, c, np.array([0, 1, 2, 0, 1]), pair_mask=mask)
    assert {int(p) for p, b, k in zip(c.point, c.box, keep2) if k and b == 0} == {3, 4, 5}
    assert not keep2[~mask].any()
    with pytest.raises(ValueError):
        largest_component_per_box(xyz, c, np.array([0, 1, 2, 0, 7]))


def test_largest_component_matches_per_box_scipy_on_random_boxes():
    rng = np.random.default_rng(5)
    n, k = 2000, 25
    xyz = rng.uniform(0, 15, (n, 3)).astype(np.float32)
    pairs = {(int(p), int(b)) for b in range(k) for p in rng.choice(n, int(rng.integers(0, 200)), replace=False)}
    c = _claims(pairs, n, k)
    cls = rng.integers(0, 3, k)
    radii = (0.6, 0.1, 0.4)
    for mode in ("xy", "xyz"):
        keep = largest_component_per_box(xyz, c, cls, radii, mode)
        for b in range(k):
            sel = np.flatnonzero(c.box == b)
            if sel.size == 0:
                continue
            lab = _scipy_labels(xyz[c.point[sel]], radii[cls[b]], mode)
            best = np.argmax(np.bincount(lab))
            assert (keep[sel] == (lab == best)).all()


def test_exclusive_order_withdraws_taken_points_except_same_owner():
    # box 0 (vehicle) claims a 3-point cluster A and a 2-point cluster B; box 1 claims B and 1 point C
    x = np.array([0.0, 0.3, 0.6, 5.0, 5.3, 9.0])
    xyz = np.stack([x, np.zeros(6), np.zeros(6)], 1)
    c = _claims([(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (3, 1), (4, 1), (5, 1)], 6, 2)
    cls = np.array([0, 0])

    def kept(keep, b, cl=c):
        return {int(p) for p, bb, k in zip(cl.point, cl.box, keep) if k and bb == b}

    keep = largest_component_per_box(xyz, c, cls)
    assert kept(keep, 0) == {0, 1, 2} and kept(keep, 1) == {3, 4}
    # box 1 first: it takes B; box 0 still has A (B was not its largest anyway)
    keep = largest_component_per_box(xyz, c, cls, exclusive_order=np.array([1, 0]))
    assert kept(keep, 0) == {0, 1, 2} and kept(keep, 1) == {3, 4}
    # box 0 first, when both boxes claim B: box 1 falls back to C
    c2 = _claims([(3, 0), (4, 0), (3, 1), (4, 1), (5, 1)], 6, 2)
    keep = largest_component_per_box(xyz, c2, cls, exclusive_order=np.array([0, 1]))
    assert kept(keep, 0, c2) == {3, 4} and kept(keep, 1, c2) == {5}  # B withdrawn from box 1
    keep = largest_component_per_box(xyz, c2, cls, exclusive_order=np.array([0, 1]), box_owner=np.array([7, 7]))
    assert kept(keep, 0, c2) == {3, 4} and kept(keep, 1, c2) == {3, 4}  # same object: shared
    with pytest.raises(ValueError):
        largest_component_per_box(xyz, c2, cls, exclusive_order=np.array([0, 0]))
