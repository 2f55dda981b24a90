"""``manifest.json``: what a dataset directory holds.

The manifest is the commit point of a dataset: a shard counts as written only once it is listed
here with its frame count, byte size and SHA-256. It is written atomically (temp file + rename).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1
FORMAT = "mwsis-dataset"


@dataclass
class ShardInfo:
    """One frame shard of a dataset: its name, path, frame count and SHA-256."""
    name: str  # shard stem, e.g. the sequence name
    path: str  # relative to the dataset root, e.g. "frames/<name>.parquet"
    frames: int
    frame_ids: list[str]
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """A dataset's ``manifest.json``: its shards, sensors and provenance."""
    class_names: list[str]
    sensors: dict  # {"lidars": [{laser_id, name, height, width}], "cameras": [{camera_id, name, width, height}]}
    shards: list[ShardInfo] = field(default_factory=list)
    source: dict = field(default_factory=dict)  # how the data was made: {"kind": "synthetic", "preset": ..., "seed": ...}
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shards"] = sorted(d["shards"], key=lambda s: s["name"])  # order-independent bytes
        return d

    @staticmethod
    def from_dict(d: dict, where: str = "manifest.json") -> "Manifest":
        if d.get("format") != FORMAT:
            raise ValueError(f"{where}: field 'format' is {d.get('format')!r}, expected {FORMAT!r}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"{where}: field 'schema_version' is {version!r}; this mwsis reads version {SCHEMA_VERSION}")
        for key, kind in (("class_names", list), ("sensors", dict), ("shards", list)):
            if not isinstance(d.get(key), kind):
                raise ValueError(f"{where}: field {key!r} is {_kind(d.get(key))}, expected a {kind.__name__}")
        shards = [_shard_info(s, f"{where}: shards[{i}]") for i, s in enumerate(d["shards"])]
        _reject_duplicates(shards, where)
        return Manifest(class_names=list(d["class_names"]), sensors=dict(d["sensors"]), shards=shards,
                        source=dict(d.get("source") or {}), schema_version=version, format=d["format"])


# every field of a shard entry and its JSON type; bool is excluded from int on purpose
_SHARD_FIELDS = {"name": str, "path": str, "frames": int, "frame_ids": list, "bytes": int, "sha256": str}


def _kind(v) -> str:
    return "missing" if v is None else type(v).__name__


def _shard_info(s, where: str) -> ShardInfo:
    """One manifest shard entry, type-checked field by field: the error names the entry and the field."""
    if not isinstance(s, dict):
        raise ValueError(f"{where}: is {_kind(s)}, expected an object with fields {list(_SHARD_FIELDS)}")
    name = s.get("name")
    where = f"{where} ({name!r})" if isinstance(name, str) else where
    for key, kind in _SHARD_FIELDS.items():
        v = s.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ValueError(f"{where}: field {key!r} is {_kind(v)}, expected {kind.__name__}")
    unknown = sorted(set(s) - set(_SHARD_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}")
    if not all(isinstance(f, str) for f in s["frame_ids"]):
        raise ValueError(f"{where}: field 'frame_ids' must hold strings")
    if s["frames"] != len(s["frame_ids"]) or s["frames"] < 0:
        raise ValueError(f"{where}: field 'frames' is {s['frames']}, but 'frame_ids' lists {len(s['frame_ids'])}")
    if s["bytes"] < 0 or len(s["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in s["sha256"]):
        raise ValueError(f"{where}: field 'bytes' must be >= 0 and 'sha256' 64 lowercase hex digits")
    return ShardInfo(**s)


def _reject_duplicates(shards: list[ShardInfo], where: str) -> None:
    """A shard listed twice would be read (and scored) twice; a frame id in two shards is ambiguous."""
    for key in ("name", "path"):
        seen: dict[str, int] = {}
        for i, s in enumerate(shards):
            v = getattr(s, key)
            if v in seen:
                raise ValueError(f"{where}: shards[{seen[v]}] and shards[{i}] have the same {key} {v!r}")
            seen[v] = i
    owner: dict[str, str] = {}
    for s in shards:
        for fid in s.frame_ids:
            if fid in owner:
                where_first = "twice in shard" if owner[fid] == s.name else f"in shards {owner[fid]!r} and"
                raise ValueError(f"{where}: frame id {fid!r} appears {where_first} {s.name!r}")
            owner[fid] = s.name
