"""`mwsis slurm train-3d` on a real one-node SLURM cluster (see conftest.py): submit, preempt with USR1 to the
batch shell mid-run, requeue, resume; the final weights equal a local uninterrupted run's."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mwsis.pipelines.cli.slurm_train import train_3d_slurm_cmd
from mwsis.pipelines.labels.runner import run_stages
from mwsis.pipelines.training.train3d import Train3DConfig, train_3d
from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, load_config, read_metrics

TINY = Path(__file__).resolve().parents[3] / "configs" / "train3d-tiny.yaml"
SETS = ["epochs=6", "frames_per_step=1"]  # 24 steps and 3 PVC rounds: a few seconds of training


@pytest.fixture
def cluster(slurm_cluster, monkeypatch):
    for k, v in slurm_cluster.env.items():  # our sbatch/scontrol calls and the job's own see the test cluster
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return slurm_cluster


def _state(cluster, job: str) -> str:
    return cluster.run("squeue", "--noheader", "--states=all", "--jobs", job, "--format=%T", check=False).stdout.strip()


def _wait(pred, timeout: float, what: str, cluster, log: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout:.0f} s\n{log.read_text() if log.exists() else ''}\n"
                         f"{cluster.logs()}")


def test_train3d_job_preempted_requeued_resumes_to_identical_weights(cluster, tiny_dataset, tmp_path):
    data, local = tmp_path / "ds", tmp_path / "local-ds"
    shutil.copytree(tiny_dataset, data)
    run_stages(data, ["spg"], show_progress=False)
    shutil.copytree(data, local)  # PVC writes into the dataset: the local run gets its own copy
    run = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run), "--nodes", "1", "--gpus-per-node", "0",
            "--config", str(TINY), *[a for s in SETS for a in ("--set", s)]]
    r = CliRunner().invoke(train_3d_slurm_cmd, args)
    assert r.exit_code == 0, r.output
    job = re.search(r"job (\d+)", r.output).group(1)
    log = run / "slurm" / f"mwsis-train-3d-{job}.out"
    assert (run / "slurm" / "train-3d.sbatch").exists()

    def trained():
        return (run / "metrics.csv").exists() and any(row["step"] >= 1 for row in read_metrics(run))

    _wait(trained, 120, "first training step", cluster, log)
    cluster.run("scancel", "--batch", "--signal=USR1", job)  # what --signal=B:USR1@T does before the time limit
    _wait(lambda: _state(cluster, job) == "PENDING", 60, "requeued job pending", cluster, log)
    assert "requeueing job" in log.read_text()
    assert load_checkpoint(latest_checkpoint(run))["state"]["step"] < 24  # stopped early, checkpoint written
    # slurmctld holds a requeued job for 120 s (BeginTime); we only need to see it requeued, so we release it
    # early, but not within the second of the requeue: slurmd revokes the first start's job credential, and a
    # new credential from the same second is refused ("Job credential revoked": the job fails)
    _wait(lambda: cluster.run("sinfo", "--noheader", "--format=%t", check=False).stdout.strip() == "idle", 60,
          "node idle after the first start", cluster, log)
    time.sleep(2)
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    _wait(lambda: _state(cluster, job) in ("COMPLETED", "FAILED", "CANCELLED"), 180, "job done", cluster, log)
    text = log.read_text()
    assert _state(cluster, job) == "COMPLETED", text + cluster.run("scontrol", "show", "job", job).stdout + cluster.logs()
    assert f"job {job} start 1" in text  # the second start of the same job id (SLURM_RESTART_COUNT)

    train_3d(local, tmp_path / "local-run", load_config(Train3DConfig, TINY, SETS), show_progress=False)
    a, b = load_checkpoint(latest_checkpoint(run)), load_checkpoint(latest_checkpoint(tmp_path / "local-run"))
    assert a["state"] == b["state"] and a["state"]["pvc_rounds"] == [3, 4, 5]
    for part in ("model", "teacher"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
