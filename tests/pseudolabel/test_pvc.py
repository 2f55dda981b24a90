"""PVC: per-round votes at the threshold boundaries, agreement count, missing history, instances."""
import numpy as np
import pytest

from mwsis.pseudolabel.pvc import PVCConfig, pvc_vote, round_votes

C = 3
BG = 3


def probs(*rows, dtype=np.float64):
    """(H, N, C) history from per-round lists of per-point (class, max prob); other classes share the rest."""
    h = np.zeros((len(rows), len(rows[0]), C), dtype)
    for r, row in enumerate(rows):
        for n, (cls, m) in enumerate(row):
            if m is None:
                h[r, n] = np.nan
                continue
            h[r, n] = min(m, (1 - m) / (C - 1)) if m > 1 / C else m  # keep `cls` the arg-max
            h[r, n, cls] = m
    return h


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_votes_threshold_boundaries(dtype):
    ms = [0.39, 0.4, 0.5, 0.6, 0.61]
    hist = np.zeros((1, len(ms), C), dtype)
    for n, m in enumerate(ms):
        hist[0, n] = [m, 0.0, 0.0]  # class 0 is the arg-max
    hist[0, 1:, 1] = 0.2  # not the max anywhere
    v = round_votes(hist)
    # < 0.4 background; 0.4 <= m <= 0.6 no vote (exactly 0.4 and exactly 0.6 included); > 0.6 the class
    assert v.tolist() == [[BG, -1, -1, -1, 0]]
    assert round_votes(hist, tau_low=0.3, tau_high=0.55).tolist() == [[-1, -1, -1, 0, 0]]


def test_round_votes_argmax_and_missing_rounds():
    hist = np.array([[[0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [np.nan, 0.9, 0.0], [-1, -1, -1]]])
    assert round_votes(hist).tolist() == [[1, 2, -1, -1]]  # NaN / authors' -1 fill: no vote
    valid = np.array([[True, False, True, True]])
    assert round_votes(hist, valid).tolist() == [[1, -1, -1, -1]]


def test_unanimity_by_default_and_min_agree():
    car, bg, ign = (0, 0.9), (0, 0.1), (0, 0.5)
    # point 0: 4x car; 1: 3x car + 1 no-vote; 2: 3x car + 1 bg; 3: 4x bg; 4: 2 car 2 bg
    rounds = [[car, car, car, bg, car], [car, car, car, bg, car], [car, car, car, bg, bg], [car, ign, bg, bg, bg]]
    hist = probs(*rounds)
    base = np.array([BG, BG, BG, 0, -1], np.int8)
    sem, inst = pvc_vote(hist, base)
    assert inst is None
    assert sem.tolist() == [0, BG, BG, BG, -1]  # only unanimous points change
    sem3, _ = pvc_vote(hist, base, min_agree=3)
    assert sem3.tolist() == [0, 0, 0, BG, -1]  # 3 of 4 suffice
    sem2, _ = pvc_vote(hist, base, min_agree=2)
    assert sem2[4] == -1  # 2 car vs 2 bg: no majority, unchanged
    assert pvc_vote(hist, base, min_agree=5)[0].tolist() == base.tolist()  # more than H rounds: nothing
    with pytest.raises(ValueError):
        pvc_vote(hist, base, min_agree=0)


def test_points_without_history_keep_base_label():
    hist = np.full((4, 3, C), -1.0)  # authors' fresh history file: they relabel every point as background
    hist[:, 2] = [0.05, 0.9, 0.05]  # point 2 has a full pedestrian history
    base = np.array([0, -1, BG])
    inst = np.array([7, 0, 0])
    sem, new_inst = pvc_vote(hist, base, inst)
    assert sem.tolist() == [0, -1, 1]
    assert new_inst.tolist() == [7, 0, 0]
    nan_hist = np.where(hist < 0, np.nan, hist)
    assert pvc_vote(nan_hist, base, inst)[0].tolist() == [0, -1, 1]
    valid = np.zeros((4, 3), bool)
    valid[:, 2] = True
    assert pvc_vote(np.full((4, 3, C), 0.05), base, valid=valid)[0].tolist() == [0, -1, BG]  # invalid: no bg votes
    # a point with one missing round cannot be unanimous, but can reach min_agree=3
    part = np.tile(np.array([0.9, 0.05, 0.05]), (4, 1, 1))
    part[1, 0] = np.nan
    assert pvc_vote(part, np.array([BG]))[0].tolist() == [BG]
    assert pvc_vote(part, np.array([BG]), min_agree=3)[0].tolist() == [0]


def test_ignored_points_become_supervised_and_instance_rule():
    car, cyc, bg = [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.1, 0.1, 0.1]
    per_point = [car, car, bg, cyc, car, car]
    hist = np.tile(np.array(per_point)[None], (4, 1, 1))
    base_sem = np.array([-1, 0, 0, 0, BG, 0], np.int8)
    base_inst = np.array([0, 5, 5, 5, 0, 9], np.int32)
    sem, inst = pvc_vote(hist, base_sem, base_inst)
    assert sem.dtype == np.int8 and inst.dtype == np.int32
    assert sem.tolist() == [0, 0, BG, 2, 0, 0]
    # ignored -> car: no instance; car -> car: keeps 5; car -> bg: 0; car -> cyclist: 0; bg -> car: 0; 9 kept
    assert inst.tolist() == [0, 5, 0, 0, 0, 9]
    assert base_sem.tolist() == [-1, 0, 0, 0, BG, 0] and base_inst[2] == 5  # inputs untouched


def test_matches_per_point_reference_on_random_histories():
    rng = np.random.default_rng(3)
    for _ in range(30):
        h, n = int(rng.integers(1, 6)), int(rng.integers(1, 200))
        hist = rng.choice([0.05, 0.3, 0.4, 0.5, 0.6, 0.65, 0.95], size=(h, n, C))
        hist[rng.random((h, n)) < 0.1] = np.nan
        base = rng.integers(-1, C + 1, n)
        inst = rng.integers(0, 4, n)
        k = None if rng.random() < 0.5 else int(rng.integers(1, h + 1))
        sem, new_inst = pvc_vote(hist, base, inst, min_agree=k)
        need = h if k is None else k
        for i in range(n):
            votes = []
            for r in range(h):
                p = hist[r, i]
                if np.isnan(p).any():
                    continue
                m = p.max()
                votes.append(BG if m < 0.4 else (int(p.argmax()) if m > 0.6 else None))
            counts = {lab: votes.count(lab) for lab in set(votes) if lab is not None}
            top = sorted(counts.values(), reverse=True) + [0, 0]
            winner = max(counts, key=counts.get) if counts else None
            if counts and top[0] >= need and top[0] > top[1]:
                assert sem[i] == winner
                assert new_inst[i] == (inst[i] if (winner < C and base[i] == winner) else 0)
            else:
                assert sem[i] == base[i] and new_inst[i] == inst[i]


def test_config_defaults_and_newest_rounds():
    cfg = PVCConfig()
    assert (cfg.history, cfg.tau_low, cfg.tau_high, cfg.min_agree) == (4, 0.4, 0.6, None)
    hist = np.tile(np.array([0.9, 0.05, 0.05]), (6, 1, 1))
    hist[4:] = [0.1, 0.1, 0.1]  # the two oldest rounds say background: outside the newest 4
    assert cfg.vote(hist, np.array([BG]))[0].tolist() == [0]
    assert PVCConfig(history=6).vote(hist, np.array([BG]))[0].tolist() == [BG]
    with pytest.raises(ValueError):
        pvc_vote(np.zeros((4, 2, C)), np.zeros(3, int))
