"""point_instance_ap: exact agreement with pycocotools' COCOeval (through InstanceAP) and hand-worked cases."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mwsis.pseudolabel.metrics import InstanceAP, InstanceSet, instances_from_labels
from mwsis.pseudolabel.point_ap import COCO_IOU_THRESHOLDS, PointInstanceAP, PointInstances, point_instance_ap

C = 3
BG = 3


def close(a, b, tol=1e-9):
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol


def assert_same(ref, got):
    for key in ("ap", "ap50", "ap75"):
        assert close(ref[key], got[key]), (key, ref, got)
    assert set(ref["per_class"]) == set(got["per_class"]), (ref, got)
    for k, r in ref["per_class"].items():
        for key in ("ap", "ap50", "ap75"):
            assert close(r[key], got["per_class"][k][key]), (k, key, ref, got)


def coco_reference(frames, iou_thrs=None, max_dets=100):
    """COCOeval through InstanceAP's images/annotations, with custom IoU thresholds and maxDets."""
    acc = InstanceAP(C)
    for p, g in frames:
        acc.add(p, g)
    if iou_thrs is None and max_dets == 100:
        return acc.compute()
    nan = float("nan")
    gt_cats = sorted({a["category_id"] for a in acc.anns})
    thr = COCO_IOU_THRESHOLDS if iou_thrs is None else np.asarray(iou_thrs, float)
    i50, i75 = np.flatnonzero(np.isclose(thr, 0.5)), np.flatnonzero(np.isclose(thr, 0.75))
    if not acc.anns:
        return {"ap": nan, "ap50": nan, "ap75": nan, "per_class": {}}
    if not acc.dets:
        z = {"ap": 0.0, "ap50": 0.0 if i50.size else nan, "ap75": 0.0 if i75.size else nan}
        return {**z, "per_class": {c - 1: dict(z) for c in gt_cats}}
    gt = COCO()
    gt.dataset = {"images": acc.images, "annotations": acc.anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(C)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(acc.dets), iouType="segm")
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.iouThrs, ev.params.maxDets = thr, [max_dets]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]

    def ap(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else nan

    def summ(p):
        return {"ap": ap(p), "ap50": ap(p[i50[0]]) if i50.size else nan, "ap75": ap(p[i75[0]]) if i75.size else nan}

    return {**summ(prec), "per_class": {c - 1: summ(prec[:, :, c - 1]) for c in gt_cats}}


def random_frames(rng):
    frames = []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(1, 60))
        kind = int(rng.integers(0, 4))
        gsem, ginst = rng.integers(-1, 4, n), rng.integers(0, 6, n)
        if rng.random() < 0.2:
            ginst[:] = 0  # frame without ground truth
        if rng.random() < 0.3:
            gsem[gsem == 2] = 0  # a class without ground truth
        gt = instances_from_labels(gsem, ginst, C)
        if kind == 3:  # overlapping ground-truth masks (sort-join path)
            k = int(rng.integers(0, 5))
            gt = InstanceSet(rng.random((k, n)) < rng.uniform(0.1, 0.6, (k, 1)), rng.integers(0, C, k))
        if kind == 0:  # label-based predictions: disjoint, perturbed ground truth
            psem, pinst = gsem.copy(), ginst.copy()
            flip = rng.random(n) < rng.uniform(0, 0.5)
            psem[flip], pinst[flip] = rng.integers(-1, 4, flip.sum()), rng.integers(0, 7, flip.sum())
            k = len(instances_from_labels(psem, pinst, C).classes)
            pred = instances_from_labels(psem, pinst, C, rng.choice([0.2, 0.5, 0.9], k))  # ties
        elif kind == 2 and len(gt.classes):  # near copies of ground truths, several per object
            j = rng.integers(0, len(gt.classes), int(rng.integers(0, 8)))
            masks = gt.masks[j] ^ (rng.random((len(j), n)) < 0.1)
            pred = InstanceSet(masks, gt.classes[j].copy(), rng.choice([0.1, 0.5, 0.5, 0.7], len(j)))
        else:  # random overlapping masks, possibly empty, any class
            k = int(rng.integers(0, 8))
            masks = rng.random((k, n)) < rng.uniform(0.0, 0.6, (k, 1))
            pred = InstanceSet(masks, rng.integers(0, C, k), rng.choice([0.1, 0.5, 0.5, 0.7], k))
        frames.append((pred, gt))
    return frames


