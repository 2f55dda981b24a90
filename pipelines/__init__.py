"""Stages, trainers and the ``mwsis`` CLI: the only code that schedules work and touches the filesystem (through
``data/``), one sub-package per concern (``cli``, ``labels``, ``training``, ``predict``, ``slurm``, ``convert``,
``report``, ``experiments``). The sub-packages export their entry points lazily (``lazy_exports``), so that
``import mwsis.pipelines.labels`` does not load torch."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """``(__getattr__, __all__)`` for a package's ``__init__``: ``modules`` maps a module (relative to ``package``)
    to the public names it defines, each imported on first use (PEP 562)."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__, list(exports)
