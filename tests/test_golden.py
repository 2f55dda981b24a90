"""Issue 13's pins: the refactor moved code, it did not change what the code writes (tests/golden/pins.py)."""
from __future__ import annotations

import json

import pytest

from golden.pins import PINS, compute, platform_of


@pytest.fixture(scope="module")
def now(tmp_path_factory):
    return compute(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def pins(now):
    pins = json.loads(PINS.read_text())
    entry = platform_of(pins, now)
    if entry is None:  # not a failure of the code: this CPU's vector kernels write other bits
        pytest.skip("no pins for this floating-point platform (the synthetic frames differ from every entry, "
                    f"recorded on {[p['recorded_on']['simd'] for p in pins['platforms']]}); add them with "
                    "tests/golden/pins.py from a checkout of commit 6751b83")
    return entry


def test_frame_and_label_shards_are_byte_identical_to_the_pins(now, pins):
    assert sorted(now["shards"]) == sorted(pins["shards"]), "the set of label shards written changed"
    changed = sorted(k for k, v in pins["shards"].items() if now["shards"][k] != v)
    assert not changed, f"label shards differ from the pins of commit {pins['commit']}: {changed}"
    assert {k.split("/")[1] for k in now["shards"] if k.startswith("labels/")} >= {"frustum", "ccl", "dcs", "spg", "sam", "pvc"}


@pytest.mark.parametrize("which", ["metrics_3d", "metrics_2d"])
def test_fixed_seed_tiny_runs_write_the_pinned_metrics(now, pins, which):
    assert now[which][0] == pins[which][0] == ["step", "epoch", "name", "value"]
    # the same rows; within a step their order may differ (the trainers' loop became one)
    got_rows, want_rows = (sorted(rows[1:], key=lambda r: (int(r[0]), r[2])) for rows in (now[which], pins[which]))
    assert [r[:3] for r in got_rows] == [r[:3] for r in want_rows], "other steps or metric names"
    for got, want in zip(got_rows, want_rows):
        assert float(got[3]) == pytest.approx(float(want[3]), rel=1e-5, abs=1e-8), (which, got, want)


def test_the_pinned_platforms_differ_in_their_frames():
    """Each entry is told apart by its frame shards alone, else the first would always be picked."""
    frames = [tuple(sorted((k, v) for k, v in p["shards"].items() if k.startswith("frames/")))
              for p in json.loads(PINS.read_text())["platforms"]]
    assert len(set(frames)) == len(frames) >= 1
