"""mwsis: multimodal weakly supervised instance segmentation (MWSIS, AAAI 2024) for driving data.

Packages: ``data`` (frame model, shard store, synthetic scenes), ``pseudolabel`` (3D/2D pseudo
labels from 2D boxes), ``train2d`` and ``train3d`` (the two segmentors), ``pipelines`` (stages,
CLI, SLURM). See README.md.
"""
__version__ = "0.1.0"


def _numba_cache_fallback() -> None:
    """numba caches compiled kernels beside the sources, else under ``$HOME/.cache``. On a shared, read-only
    install with a read-only HOME (a cluster account) neither works and every ``cache=True`` function fails
    to compile ("no locator available"), even for ``mwsis --help``. Then use a per-user directory under the
    system temp dir, with one warning. Runs before numba is imported; an explicit ``NUMBA_CACHE_DIR``
    always wins."""
    import os
    import tempfile
    import warnings

    if os.environ.get("NUMBA_CACHE_DIR"):
        return

    def writable(d: str) -> bool:  # try it: os.access is wrong for root without CAP_DAC_OVERRIDE
        while not os.path.isdir(d):
            d = os.path.dirname(d)
        try:
            fd, path = tempfile.mkstemp(dir=d, prefix=".mwsis-probe-")
        except OSError:
            return False
        os.close(fd)
        os.unlink(path)
        return True

    here = os.path.dirname(os.path.abspath(__file__))
    if writable(os.path.join(here, "pseudolabel", "__pycache__")):
        return
    if writable(os.path.join(os.path.expanduser("~"), ".cache", "numba")):
        return
    fallback = os.path.join(tempfile.gettempdir(), f"mwsis-numba-cache-{os.getuid()}")
    try:
        os.makedirs(fallback, mode=0o700, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = fallback
        warnings.warn(f"mwsis: the package directory and HOME are read-only; numba caches compiled kernels in "
                      f"{fallback} (set NUMBA_CACHE_DIR to choose)", RuntimeWarning, stacklevel=2)
    except OSError as e:
        warnings.warn(f"mwsis: no writable directory for numba's cache ({fallback}: {e.strerror}); set "
                      "NUMBA_CACHE_DIR to a writable directory", RuntimeWarning, stacklevel=2)


_numba_cache_fallback()
