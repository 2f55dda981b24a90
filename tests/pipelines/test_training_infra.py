"""Shared trainer infrastructure: config YAML + overrides, checkpoints, metrics log; prediction shards."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from mwsis.data.prediction_store import PredictionShard, list_rounds, resolve_round, write_prediction_shard
from mwsis.data.store import ShardError, StoreError, open_dataset
from mwsis.pipelines.training.run import (MetricsLog, apply_overrides, latest_checkpoint, load_checkpoint, load_config,
                                      read_metrics, save_checkpoint)


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)


@dataclass(frozen=True)
class Cfg:
    epochs: int = 2
    labels: str = "spg"
    optim: Optim = field(default_factory=Optim)


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 5\noptim:\n  lr: 0.01\n  betas: [0.8, 0.9]\n")
    cfg = load_config(Cfg, y, ["optim.lr=0.5", "labels=pvc"])
    assert cfg.epochs == 5 and cfg.optim.lr == 0.5 and cfg.labels == "pvc" and cfg.optim.betas == (0.8, 0.9)
    with pytest.raises(ValueError, match="no field 'lrr'"):
        apply_overrides(Cfg(), {"optim.lrr": 1})
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides(Cfg(), {"epochs.x": 1})
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_config(Cfg, None, ["epochs"])


def test_checkpoints_are_atomic_and_latest_wins(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, {"w": torch.ones(2), "step": 1}, "epoch-0001")
    save_checkpoint(tmp_path, {"w": torch.zeros(2), "step": 2}, "epoch-0002")
    path = latest_checkpoint(tmp_path)
    assert path.name == "epoch-0002.pt" and load_checkpoint(path)["step"] == 2
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(StoreError, match="cannot load checkpoint"):
        load_checkpoint(path)
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_metrics_log_truncates_on_resume(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 5):
        log.log(step, 0, {"loss": 1.0 / step})
    log.truncate_after(2)
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["value"] == pytest.approx(0.5)


def test_prediction_shards_round_trip_and_rounds(tiny_dataset, tmp_path):
    ds = open_dataset(tiny_dataset)
    shard = ds.manifest.shards[0]
    rows = [(fid, np.random.default_rng(i).random((5, 3)).astype(np.float32)) for i, fid in enumerate(shard.frame_ids)]
    rows[0][1][1] = np.nan
    root = tmp_path
    (root / "manifest.json").write_bytes((tiny_dataset / "manifest.json").read_bytes())
    for rnd in (3, 1):
        write_prediction_shard(root, "3d", rnd, shard.name, rows, (3,), {"run": "x"})
    assert list_rounds(root, "3d") == [1, 3] and resolve_round(root, "3d", "latest") == 3
    with pytest.raises(ShardError, match="available rounds"):
        resolve_round(root, "3d", 2)
    p = PredictionShard(open_dataset(root), "3d", 3, shard.name)
    fid, probs = p.predictions(0)
    assert fid == shard.frame_ids[0] and probs.dtype == np.float16 and probs.shape == (5, 3)
    assert np.isnan(probs[1]).all()
    np.testing.assert_allclose(probs[0], rows[0][1][0], atol=1e-3)
    with pytest.raises(ValueError, match="expected"):
        write_prediction_shard(root, "3d", 4, shard.name, [(fid, np.zeros((5, 2)))], (3,), {})


def test_bf16_warning_follows_the_cpu_flags(tmp_path, monkeypatch, caplog):
    from mwsis.pipelines.training import run as run_mod

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert run_mod.cpu_has_bf16(info) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert run_mod.cpu_has_bf16(info) is True
    assert run_mod.cpu_has_bf16(tmp_path / "missing") is None
    monkeypatch.setattr(run_mod, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert run_mod.warn_emulated_bf16(torch.device("cpu"), True)
    assert "no native bf16" in caplog.text
    assert not run_mod.warn_emulated_bf16(torch.device("cpu"), False)
