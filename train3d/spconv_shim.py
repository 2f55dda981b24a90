"""Make spconv 2.x usable on a CPU-only machine (backward pass included).

spconv's Python ops ask ``torch.cuda.current_stream()`` for a stream handle *before* they look at the
device of the tensors (``spconv.pytorch.cppcore.get_current_stream``). The forward pass of
``SubMConv3d``/``SparseConv3d`` happens not to reach it on CPU, but ``indice_conv_backward`` and friends
do, so any training step on a machine without a CUDA driver dies with "Found no NVIDIA driver".
The stream handle is only meaningful for CUDA tensors; on CPU the C++ side ignores it, so 0 is correct.

The authors' code runs spconv on CUDA only (``method.md`` §13, "GPU-only or compiled dependencies");
this shim is what lets the 3D network (``method.md`` §9) train on CPU for tests and small runs.

``ensure_spconv_cpu()`` replaces ``get_current_stream`` in ``spconv.pytorch.cppcore`` and in every
already-imported spconv module that bound the name with ``from ... import get_current_stream``
(``ops``, ``hash``, ``utils``; the ``quantization`` modules too if they are importable and imported).
The replacement returns 0 when CUDA is unavailable and defers to the original otherwise, so the patch is
harmless on GPU machines. It is idempotent. This module is the only place the patch lives.

Threads: spconv's CPU gather/scatter kernels run OpenMP regions on spconv's *own bundled* libgomp
(``spconv.libs/libgomp-*.so``), which ``torch.set_num_threads`` does not reach. On a shared machine an OpenMP
team larger than the free cores makes every region wait for a descheduled worker: measured here, a tiny-model
step went from ~0.1 s to 5-20 s with 2 threads on a busy 2-core box. ``set_spconv_threads(n)`` sets that
library's thread count (``omp_set_num_threads`` through ctypes, for the calling thread's future regions);
``VoteSegmentor.forward`` calls it with ``torch.get_num_threads()`` on CPU so the two pools agree.
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import os
import sys

import torch

__all__ = ["ensure_spconv_cpu", "is_patched", "set_spconv_threads"]

_MARK = "_mwsis_cpu_shim"
# spconv modules known (spconv 2.3.x) to do ``from spconv.pytorch.cppcore import get_current_stream``.
_IMPORTERS = ("spconv.pytorch.ops", "spconv.pytorch.hash", "spconv.pytorch.utils")


def _make_patched(original):
    def get_current_stream():
        if torch.cuda.is_available():
            return original()
        return 0

    setattr(get_current_stream, _MARK, True)
    get_current_stream.__wrapped__ = original
    get_current_stream.__doc__ = "CUDA stream handle, or 0 when CUDA is unavailable (mwsis CPU shim)."
    return get_current_stream


def is_patched() -> bool:
    """Whether ``spconv.pytorch.cppcore.get_current_stream`` is the shim's version."""
    cppcore = sys.modules.get("spconv.pytorch.cppcore")
    return cppcore is not None and getattr(cppcore.get_current_stream, _MARK, False)


def ensure_spconv_cpu() -> None:
    """Patch spconv so its ops (forward and backward) work without a CUDA driver. Idempotent."""
    cppcore = importlib.import_module("spconv.pytorch.cppcore")
    for name in _IMPORTERS:
        importlib.import_module(name)
    current = cppcore.get_current_stream
    original = getattr(current, "__wrapped__", current) if getattr(current, _MARK, False) else current
    patched = current if getattr(current, _MARK, False) else _make_patched(original)
    cppcore.get_current_stream = patched
    # every spconv module that imported the name (including any imported later than _IMPORTERS)
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith("spconv"):
            continue
        fn = getattr(mod, "get_current_stream", None)
        if fn is original:
            setattr(mod, "get_current_stream", patched)


def _bundled_libgomp() -> list[str]:
    import spconv

    root = os.path.dirname(os.path.dirname(os.path.abspath(spconv.__file__)))
    return sorted(glob.glob(os.path.join(root, "spconv.libs", "libgomp*.so*")))


def set_spconv_threads(n: int) -> bool:
    """Set the OpenMP thread count of spconv's bundled libgomp (calling thread); False if there is none."""
    libs = _bundled_libgomp()
    for path in libs:
        ctypes.CDLL(path).omp_set_num_threads(int(max(n, 1)))
    return bool(libs)
