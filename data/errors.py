"""Errors of the data layer, in one place so that every module of ``data/`` can raise them."""
from __future__ import annotations

from pathlib import Path


class StoreError(RuntimeError):
    """A file of a dataset cannot be read or written; the message names the file and the problem."""


class ShardError(StoreError):
    """A shard (frame, label or prediction) cannot be read as it should: the message names the file."""
    def __init__(self, path: Path | str, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # process pools pickle exceptions by their args; ours take two
        return type(self), (self.path, self.problem)
