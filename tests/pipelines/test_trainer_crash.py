"""SIGKILL the trainers, `--resume`, and get the run an uninterrupted one gives (tiny configs, CPU, 1 thread).

Same checkpoint names, every tensor of the final checkpoint equal (weights, EMA teacher, optimizer, scheduler,
RNG state), metrics.csv with exactly one row per (step, metric) and the same values. Kills land after the first
checkpoint (the test polls for it), in the middle of writing a checkpoint (``os.replace`` wrapped: the process
halves the temp file and SIGKILLs itself before the rename), and between the checkpoint's rename and the
``latest.json`` update; ``latest.json`` must always name a whole, loadable checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from mwsis.pipelines.training.run import latest_checkpoint, load_checkpoint, read_metrics

from _kill import KILL_BEFORE_RENAME

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
REPO = Path(__file__).resolve().parents[2]
# the mwsis CLI; with a suffix, SIGKILLs itself right before the Nth rename onto a file whose name ends in it
INJECT = KILL_BEFORE_RENAME + r"""
sys.argv = ["mwsis", *args]
from mwsis.pipelines.cli.main import main
main()
"""
TRAIN3D = ["train-3d", "--config", str(REPO / "configs/train3d-tiny.yaml"), "--set", "epochs=3",
           "--set", "max_steps_per_epoch=3", "--set", "cpu_threads=1"]
TRAIN2D = ["train-2d", "--config", str(REPO / "configs/train2d-tiny.yaml"), "--set", "epochs=2",
           "--set", "max_steps_per_epoch=1", "--set", "cpu_threads=1", "--set", "train_short_sides=[96]",
           "--set", "max_long_side=128"]


def mwsis(args, suffix: str = "", nth: int = 0) -> subprocess.Popen:
    err = tempfile.TemporaryFile()  # not a pipe: an unread pipe fills up and blocks the run
    proc = subprocess.Popen([sys.executable, "-c", INJECT, suffix, str(nth), *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=err)
    proc.err_file = err
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    proc.err_file.seek(0)
    return proc.err_file.read().decode(errors="replace")[-4000:]


def run(args, suffix: str = "", nth: int = 0) -> int:
    proc = mwsis(args, suffix, nth)
    proc.wait(timeout=300)
    assert proc.returncode in (0, -9), stderr_of(proc)
    return proc.returncode


def kill_after_first_checkpoint(args, run_dir: Path, final: str) -> None:
    proc = mwsis(args)
    pointer = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not pointer.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, f"ended before the kill (rc {proc.returncode}): {stderr_of(proc)}"
    assert not (run_dir / "checkpoints" / final).exists(), "killed too late: the run had finished"


def assert_latest_is_whole(run_dir: Path, name: str) -> None:
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text()) == {"checkpoint": name}
    assert load_checkpoint(latest_checkpoint(run_dir))["state"]["epoch"] == int(name[6:10])


def assert_equal(a, b, where: str = "checkpoint") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(run_dir: Path, ref: Path) -> None:
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in (ref / "checkpoints").iterdir() if not p.name.startswith("."))
    assert latest_checkpoint(run_dir).name == latest_checkpoint(ref).name
    assert_equal(load_checkpoint(latest_checkpoint(run_dir)), load_checkpoint(latest_checkpoint(ref)))
    rows, ref_rows = read_metrics(run_dir), read_metrics(ref)
    keys = [(r["step"], r["name"]) for r in rows]
    assert len(keys) == len(set(keys)), "a step logged twice"
    assert rows == ref_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mwsis.pipelines.labels.runner import run_stages
    from mwsis.pipelines.convert.synth import synth_dataset

    d = tmp_path_factory.mktemp("train") / "ds"
    synth_dataset(d, "tiny", frames=4, seed=0, frames_per_sequence=1, show_progress=False)
    assert all(r.status == "done" for r in run_stages(d, ["spg"], show_progress=False))
    return d


def copies(data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """One dataset each for the reference and the killed run: the 3D trainer's PVC rounds write predictions
    and labels into its dataset, and the two runs go on at the same time."""
    return shutil.copytree(data, tmp_path / "ref-ds"), shutil.copytree(data, tmp_path / "ds")


def test_train3d_killed_in_and_between_checkpoint_writes_resumes_to_the_same_run(data, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    ref_data, data = copies(data, tmp_path)
    reference = mwsis([*TRAIN3D, "--data", ref_data, "--out", ref])  # alongside: every kill below is injected
    args = [*TRAIN3D, "--data", data, "--out", out]
    # after the first checkpoint, mid-write of epoch-0002.pt: latest.json still names the whole epoch-0001.pt
    assert run(args, "epoch-0002.pt", 1) == -9
    assert_latest_is_whole(out, "epoch-0001.pt")
    assert not (out / "checkpoints" / "epoch-0002.pt").exists()
    # epoch-0002.pt renamed, killed before latest.json follows: resume still starts from epoch-0001.pt
    assert run([*args, "--resume"], "latest.json", 1) == -9
    assert_latest_is_whole(out, "epoch-0001.pt")
    assert run([*args, "--resume"]) == 0
    assert reference.wait(timeout=300) == 0, stderr_of(reference)
    assert_same_run(out, ref)


def test_train2d_killed_after_first_checkpoint_resumes_to_the_same_run(data, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "run"
    ref_data, data = copies(data, tmp_path)
    reference = mwsis([*TRAIN2D, "--data", ref_data, "--out", ref])
    args = [*TRAIN2D, "--data", data, "--out", out]
    kill_after_first_checkpoint(args, out, "epoch-0002.pt")  # from outside, as a scheduler would
    assert_latest_is_whole(out, "epoch-0001.pt")
    assert run([*args, "--resume"]) == 0
    assert reference.wait(timeout=300) == 0, stderr_of(reference)
    assert_same_run(out, ref)
    shutil.rmtree(ref)  # 2 x 143 MB of checkpoints each
    shutil.rmtree(out)


def test_train3d_killed_before_its_first_checkpoint_logs_each_step_once(data, tmp_path):
    out = tmp_path / "run"
    args = [*TRAIN3D, "--set", "epochs=2", "--set", "max_steps_per_epoch=2", "--data", data, "--out", out]
    assert run(args, "epoch-0001.pt", 1) == -9  # steps 1-2 logged, their checkpoint never renamed
    assert run([*args, "--resume"]) == 0  # no checkpoint: starts over
    keys = [(r["step"], r["name"]) for r in read_metrics(out)]
    assert len(keys) == len(set(keys)), "steps of the killed run logged twice"
    assert not list((out / "checkpoints").glob(".*.tmp")), "the killed write's temp checkpoint is still there"
