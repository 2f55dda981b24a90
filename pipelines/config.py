"""One config system for the pseudo-label stages and both trainers.

A config is a frozen dataclass whose defaults are the paper's values. Values are layered, later wins:

    dataclass defaults  <  preset named by the file (``preset: waymo``)  <  the ``--config`` file  <  ``--set``

``--config`` takes a preset name (``waymo``, ``kitti``, ``synthetic-tiny``: ``configs/NAME.yaml`` shipped
with the package) or a path. A config file has one section per command family::

    preset: waymo          # optional: start from this preset's values
    points: {...}          # which LiDAR points: read by every command that has a point set (PointSetConfig)
    stages: {spg: {...}, sam: {...}, pvc: {...}}     # mwsis stage / pseudolabels  (StagesConfig)
    train3d: {...}                                    # mwsis train-3d               (Train3DConfig)
    train2d: {...}                                    # mwsis train-2d               (Train2DConfig)
    experiment: {...}                                 # make experiment-3d/-2d      (ExperimentConfig)

A file without any of these keys is the command's section itself ("flat", e.g. ``configs/train3d-tiny.yaml``),
so trainer YAMLs written before presets existed keep working. ``points`` is shared: the stages, the 3D
trainer, prediction and evaluation read the one section (a section's own ``points:`` overrides it), so the
points labelled are the points trained on and scored. Every key is checked against the dataclass:
an unknown one is an error that names the key and the file (or ``--set``). This module imports neither
torch nor the trainers until a trainer section is asked for, so the stage workers stay light.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from .config_types import ConfigValueError, check_field

#: Presets shipped with the package (``configs/<name>.yaml`` next to this package's modules).
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
PRESETS = ("waymo", "kitti", "nuscenes", "synthetic-tiny", "cpu-bench")

#: section -> (module, dataclass) of the commands that read it; imported lazily (trainers import torch)
SECTIONS = {
    "stages": ("mwsis.pipelines.labels.stages", "StagesConfig"),
    "train3d": ("mwsis.pipelines.training.train3d", "Train3DConfig"),
    "train2d": ("mwsis.pipelines.training.train2d", "Train2DConfig"),
    "experiment": ("mwsis.pipelines.experiments.harness", "ExperimentConfig"),  # make experiment-3d / experiment-2d
}
META_KEYS = ("preset",)
#: top-level sections every command section with a field of that name reads (below its own values)
SHARED = ("points",)
#: keys that moved: configs, ``--set`` and the configs recorded in label shards and runs before the move keep
#: resolving (the point set was part of ``spg`` before ``PointSetConfig``)
MOVED = {"spg.point_range": "points.point_range", "spg.drop_nlz": "points.drop_nlz",
         "spg.need_camera": "points.need_camera"}


class ConfigError(ValueError):
    """A config that cannot be resolved; the message names the file or ``--set`` and the key."""


def section_class(section: str) -> type:
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections are {list(SECTIONS)}")
    module, name = SECTIONS[section]
    return getattr(importlib.import_module(module), name)


def section_of(cls: type) -> str | None:
    """The section a dataclass is read from (None for classes outside the registry, e.g. in tests)."""
    for section, (module, name) in SECTIONS.items():
        if cls.__name__ == name and cls.__module__ == module:
            return section
    return None


# ------------------------------------------------------------------------------------------ overrides


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _coerce(value: Any, current: Any) -> Any:
    """YAML gives lists where the dataclass holds (nested) tuples: convert, so configs stay hashable."""
    if isinstance(value, list) and (current is None or isinstance(current, tuple)):
        return _tuples(value)
    return value


def _replace(cfg: Any, head: str, value: Any, key: str) -> Any:
    """``cfg`` with section ``head`` replaced; a rule across its fields (``__post_init__``) names ``key``."""
    try:
        return dataclasses.replace(cfg, **{head: value})
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"key {key!r}: {e}") from None


def apply_overrides(cfg: Any, overrides: dict[str, Any], _prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with dotted-key overrides (``{"optim.lr": 1e-3}``) applied.

    Raises ``ConfigError`` naming the full dotted key when a key is not a field, a section is set to a value,
    or a value has the wrong type or lies outside its range (``config_types``).
    """
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        full = f"{_prefix}{head}"
        names = [f.name for f in dataclasses.fields(cfg)]
        if head not in names:
            raise ConfigError(f"unknown key {_prefix + key!r}: {type(cfg).__name__} has no field {head!r} "
                              f"(fields: {', '.join(sorted(names))})")
        current = getattr(cfg, head)
        if rest:
            if not dataclasses.is_dataclass(current):
                raise ConfigError(f"key {_prefix + key!r}: {full!r} is a value, not a section")
            cfg = _replace(cfg, head, apply_overrides(current, {rest: value}, f"{full}."), _prefix + key)
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"key {full!r} is a section ({type(current).__name__}); give its fields, "
                                  f"e.g. {full}.{dataclasses.fields(current)[0].name}=...")
            cfg = _replace(cfg, head, apply_overrides(current, value, f"{full}."), full)
        else:
            try:
                value = _coerce(check_field(type(cfg), head, value, full), current)
                cfg = dataclasses.replace(cfg, **{head: value})
            except ConfigValueError as e:
                raise ConfigError(str(e)) from None
            except ValueError as e:  # a rule across fields (the dataclass's __post_init__)
                raise ConfigError(f"key {full!r}: {e}") from None
    return cfg


