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
    name: str  # shard stem, e.g. the sequence name
    path: str  # relative to the dataset root, e.g. "frames/<name>.parquet"
    frames: int
    frame_ids: list[str]
    bytes: int
    sha256: str


@dataclass
class Manifest:
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
        try:
            shards = [ShardInfo(**s) for s in d["shards"]]
            return Manifest(class_names=list(d["class_names"]), sensors=dict(d["sensors"]), shards=shards,
                            source=dict(d.get("source", {})), schema_version=version, format=d["format"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed manifest ({e})") from e
