"""Locks: one writer per output at a time, and the killed writers' temp files that a lock holder may remove.

A writer of ``dest`` holds ``exclusive_lock(dest)`` while it computes and writes it (``atomic_path``); under
the lock no live writer of ``dest`` exists, so temp files beside it are leftovers of killed writers.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import socket
import time
from pathlib import Path

from .integrity import stamp_path
from .store import TEMP_SUFFIX, WriteError, os_error_reason

log = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
# the filesystem has no locks (some Lustre mounts, old NFSv3 without lockd): go on unlocked, see exclusive_lock
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_path(dest: Path | str) -> Path:
    """``<dir>/.locks/<name>.lock``: the lock guarding writes of ``dest`` (kept: deleting a lock file while a
    waiter holds it open would let a third process lock a new inode and write concurrently)."""
    dest = Path(dest)
    return dest.parent / LOCKS_DIR / f"{dest.name}.lock"


@contextlib.contextmanager
def exclusive_lock(dest: Path | str, what: str, wait: bool = True):
    """Hold ``dest``'s lock while computing and writing it; wait while another process holds it (``wait=False``:
    yield False instead). Yields whether the lock is held; the holder stamps "pid P on host H since T" in it.

    ``flock``: the kernel releases it when the holder exits or is killed, so a crash leaves no stale lock. On NFS
    Linux maps it to a whole-file byte-range lock (works across nodes on NFSv4; NFSv3 needs lockd; a dead node's
    lock goes when its lease expires). A filesystem without locks gets a warning and runs unlocked: still safe
    (outputs are renamed into place whole and deterministic), but two processes may compute the same output.
    """
    path = lock_path(dest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: flock needs no write access (only the stamp does)
            fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise WriteError(path, os_error_reason(e)) from e
    try:
        held = _acquire(fd, path, what, wait)
        if held:
            stamp = f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, stamp.encode(), 0)
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, path: Path, what: str, wait: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        if not wait:
            return False
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "holder unknown"
        log.warning("%s is being written by another process (%s); waiting for it to finish", what, holder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        log.info("%s: the other process finished; going on", what)
        return True
    except OSError as e:
        if e.errno in _NO_LOCKS:
            log.warning("%s: %s does not support locks (%s); going on unlocked", what, path, os_error_reason(e))
            return False
        raise WriteError(path, os_error_reason(e)) from e


def _temps_of(dest: Path) -> list[Path]:
    """Temp files of ``dest`` and of its checksum stamp (written under the same lock, just before the rename)."""
    return [p for f in (dest, stamp_path(dest)) if f.parent.exists()
            for p in f.parent.glob(f".{glob.escape(f.name)}.*{TEMP_SUFFIX}")]


def remove_stale_temps(dest: Path | str) -> list[Path]:
    """Delete temp files of ``dest`` (and of its stamp) left by killed writers (call it only while holding
    ``dest``'s lock: then no live writer of ``dest`` exists). Returns what was removed."""
    removed = []
    for p in _temps_of(Path(dest)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def tidy_temps(dest: Path | str) -> None:
    """Best effort, for a caller that does not write ``dest``: remove its killed writers' temp files if its lock
    is free now (busy: a live writer owns them; read-only copy or no locks: they are harmless, leave them)."""
    dest = Path(dest)
    if not _temps_of(dest):
        return
    with contextlib.suppress(WriteError), exclusive_lock(dest, str(dest), wait=False) as held:
        if held:
            remove_stale_temps(dest)
