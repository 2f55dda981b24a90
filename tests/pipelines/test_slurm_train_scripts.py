"""`mwsis slurm train-3d|train-2d` without a cluster: the batch script's text, its shell logic (trap, wait,
requeue) against stub srun/scontrol, and the CLI's dry run and errors."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mwsis.pipelines.cli.slurm_train import train_2d_slurm_cmd, train_3d_slurm_cmd
from mwsis.pipelines.slurm.train import TrainJob, render_train_script

TINY3D = Path(__file__).resolve().parents[2] / "configs" / "train3d-tiny.yaml"


def test_multi_node_gpu_script():
    job = TrainJob("train-3d", "/data/d", "/runs/r 1", nodes=2, gpus_per_node=4, partition="gpu", time="04:00:00",
                   mem="200G", cpus_per_task=32, config="/c/waymo.yaml", sets=("epochs=24", "cscs.round=latest"),
                   python="/venv/bin/python", sbatch_args=("--account=proj",), setup="module load cuda")
    s = render_train_script(job)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:4", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --partition=gpu", "#SBATCH --time=04:00:00",
                 "#SBATCH --mem=200G", "#SBATCH --cpus-per-task=32", "#SBATCH --account=proj",
                 "#SBATCH '--output=/runs/r 1/slurm/%x-%j.out'", "#SBATCH --open-mode=append", "module load cuda"):
        assert line in s.splitlines(), line
    assert 'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in s
    assert ('/venv/bin/python -m torch.distributed.run --nnodes="$SLURM_NNODES" --nproc-per-node=4 '
            '--rdzv-backend=c10d --rdzv-endpoint="$HEAD:$PORT" --rdzv-id="$SLURM_JOB_ID" --max-restarts=0') in s
    assert ("-m mwsis.pipelines.cli.main train-3d --data /data/d --out '/runs/r 1' --resume --config /c/waymo.yaml "
            "--set epochs=24 --set cscs.round=latest &") in s
    assert 'scontrol requeue "$SLURM_JOB_ID"' in s and "PORT=$((29500 + SLURM_JOB_ID % 10000))" in s
    subprocess.run(["bash", "-n"], input=s, text=True, check=True)  # valid shell


def test_cpu_script_has_one_worker_and_no_gres():
    s = render_train_script(TrainJob("train-2d", "/d", "/r", gpus_per_node=0, port=31000, signal_seconds=120))
    assert "--gres" not in s and "--nproc-per-node=1 " in s and "PORT=31000" in s
    assert "#SBATCH --signal=B:USR1@120" in s and " train-2d --data /d --out /r --resume &" in s
    with pytest.raises(ValueError, match="kind"):
        render_train_script(TrainJob("train-4d", "/d", "/r"))


def _stubs(tmp_path: Path, srun_body: str) -> dict:
    """PATH with stub srun/scontrol; scontrol records its arguments."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text(f"#!/bin/bash\n{srun_body}\n")
    (bin_ / "scontrol").write_text(f'#!/bin/bash\n[ "$1" = show ] && echo node7 && exit 0\n'
                                   f'echo "$@" >> {tmp_path}/scontrol.calls\n')
    for p in bin_.iterdir():
        p.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "node[7-8]", "SLURM_NNODES": "2"}


def test_script_traps_usr1_touches_flag_waits_and_requeues(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "PREEMPT").touch()  # a leftover from an earlier start: removed before training starts
    # the stub trainer: gone once it sees the flag (as fit() does at its next step), with torchrun's exit 1
    env = _stubs(tmp_path, f'sleep 0.5; while [ ! -e {run}/PREEMPT ]; do sleep 0.05; done; echo "$@" > {tmp_path}/srun.args; exit 1')
    script = tmp_path / "job.sbatch"
    script.write_text(render_train_script(TrainJob("train-3d", "/d", str(run), nodes=2, gpus_per_node=2)))
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.3)
    assert not (run / "PREEMPT").exists()
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@T delivers to the batch shell
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert (tmp_path / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    args = (tmp_path / "srun.args").read_text()
    assert "--rdzv-endpoint=node7:" in args and "--nnodes=2" in args and "--nproc-per-node=2" in args
    assert "trainer exited with 1; requeueing job 4242" in out.decode()


def test_script_without_signal_exits_with_the_trainer_status(tmp_path):
    env = _stubs(tmp_path, "exit 3")
    script = tmp_path / "job.sbatch"
    script.write_text(render_train_script(TrainJob("train-2d", "/d", str(tmp_path / "run"))))
    r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and not (tmp_path / "scontrol.calls").exists()


def test_cli_dry_run_validates_and_writes_nothing(tiny_dataset, tmp_path, monkeypatch):
    run = tmp_path / "run"
    base = ["--data", str(tiny_dataset), "--out", str(run), "--config", str(TINY3D), "--dry-run"]
    r = CliRunner().invoke(train_3d_slurm_cmd, [*base, "--nodes", "2", "--gpus-per-node", "4", "--set", "epochs=2"])
    assert r.exit_code == 0, r.output
    assert "#SBATCH --gres=gpu:4" in r.output and f"--config {TINY3D}" in r.output and not run.exists()
    r = CliRunner().invoke(train_3d_slurm_cmd, [*base, "--set", "epochz=2"])
    assert r.exit_code == 2 and "epochz" in r.output  # checked before anything is submitted
    r = CliRunner().invoke(train_2d_slurm_cmd, ["--data", str(tiny_dataset), "--out", str(run), "--dry-run",
                                                "--set", "export.every=2", "--set", "cscs_3d=latest"])
    assert r.exit_code == 0 and "train-2d --data" in r.output
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    r = CliRunner().invoke(train_3d_slurm_cmd, base[:-1])
    assert r.exit_code == 1 and "sbatch" in r.output and "not found" in r.output


def test_script_on_sigterm_stops_the_trainer_without_requeue(tmp_path):
    """scancel sends TERM: the trainer is told to checkpoint (flag), but a cancelled job must not come back."""
    run = tmp_path / "run"
    run.mkdir()
    env = _stubs(tmp_path, f"while [ ! -e {run}/PREEMPT ]; do sleep 0.05; done; exit 1")
    script = tmp_path / "job.sbatch"
    script.write_text(render_train_script(TrainJob("train-3d", "/d", str(run))))
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no requeue" in out.decode(), out.decode()
    assert not (tmp_path / "scontrol.calls").exists()
