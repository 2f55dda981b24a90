"""``LabelShardWriter``: rows spilled until the record is known commit to the bytes of a direct write; an
uncommitted writer leaves nothing behind."""
from __future__ import annotations

import numpy as np
import pytest

from mwsis.data.label_store import LabelShardWriter, label_shard_path, write_label_shard
from mwsis.data.schema.labels import FrameLabels

RECORD = ({"spg": {"fg_thresh": 0.1}}, "0.0.test", {"frames": "abc"})


def rows(n: int = 3):
    rng = np.random.default_rng(0)
    return [FrameLabels(f"f{i}", semantic=rng.integers(-1, 3, 500).astype(np.int8),
                        instance=rng.integers(0, 9, 500).astype(np.int32),
                        segment=rng.integers(0, 40, 500).astype(np.int32)) for i in range(n)]


def test_a_spilled_shard_commits_to_the_direct_bytes(tmp_path):
    direct = write_label_shard(tmp_path / "a", "spg", "s0", rows(), *RECORD)
    with LabelShardWriter(tmp_path / "b", "spg", "s0") as w:
        for r in rows():
            w.add(r)
        spilled = w.commit(RECORD)
    assert spilled.read_bytes() == direct.read_bytes()
    assert [p.name for p in spilled.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_spilled_shard_needs_its_record(tmp_path):
    with LabelShardWriter(tmp_path, "spg", "s0") as w:
        w.add(rows(1)[0])
        with pytest.raises(ValueError, match="record"):
            w.commit()
    assert not label_shard_path(tmp_path, "spg", "s0").exists()


@pytest.mark.parametrize("record", [None, RECORD])
def test_an_uncommitted_writer_leaves_the_old_shard(tmp_path, record):
    old = write_label_shard(tmp_path, "spg", "s0", rows(2), *RECORD)
    before = old.read_bytes()
    with pytest.raises(KeyError):
        with LabelShardWriter(tmp_path, "spg", "s0", record=record) as w:
            w.add(rows(1)[0])
            raise KeyError("a frame failed")
    with LabelShardWriter(tmp_path, "spg", "s0", record=record) as w:  # left without commit or error
        w.add(rows(1)[0])
    assert old.read_bytes() == before
    assert sorted(p.name for p in old.parent.iterdir() if p.name.endswith(".tmp")) == []
