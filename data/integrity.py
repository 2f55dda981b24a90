"""Checksums of the files a dataset holds, verified on read (the README's "Crash safety and integrity").

What a file's bytes must hash to (its *expected* SHA-256) comes from:

- frame shards: the manifest (``ShardInfo.sha256``), written with the shard;
- label and prediction shards: a *stamp* beside the file, ``.<file>.sha256`` (JSON: sha256, bytes and the
  file's mtime in ns), written by our writers after the fsync and before the rename (``sealer``).

Two ways to check a file against it:

- **full** (``verify=True``): hash every byte. Readers do this when they first open a shard in a process,
  so a label records the checksum of the bytes it was made from, whatever wrote them.
- **guarded** (``verify=False``): if the stamp's size and mtime equal the file's and its sha256 is the
  expected one, trust it; otherwise hash in full. Up-to-date checks use this: a rerun over a finished
  dataset costs a ``stat`` per file, not a read. Any write through the filesystem moves the mtime, so a
  changed file is hashed again; a tool that restores mtimes after editing bytes in place is caught by the
  next reader's full hash instead.

A stamp of a frame shard is a cache (the manifest is the truth): it is written only after a full hash
matched, and only where the directory is writable. A stamp of a label or prediction shard *is* the truth:
it is never rewritten from the file's bytes, so a damaged file cannot bless itself.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from pathlib import Path

from .errors import ShardError

STAMP_SUFFIX = ".sha256"


class IntegrityError(ShardError):
    """A file's bytes differ from its recorded checksum, or its checksum record is missing or unreadable."""


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamp_path(path: Path | str) -> Path:
    """``.<name>.sha256`` beside the file: hidden like the locks, since its mtime field differs between
    otherwise byte-identical runs."""
    path = Path(path)
    return path.parent / f".{path.name}{STAMP_SUFFIX}"


def read_stamp(path: Path | str) -> dict | None:
    """The stamp of ``path`` ({"sha256", "bytes", "mtime_ns"}), or None when it is missing or unreadable."""
    try:
        d = json.loads(stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(d, dict) and isinstance(d.get("sha256"), str) and isinstance(d.get("bytes"), int)
          and isinstance(d.get("mtime_ns"), int))
    return d if ok else None


def write_stamp(path: Path | str, digest: str, best_effort: bool = False, stat_of: Path | str | None = None) -> None:
    """Record ``digest`` with the file's size and mtime (taken from ``stat_of``, default ``path``),
    atomically. ``best_effort``: a read-only directory (a shared dataset) is fine, the check then hashes in
    full each time."""
    from .store import WriteError, write_bytes_atomic  # store imports this module

    st = os.stat(stat_of or path)
    data = json.dumps({"sha256": digest, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}).encode() + b"\n"
    if best_effort:  # a cache written without the shard's lock: tidy temps that no live writer can own
        _drop_dead_temps(stamp_path(path))
    try:
        write_bytes_atomic(stamp_path(path), data)
    except WriteError as e:
        if not best_effort:
            raise WriteError(path, e.problem) from e  # name the shard, not its record


def _drop_dead_temps(dest: Path, age_s: float = 3600.0) -> None:
    """Remove ``dest``'s temp files older than ``age_s``: a stamp is written in milliseconds, so their writer
    was killed. Younger ones may belong to a concurrent reader writing the same cache; they are left."""
    from .store import TEMP_SUFFIX

    for p in dest.parent.glob(f".{glob.escape(dest.name)}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if time.time() - p.stat().st_mtime > age_s:
                p.unlink()


def sealer(dest: Path | str):
    """``atomic_path(dest, before_rename=sealer(dest))``: hash the finished temp file and record it as
    ``dest``'s stamp before the rename (a rename keeps size and mtime). A failure before the rename leaves
    the old file and its old stamp together; a crash between the two renames leaves a new file under an
    old stamp: not up to date, so the next run rewrites it."""
    return lambda tmp: write_stamp(dest, sha256_file(tmp), stat_of=tmp)


def check_file(path: Path | str, expected: str | None = None, verify: bool = False, hint: str = "") -> str:
    """The verified SHA-256 of ``path``; raises ``IntegrityError`` naming the file otherwise.

    ``expected``: the manifest's checksum (frame shards); None: the stamp's (label and prediction shards).
    ``verify``: hash in full even when the size and mtime guard holds. ``hint``: how to repair, appended.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise IntegrityError(path, "missing" + (f"; {hint}" if hint else "")) from None
    stamp = read_stamp(path)
    truth = expected if expected is not None else (stamp or {}).get("sha256")
    if truth is None:
        raise IntegrityError(path, f"no checksum record ({stamp_path(path).name} is missing or unreadable)"
                                   + (f"; {hint}" if hint else ""))
    guarded = (stamp is not None and stamp["sha256"] == truth and stamp["bytes"] == st.st_size
               and stamp["mtime_ns"] == st.st_mtime_ns)
    if guarded and not verify:
        return truth
    digest = sha256_file(path)
    if digest != truth:
        source = "manifest.json" if expected is not None else stamp_path(path).name
        raise IntegrityError(path, f"checksum mismatch: the file's sha256 is {digest[:12]}…, {source} says "
                                   f"{truth[:12]}… (damaged or changed after it was written)"
                                   + (f"; {hint}" if hint else ""))
    if expected is not None and not guarded:
        write_stamp(path, digest, best_effort=True)  # a cache of the manifest's truth: next time a stat
    return digest
