"""SIGKILL `mwsis synth` and `mwsis pseudolabels` at random and at chosen points, then check the dataset.

After every kill: each visible file is whole (the manifest and its shards verify, every label shard opens and
holds one row per frame, a frame shard not yet listed is complete), nothing but hidden temp files is left
beside them, and readers ignore those. After a rerun: the dataset is byte-identical to an uninterrupted run
and no temp file is left (the rerun removes them under its lock).

Kill points: "random" waits until the Nth new file name (a temp or a final shard) appears in the watched
directories, then sleeps a seeded random jitter before SIGKILL, so it lands while shards are being written even
on a slow, loaded machine. "injected" runs the command with ``os.replace`` wrapped so that the process SIGKILLs
itself right before renaming the Nth matching file, after halving the temp file (a kill mid-write).
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from mwsis.data.integrity import IntegrityError, check_file

from mwsis.data.label_store import LabelShard
from mwsis.data.schema import table_row_to_frame
from mwsis.data.store import open_dataset
from mwsis.data.validate import validate_frame

from _kill import KILL_BEFORE_RENAME

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
UNITS = [f"synth-s0-{i:04d}" for i in range(4)]
STAGES = ["dcs", "spg"]  # what `pseudolabels --stages spg` writes

# Runs `mwsis synth` (its function, the quickest start) or `mwsis pseudolabels` (its click
# command); with a suffix, SIGKILLs itself right before the Nth rename onto a file whose name ends in it.
INJECT = KILL_BEFORE_RENAME + r"""
cmd, args = args[0], args[1:]
if cmd == "synth":  # what `mwsis synth --preset tiny --frames 4 --frames-per-sequence 1 --out OUT` runs
    from mwsis.pipelines.convert.synth import synth_dataset
    synth_dataset(args[0], "tiny", frames=4, seed=0, frames_per_sequence=1, show_progress=False)
else:
    from mwsis.pipelines.cli.labels import pseudolabels_cmd
    pseudolabels_cmd.main(args=args, prog_name="mwsis pseudolabels")
"""


def mwsis(cmd: str, args, suffix: str = "", nth: int = 0) -> subprocess.Popen:
    err = tempfile.TemporaryFile()  # not a pipe: an unread pipe fills up and blocks the run
    proc = subprocess.Popen([sys.executable, "-c", INJECT, suffix, str(nth), cmd, *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=err)
    proc.err_file = err
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    proc.wait(timeout=timeout)
    proc.err_file.seek(0)
    return proc.returncode, proc.err_file.read().decode(errors="replace")[-4000:]


def kill_after_new_files(proc: subprocess.Popen, dirs: list[Path], n: int, jitter: float) -> bool:
    """SIGKILL ``proc`` ``jitter`` seconds after ``n`` new file names appeared in ``dirs``; False if it ended first."""
    seen: set[str] = set()
    before = {str(d / e) for d in dirs if d.exists() for e in os.listdir(d)}
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(seen) < n and time.monotonic() < deadline:
        seen |= {str(d / e) for d in dirs if d.exists() for e in os.listdir(d) if not e.startswith(".locks")} - before
        time.sleep(0.002)
    time.sleep(jitter)
    killed = proc.poll() is None
    proc.kill()
    proc.wait()
    return killed


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def is_stamp(name: str) -> bool:  # data/integrity.py's checksum records
    return name.startswith(".") and name.endswith(".parquet.sha256")


def assert_whole(root: Path, labels: bool) -> int:
    """Every visible file under ``root`` is complete and valid; returns the number of temp files seen."""
    temps = 0
    listed = set()
    if (root / "manifest.json").exists():
        ds = open_dataset(root)  # parses and validates the manifest
        ds.verify()  # listed shards: size, sha256, footer, row groups
        listed = {s.name for s in ds.manifest.shards}
    else:
        assert not labels
    for p in (root / "frames").iterdir() if (root / "frames").exists() else ():
        if is_temp(p.name):
            temps += 1
            continue
        if is_stamp(p.name):
            continue
        assert p.suffix == ".parquet" and p.stem in UNITS, f"stray file {p}"
        if p.stem not in listed:  # renamed, but the manifest was not rewritten yet: still a whole shard
            f = pq.ParquetFile(p)
            assert f.num_row_groups == 1
            validate_frame(table_row_to_frame(f.read_row_group(0), 0))
    if labels:
        for stage_dir in (root / "labels").iterdir():
            assert stage_dir.name in STAGES, f"stray directory {stage_dir}"
            for p in stage_dir.iterdir():
                if p.name == ".locks" or is_temp(p.name) or is_stamp(p.name):
                    temps += is_temp(p.name)
                    continue
                assert p.suffix == ".parquet" and p.stem in listed, f"stray file {p}"
                try:
                    check_file(p, verify=True)
                except IntegrityError:
                    temps += 1  # killed between the stamp's rename and the shard's: not current, rewritten
                    continue
                shard = LabelShard(ds, stage_dir.name, p.stem)
                info = ds.manifest.shards[[s.name for s in ds.manifest.shards].index(p.stem)]
                assert [lab.frame_id for lab in shard] == info.frame_ids
    return temps


def visible_bytes(root: Path) -> dict[str, bytes]:
    """Every non-hidden file of the dataset (the manifest, frame and label shards) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def hidden_temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp") if p.is_file()]


def test_synth_killed_anywhere_resumes_to_identical_bytes(spg_reference, tmp_path):
    out = tmp_path / "ds"
    # a kill mid-write of the first shard, then one after it is renamed but before the manifest lists it
    for suffix in (".parquet", "manifest.json"):
        rc, _ = finish(mwsis("synth", [out], suffix, 1))
        assert rc == -9
        assert_whole(out, labels=False)
    assert hidden_temps(out), "the injected kill should have left a temp file"
    rng = random.Random(7)
    kills = 0
    for n in (1, rng.randint(2, 4), rng.randint(2, 5)):  # about 3 new names per shard: leaves work to kill
        proc = mwsis("synth", [out])
        kills += kill_after_new_files(proc, [out / "frames", out], n, rng.uniform(0, 0.03))
        assert_whole(out, labels=False)
    assert kills >= 2, "the runs ended before the kill: the kill points were not exercised"
    rc, err = finish(mwsis("synth", [out]))
    assert rc == 0, err
    assert not hidden_temps(out)
    assert visible_bytes(out) == visible_bytes(spg_reference / "frames")


def test_pseudolabels_killed_anywhere_resumes_to_identical_bytes(spg_reference, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(spg_reference / "frames", data)
    cmd = ["--data", data, "--stages", "spg", "--no-eval"]
    rng = random.Random(11)
    watch = [data / "labels" / s for s in STAGES]
    kills = 0
    for n in (1, rng.randint(2, 8), rng.randint(6, 12)):
        kills += kill_after_new_files(mwsis("labels", cmd), watch, n, rng.uniform(0, 0.03))
        assert_whole(data, labels=True)
    assert kills >= 2, "the runs ended before the kill: the kill points were not exercised"
    rc, _ = finish(mwsis("labels", [*cmd, "--force"], "synth-s0-0002.parquet", 1))  # mid-write of dcs shard 2
    assert rc == -9
    assert assert_whole(data, labels=True) >= 1
    rc, err = finish(mwsis("labels", cmd))
    assert rc == 0, err
    assert not hidden_temps(data)
    assert visible_bytes(data) == visible_bytes(spg_reference / "labels")
