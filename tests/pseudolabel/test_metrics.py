"""Semantic IoU and COCO-style point-instance AP (MWSIS §4.2, authors' protocol)."""
import numpy as np

from mwsis.pseudolabel.metrics import InstanceAP, confusion_matrix, instances_from_labels, iou_from_confusion


def test_confusion_and_iou_treat_ignore_as_background():
    gt = np.array([0, 0, 1, 1, 3, 3, -1])
    pred = np.array([0, -1, 1, 3, 3, 0, 2])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.sum() == 6  # gt −1 skipped
    iou = iou_from_confusion(conf)
    assert iou[0] == 1 / 3  # TP 1, FN 1 (ignored -> bg), FP 1
    assert iou[1] == 1 / 2
    assert np.isnan(iou[2])


def test_perfect_prediction_has_ap_one_and_split_multiclass_instance():
    sem = np.array([0, 0, 0, 1, 1, 3, 2, 2])
    inst = np.array([5, 5, 5, 5, 5, 0, 9, 9])  # instance 5 spans two classes -> two GT instances
    gt = instances_from_labels(sem, inst, 3)
    assert sorted(gt.classes.tolist()) == [0, 1, 2]
    acc = InstanceAP(3)
    acc.add(gt, gt)
    r = acc.compute()
    assert abs(r["ap"] - 1) < 1e-9 and abs(r["ap50"] - 1) < 1e-9 and set(r["per_class"]) == {0, 1, 2}


def test_partial_overlap_passes_ap50_but_not_ap75():
    gt_sem = np.array([0] * 10 + [3] * 10)
    gt_inst = np.array([1] * 10 + [0] * 10)
    pred_inst = np.array([1] * 6 + [0] * 4 + [1] * 2 + [0] * 8)  # IoU 6/12 = 0.5 ... make it 0.6
    pred_inst[6] = 1  # 7 TP, 2 FP -> IoU 7/12 = 0.583
    pred_sem = np.where(pred_inst > 0, 0, 3)
    acc = InstanceAP(3)
    acc.add(instances_from_labels(pred_sem, pred_inst, 3), instances_from_labels(gt_sem, gt_inst, 3))
    r = acc.compute()
    assert r["ap50"] > 0.99 and r["ap75"] == 0.0
    assert 0.0 < r["ap"] < 0.5


def test_no_predictions_gives_zero_and_no_gt_gives_nan():
    sem = np.array([0, 0, 3])
    inst = np.array([1, 1, 0])
    acc = InstanceAP(3)
    acc.add(instances_from_labels(np.full(3, 3), np.zeros(3, int), 3), instances_from_labels(sem, inst, 3))
    assert acc.compute()["ap"] == 0.0
    assert np.isnan(InstanceAP(3).compute()["ap"])
