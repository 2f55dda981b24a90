"""nuScenes v1.0 metadata tables (``formats_more.md`` §1.2-1.3), read directly from their JSON files.

The devkit is not a dependency (§1.12): it pins numpy < 2, needs every map PNG and brings heavy imports, while
a keyframe needs only token maps and the reverse index below. Every record is checked for the fields we use,
and a problem names the table file, the record's token and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose", "sample_annotation",
          "instance", "category", "attribute", "visibility", "log")
OPTIONAL = ("lidarseg", "panoptic")
LIDAR = "LIDAR_TOP"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT", "CAM_BACK")
# fields each table's records must carry (beyond ``token``)
FIELDS = {
    "scene": ("name", "first_sample_token"),
    "sample": ("timestamp", "scene_token", "next"),
    "sample_data": ("sample_token", "ego_pose_token", "calibrated_sensor_token", "filename", "timestamp",
                    "is_key_frame"),
    "calibrated_sensor": ("sensor_token", "translation", "rotation", "camera_intrinsic"),
    "sensor": ("channel", "modality"),
    "ego_pose": ("translation", "rotation"),
    "sample_annotation": ("sample_token", "instance_token", "attribute_tokens", "visibility_token", "translation",
                          "size", "rotation"),
    "instance": ("category_token",),
    "category": ("name",),
    "attribute": ("name",),
    "visibility": ("level",),
    "log": (),
    "lidarseg": ("sample_data_token", "filename"),
    "panoptic": ("sample_data_token", "filename"),
}


class NuScenesFormatError(ValueError):
    """A nuScenes file is missing or malformed: ``path``, and the record ``token`` and ``field`` where known."""

    def __init__(self, path: str, problem: str, token: str = "", field_: str = ""):
        self.path, self.problem, self.token, self.field = str(path), problem, token, field_
        where = str(path) + (f": record {token}" if token else "") + (f": {field_}" if field_ else "")
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # process pools pickle exceptions by their args
        return type(self), (self.path, self.problem, self.token, self.field)


@dataclass
class Tables:
    """Token -> record per table, plus the reverse index of §1.3."""

    root: Path
    version: str
    by_token: dict[str, dict[str, dict]]
    keyframe_data: dict[str, dict[str, str]] = field(default_factory=dict)  # sample -> channel -> sample_data
    annotations: dict[str, list[str]] = field(default_factory=dict)  # sample -> annotation tokens
    channel_of: dict[str, str] = field(default_factory=dict)  # calibrated_sensor -> channel
    lidarseg: dict[str, str] = field(default_factory=dict)  # lidar sample_data -> lidarseg file (relative)
    panoptic: dict[str, str] = field(default_factory=dict)  # lidar sample_data -> panoptic file (relative)
    object_id: dict[str, int] = field(default_factory=dict)  # instance -> its position in instance.json + 1

    def get(self, table: str, token: str, path_hint: str = "", field_: str = "") -> dict:
        rec = self.by_token[table].get(token)
        if rec is None:
            raise NuScenesFormatError(path_hint or self.table_path(table), f"token {token!r} is not in {table}.json",
                                      "", field_)
        return rec

    def table_path(self, table: str) -> Path:
        return self.root / self.version / f"{table}.json"

    def scene_samples(self, scene_token: str) -> list[str]:
        """The sample tokens of a scene in time order (``first_sample_token`` then ``next``)."""
        scene = self.get("scene", scene_token)
        out, tok = [], scene["first_sample_token"]
        while tok:
            if tok in out:
                raise NuScenesFormatError(self.table_path("sample"), "the next chain loops", tok, "next")
            out.append(tok)
            tok = self.get("sample", tok, field_="next")["next"]
        return out

    def category_name(self, annotation: dict) -> str:
        inst = self.get("instance", annotation["instance_token"], field_="instance_token")
        return self.get("category", inst["category_token"], field_="category_token")["name"]

    def attribute_names(self, annotation: dict) -> set[str]:
        return {self.get("attribute", t, field_="attribute_tokens")["name"] for t in annotation["attribute_tokens"]}


def _load(path: Path, table: str) -> list[dict]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NuScenesFormatError(str(path), "missing") from None
    except (OSError, ValueError) as e:
        raise NuScenesFormatError(str(path), f"not a readable JSON file ({e})") from None
    if not isinstance(doc, list):
        raise NuScenesFormatError(str(path), "expected a JSON list of records")
    for k, rec in enumerate(doc):
        if not isinstance(rec, dict) or not isinstance(rec.get("token"), str):
            raise NuScenesFormatError(str(path), f"record {k} has no string token", "", "token")
        missing = [f for f in FIELDS[table] if f not in rec]
        if missing:
            raise NuScenesFormatError(str(path), "missing", rec["token"], missing[0])
    return doc


def load_tables(root: Path | str, version: str) -> Tables:
    """Load and index the tables of ``root/version`` (e.g. ``v1.0-mini``)."""
    root = Path(root)
    if not (root / version).is_dir():
        raise NuScenesFormatError(str(root / version), "missing: SRC must hold the version folder (e.g. v1.0-mini) "
                                  "beside samples/")
    by_token = {t: {r["token"]: r for r in _load(root / version / f"{t}.json", t)} for t in TABLES}
    for t in OPTIONAL:
        if (root / version / f"{t}.json").exists():
            by_token[t] = {r["token"]: r for r in _load(root / version / f"{t}.json", t)}
    tables = Tables(root, version, by_token)
    for cs_tok, cs in by_token["calibrated_sensor"].items():
        tables.channel_of[cs_tok] = tables.get("sensor", cs["sensor_token"], field_="sensor_token")["channel"]
    for sd_tok, sd in by_token["sample_data"].items():
        if sd["is_key_frame"]:
            channel = tables.channel_of.get(sd["calibrated_sensor_token"])
            if channel is None:
                raise NuScenesFormatError(tables.table_path("sample_data"), "unknown calibrated_sensor_token", sd_tok,
                                          "calibrated_sensor_token")
            tables.keyframe_data.setdefault(sd["sample_token"], {})[channel] = sd_tok
    for a_tok, ann in by_token["sample_annotation"].items():
        tables.annotations.setdefault(ann["sample_token"], []).append(a_tok)
    tables.object_id = {tok: k + 1 for k, tok in enumerate(by_token["instance"])}  # stable across reruns
    for t, target in (("lidarseg", tables.lidarseg), ("panoptic", tables.panoptic)):
        for rec in by_token.get(t, {}).values():
            target[rec["sample_data_token"]] = rec["filename"]
    return tables
