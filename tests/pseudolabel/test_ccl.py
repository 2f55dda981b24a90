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


def _assert_matches_scipy_per_box(rng, xyz, k: int, max_claims: int) -> None:
    """Random claims of ``k`` boxes on ``xyz``: each box keeps exactly scipy's largest component."""
    n = len(xyz)
    pairs = {(int(p), int(b)) for b in range(k) for p in rng.choice(n, int(rng.integers(0, max_claims)), replace=False)}
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
            assert (keep[sel] == (lab == np.argmax(np.bincount(lab)))).all(), (mode, b)


def test_largest_component_matches_per_box_scipy_on_random_boxes():
    rng = np.random.default_rng(5)
    _assert_matches_scipy_per_box(rng, rng.uniform(0, 15, (2000, 3)).astype(np.float32), k=25, max_claims=200)


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


# --- dense clouds: the grid kernel unites whole cells and stops at the first close pair between cells ---

def _dense_cloud(rng, n, side, n_blobs=6):
    """Clumpy cloud: hundreds of points per radius-sized cell, with duplicates and empty gaps."""
    centres = rng.uniform(0, side, (n_blobs, 3))
    xyz = centres[rng.integers(0, n_blobs, n)] + rng.normal(0, side / 12, (n, 3))
    xyz[: n // 10] = xyz[rng.integers(0, n, n // 10)]  # duplicates
    return xyz


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_equals_scipy_on_dense_clouds(mode):
    rng = np.random.default_rng(11)
    for trial in range(6):
        n = int(rng.integers(1500, 2500))
        xyz = _dense_cloud(rng, n, side=(0.8, 1.5, 3.0)[trial % 3])
        if trial % 2:
            xyz = xyz.astype(np.float32)  # the dtype of real points
        for r in (0.05, 0.1, 0.4, 0.6):
            lab = connected_components(xyz, r, mode)
            ref = _scipy_labels(xyz, r, mode)
            assert (lab == ref).all(), (trial, r)
        # many points per cell: check that the dense case is really exercised
        cell = 0.6 / np.sqrt(2 if mode == "xy" else 3)
        assert np.unique(np.floor(xyz[:, :2] / cell), axis=0, return_counts=True)[1].max() > 50


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_dense_lattice_exactly_r_apart_is_not_adjacent(mode):
    # lattice spacing exactly r (0.25 and its multiples are exact in binary), 30 copies of every node:
    # every node is one component (distance 0 < r), nodes are never joined (distance == r is not < r)
    r = 0.25
    g = np.arange(8) * r
    nodes = np.stack(np.meshgrid(g, g, g[:3], indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(2)
    xyz = np.repeat(nodes, 30, axis=0)[rng.permutation(len(nodes) * 30)]
    n_nodes = len(np.unique(xyz[:, : 2 if mode == "xy" else 3], axis=0))
    lab = connected_components(xyz, r, mode)
    assert len(np.unique(lab)) == n_nodes
    assert (lab == _scipy_labels(xyz, r, mode)).all()
    # the next double above r joins all of them
    assert (connected_components(xyz, np.nextafter(r, 1.0), mode) == 0).all()


@pytest.mark.parametrize("mode", ["xy", "xyz"])
@pytest.mark.parametrize("r", [0.1, 0.4, 0.6])
def test_dense_clusters_separated_by_gap_just_above_or_below_r(mode, r):
    rng = np.random.default_rng(int(r * 10))
    # two dense slabs, each internally connected; their facing points are `gap` apart along x
    a = np.column_stack([rng.uniform(-1.5, 0, 800), rng.uniform(0, 1, 800), rng.uniform(0, 0.02, 800)])
    a[0] = (0.0, 0.5, 0.01)
    for gap, joined in ((r * (1 - 1e-9), True), (r * (1 + 1e-9), False), (r * 1.5, False)):
        b = np.column_stack([rng.uniform(0, 1.5, 800), rng.uniform(0, 1, 800), rng.uniform(0, 0.02, 800)])
        b[:, 0] += gap
        b[0] = (gap, 0.5, 0.01)
        xyz = np.concatenate([a, b])
        xyz = xyz[rng.permutation(len(xyz))]
        lab = connected_components(xyz, r, mode)
        assert (lab == _scipy_labels(xyz, r, mode)).all()
        assert len(np.unique(lab)) == (1 if joined else 2)


def test_xyz_separates_layers_that_xy_merges():
    rng = np.random.default_rng(4)
    layer = rng.uniform(0, 2, (1000, 2))
    xyz = np.concatenate([np.column_stack([layer, np.zeros(1000)]), np.column_stack([layer, np.full(1000, 0.7)])])
    assert len(np.unique(connected_components(xyz, 0.6, "xy"))) == 1
    lab = connected_components(xyz, 0.6, "xyz")
    assert len(np.unique(lab)) == 2 and (lab == _scipy_labels(xyz, 0.6, "xyz")).all()
    assert (connected_components(xyz, 0.7000001, "xyz") == 0).all()


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_huge_coordinates_and_coarse_grids(mode):
    rng = np.random.default_rng(8)
    dense = rng.normal(0, 0.05, (400, 3))
    # large offset: cells stay radius-sized, rounding handled by the cell bounding-box check
    for off in (1e5, -3e7):
        xyz = dense + off
        assert (connected_components(xyz, 0.01, mode) == _scipy_labels(xyz, 0.01, mode)).all()
    # a far outlier makes the grid coarser than the radius (cells capped per axis): pairwise fallback
    xyz = np.concatenate([dense, [[1e7, 1e7, 1e7]], dense[:50] + 0.5])
    assert (connected_components(xyz, 0.01, mode) == _scipy_labels(xyz, 0.01, mode)).all()
    # spans that overflow float64 differences
    xyz = np.array([[-1e308, 0, 0], [1e308, 0, 0], [1e308, 1e-3, 0], [0, 0, 0]])
    assert connected_components(xyz, 0.5, mode).tolist() == [0, 1, 1, 2]
    assert connected_components(xyz, np.inf, mode).tolist() == [0, 1, 1, 2]  # inf distance is not < inf
    assert (connected_components(dense, np.inf, mode) == 0).all()


def test_largest_component_matches_per_box_scipy_on_dense_boxes():
    rng = np.random.default_rng(6)
    _assert_matches_scipy_per_box(rng, _dense_cloud(rng, 6000, side=6.0, n_blobs=10).astype(np.float32), k=12,
                                  max_claims=1500)


@pytest.mark.parametrize("mode", ["xy", "xyz"])
def test_exact_grid_points_with_many_pairs_exactly_r_apart(mode):
    # coordinates k/16 and r = 5/16: squares and sums are exact, so many pairs are exactly r apart,
    # axis-aligned (5/16) and along 3-4-5 diagonals, between cells that are not pruned
    rng = np.random.default_rng(9)
    r = 5 / 16
    sizes = ((300, 60), (1000, 100), (3000, 180)) if mode == "xy" else ((300, 30), (1000, 45), (3000, 70))
    for n, span in sizes:
        xyz = rng.integers(0, span, (n, 3)) / 16.0
        if mode == "xy":
            xyz[:, 2] = 0
        lab = connected_components(xyz, r, mode)
        assert (lab == _scipy_labels(xyz, r, mode)).all()
        # ties matter here: one ulp more of radius changes the partition
        assert len(np.unique(connected_components(xyz, np.nextafter(r, 1.0), mode))) < len(np.unique(lab))
