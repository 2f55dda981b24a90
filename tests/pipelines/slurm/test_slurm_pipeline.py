"""`mwsis slurm` on a real one-node SLURM cluster (see conftest.py): submit, kill a task, status, resume.

The label shards SLURM writes must be byte-identical to a local `mwsis pseudolabels` run on a copy of the
same dataset. Datasets are tiny (one frame per shard) so that the tests take well under a minute each.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mwsis.data.label_store import label_shard_path
from mwsis.data.locks import exclusive_lock
from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """SLURM commands (ours, in-process, and the jobs' through sbatch's exported environment) -> the test cluster."""
    for k, v in slurm_cluster.env.items():
        monkeypatch.setenv(k, v)
    return slurm_cluster


def _cli(*args: str, ok: bool = True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, f"mwsis {' '.join(map(str, args))}\n{r.output}\n{r.exception!r}"
    return r


def _dataset(tmp_path: Path, shards: int) -> tuple[Path, Path]:
    """A tiny dataset with ``shards`` shards, and an untouched copy for the local reference run."""
    data = tmp_path / "slurm-ds"
    _cli("synth", "--preset", "tiny", "--frames", shards, "--frames-per-sequence", 1, "--no-progress",
         "--out", data)
    local = tmp_path / "local-ds"
    shutil.copytree(data, local)
    return data, local


def _labels(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "labels").glob("*/*.parquet"))}


def _status(data: Path) -> dict:
    return json.loads(_cli("slurm", "status", "--data", data, "--json").output)


def _wait_quiet(data: Path, cluster, timeout: float = 150) -> dict:
    """Poll status until no array task is pending or running any more; the last status."""
    end = time.monotonic() + timeout
    while True:
        st = _status(data)
        if not st["live_tasks"]:
            assert not any(s["running"] or s["pending"] for s in st["stages"].values()), st
            return st
        if time.monotonic() > end:
            pytest.fail(f"jobs still running after {timeout} s: {st}\n{cluster.run('squeue', check=False).stdout}"
                        f"\n{cluster.logs()}")
        time.sleep(1)


def test_pseudolabels_on_slurm_match_a_local_run(slurm_env, tmp_path):
    data, local = _dataset(tmp_path, 3)
    # 2 array tasks per stage over 3 shards: one task labels two shards
    r = _cli("slurm", "pseudolabels", "--data", data, "--max-tasks", 2, "--array-parallelism", 2)
    assert "stage spg: job" in r.output and "after dcs" in r.output, r.output
    _cli("pseudolabels", "--data", local, "--no-eval")

    st = _wait_quiet(data, slurm_env)
    assert st["complete"] and not st["failed_tasks"], st
    assert set(st["stages"]) == {"frustum", "ccl", "dcs", "spg"}  # sam: no checkpoint, not submitted
    expected = _labels(local)
    assert len(expected) == 4 * 3 and _labels(data) == expected
    rec = json.loads((data / "slurm" / "submissions" / "0001.json").read_text())
    assert [j["tasks"] for j in rec["jobs"]] == [[[0], [1, 2]]] * 4
    spg = next(j for j in rec["jobs"] if j["stage"] == "spg")
    dcs = next(j for j in rec["jobs"] if j["stage"] == "dcs")
    assert spg["after"] == [dcs["job_id"]]
    assert "SHARDS=(0 1-2)" in (data / "slurm" / "scripts" / "0001-spg.sbatch").read_text()

    # nothing left to do: resume says so and submits nothing
    r = _cli("slurm", "resume", "--data", data)
    assert "nothing to resubmit" in r.output and not (data / "slurm" / "submissions" / "0002.json").exists()


def test_fused_pseudolabels_on_slurm_match_a_local_stage_by_stage_run(slurm_env, tmp_path):
    """--fused: one array job, each task one pass per shard for every stage; the same bytes as a local
    stage-by-stage run, and status counts each stage."""
    data, local = _dataset(tmp_path, 3)
    r = _cli("slurm", "pseudolabels", "--data", data, "--fused", "--max-tasks", 2)
    assert "stages frustum, ccl, dcs, spg (one pass per shard): job" in r.output, r.output
    _cli("pseudolabels", "--data", local, "--no-eval", "--stage-by-stage")
    st = _wait_quiet(data, slurm_env)
    assert st["complete"] and not st["failed_tasks"], st
    assert set(st["stages"]) == {"frustum", "ccl", "dcs", "spg"}
    assert len(_labels(local)) == 12 and _labels(data) == _labels(local)
    rec = json.loads((data / "slurm" / "submissions" / "0001.json").read_text())
    assert [(j["stages"], j["tasks"]) for j in rec["jobs"]] == [(["frustum", "ccl", "dcs", "spg"], [[0], [1, 2]])]
    assert sorted(p.name for p in (data / "slurm" / "logs" / "frustum+ccl+dcs+spg").glob("*.exit")) == [
        f"{rec['jobs'][0]['job_id']}_{t}.exit" for t in (0, 1)]


def test_killed_task_is_reported_and_resume_completes_it(slurm_env, tmp_path):
    data, local = _dataset(tmp_path, 3)
    _cli("pseudolabels", "--data", local, "--stages", "spg", "--no-eval")
    victim = open_dataset(data).manifest.shards[1].name
    # Hold the writer lock of dcs on shard 1: its array task starts, imports, opens the dataset, then waits
    # for the lock, so it is certainly running (not finished) when we kill it.
    with exclusive_lock(label_shard_path(data, "dcs", victim), "the test"):
        _cli("slurm", "pseudolabels", "--data", data, "--stages", "spg")
        rec = json.loads((data / "slurm" / "submissions" / "0001.json").read_text())
        dcs_job = next(j["job_id"] for j in rec["jobs"] if j["stage"] == "dcs")
        log = data / "slurm" / "logs" / "dcs" / f"{dcs_job}_1.out"
        end = time.monotonic() + 90
        while not (log.exists() and "waiting for it to finish" in log.read_text()):
            assert time.monotonic() < end, f"dcs task 1 never reached the lock\n{slurm_env.logs()}"
            time.sleep(0.3)
        slurm_env.run("scancel", f"{dcs_job}_1")
        st = _wait_quiet(data, slurm_env)

    assert st["stages"]["dcs"]["done"] == 2 and st["stages"]["dcs"]["failed"] == 1, st
    assert st["stages"]["spg"]["done"] == 0 and st["stages"]["spg"]["failed"] == 3, st  # never ran: dcs failed
    killed = [f for f in st["failed_tasks"] if f["stage"] == "dcs"]
    assert killed == [{"stage": "dcs", "job_id": dcs_job, "task_id": 1, "state": "CANCELLED", "shards": [1],
                       "log": str(log), "log_exists": True}], killed
    text = _cli("slurm", "status", "--data", data).output
    assert str(log) in text and "CANCELLED" in text and "mwsis slurm resume" in text, text

    r = _cli("slurm", "resume", "--data", data)
    assert "stage dcs: job" in r.output and "1 tasks over 1 shards" in r.output, r.output
    rec2 = json.loads((data / "slurm" / "submissions" / "0002.json").read_text())
    assert [(j["stage"], j["tasks"]) for j in rec2["jobs"]] == [("dcs", [[1]]), ("spg", [[0], [1], [2]])]
    assert rec2["jobs"][1]["after"] == [rec2["jobs"][0]["job_id"]]
    st = _wait_quiet(data, slurm_env)
    assert st["complete"] and not st["failed_tasks"], st
    assert _labels(data) == _labels(local) and len(_labels(local)) == 6
