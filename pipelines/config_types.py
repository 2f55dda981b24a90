"""Type and range checks of config values at load (``--set``, config files, presets, saved run configs).

The rules come from the config dataclasses themselves, so they are written once, beside the defaults:

- the annotation gives the type: ``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``X | None``,
  ``tuple[T, ...]`` / ``tuple[T1, T2]`` (YAML lists become tuples), and ``Literal[...]`` for a closed set
  of choices (e.g. ``SPGConfig.dcs_variant``);
- ``field(metadata={"range": (lo, hi)})`` bounds a number, or each number of a tuple (``None`` = open
  side); ``"length"`` fixes a tuple's length (e.g. one CCL radius per class).

An error names the dotted key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, Union


class ConfigValueError(ValueError):
    """A config value of the wrong type or outside its range; the message says what is allowed."""


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _show(value) -> str:
    """A value as the user wrote it (YAML lists, not our tuples)."""
    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v
    return repr(plain(value))


def _check(hint, value, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad():
        return ConfigValueError(f"{key}: {_show(value)} is not {_describe(hint)}")

    if hint is Any or hint in (dict, list) or origin in (dict, list):
        return value
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise bad()
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(a, value, key)
            except ConfigValueError:
                pass
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_check(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad()
        return value
    return value  # other annotations (callables, classes) are not settable from a config


def _numbers(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _numbers(v)


def check_field(cls: type, name: str, value: Any, key: str) -> Any:
    """``value`` for field ``name`` of config dataclass ``cls``, type-checked (lists -> tuples) and
    range-checked; ``key`` is the dotted key the user wrote, for the message."""
    value = _check(_hints(cls)[name], value, key)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]
    if "length" in meta and value is not None and len(value) != meta["length"]:
        raise ConfigValueError(f"{key}: {_show(value)} has {len(value)} values; {meta['length']} are needed")
    if "range" in meta and value is not None:
        lo, hi = meta["range"]
        for v in _numbers(value):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                allowed = (f"between {lo} and {hi}" if lo is not None and hi is not None
                           else f">= {lo}" if lo is not None else f"<= {hi}")
                raise ConfigValueError(f"{key}: {_show(value)} is out of range; allowed: {allowed}")
    return value
