"""One writer per output: the (stage, shard) lock of the runner and the dataset lock of the frame-shard writer.

Two runs of the same stage on the same dataset (two SLURM array tasks by mistake) must write every shard once,
leave valid bytes identical to a single run, and both exit 0: the second waits for the first, then skips.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


from mwsis.data import store
from mwsis.data.label_store import label_shard_path
from mwsis.data import locks
from mwsis.data.locks import exclusive_lock, lock_path
from mwsis.data.store import open_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
WAITING = "is being written by another process"
# `mwsis synth` (its function: the CLI module imports torch, 3+ s a start) or `mwsis pseudolabels`, logging as the CLI
RUN = r"""
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "synth":
    from mwsis.pipelines.convert.synth import synth_dataset
    synth_dataset(args[0], "tiny", frames=4, seed=0, frames_per_sequence=1, show_progress=False)
else:
    from mwsis.pipelines.cli.labels import pseudolabels_cmd
    pseudolabels_cmd.main(args=args, prog_name="mwsis pseudolabels")
"""
HOLD = r"""
import sys, time
from mwsis.data.locks import exclusive_lock
with exclusive_lock(sys.argv[1], "test"):
    print("locked", flush=True)
    time.sleep(120)
"""


def visible_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def start(cmd: str, args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, cmd, *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def wait_for(pred, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_two_while_locked(dest: Path, cmd: str, args, tmp_path: Path) -> list[str]:
    """Hold ``dest``'s lock until two runs of ``cmd`` both wait for it, then let them race; their stderr."""
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    with exclusive_lock(dest, "test") as held:
        assert held
        procs = [start(cmd, args, log) for log in logs]
        wait_for(lambda: all(WAITING in log.read_text() for log in logs) or any(p.poll() is not None for p in procs),
                 "both runs to wait for the lock")
    for p in procs:
        assert p.wait(timeout=120) == 0, [log.read_text() for log in logs]
    return [log.read_text() for log in logs]


def test_two_pseudolabel_runs_write_each_shard_once(spg_reference, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(spg_reference / "frames", data)
    first = open_dataset(data).manifest.shards[0].name
    errs = run_two_while_locked(label_shard_path(data, "dcs", first), "labels",
                                ["--data", data, "--stages", "spg", "--no-eval"], tmp_path)
    for err in errs:  # the waiting run says who holds the lock
        assert re.search(rf"shard {first} of stage dcs {WAITING} \(pid {os.getpid()} on host ", err), err
    summary = r"(\d+) shards written, (\d+) up to date or skipped"  # the last line of `mwsis pseudolabels`
    counts = [tuple(map(int, re.search(summary, e).groups())) for e in errs]
    assert sum(w for w, _ in counts) == 8 and sum(s for _, s in counts) == 8, counts  # 4 shards x (dcs, spg)
    assert visible_bytes(data) == visible_bytes(spg_reference / "labels")
    assert not list(data.rglob("*.tmp"))


def test_two_synth_runs_into_one_dataset(spg_reference, tmp_path):
    out = tmp_path / "ds"
    errs = run_two_while_locked(out / store.MANIFEST, "synth", [out], tmp_path)
    written = [int(re.search(r"wrote (\d+) shards", e).group(1)) for e in errs]
    assert sorted(written) == [0, 4], errs  # the second waited, then resumed a finished dataset
    assert visible_bytes(out) == visible_bytes(spg_reference / "frames")


def test_waiter_names_the_holder_and_goes_on_when_it_ends(tmp_path, caplog):
    dest = tmp_path / "x.parquet"
    got = threading.Event()

    def second():
        with exclusive_lock(dest, "shard x of stage t"):  # flock conflicts between open files, threads too
            got.set()

    with caplog.at_level(logging.INFO, logger="mwsis.data.store"):
        with exclusive_lock(dest, "first") as held:
            assert held
            assert lock_path(dest).read_text().startswith(f"pid {os.getpid()} on host ")
            t = threading.Thread(target=second)
            t.start()
            wait_for(lambda: WAITING in caplog.text, "the waiting message", 10)
            time.sleep(0.1)
            assert not got.is_set()
        t.join(10)
    assert got.is_set()
    assert f"shard x of stage t {WAITING} (pid {os.getpid()} on host" in caplog.text
    assert lock_path(dest).read_text() == ""  # released: no stale holder named


def test_a_killed_holder_releases_its_lock(tmp_path):
    dest = tmp_path / "x.parquet"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(dest)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    with exclusive_lock(dest, "test", wait=False) as held:
        assert not held  # busy
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive_lock(dest, "test", wait=False) as held:
        assert held  # the kernel dropped the dead process's lock: no stale lock to clean by hand


def test_stale_temps_are_removed_only_under_the_lock(tmp_path, tiny_dataset):
    from mwsis.data.integrity import stamp_path
    from mwsis.pipelines.labels.runner import run_stage_shard
    from mwsis.pipelines.labels.stages import StagesConfig

    data = tmp_path / "ds"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns("labels"))
    name = open_dataset(data).manifest.shards[0].name
    dest = label_shard_path(data, "ccl", name)
    dest.parent.mkdir(parents=True)
    # a writer killed mid-shard, and one killed while writing the shard's checksum stamp (just before the rename)
    stale = [dest.parent / f".{dest.name}.999999-dead.tmp", dest.parent / f".{stamp_path(dest).name}.999999-dead.tmp"]

    def leave_temps():
        for p in stale:
            p.write_bytes(b"half a file")

    leave_temps()
    cfg = StagesConfig()
    assert run_stage_shard(str(data), "ccl", cfg, 0).status == "done"
    assert not any(p.exists() for p in stale)
    leave_temps()  # finished shard, temps from a killed --force rerun, lock held: kept
    with exclusive_lock(dest, "another writer"):
        assert run_stage_shard(str(data), "ccl", cfg, 0).status == "skipped"
        assert all(p.exists() for p in stale)
    assert run_stage_shard(str(data), "ccl", cfg, 0).status == "skipped"  # lock free: removed
    assert not any(p.exists() for p in stale)


def test_dead_temps_of_a_frame_stamp_cache_are_removed_young_ones_kept(tmp_path, tiny_dataset):
    from mwsis.data.integrity import check_file, stamp_path

    data = tmp_path / "ds"
    shutil.copytree(tiny_dataset, data, ignore=shutil.ignore_patterns("labels"))
    info = open_dataset(data).manifest.shards[0]
    shard = data / info.path
    stamp_path(shard).unlink(missing_ok=True)
    dead, young = (shard.parent / f".{stamp_path(shard).name}.{pid}-x.tmp" for pid in (999998, 999999))
    dead.write_bytes(b"{")
    young.write_bytes(b"{")
    old = time.time() - 2 * 3600
    os.utime(dead, (old, old))
    check_file(shard, info.sha256)  # hashes in full and caches the result in the stamp
    assert stamp_path(shard).exists()
    assert not dead.exists(), "a stamp temp hours old has no live writer"
    assert young.exists(), "a young one may be a concurrent reader's"


def test_filesystem_without_locks_goes_on_unlocked(tmp_path, monkeypatch, caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="mwsis.data.store"):
        with exclusive_lock(tmp_path / "x.parquet", "shard x") as held:
            assert not held
    assert "does not support locks (No locks available); going on unlocked" in caplog.text