def test_agrees_with_cocoeval_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        frames = random_frames(rng)
        got = point_instance_ap([p for p, _ in frames], [g for _, g in frames], C)
        assert_same(coco_reference(frames), got)


def test_agrees_with_cocoeval_with_max_dets_and_custom_thresholds():
    rng = np.random.default_rng(1)
    for i in range(60):
        frames = random_frames(rng)
        thr = None if i % 2 else [0.3, 0.5, 0.6, 0.75, 1.0]
        md = int(rng.integers(1, 4))
        got = point_instance_ap([p for p, _ in frames], [g for _, g in frames], C, iou_thresholds=thr, max_dets=md)
        assert_same(coco_reference(frames, thr, md), got)


def test_min_points_equals_cocoeval_on_filtered_instances():
    rng = np.random.default_rng(2)
    for _ in range(60):
        frames = random_frames(rng)
        mp = int(rng.integers(1, 12))

        def filt(s):
            keep = s.masks.sum(1) >= mp
            return InstanceSet(s.masks[keep], s.classes[keep], None if s.scores is None else s.scores[keep])

        got = point_instance_ap([p for p, _ in frames], [g for _, g in frames], C, min_points=mp)
        assert_same(coco_reference([(filt(p), filt(g)) for p, g in frames]), got)


def test_label_inputs_equal_dense_inputs():
    rng = np.random.default_rng(4)
    sem, inst = rng.integers(-1, 4, 500), rng.integers(0, 9, 500)
    psem, pinst = sem.copy(), inst.copy()
    flip = rng.random(500) < 0.2
    psem[flip], pinst[flip] = rng.integers(0, 4, flip.sum()), rng.integers(0, 9, flip.sum())
    k = len(instances_from_labels(psem, pinst, C).classes)
    sc = rng.random(k)
    a = point_instance_ap([(psem, pinst, sc)], [(sem, inst)], C)
    b = point_instance_ap([instances_from_labels(psem, pinst, C, sc)], [instances_from_labels(sem, inst, C)], C)
    c = point_instance_ap([PointInstances.from_labels(psem, pinst, C, sc)],
                          [PointInstances.from_labels(sem, inst, C)], C)
    assert a == b == c
    # point_scores: the mean of the points' scores per instance
    ps = rng.random(500)
    pi = PointInstances.from_labels(psem, pinst, C, point_scores=ps)
    dense = instances_from_labels(psem, pinst, C)
    assert np.allclose(pi.scores, [ps[m].mean() for m in dense.masks])


# ---------------------------------------------------------------- hand-worked cases

def one(cls, idx, n):
    m = np.zeros(n, bool)
    m[list(idx)] = True
    return m


def test_iou_exactly_point_seven_matches_at_cocoeval_thresholds():
    # GT 10 points, prediction 7 of them: IoU = 7/10, matched at 0.50 .. 0.70 (5 of 10 thresholds)
    gt = InstanceSet(one(0, range(10), 20)[None], np.array([0]))
    pred = InstanceSet(one(0, range(7), 20)[None], np.array([0]), np.array([0.9]))
    r = point_instance_ap([pred], [gt], C)
    assert (r["ap"], r["ap50"], r["ap75"]) == pytest.approx((0.5, 1.0, 0.0))  # COCO: tp/(tp+fp+eps)
    assert_same(coco_reference([(pred, gt)]), r)
    # np.arange's 0.7000000000000002 misses the IoU of exactly 0.7: COCOeval's values are the default
    assert point_instance_ap([pred], [gt], C, iou_thresholds=np.arange(0.5, 0.96, 0.05))["ap"] == pytest.approx(0.4)


