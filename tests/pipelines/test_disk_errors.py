"""A full disk or a refused write on the output: a clear error naming the file and the shard (and the stage),
exit code 1, no temp file left, and everything written before (earlier shards, the manifest) still valid.

Each case runs twice where it can:
* ``real``: an actual kernel refusal. ENOSPC from a tiny tmpfs mounted for the test (needs root or
  CAP_SYS_ADMIN); EACCES from a read-only directory, for root by running the command with CAP_DAC_OVERRIDE
  dropped (``setpriv``). Skipped, with the reason, where the machine does not allow it.
* ``simulated``: the same errno raised by a monkeypatched ``os.fsync`` / ``os.open`` at the same place, so a
  CI machine that cannot mount still covers the code path.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    if not _mount_tmpfs(path, size):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the [simulated] case covers it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    """Take every free byte of the filesystem."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


def fail_fsync_of(monkeypatch, fragment: str, err: int = errno.ENOSPC) -> None:
    """``os.fsync`` of a file whose path contains ``fragment`` fails with ``err`` (the write-back failing)."""
    real = os.fsync

    def fsync(fd):
        if fragment in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def files(root: Path) -> dict[str, bytes]:
    """Every data file; checksum stamps are left out: their mtime field differs between equal runs."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "filler" and ".locks" not in p.parts and not p.name.endswith(".sha256")}


def temps(root: Path) -> list[Path]:
    return list(root.rglob("*.tmp"))


SYNTH = ["synth", "--preset", "tiny", "--frames", "4", "--frames-per-sequence", "1", "--no-progress", "--out"]


@pytest.mark.parametrize("mode", ["real", "simulated"])
def test_synth_on_a_full_disk_stops_keeps_earlier_shards_and_resumes(mode, spg_reference, tmp_path, monkeypatch):
    mnt = tmp_path / "mnt"
    with (tmpfs(mnt, "1200k") if mode == "real" else contextlib.nullcontext(mnt)):  # room for 2 of 4 shards
        out = mnt / "ds"
        if mode == "simulated":
            fail_fsync_of(monkeypatch, "synth-s0-0002.parquet")
        res = CliRunner().invoke(main, [*SYNTH, str(out)])
        assert res.exit_code == 1, res.output
        bad = next(f"synth-s0-{i:04d}" for i in range(4) if not (out / f"frames/synth-s0-{i:04d}.parquet").exists())
        assert (f"cannot write {out}/frames/{bad}.parquet: {ENOSPC_TEXT} (shard {bad}; the shards finished before it "
                f"stay listed in {out}/manifest.json") in res.output
        ds = open_dataset(out)
        ds.verify()  # the manifest and the shards it lists are whole
        assert 1 <= len(ds.manifest.shards) < 4 and not temps(out)
        monkeypatch.undo()
        if mode == "real":
            subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)
        res = CliRunner().invoke(main, [*SYNTH, str(out)])
        assert res.exit_code == 0, res.output
        assert files(out) == files(spg_reference / "frames")


@pytest.mark.parametrize("mode", ["real", "simulated"])
def test_stage_on_a_full_disk_fails_every_shard_clearly_and_keeps_old_labels(mode, spg_reference, tmp_path, monkeypatch):
    mnt = tmp_path / "mnt"
    with (tmpfs(mnt, "3m") if mode == "real" else contextlib.nullcontext(mnt)):
        data = mnt / "ds"
        shutil.copytree(spg_reference / "labels", data)
        before = files(data)
        if mode == "real":
            fill(mnt)
        else:
            fail_fsync_of(monkeypatch, "/labels/dcs/")
        res = CliRunner().invoke(main, ["stage", "dcs", "--data", str(data), "--force"])
        assert res.exit_code == 1, res.output
        for s in open_dataset(data).manifest.shards:
            assert (f"FAILED dcs/{s.name}: cannot write {data}/labels/dcs/{s.name}.parquet: {ENOSPC_TEXT} "
                    f"(shard {s.name} of stage dcs)") in res.output
        assert files(data) == before and not temps(data)


def _can_drop_dac() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    return subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"],
                          capture_output=True).returncode == 0


STAGE = r"""
import sys
from mwsis.pipelines.cli.labels import stage_cmd
stage_cmd.main(args=sys.argv[1:], prog_name="mwsis stage")
"""


@pytest.mark.parametrize("mode", ["real", "simulated"])
def test_stage_into_a_read_only_directory_fails_clearly(mode, spg_reference, tmp_path, monkeypatch):
    data = tmp_path / "ds"
    shutil.copytree(spg_reference / "labels", data)
    before = files(data)
    dcs = data / "labels" / "dcs"
    args = ["dcs", "--data", str(data), "--force"]
    if mode == "real":
        if os.geteuid() == 0 and not _can_drop_dac():
            pytest.skip("root without setpriv/capabilities: chmod cannot stop a write; [simulated] covers it")
        dcs.chmod(0o555)
        try:  # root ignores modes unless CAP_DAC_OVERRIDE is dropped: run the command without it
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
            proc = subprocess.run([*prefix, sys.executable, "-c", STAGE, *args], env=ENV, capture_output=True,
                                  text=True, timeout=300)
        finally:
            dcs.chmod(0o755)
        code, output = proc.returncode, proc.stderr
    else:
        real_open = os.open

        def refuse(path, flags, *a, **k):  # what the kernel says for a new file in a read-only directory
            if str(path).startswith(f"{dcs}/.") and str(path).endswith(".tmp"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", refuse)
        res = CliRunner().invoke(main, ["stage", *args])
        code, output = res.exit_code, res.output
    assert code == 1, output
    for s in open_dataset(data).manifest.shards:
        assert (f"FAILED dcs/{s.name}: cannot write {dcs}/{s.name}.parquet: {os.strerror(errno.EACCES)} "
                f"(shard {s.name} of stage dcs)") in output
    assert files(data) == before and not temps(data)


def test_prediction_shard_on_a_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
    """Simulated only (the export itself needs a trained model); the writer is the same ``atomic_path``."""
    import numpy as np

    from mwsis.data.prediction_store import round_dir, write_prediction_shard
    from mwsis.data.store import WriteError

    rows = [("f0", np.full((5, 3), 0.5, np.float32))]
    dest = write_prediction_shard(tmp_path, "3d", 0, "s0", rows, (3,), {})
    before = dest.read_bytes()
    stale = round_dir(tmp_path, "3d", 0) / ".s0.parquet.999999-dead.tmp"  # a killed export's leftover
    stale.write_bytes(b"half")
    fail_fsync_of(monkeypatch, "/round=0/")
    with pytest.raises(WriteError, match=rf"cannot write {dest}: {ENOSPC_TEXT} \(shard s0 of 3d predictions round 0\)"):
        write_prediction_shard(tmp_path, "3d", 0, "s0", rows, (3,), {"run": "new"})
    assert dest.read_bytes() == before and not temps(tmp_path)
