"""One progress-bar convention for every long-running command: tqdm on stderr, units per second."""
from __future__ import annotations

import contextlib
import sys

from tqdm import tqdm


@contextlib.contextmanager
def progress_bar(total: int, unit: str, desc: str, initial: int = 0, enabled: bool = True):
    bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=not enabled, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.1)
    try:
        yield bar
    finally:
        bar.close()
