"""`mwsis slurm` without a cluster: plans, batch scripts (--dry-run), status classification, shard lists."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from mwsis.pipelines.slurm import stages as S
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import format_shard_list, parse_shard_list


def _cli(*args, ok=True, env=None):
    r = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if ok:
        assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def ds(tiny_dataset, tmp_path):
    """A private copy of the tiny dataset (2 shards) that tests may label."""
    return shutil.copytree(tiny_dataset, tmp_path / "ds")


def test_shard_lists_round_trip():
    assert parse_shard_list("0-2,5, 4", 6) == [0, 1, 2, 4, 5]
    assert format_shard_list([5, 0, 2, 1, 4]) == "0-2,4-5" and format_shard_list([3]) == "3"
    for bad in ("6", "2-1", "a", "1-x", ""):
        with pytest.raises(ValueError, match="--shards"):
            parse_shard_list(bad, 6)


def test_split_tasks_is_contiguous_and_balanced():
    assert S.split_tasks(range(7), 3) == ((0, 1), (2, 3), (4, 5, 6))
    assert S.split_tasks([9, 2, 4], 10) == ((2,), (4,), (9,))
    assert S.split_tasks([], 4) == ()


def test_plan_follows_the_stage_graph():
    deps = {"frustum": (), "ccl": (), "dcs": (), "spg": ("dcs",)}
    jobs = S.plan_jobs({s: [0, 1, 2] for s in deps}, deps, 2)
    assert [(j.stage, j.after) for j in jobs] == [("frustum", ()), ("ccl", ()), ("dcs", ()), ("spg", ("dcs",))]
    assert jobs[0].tasks == ((0,), (1, 2))
    # resume: dcs complete -> not submitted, spg needs no afterok; dcs incomplete on shard 1 -> afterok on it
    assert [(j.stage, j.tasks, j.after) for j in S.plan_jobs({"dcs": [], "spg": [2]}, deps, 10)] == [
        ("spg", ((2,),), ())]
    assert [(j.stage, j.tasks, j.after) for j in S.plan_jobs({"dcs": [1], "spg": [0, 1, 2]}, deps, 10)] == [
        ("dcs", ((1,),), ()), ("spg", ((0,), (1,), (2,)), ("dcs",))]


def test_script_renders_array_options_dependency_and_shards():
    job = S.StageJob("spg", ((0, 1, 2), (5,), (7, 9)), ("dcs",))
    opts = S.SbatchOptions(partition="gpu", time="01:00:00", mem="8G", cpus_per_task=4, array_parallelism=2,
                           extra=("--account=proj",), setup="module load x")
    text = S.render_script(job, "/d/ds", opts, ["/venv/bin/mwsis"], ["--set", "spg.fg_thresh=0.05 "], ["41", "42"])
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for opt in ("--array=0-2%2", "--output=/d/ds/slurm/logs/spg/%A_%a.out", "--chdir=/d/ds", "--cpus-per-task=4",
                "--partition=gpu", "--time=01:00:00", "--mem=8G", "--dependency=afterok:41:42", "--account=proj",
                "--kill-on-invalid-dep=yes", "--job-name=mwsis-spg"):
        assert f"#SBATCH {opt}" in lines, opt
    sbatch_end = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert all(not line.startswith("#SBATCH") for line in lines[sbatch_end + 1:])  # sbatch stops at the first command
    assert lines[sbatch_end + 1:sbatch_end + 3] == ["module load x", "set -uo pipefail"]
    assert "SHARDS=(0-2 5 7,9)" in lines
    assert ("/venv/bin/mwsis stage spg --data /d/ds --shards \"${SHARDS[$SLURM_ARRAY_TASK_ID]}\" "
            "--set 'spg.fg_thresh=0.05 ' || rc=$?") in lines
    assert lines[-1] == 'exit "$rc"'
    # no dependency, no parallelism cap, cluster defaults left out
    plain = S.render_script(S.StageJob("dcs", ((0,),)), "/d", S.SbatchOptions(), ["mwsis"], [], [])
    assert "#SBATCH --array=0-0" in plain and "dependency" not in plain and "--partition" not in plain


def test_dry_run_prints_chained_scripts_and_writes_nothing(ds):
    r = _cli("slurm", "pseudolabels", "--data", ds, "--stages", "spg,frustum", "--dry-run", "--partition", "p1",
             "--time", "0:10:00", "--mem", "2G", "--cpus-per-task", 2, "--array-parallelism", 1, "--max-tasks", 1,
             "--set", "spg.fg_thresh=0.2")
    heads = [line for line in r.output.splitlines() if line.startswith("# ---- stage")]
    assert [h.split()[3].rstrip(":") for h in heads] == ["frustum", "dcs", "spg"]  # graph order, dcs added
    scripts = r.output.split("# ---- stage")[1:]
    assert "--dependency" not in scripts[0] + scripts[1]
    assert "#SBATCH --dependency=afterok:<jobid-of-dcs>" in scripts[2]
    for s in scripts:
        for opt in ("--partition=p1", "--time=0:10:00", "--mem=2G", "--cpus-per-task=2", "--array=0-0%1"):
            assert f"#SBATCH {opt}" in s
        assert "SHARDS=(0-1)" in s and "--set spg.fg_thresh=0.2" in s
    assert "stage sam" not in r.output and not (ds / "slurm").exists()


def test_fused_dry_run_is_one_job_running_every_stage_per_shard(ds):
    r = _cli("slurm", "pseudolabels", "--data", ds, "--stages", "spg,frustum", "--fused", "--dry-run",
             "--set", "spg.fg_thresh=0.2")
    scripts = r.output.split("# ---- stage")[1:]
    assert len(scripts) == 1 and scripts[0].split(":")[0].strip() == "frustum+dcs+spg"
    assert "pseudolabels --stages frustum,dcs,spg --data" in scripts[0] and "--no-eval" in scripts[0]
    assert '--shards "${SHARDS[$SLURM_ARRAY_TASK_ID]}" --set spg.fg_thresh=0.2' in scripts[0]
    assert "--dependency" not in scripts[0] and "logs/frustum+dcs+spg/%A_%a.out" in scripts[0]


def test_resume_of_a_fused_submission_stays_fused_and_covers_every_incomplete_shard(ds):
    _cli("stage", "dcs", "--data", ds, "--shards", "0")
    rec = {"id": 1, "kind": "pseudolabels", "dataset": str(ds), "sbatch": {"max_tasks": 5},
           "jobs": [{"stage": "dcs+spg", "stages": ["dcs", "spg"], "job_id": "10", "after": [],
                     "tasks": [[0], [1]], "config": None, "sets": [], "script": "", "log": ""}]}
    S.write_record(ds, rec)
    r = _cli("slurm", "resume", "--data", ds, "--dry-run")
    scripts = r.output.split("# ---- stage")[1:]
    assert len(scripts) == 1 and "pseudolabels --stages dcs,spg" in scripts[0] and "SHARDS=(0 1)" in scripts[0]
    r = _cli("slurm", "resume", "--data", ds, "--dry-run", "--per-stage")
    assert [s.split(":")[0].strip() for s in r.output.split("# ---- stage")[1:]] == ["dcs", "spg"]


def test_classify_counts_a_fused_jobs_shards_for_each_stage(tmp_path):
    rec = [{"jobs": [{"stage": "dcs+spg", "stages": ["dcs", "spg"], "job_id": "7", "tasks": [[0], [1]]}]}]
    st = S.classify(str(tmp_path), 2, {"dcs": {0, 1}, "spg": {0}}, rec, {}, None, {"7_1": 1})
    assert st["stages"]["dcs"]["done"] == 2 and st["stages"]["spg"]["failed"] == 1
    assert st["failed_tasks"] == [{"stage": "spg", "job_id": "7", "task_id": 1, "state": "FAILED (exit 1)",
                                   "shards": [1], "log": str(tmp_path / "slurm" / "logs" / "dcs+spg" / "7_1.out"),
                                   "log_exists": False}]


def test_missing_sbatch_names_the_command_and_the_local_way(ds, tmp_path):
    r = _cli("slurm", "pseudolabels", "--data", ds, "--stages", "frustum", ok=False,
             env={"PATH": str(tmp_path)})
    assert r.exit_code == 1 and "`sbatch` not found" in r.output and "mwsis pseudolabels --data" in r.output
    r = _cli("slurm", "status", "--data", ds, ok=False)
    assert r.exit_code == 1 and "no submissions recorded" in r.output


def test_stage_shards_option_labels_exactly_those_shards(ds):
    _cli("stage", "frustum", "--data", ds, "--shards", "1")
    assert sorted(p.name for p in (ds / "labels" / "frustum").glob("*.parquet")) == ["synth-s0-0001.parquet"]
    r = _cli("stage", "frustum", "--data", ds, "--shards", "0", "--num-shards", "2", ok=False)
    assert r.exit_code == 2 and "excludes" in r.output
    r = _cli("stage", "frustum", "--data", ds, "--shards", "2", ok=False)
    assert r.exit_code == 2 and "outside 0-1" in r.output


def test_resume_dry_run_resubmits_only_incomplete_shards(ds):
    _cli("stage", "frustum", "--data", ds, "--shards", "0")
    _cli("stage", "dcs", "--data", ds)
    rec = {"id": 1, "kind": "pseudolabels", "dataset": str(ds), "sbatch": {"partition": "p9", "max_tasks": 5},
           "jobs": [{"stage": s, "job_id": str(10 + i), "after": [], "tasks": [[0], [1]], "config": None,
                     "sets": [], "script": "", "log": ""} for i, s in enumerate(["frustum", "dcs", "spg"])]}
    S.write_record(ds, rec)
    r = _cli("slurm", "resume", "--data", ds, "--dry-run")
    scripts = {s.split(":")[0].split()[-1]: s for s in r.output.split("# ---- stage")[1:]}
    assert set(scripts) == {"frustum", "spg"} and "stage dcs: complete, not resubmitted" in r.output
    assert "SHARDS=(1)" in scripts["frustum"] and "SHARDS=(0 1)" in scripts["spg"]
    assert "--dependency" not in scripts["spg"]  # dcs is complete: nothing to wait for
    assert "#SBATCH --partition=p9" in scripts["spg"]  # recorded sbatch settings are reused


def test_classify_counts_shards_and_names_failed_tasks(tmp_path):
    rec = [{"jobs": [{"stage": "dcs", "job_id": "7", "tasks": [[0, 1], [2], [3]]}]},
           {"jobs": [{"stage": "dcs", "job_id": "9", "tasks": [[3]]}]}]
    log = S.task_log(tmp_path, "dcs", "7", 1)
    log.parent.mkdir(parents=True)
    log.write_text("killed")
    queue = {"7_0": ("COMPLETED", "None"), "7_1": ("CANCELLED", "None"), "9_0": ("RUNNING", "None")}
    st = S.classify(str(tmp_path), 5, {"dcs": {0, 1}}, rec, queue, None, {})
    assert {k: st["stages"]["dcs"][k] for k in ("done", "running", "pending", "failed", "missing")} == {
        "done": 2, "running": 1, "pending": 0, "failed": 1, "missing": 1}
    assert st["stages"]["dcs"]["incomplete"] == [2, 3, 4] and st["live_tasks"] == ["9_0"] and not st["complete"]
    assert st["failed_tasks"] == [{"stage": "dcs", "job_id": "7", "task_id": 1, "state": "CANCELLED", "shards": [2],
                                   "log": str(log), "log_exists": True}]
    # without squeue's memory: sacct wins, else the exit code the task wrote, else "never ran"
    assert S.task_state("7_1", {}, {"7_1": "TIMEOUT"}, {"7_1": 1})[1] == "TIMEOUT"
    assert S.task_state("7_1", {}, None, {"7_1": 3})[1] == "FAILED (exit 3)"
    assert S.task_state("7_1", {}, None, {}, started=False)[1].startswith("NEVER RAN")
    assert "resume" in S.format_status(st) and str(log) in S.format_status(st)


def test_sacct_array_ids_expand():
    assert S.expand_task_ids("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert S.expand_task_ids("12_3") == ["12_3"]


def test_slurm_commands_have_help():
    for args in (["slurm"], ["slurm", "pseudolabels"], ["slurm", "status"], ["slurm", "resume"]):
        r = _cli(*args, "--help")
        assert "Usage:" in r.output and len(r.output) > 400, args
