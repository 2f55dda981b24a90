"""CSCS exchange between a 2D and a 3D job running side by side: the 2D trainer exports rounds every K
epochs; ``latest`` is re-resolved at each epoch start (complete rounds only) and recorded, so a resumed
epoch reads the round it read before."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mwsis.data.integrity import stamp_path
from mwsis.data.prediction_store import PredictionShard, list_rounds, round_dir
from mwsis.data.store import open_dataset
from mwsis.pipelines.labels.runner import run_stages
from mwsis.pipelines.training.train2d import Train2DConfig, train_2d
from mwsis.pipelines.training.train3d import Train3DConfig, train_3d
from mwsis.pipelines.training.distributed import PREEMPT_FLAG
from mwsis.pipelines.training.trainer import Hook
from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, load_config, read_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_dataset):
    """A labelled dataset on which a 2D run with export.every=1 wrote its rounds, and that run's summary."""
    data = tmp_path_factory.mktemp("exchange") / "ds"
    shutil.copytree(tiny_dataset, data)
    run_stages(data, ["spg"], show_progress=False)
    cfg = load_config(Train2DConfig, CONFIGS / "train2d-tiny.yaml",
                      ["epochs=2", "max_steps_per_epoch=1", "export.every=1"])
    summary = train_2d(data, data.parent / "run2d", cfg, show_progress=False)
    return data, summary


def test_2d_run_exports_a_round_every_epoch(exported):
    data, summary = exported
    assert summary["export_rounds"] == [1, 2] and list_rounds(data, "2d") == [1, 2]
    ds = open_dataset(data)
    for shard in ds.manifest.shards:
        p = PredictionShard(ds, "2d", 2, shard.name)
        assert len(p) == shard.frames and p.tail[0] == 2 and p.info["round"] == 2
    assert load_checkpoint(latest_checkpoint(data.parent / "run2d"))["state"]["export_rounds"] == [1, 2]


def test_3d_latest_follows_new_rounds_and_resume_keeps_the_recorded_one(exported, tmp_path):
    src, _ = exported
    data = tmp_path / "ds"
    shutil.copytree(src, data)
    held = tmp_path / "held"  # the 2D job's rounds, released one by one as if it were running beside us
    shutil.move(str(data / "predictions" / "2d"), held)
    (data / "predictions" / "2d").mkdir()
    shards = sorted(p.name for p in (held / "round=1").glob("*.parquet"))

    def release(rnd: int, only: str | None = None):
        dest = round_dir(data, "2d", rnd)
        dest.mkdir(exist_ok=True)
        for name in shards if only is None else [only]:
            shutil.copy2(held / f"round={min(rnd, 2)}" / name, dest / name)
            shutil.copy2(stamp_path(held / f"round={min(rnd, 2)}" / name), stamp_path(dest / name))  # its checksum

    run = tmp_path / "run3d"
    cfg = load_config(Train3DConfig, CONFIGS / "train3d-tiny.yaml",
                      ["epochs=3", "pvc.enabled=false", "cscs.round=latest", "cscs.warmup_steps=1"])
    # epoch 0: no 2D round yet -> trains without CSCS instead of failing
    assert train_3d(data, run, cfg, show_progress=False, stop_after_epoch=1)["cscs_rounds"] == {0: None}
    release(1)
    release(2, only=shards[0])  # being written by the 2D job: not complete, not used
    assert train_3d(data, run, cfg, resume=True, show_progress=False, stop_after_epoch=2)["cscs_rounds"] == {
        0: None, 1: 1}
    release(2)

    # preempted in the middle of epoch 2 (which reads round 2); round 3 appears before the resume
    class PreemptAfterStep5(Hook):  # the 5th step: the first of epoch 2 (2 steps per epoch)
        def after_step(self, trainer, metrics):
            if trainer.state["step"] == 4:
                (run / PREEMPT_FLAG).touch()

    res = train_3d(data, run, cfg, resume=True, show_progress=False, hooks=(PreemptAfterStep5(),))
    assert res["preempted"] and load_checkpoint(latest_checkpoint(run))["state"]["batch"] == 1
    release(3)
    res = train_3d(data, run, cfg, resume=True, show_progress=False)
    assert not res["preempted"] and res["cscs_rounds"] == {0: None, 1: 1, 2: 2}  # not 3: recorded at epoch start

    rows = read_metrics(run)
    by_epoch = {e: {r["value"] for r in rows if r["name"] == "cscs_round" and r["epoch"] == e} for e in range(3)}
    assert by_epoch == {0: {-1}, 1: {1}, 2: {2}}
    assert {r["epoch"] for r in rows if r["name"] == "loss_cscs"} == {1, 2}
    assert [r["step"] for r in rows if r["name"] == "loss"] == list(range(1, 7))
