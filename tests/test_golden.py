"""Issue 13's pins: the refactor moved code, it did not change what the code writes (tests/golden/pins.py)."""
from __future__ import annotations

import json

import pytest

from golden.pins import PINS, compute


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return compute(tmp_path_factory.mktemp("golden"))


def test_frame_and_label_shards_are_byte_identical_to_the_pins(now):
    pins = json.loads(PINS.read_text())
    frames = {k: v for k, v in pins["shards"].items() if k.startswith("frames/")}
    changed_frames = [k for k, v in frames.items() if now["shards"].get(k) != v]
    assert not changed_frames, (f"the synthetic frames differ from the pins ({changed_frames}): the renderer or "
                                f"this machine's floating point changed (pins recorded on {pins['recorded_on']['cpu']})")
    assert sorted(now["shards"]) == sorted(pins["shards"]), "the set of label shards written changed"
    changed = sorted(k for k, v in pins["shards"].items() if now["shards"][k] != v)
    assert not changed, f"label shards differ from the pins of commit {pins['commit']}: {changed}"
    assert {k.split("/")[1] for k in now["shards"] if k.startswith("labels/")} >= {"frustum", "ccl", "dcs", "spg", "sam", "pvc"}


@pytest.mark.parametrize("which", ["metrics_3d", "metrics_2d"])
def test_fixed_seed_tiny_runs_write_the_pinned_metrics(now, which):
    pins = json.loads(PINS.read_text())
    assert now[which][0] == pins[which][0] == ["step", "epoch", "name", "value"]
    # the same rows; within a step their order may differ (the trainers' loop became one)
    got_rows, want_rows = (sorted(rows[1:], key=lambda r: (int(r[0]), r[2])) for rows in (now[which], pins[which]))
    assert [r[:3] for r in got_rows] == [r[:3] for r in want_rows], "other steps or metric names"
    for got, want in zip(got_rows, want_rows):
        assert float(got[3]) == pytest.approx(float(want[3]), rel=1e-5, abs=1e-8), (which, got, want)
