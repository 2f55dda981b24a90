"""RSC: T1 (background) and T2 (foreground) rules on hand-made ring segments, skip-list, segment -1."""
import numpy as np
import pytest

from mwsis.pseudolabel.rsc import RSC_T1, RSC_T2, rsc_correct

CAR, PED, CYC, BG = 0, 1, 2, 3


def seg_of(*groups):
    """Concatenate (segment id, labels) groups into (pred, segment_id)."""
    pred = np.concatenate([np.asarray(lab) for _, lab in groups])
    seg = np.concatenate([np.full(len(lab), s) for s, lab in groups])
    return pred, seg


def test_defaults_are_the_authors_thresholds():
    assert (RSC_T1, RSC_T2) == (1.0, 0.7)


def test_background_and_foreground_rules():
    groups = [
        (0, [BG] * 6 + [CAR] * 4),           # bg 6 > car 4 -> all bg
        (1, [BG] * 5 + [CAR] * 5),           # bg 5 == car 5: not T1; 5/10 < 0.7 -> unchanged
        (2, [CAR] * 7 + [BG] * 2 + [CYC]),   # car 7/10 = T2 exactly -> all car
        (3, [CAR] * 6 + [BG] * 3 + [CYC]),   # 6/10 < 0.7, bg 3 < 6 -> unchanged
        (4, [CYC] * 8 + [BG] * 2),           # cyclist 8/10 -> all cyclist
        (5, [BG] * 9),                       # no foreground: untouched (nothing to correct)
    ]
    pred, seg = seg_of(*groups)
    out = rsc_correct(pred, seg)
    expect = np.concatenate([[BG] * 10, [BG] * 5 + [CAR] * 5, [CAR] * 10, [CAR] * 6 + [BG] * 3 + [CYC],
                             [CYC] * 10, [BG] * 9])
    assert out.tolist() == expect.tolist()
    # T1 = 1.5: bg 6 > 1.5 * 4 fails, and 4/10 < T2 -> segment 0 unchanged
    assert rsc_correct(pred, seg, t_bg=1.5)[:10].tolist() == pred[:10].tolist()
    # T2 = 0.8: segment 2 (0.7) no longer changes
    assert rsc_correct(pred, seg, t_fg=0.8)[20:30].tolist() == pred[20:30].tolist()


def test_skip_list_and_segment_minus_one():
    groups = [
        (0, [PED] * 8 + [BG] * 2),            # pedestrians never trigger: untouched
        (1, [CAR] * 2 + [PED] * 5 + [BG] * 3),  # bg 3 > car 2 -> bg, pedestrians kept by default
        (-1, [BG] * 9 + [CAR]),               # would be T1, but -1 is no segment
        (-1, [CAR] * 9 + [BG]),               # would be T2
    ]
    pred, seg = seg_of(*groups)
    out = rsc_correct(pred, seg)
    assert out[:10].tolist() == pred[:10].tolist()
    assert out[10:20].tolist() == [BG] * 2 + [PED] * 5 + [BG] * 3
    assert out[20:].tolist() == pred[20:].tolist()
    # the authors relabel the whole segment, pedestrians included
    assert rsc_correct(pred, seg, keep_skipped=False)[10:20].tolist() == [BG] * 10
    # no skip-list: pedestrians 8/10 -> whole segment 0 pedestrian
    assert rsc_correct(pred, seg, skip_classes=())[:10].tolist() == [PED] * 10


def test_majority_vs_authors_order():
    pred, seg = seg_of((0, [CAR] * 8 + [CYC] + [BG] * 2))  # |s| = 11
    assert rsc_correct(pred, seg).tolist() == [CAR] * 11  # majority car: 8 >= 0.7 * 11
    # authors: car -> all car, then cyclist (1 point, bg 2 > 1) -> all bg, overwriting
    assert rsc_correct(pred, seg, mode="authors").tolist() == [BG] * 11
    with pytest.raises(ValueError):
        rsc_correct(pred, seg, mode="nope")


def _authors_loop(pred, seg, c=3):
    """A per-segment port of the authors' ``MWSIS.rsc`` (method.md §6)."""
    new = pred.copy()
    bg_run = seg[pred == c]
    for i in range(c):
        sets, counts = np.unique(seg[pred == i], return_counts=True)
        for s, n in zip(sets, counts):
            if s == -1 or i == 1:
                continue
            if (bg_run == s).sum() > n:
                new[seg == s] = c
            elif (seg == s).sum() * 0.7 <= n:
                new[seg == s] = i
    return new


def test_authors_mode_matches_the_authors_loop_on_random_frames():
    rng = np.random.default_rng(5)
    for _ in range(40):
        n = int(rng.integers(1, 400))
        seg = rng.integers(-1, int(rng.integers(1, 30)), n)
        pred = rng.choice([CAR, PED, CYC, BG, BG], n, p=rng.dirichlet(np.ones(5)))
        got = rsc_correct(pred, seg, mode="authors", keep_skipped=False)
        assert got.tolist() == _authors_loop(pred, seg).tolist()


def test_shape_dtype_and_large_ids():
    pred = np.array([BG, BG, CAR, CAR, CAR, -1], np.int8)
    seg = np.array([10**12, 10**12, 10**12, 5, 5, 5], np.int64)  # non-compact ids
    out = rsc_correct(pred, seg)
    assert out.dtype == np.int8 and out.shape == pred.shape
    assert out.tolist() == [BG, BG, BG, CAR, CAR, -1]  # -1 votes for nothing but counts in |s|: 2/3 < 0.7
    assert pred.tolist() == [BG, BG, CAR, CAR, CAR, -1]  # input untouched
    assert rsc_correct(np.zeros(0, np.int16), np.zeros(0, np.int64)).dtype == np.int16
    with pytest.raises(ValueError):
        rsc_correct(pred, seg[:-1])  # not the evaluated point set: the authors' crash, made explicit
