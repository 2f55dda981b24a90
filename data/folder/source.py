"""A sensor-folder dataset on disk (:mod:`.layout` for the layout): its spec, logs, calibrations and frames."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from ..frame import Frame
from .build import read_file, read_folder_frame
from .layout import Calib, CocoBox, DatasetSpec, FolderFormatError, FrameEntry, parse_calib, parse_coco_boxes, \
    parse_coco_clicks, parse_dataset, parse_frames


def _yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(read_file(path).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise FolderFormatError(str(path), "", f"not a readable YAML file ({e})") from None


class FolderSource:
    """Read-only view of a layout root. Every file is parsed (and checked) when first needed."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not (self.root / "dataset.yaml").exists():
            raise FolderFormatError(str(self.root / "dataset.yaml"), "", "missing: ROOT must hold dataset.yaml, "
                                    "calib/ and logs/ (docs/data.md, 'Bring your own data')")
        self.spec: DatasetSpec = parse_dataset(_yaml(self.root / "dataset.yaml"), str(self.root / "dataset.yaml"))
        # each file is parsed once per source: a log's units would otherwise reparse its index and COCO files
        self._calib = lru_cache(maxsize=None)(self._read_calib)
        self.entries = lru_cache(maxsize=None)(self._read_entries)
        self.boxes = lru_cache(maxsize=None)(self._read_boxes)
        self.clicks = lru_cache(maxsize=None)(self._read_clicks)

    def logs(self) -> list[str]:
        """Sorted names of ``logs/*/`` that hold a ``frames.jsonl``."""
        d = self.root / "logs"
        if not d.is_dir():
            raise FolderFormatError(str(d), "", "missing: one directory per log, each with frames.jsonl")
        return sorted(p.parent.name for p in d.glob("*/frames.jsonl"))

    def _read_entries(self, log: str) -> list[FrameEntry]:
        path = self.root / "logs" / log / "frames.jsonl"
        try:
            text = read_file(path).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FolderFormatError(str(path), "", f"not UTF-8 text ({e})") from None
        return parse_frames(text, str(path))

    def _read_calib(self, calib_id: str) -> Calib:
        path = self.root / "calib" / f"{calib_id}.yaml"
        return parse_calib(_yaml(path), str(path))

    def calib(self, calib_id: str) -> Calib:
        return self._calib(calib_id)

    def _per_camera(self, log: str, folder: str, parse) -> dict:
        out = {}
        for path in sorted((self.root / "logs" / log / folder).glob("*.json")):
            try:
                doc = json.loads(read_file(path).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise FolderFormatError(str(path), "", f"not a readable JSON file ({e})") from None
            out[path.stem] = parse(doc, str(path), self.spec.classes)
        return out

    def _read_boxes(self, log: str) -> dict[str, dict[str, list[CocoBox]]]:
        """camera name -> {frame id: boxes} from ``logs/<log>/boxes2d/<camera>.json``."""
        return self._per_camera(log, "boxes2d", parse_coco_boxes)

    def _read_clicks(self, log: str) -> dict[str, dict[str, list[tuple[int, float, float, int]]]]:
        """camera name -> {frame id: [(class, u, v, object id)]} from ``logs/<log>/clicks/<camera>.json``."""
        return self._per_camera(log, "clicks", parse_coco_clicks)

    def frames(self, log: str, start: int = 0, stop: int | None = None) -> Iterator[tuple[Frame, list[str]]]:
        """(frame, notes) for entries ``start:stop`` of a log; frame ``index`` is the position in the log."""
        entries = self.entries(log)
        boxes = self.boxes(log)
        for name, per_frame in boxes.items():
            unknown = sorted(set(per_frame) - {e.frame_id for e in entries})
            if unknown:
                raise FolderFormatError(str(self.root / "logs" / log / "boxes2d" / f"{name}.json"), "images.frame_id",
                                        f"{len(unknown)} frame(s) not in frames.jsonl, e.g. {unknown[0]!r}")
        for i in range(start, len(entries) if stop is None else min(stop, len(entries))):
            e = entries[i]
            calib = self.calib(e.calib)
            cams = {n for n in boxes if e.frame_id in boxes[n]} - set(e.cameras)
            if cams:
                raise FolderFormatError(str(self.root / "logs" / log / "boxes2d" / f"{sorted(cams)[0]}.json"),
                                        "images", f"boxes for camera {sorted(cams)[0]!r}, which the frame has no "
                                        "image of", e.frame_id)
            yield read_folder_frame(self.root / "logs" / log, e, i, self.spec.points, calib, boxes)
