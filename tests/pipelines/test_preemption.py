"""Preemption: a signal (or RUN/PREEMPT) stops training at the next step boundary with a mid-epoch checkpoint
and exit status 75; resuming gives bit-identical final weights to an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mwsis.data.store import open_dataset
from mwsis.pipelines.training.train2d import Train2DConfig, train_2d
from mwsis.pipelines.training.train3d import Train3DConfig, train_3d
from mwsis.pipelines.training.distributed import PREEMPT_FLAG, PREEMPTED_EXIT, DistInfo
from mwsis.pipelines.training.trainer import Hook, Trainer
from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, load_config, read_metrics
from mwsis.train3d.ema import EMAConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ------------------------------------------------------------------- the Trainer loop on a toy model


class _Toy(Trainer):
    """A model whose step draws from torch's global RNG (dropout) and whose batch stream does too, so a
    resume that restores the RNG at the wrong moment, or replays the wrong batches, changes the weights."""

    kind = "toy"

    def __init__(self, run, epochs=3, hooks=()):
        super().__init__(run, run, _Cfg(epochs), hooks)

    def setup(self):
        return DistInfo(), torch.device("cpu"), None, []

    def num_steps_per_epoch(self):
        return 4

    def build_model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))

    def build_optimizer(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=0.02, momentum=0.5)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)

    def batches(self, epoch):
        rng = np.random.default_rng([0, epoch])
        for _ in range(5):
            x = torch.as_tensor(rng.normal(size=(3, 4)), dtype=torch.float32)
            yield x, x.sum(1, keepdim=True) + torch.randn(3, 1) * 0.01

    def run_step(self, batch):
        x, y = batch
        self.model.train()
        return {"loss_mse": ((self.model(x) - y) ** 2).mean()}


def test_a_trainer_without_run_step_fails_at_construction_naming_it(tmp_path):
    class NoStep(Trainer):  # everything but the forward pass
        setup, num_steps_per_epoch = _Toy.setup, _Toy.num_steps_per_epoch
        build_model, build_optimizer, batches = _Toy.build_model, _Toy.build_optimizer, _Toy.batches

    with pytest.raises(TypeError, match="run_step"):
        NoStep(tmp_path / "run", tmp_path / "run", _Cfg())
    assert not (tmp_path / "run").exists()


@dataclass(frozen=True)
class _Cfg:
    epochs: int = 3
    seed: int = 0
    clip_grad: float | None = None
    max_steps_per_epoch: int | None = None
    ema: EMAConfig = EMAConfig()


def _fit(run, hooks=(), resume=False, epochs=3):
    toy = _Toy(run, epochs, hooks)
    return toy, toy.train(resume=resume, show_progress=False)


@pytest.mark.parametrize("how, at", [("SIGUSR1", 6), ("SIGTERM", 2), ("flag", 9), ("SIGUSR1", 4)])
def test_trainer_stops_at_the_step_and_resumes_identically(tmp_path, how, at):
    """Steps 1-indexed, 4 per epoch: 6 and 2 and 9 are mid-epoch, 4 ends epoch 1 (stop after its checkpoint)."""
    full, _ = _fit(tmp_path / "full")
    torch.manual_seed(123)  # the resumed run must not depend on the RNG it starts with

    run = tmp_path / "part"

    class Stop(Hook):
        def after_step(self, trainer, metrics):
            if trainer.state["step"] + 1 == at:  # the loop increments state["step"] after the step
                if how == "flag":
                    (run / PREEMPT_FLAG).touch()
                else:
                    os.kill(os.getpid(), getattr(signal, how))

    _, res = _fit(run, [Stop()])
    assert res["preempted"] and res["steps"] == at
    saved = load_checkpoint(latest_checkpoint(run))
    if at % 4:
        assert latest_checkpoint(run).name == f"step-{at:08d}.pt" and saved["state"]["batch"] == at % 4
    else:
        assert latest_checkpoint(run).name == f"epoch-{at // 4:04d}.pt" and "batch" not in saved["state"]
    assert not (run / PREEMPT_FLAG).exists()  # honoured: a later --resume does not stop at once
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the loop restores the handlers it set

    again, res = _fit(run, resume=True)
    assert not res["preempted"] and again.state == {"epoch": 3, "step": 12}
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert [r["step"] for r in read_metrics(run) if r["name"] == "loss"] == list(range(1, 13))


# ------------------------------------------------------------------ real trainers, real signals


def _interrupt(cmd: list[str], run: Path, after_step: int, sig: int, timeout: float = 300) -> int:
    """Run ``cmd``; once metrics.csv shows ``after_step``, send ``sig``; return the exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.csv").exists() and any(r["step"] >= after_step for r in read_metrics(run)):
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=max(deadline - time.time(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == PREEMPTED_EXIT, out.decode()[-3000:]
    return proc.returncode


def _same_weights(a_run: Path, b_run: Path) -> None:
    a, b = load_checkpoint(latest_checkpoint(a_run)), load_checkpoint(latest_checkpoint(b_run))
    assert a["state"] == b["state"]
    for part in ("model", "teacher"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"


def test_train3d_sigusr1_preempt_resume_equals_uninterrupted(labelled, tmp_path):
    """A real SIGUSR1 to `mwsis train-3d` mid-epoch; the run also crosses a PVC round after resuming."""
    sets = ["epochs=2", "frames_per_step=1"]  # 4 steps per epoch; PVC round after epoch 1
    other = tmp_path / "ds2"  # PVC writes into the dataset: one copy per run
    shutil.copytree(labelled, other)
    part, full = tmp_path / "part", tmp_path / "full"
    cmd = [sys.executable, "-m", "mwsis.pipelines.cli.main", "train-3d", "--data", str(other), "--out", str(part),
           "--config", str(CONFIGS / "train3d-tiny.yaml"), *[a for s in sets for a in ("--set", s)]]
    _interrupt(cmd, part, 1, signal.SIGUSR1)
    saved = load_checkpoint(latest_checkpoint(part))
    assert saved["state"]["step"] < 8  # stopped early, with a checkpoint at a step boundary
    cfg = load_config(Train3DConfig, CONFIGS / "train3d-tiny.yaml", sets)
    summary = train_3d(other, part, cfg, resume=True, show_progress=False)
    assert not summary["preempted"] and summary["pvc_rounds"] == [1]
    train_3d(labelled, full, cfg, show_progress=False)
    _same_weights(full, part)


def test_train2d_sigterm_preempt_resume_equals_uninterrupted(labelled, tmp_path):
    """SIGTERM (what SLURM sends at the time limit and torchrun forwards) to `mwsis train-2d`."""
    sets = ["epochs=2", "images_per_step=1", "max_steps_per_epoch=3"]
    part, full = tmp_path / "part", tmp_path / "full"
    cmd = [sys.executable, "-m", "mwsis.pipelines.cli.main", "train-2d", "--data", str(labelled), "--out", str(part),
           "--config", str(CONFIGS / "train2d-tiny.yaml"), *[a for s in sets for a in ("--set", s)]]
    _interrupt(cmd, part, 1, signal.SIGTERM)
    assert load_checkpoint(latest_checkpoint(part))["state"]["step"] < 6
    cfg = load_config(Train2DConfig, CONFIGS / "train2d-tiny.yaml", sets)
    assert not train_2d(labelled, part, cfg, resume=True, show_progress=False)["preempted"]
    train_2d(labelled, full, cfg, show_progress=False)
    _same_weights(full, part)


def test_ddp_flag_preempt_and_pvc_round_resume_equals_uninterrupted(labelled, tmp_path):
    """torchrun, 2 CPU ranks: RUN/PREEMPT (what the SLURM trap touches) is read by rank 0 and stops both
    ranks at the same step; the PVC round after epoch 1 has each rank export and vote on its own shards."""
    other = tmp_path / "ds2"
    shutil.copytree(labelled, other)

    def cmd(data, run, port, resume=False):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                "-m", "mwsis.pipelines.cli.main", "train-3d", "--data", str(data), "--out", str(run),
                "--config", str(CONFIGS / "train3d-tiny.yaml"), "--set", "epochs=2", "--set", "frames_per_step=1",
                *(["--resume"] if resume else [])]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    part, full = tmp_path / "part", tmp_path / "full"
    proc = subprocess.Popen(cmd(other, part, 29571), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if (part / "metrics.csv").exists() and any(r["step"] >= 1 for r in read_metrics(part)):
                (part / PREEMPT_FLAG).touch()
                break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert proc.returncode != 0 and "exitcode  : 75" in text, text[-3000:]  # torchrun reports the workers' 75
    assert load_checkpoint(latest_checkpoint(part))["state"]["step"] < 4 and not (part / PREEMPT_FLAG).exists()
    for c in (cmd(other, part, 29572, resume=True), cmd(labelled, full, 29573)):
        r = subprocess.run(c, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert r.stdout.count('"labels": "pvc"') == 2  # every rank's summary: all trained epoch 2 on PVC labels
    _same_weights(full, part)
    assert load_checkpoint(latest_checkpoint(full))["state"]["labels"] == "pvc"
    ds = open_dataset(labelled)
    assert all((labelled / "labels" / "pvc" / f"{s.name}.parquet").exists() for s in ds.manifest.shards)
