"""Stages, trainers and the ``mwsis`` CLI: the only code that schedules work and touches the filesystem (through
``data/``), one sub-package per concern (``cli``, ``labels``, ``training``, ``predict``, ``slurm``, ``convert``,
``report``, ``experiments``). The sub-packages export their entry points lazily (``lazy_exports``), so that
``import mwsis.pipelines.labels`` does not load torch."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``__getattr__`` for a package's ``__init__``: ``exports`` maps a public name to the module (relative to
    ``package``) defining it, imported on first use (PEP 562)."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__