def test_score_ties_keep_input_order():
    gt = InstanceSet(one(0, range(10), 20)[None], np.array([0]))
    exact, loose = one(0, range(10), 20), one(0, range(6), 20)  # IoU 1.0 and 0.6
    good_first = InstanceSet(np.stack([exact, loose]), np.array([0, 0]), np.array([0.5, 0.5]))
    bad_first = InstanceSet(np.stack([loose, exact]), np.array([0, 0]), np.array([0.5, 0.5]))
    assert point_instance_ap([good_first], [gt], C)["ap"] == pytest.approx(1.0)
    # loose first: it takes the GT at 0.50-0.60 (AP 1), the exact one is 2nd at 0.65-0.95 (AP 0.5)
    r = point_instance_ap([bad_first], [gt], C)
    assert r["ap"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    assert_same(coco_reference([(bad_first, gt)]), r)


def test_ties_across_frames_rank_earlier_frame_first():
    gt = InstanceSet(one(0, range(5), 10)[None], np.array([0]))
    no_gt = InstanceSet(np.zeros((0, 10), bool), np.zeros(0, int))
    tp = InstanceSet(one(0, range(5), 10)[None], np.array([0]), np.array([0.5]))
    fp = InstanceSet(one(0, range(5, 9), 10)[None], np.array([0]), np.array([0.5]))
    assert point_instance_ap([fp, tp], [no_gt, gt], C)["ap"] == pytest.approx(0.5)  # FP ranked first
    assert point_instance_ap([tp, fp], [gt, no_gt], C)["ap"] == pytest.approx(1.0)
    assert_same(coco_reference([(fp, no_gt), (tp, gt)]), point_instance_ap([fp, tp], [no_gt, gt], C))


def test_classes_without_gt_and_empty_inputs():
    sem = np.array([0, 0, 0, BG, 2, 2])
    inst = np.array([1, 1, 1, 0, 2, 2])
    gt = (np.array([0, 0, 0, BG, BG, BG]), np.array([1, 1, 1, 0, 0, 0]))  # only vehicles in the GT
    r = point_instance_ap([(sem, inst)], [gt], C)
    assert set(r["per_class"]) == {0} and r["ap"] == pytest.approx(1.0)  # the cyclist prediction has no GT: excluded
    none = (np.full(6, BG), np.zeros(6, int))
    assert point_instance_ap([none], [gt], C)["ap"] == 0.0  # GT but no prediction
    assert np.isnan(point_instance_ap([(sem, inst)], [none], C)["ap"])  # no GT at all
    assert np.isnan(point_instance_ap([], [], C)["ap"])
    empty = (np.zeros(0, int), np.zeros(0, int))
    assert point_instance_ap([empty, (sem, inst)], [empty, gt], C)["ap"] == pytest.approx(1.0)  # a frame with no points
    small = point_instance_ap([(sem, inst)], [gt], C, min_points=4)  # the 3-point GT is dropped
    assert np.isnan(small["ap"]) and small["per_class"] == {}
    with pytest.raises(ValueError):
        point_instance_ap([none], [], C)
    with pytest.raises(ValueError):
        PointInstanceAP(C, iou_thresholds=[0.0, 0.5])


def test_accumulator_streams_frames():
    rng = np.random.default_rng(7)
    frames = random_frames(rng) + random_frames(rng)
    acc = PointInstanceAP(C)
    for p, g in frames:
        acc.add(p, g)
    assert acc.num_frames == len(frames)
    assert acc.compute() == point_instance_ap([p for p, _ in frames], [g for _, g in frames], C)
    assert acc.precision().shape == (10, 101, C)
