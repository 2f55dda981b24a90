"""Shared by the crash tests: the start of a ``python -c`` script that SIGKILLs itself mid-write.

Run as ``python -c KILL_BEFORE_RENAME + TAIL SUFFIX N ARGS...``: with a non-empty SUFFIX the process cuts its
temp file in half and kills itself right before the Nth rename onto a file whose name ends in SUFFIX (as
if the kill came mid-write); ``args`` (the remaining argv) is left for TAIL.
"""
KILL_BEFORE_RENAME = r"""
import os, signal, sys
suffix, nth, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
real_replace, seen = os.replace, [0]

def replace(src, dst, *a, **k):
    if suffix and str(dst).endswith(suffix):
        seen[0] += 1
        if seen[0] == nth:
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *a, **k)

os.replace = replace
"""
