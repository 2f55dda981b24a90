"""Where a run's time goes (issue 19: profile before optimising): ``cProfile`` over one call, every function's
own time (``tottime``) summed into named costs, reported per frame.

The costs follow a frame through the label pipeline: Parquet decode (pyarrow reading row groups), frame
decode (per-point arrays from the Parquet cells), validation, each kernel module, label encoding (arrays to
Arrow), Parquet write (encoding and compressing the label shards), fsync, hashing (checksums of what is read
and sealed), and everything else under "other" (Python glue, small numpy calls).
"""
from __future__ import annotations

import cProfile
import pstats
import time
from typing import Callable

# (cost, test on the profiled function's file and name), first match wins
_RULES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("parquet decode", lambda f, n: "pyarrow" in f and n in ("read_row_group", "read", "read_row_groups")),
    ("parquet write", lambda f, n: "pyarrow" in f and n in ("write_table", "close", "write", "__init__")
     and "parquet" in f),
    ("fsync", lambda f, n: n == "<built-in method posix.fsync>"),
    ("hashing", lambda f, n: "_hashlib" in n or f.endswith("integrity.py")),
    ("frame decode", lambda f, n: f.endswith("schema/frames.py")),
    ("validation", lambda f, n: f.endswith("data/validate.py")),
    ("label encoding", lambda f, n: f.endswith("schema/labels.py") or f.endswith("label_store.py")),
    ("label spill (Arrow IPC)", lambda f, n: "pyarrow" in f and "ipc" in f),
]


def _cost(filename: str, name: str) -> str:
    for cost, test in _RULES:
        if test(filename, name):
            return cost
    if "/pseudolabel/" in filename:  # one cost per kernel module (dcs, spg, ccl, frustum, points, ...)
        return "kernel " + filename.rsplit("/", 1)[-1][:-3]
    return "other"


def profile_costs(fn: Callable[[], object], frames: int, top: int = 5) -> dict:
    """Run ``fn()`` once under ``cProfile``; {"seconds", "ms_per_frame", "costs": {cost: ms per frame}
    (largest first), "top": the ``top`` largest as [cost, ms per frame, share of the run]}. Profiling slows
    Python-heavy code more than native code: compare shares within one profile, speeds without it."""
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    seconds = time.perf_counter() - t
    costs: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():
        key = _cost(filename, name)
        costs[key] = costs.get(key, 0.0) + tottime
    per_frame = {k: 1e3 * v / frames for k, v in sorted(costs.items(), key=lambda kv: -kv[1])}
    total = sum(costs.values()) or 1.0
    return {"seconds": seconds, "ms_per_frame": 1e3 * seconds / frames, "costs": per_frame,
            "top": [[k, v, costs[k] / total] for k, v in list(per_frame.items())[:top]]}
