"""TWIST's label side (pseudolabel/twist_update.py): subset, IoU targets, box mutation, Module C, naive update."""
from __future__ import annotations

import numpy as np
import pytest

from mwsis.data.frame import BACKGROUND, IGNORE
from mwsis.pseudolabel.twist_update import (labelled_subset, mutate_box, naive_update, proposal_targets,
                                            proposal_update)


def test_labelled_subset_is_seeded_order_free_and_sized():
    ids = [f"f{i:03d}" for i in range(200)]
    a = labelled_subset(ids, 0.05, seed=1)
    assert len(a) == 10 and a == sorted(a) and set(a) <= set(ids)
    assert labelled_subset(ids[::-1], 0.05, seed=1) == a[::-1]  # the same frames in the caller's order
    assert set(labelled_subset(ids, 0.05, seed=2)) != set(a)
    assert set(labelled_subset(ids[:100], 0.05, seed=1)) == set(labelled_subset(ids[:100], 0.05, seed=1))
    assert len(labelled_subset(ids[:10], 0.01, seed=0)) == 1  # at least one frame
    assert labelled_subset(ids, 0.0) == [] and labelled_subset(ids, 1.0) == ids
    with pytest.raises(ValueError, match="fraction"):
        labelled_subset(ids, 1.5)


def test_proposal_targets_match_the_best_true_instance():
    gt_sem = np.array([0, 0, 0, 0, 1, 1, 3, 3, -1], np.int8)
    gt_inst = np.array([5, 5, 5, 5, 9, 9, 0, 0, 0])
    # proposal 1: 3 of vehicle 5 (IoU 3/4); proposal 2: vehicle point + both pedestrian points + 1 background
    # (pedestrian IoU 2/4 beats vehicle 1/7); proposal 3: background only
    prop = np.array([1, 1, 1, 2, 2, 2, 2, 3, 0], np.int32)
    iou, cls = proposal_targets(prop, gt_sem, gt_inst)
    assert iou.tolist() == pytest.approx([0.75, 0.5, 0.0]) and cls.tolist() == [0, 1, -1]
    assert proposal_targets(np.zeros(9, np.int32), gt_sem, gt_inst)[0].size == 0


def test_enlarging_a_box_next_to_a_neighbour_lowers_its_iou_target():
    """Module B's mutation: scaling the box by 1.3 beside another object takes in the neighbour's points."""
    rng = np.random.default_rng(0)
    car = rng.uniform([0, 0, 0], [4, 2, 1.5], (300, 3))
    ped = rng.uniform([4.3, 0.5, 0], [4.8, 1.0, 1.7], (60, 3))  # 0.3 m beside the car
    xyz = np.concatenate([car, ped])
    gt_sem = np.r_[np.zeros(300), np.ones(60)].astype(np.int8)
    gt_inst = np.r_[np.full(300, 1), np.full(60, 2)]
    members = np.arange(300)
    grown = mutate_box(xyz, members, 1.3)
    assert set(members) <= set(grown) and (grown >= 300).any()
    prop = np.zeros(len(xyz), np.int32)
    prop[grown] = 1
    iou_grown = proposal_targets(prop, gt_sem, gt_inst)[0][0]
    prop[:] = 0
    prop[members] = 1
    assert proposal_targets(prop, gt_sem, gt_inst)[0][0] == 1.0 > iou_grown
    assert len(mutate_box(xyz, members, 0.7)) < 300  # shrinking crops the object


def test_every_point_of_a_kept_proposal_gets_the_same_centre_and_dropped_ones_are_ignored():
    shifted = np.array([[0, 0, 0], [2, 0, 0], [1, 3, 0], [9, 9, 9], [5, 5, 5]], np.float64)
    prop = np.array([1, 1, 1, 2, 0], np.int32)
    sem, inst, centre, score = proposal_update(shifted, prop, np.array([2, 0]), np.array([0.9, 0.3]))
    assert sem.tolist() == [2, 2, 2, IGNORE, IGNORE] and inst.tolist() == [1, 1, 1, 0, 0]
    assert centre.tolist() == [[1.0, 1.0, 0.0]] and score.tolist() == pytest.approx([0.9])
    # hybrid: points outside kept proposals keep their base labels; base instances follow the kept ones
    base_sem = np.array([0, 0, 0, 1, BACKGROUND], np.int8)
    base_inst = np.array([4, 4, 4, 7, 0])
    sem, inst, centre, score = proposal_update(shifted, prop, np.array([2, 0]), np.array([0.9, 0.3]),
                                               base_semantic=base_sem, base_instance=base_inst)
    assert sem.tolist() == [2, 2, 2, 1, BACKGROUND] and inst.tolist() == [1, 1, 1, 2, 0]
    assert np.isnan(centre[1]).all() and score.tolist() == pytest.approx([0.9, 1.0])


def test_naive_update_thresholds_points_and_keeps_confident_clusters():
    probs = np.array([[0.9, 0.1, 0.1], [0.7, 0.2, 0.1], [0.5, 0.45, 0.1], [0.2, 0.3, 0.1], [0.1, 0.8, 0.2]])
    model_inst = np.array([3, 3, 3, 0, 5])
    shifted = np.array([[0, 0, 0], [2, 0, 0], [7, 7, 7], [1, 1, 1], [4, 4, 4]], np.float64)
    sem, inst, centre, score = naive_update(probs, model_inst, shifted)
    assert sem.tolist() == [0, 0, IGNORE, BACKGROUND, 1] and inst.tolist() == [1, 1, 0, 0, 2]
    assert centre.tolist() == [[1, 0, 0], [4, 4, 4]] and score.tolist() == pytest.approx([0.8, 0.8])
    # hybrid: only the uncertain point (ignored above) takes its base label, numbered after the clusters
    sem, inst, centre, score = naive_update(probs, model_inst, shifted, base_semantic=np.array([0, 0, 2, 1, 1]),
                                            base_instance=np.array([4, 4, 9, 7, 7]))
    assert sem.tolist() == [0, 0, 2, BACKGROUND, 1] and inst.tolist() == [1, 1, 3, 0, 2]
    assert np.isnan(centre[2]).all() and score.tolist() == pytest.approx([0.8, 0.8, 1.0])


def test_proposal_quality_counts_matches_per_class():
    from mwsis.pseudolabel.twist_update import proposal_quality

    gt_sem = np.array([0, 0, 0, 0, 1, 1, 3, 3])
    gt_inst = np.array([1, 1, 1, 1, 2, 2, 0, 0])
    proposal = np.array([1, 1, 1, 0, 2, 2, 3, 3])  # p1: 3 of the car's 4 points; p2: the pedestrian; p3: ground
    q = proposal_quality(proposal, np.array([0, 0, 1]), np.array([True, False, True]), gt_sem, gt_inst, 3)
    assert q[0].tolist() == [1, 1, 1, 0]  # car p1 kept and true (IoU 0.75); p2 dropped, called car: not true
    assert q[1].tolist() == [1, 0, 0, 0]  # p3 kept as a pedestrian: no true pedestrian there