def moved_keys(flat: dict[str, Any], cls: type) -> dict[str, Any]:
    """``flat`` ({dotted key: value}) with the keys of ``MOVED`` renamed, for a ``cls`` that has the new
    place. A value given at both places must agree."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = dict(flat)
    for old, new in MOVED.items():
        if old in out and new.split(".")[0] in names:
            value = out.pop(old)
            if new in out and out[new] != value:
                raise ConfigError(f"key {old!r} (now {new!r}) is given twice with different values: "
                                  f"{value!r} and {out[new]!r}")
            out[new] = value
    return out


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1} (the override form of a nested config)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        elif not isinstance(v, dict):
            out[f"{prefix}{k}"] = v
    return out


def parse_sets(sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> {"a.b": 1, "c": [1, 2]} (values parsed as YAML)."""
    import yaml

    parsed = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. spg.fg_thresh=0.05")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
    return parsed


def config_to_dict(cfg: Any) -> dict:
    """Plain JSON values (tuples -> lists): what outputs record as their resolved config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# -------------------------------------------------------------------------------------- files, presets


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(spec: str | Path) -> Path:
    """``--config`` value -> file: an existing path, else the preset ``configs/<spec>.yaml``."""
    path = Path(spec)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{spec}.yaml"
    if "/" not in str(spec) and path.suffix not in (".yaml", ".yml") and preset.is_file():
        return preset
    raise ConfigError(f"--config {str(spec)!r}: no such file, and not a preset (presets: {', '.join(PRESETS)}; "
                      f"all files in {PRESET_DIR}: {', '.join(preset_names())})")


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values, not {type(data).__name__}")
    return data


def is_sectioned(data: dict) -> bool:
    # not SHARED: a flat trainer file may set its own ``points`` (Train3DConfig has the field)
    return any(k in SECTIONS or k in META_KEYS for k in data)


def config_layers(spec: str | Path, section: str | None,
                  _seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict, str | None]]:
    """(file, values, shared section or None) in precedence order: the named preset chain first, the file
    last; within a file the ``SHARED`` sections (as ``{name: values}``) before ``section``'s own values.

    ``section`` None (a class outside the registry) reads the file as flat.
    """
    path = resolve_config_path(spec)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'preset:' chain loops back ({' -> '.join(map(str, _seen))})")
    data = _read_yaml(path)
    if section is None or not is_sectioned(data):
        return [(path, data, None)]
    unknown = [k for k in data if k not in SECTIONS and k not in META_KEYS and k not in SHARED]
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (a config file has the keys "
                          f"{', '.join([*META_KEYS, *SHARED, *SECTIONS])}, or is one section's fields alone)")
    layers = []
    if data.get("preset") is not None:
        layers += config_layers(str(data["preset"]), section, (*_seen, path.resolve()))
    for name in (*(s for s in SHARED if s != section), section):  # shared sections first: the own one wins
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping, not {type(values).__name__}")
        if name == section:
            layers.append((path, values, None))
        elif values:
            layers.append((path, {name: values}, name))
    return layers


def load_config(cls: type, config: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
                section: str | None = None) -> Any:
    """Defaults of ``cls`` <- ``config`` (preset name or path; its ``section``, default the one ``cls`` is read
    from) <- ``sets`` ("a.b=value", values parsed as YAML). Errors name the file or --set and the key."""
    cfg = cls()
    names = {f.name for f in dataclasses.fields(cls)}
    if config is not None:
        for path, values, shared in config_layers(config, section or section_of(cls)):
            if shared and shared not in names:
                continue  # a shared section this command has no use for (train2d and points)
            try:
                cfg = apply_overrides(cfg, moved_keys(flatten_dict(values), cls))
            except ConfigError as e:
                where = f"section '{section or section_of(cls)}'" if is_sectioned(_read_yaml(path)) else "flat file"
                raise ConfigError(f"{path} ({where}): {e}") from e
    try:
        return apply_overrides(cfg, moved_keys(parse_sets(sets), cls))
    except ConfigError as e:
        raise ConfigError(e.args[0] if str(e).startswith("--set") else f"--set: {e}") from e


def load_section(section: str, config: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> Any:
    """The resolved config of one section (``stages``, ``train3d``, ``train2d``)."""
    return load_config(section_class(section), config, sets, section)

