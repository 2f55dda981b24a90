"""Write synthetic frames in the sensor-folder layout (``data/folder/layout.py``), so ``mwsis convert folder``
is tested end to end against native frames (``mwsis synth --format folder``).

One log per sequence, one calibration per sequence. Points are written in the LiDAR frame (or the vehicle
frame, ``points_frame``) with every per-point column the layout knows; ``ring=False`` drops the ring column so
rows must come from the inclinations (``inclinations=True``) or, with ``scan_order=True``, from the file order
(first returns only, ring after ring from the top beam, each counter-clockwise from azimuth 0, as KITTI).
Cameras are written in OpenCV axes with pixel centres at integers (the convention most fleets use), boxes as
COCO ``[x, y, w, h]`` with KITTI-like category names mapped in ``dataset.yaml``, and the renderer's exact
per-point labels as ground truth; ``clicks=True`` adds one box-centre click per box as COCO keypoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..clicks import box_centre_clicks
from ..frame import CAMERA_NAMES, CLASS_NAMES, TOP_LIDAR, Frame
from ..kitti.geometry import PIXEL_SHIFT, WAYMO_FROM_OPENCV
from .export_kitti import scan_order

POINT_FORMATS = ("npy", "bin", "pcd", "las", "laz")
CATEGORY = {0: "Car", 1: "Pedestrian", 2: "Cyclist"}  # names the export's dataset.yaml maps to our classes


@dataclass
class FolderExport:
    """What one exported frame holds, for tests: row i of its point file is native point ``point_index[i]``."""

    log: str
    frame_id: str
    point_index: np.ndarray


def _columns(ring: bool) -> list[str]:
    return ["x", "y", "z", "intensity", "elongation", "return", *(["ring"] if ring else [])]


LAS_INTENSITY_SCALE = 4.0  # LAS intensity is uint16: synthetic intensities (up to ~2) are stored divided by 4


def dataset_yaml(point_format: str, ring: bool, beams: int, width: int, points_frame: str) -> dict:
    scale = LAS_INTENSITY_SCALE if point_format in ("las", "laz") else 1.0
    return {"format_version": 1,
            "points": {"columns": _columns(ring), "bin_dtype": "float32", "frame": points_frame,
                       "ring_order": "top_first", "beams": int(beams), "azimuth_columns": int(width),
                       "intensity_scale": scale},
            "classes": {**{name: CLASS_NAMES[c] for c, name in CATEGORY.items()}, "Tram": "ignore"}}


def calib_yaml(frame: Frame, inclinations: bool) -> dict:
    lid = frame.lidar(TOP_LIDAR)
    lidar = {"vehicle_from_lidar": lid.extrinsic.tolist()}
    if inclinations:
        lidar["inclinations_deg"] = np.degrees(lid.inclinations.astype(np.float64)).tolist()
    cams = {}
    for c in frame.cameras:
        ext = np.array(c.extrinsic, np.float64)
        ext[:3, :3] = ext[:3, :3] @ WAYMO_FROM_OPENCV  # vehicle_from_opencv = vehicle_from_waymo . waymo_from_opencv
        K = c.intrinsic
        cams[CAMERA_NAMES[c.camera_id]] = {
            "width": c.width, "height": c.height, "fx": float(K[0, 0]), "fy": float(K[1, 1]),
            "cx": float(K[0, 2]) - PIXEL_SHIFT, "cy": float(K[1, 2]) - PIXEL_SHIFT,
            "distortion": np.asarray(c.distortion, np.float64).tolist(), "axes": "opencv",
            "vehicle_from_camera": ext.tolist()}
    return {"lidar": lidar, "cameras": cams}


def _write_points(path: Path, cols: dict[str, np.ndarray], fmt: str) -> None:
    names = list(cols)
    if fmt == "npy":
        dtypes = {"return": np.uint8, "ring": np.uint16}
        a = np.zeros(len(cols["x"]), [(n, dtypes.get(n, np.float32)) for n in names])
        for n in names:
            a[n] = cols[n]
        np.save(path, a)
    elif fmt == "bin":
        path.write_bytes(np.stack([cols[n] for n in names], 1).astype("<f4").tobytes())
    elif fmt == "pcd":
        from pypcd4 import Encoding, PointCloud

        types = tuple(np.uint8 if n == "return" else np.uint16 if n == "ring" else np.float32 for n in names)
        pc = PointCloud.from_points(np.stack([cols[n] for n in names], 1), tuple(names), types)
        pc.save(str(path), encoding=Encoding.BINARY_COMPRESSED)
    else:
        import laspy

        header = laspy.LasHeader(point_format=6, version="1.4")
        header.scales = np.array([1e-4, 1e-4, 1e-4])
        xyz = np.stack([cols["x"], cols["y"], cols["z"]], 1).astype(np.float64)
        header.offsets = np.floor(xyz.min(0))
        extra = [laspy.ExtraBytesParams("elongation", np.float32)]
        if "ring" in cols:
            extra.append(laspy.ExtraBytesParams("ring", np.uint16))
        header.add_extra_dims(extra)
        las = laspy.LasData(header)
        las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        las.intensity = np.round(np.clip(cols["intensity"] / LAS_INTENSITY_SCALE, 0, 1) * 65535).astype(np.uint16)
        las.return_number = (cols["return"] + 1).astype(np.uint8)
        las.number_of_returns = np.full(len(xyz), int(cols["return"].max()) + 1, np.uint8)
        las.elongation = cols["elongation"].astype(np.float32)
        if "ring" in cols:
            las.ring = cols["ring"].astype(np.uint16)
        las.write(str(path))


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    cats = [{"id": c + 1, "name": n} for c, n in CATEGORY.items()] + [{"id": 9, "name": "Tram"}]
    return {"images": images, "categories": cats, "annotations": annotations}


def export_folder(frames, out_dir: Path | str, point_format: str = "npy", ring: bool = True,
                  inclinations: bool = False, scan_order_only: bool = False, points_frame: str = "lidar",
                  clicks: bool = False) -> list[FolderExport]:
    """Write ``frames`` (any order of sequences) under ``out_dir``; see the module docstring."""
    if point_format not in POINT_FORMATS:
        raise ValueError(f"point format {point_format!r}: one of {', '.join(POINT_FORMATS)}")
    if scan_order_only and ring:
        raise ValueError("scan_order_only writes no ring column: pass ring=False")
    out = Path(out_dir)
    records, index, coco, click_docs, first = [], {}, {}, {}, None
    for frame in frames:
        log = frame.sequence
        ldir = out / "logs" / log
        for d in ("lidar", "gt/semantic", "gt/instance", "boxes2d"):
            (ldir / d).mkdir(parents=True, exist_ok=True)
        lid, p = frame.lidar(TOP_LIDAR), frame.points
        sel = np.flatnonzero(p.laser_id == TOP_LIDAR)
        if scan_order_only:
            sel = sel[p.return_index[sel] == 0]
            sel = sel[scan_order(p.row[sel], p.col[sel], lid.width, np.zeros(lid.height))]
        first = first or frame
        if points_frame == "lidar":
            inv = np.linalg.inv(lid.extrinsic)
            xyz = p.xyz[sel].astype(np.float64) @ inv[:3, :3].T + inv[:3, 3]
        else:
            xyz = p.xyz[sel].astype(np.float64)
        cols = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": p.intensity[sel].astype(np.float64),
                "elongation": p.elongation[sel].astype(np.float64), "return": p.return_index[sel].astype(np.float64)}
        if ring:
            cols["ring"] = p.row[sel].astype(np.float64)
        lidar_rel = f"lidar/{frame.frame_id}.{point_format}"
        _write_points(ldir / lidar_rel, cols, point_format)
        cams = {}
        for c in frame.cameras:
            name = CAMERA_NAMES[c.camera_id]
            rel = f"cameras/{name}/{frame.frame_id}.png"
            (ldir / rel).parent.mkdir(parents=True, exist_ok=True)
            (ldir / rel).write_bytes(c.image_bytes)
            cams[name] = rel
            images, anns = coco.setdefault((log, name), ([], []))
            images.append({"id": len(images) + 1, "file_name": rel, "frame_id": frame.frame_id,
                           "width": c.width, "height": c.height, "timestamp_us": frame.timestamp_us})
            b = frame.boxes2d.of_camera(c.camera_id)
            if clicks:  # one box-centre click per box, as COCO keypoints
                ck = box_centre_clicks(b)
                cimages, canns = click_docs.setdefault((log, name), ([], []))
                cimages.append({"id": len(cimages) + 1, "file_name": rel, "frame_id": frame.frame_id,
                                "width": c.width, "height": c.height})
                canns += [{"id": len(canns) + 1, "image_id": len(cimages), "category_id": int(ck.class_id[k]) + 1,
                           "keypoints": [float(ck.uv[k, 0]), float(ck.uv[k, 1]), 2], "track_id": int(ck.object_id[k])}
                          for k in range(len(ck))]
            for k in range(len(b)):
                x1, y1, x2, y2 = (float(v) for v in b.xyxy[k])
                anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": int(b.class_id[k]) + 1,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                             "track_id": int(b.object_id[k])})
        entry = {"frame_id": frame.frame_id, "timestamp_us": frame.timestamp_us, "lidar": lidar_rel, "calib": log,
                 "cameras": cams}
        if frame.gt.point_semantic is not None:
            np.save(ldir / f"gt/semantic/{frame.frame_id}.npy", frame.gt.point_semantic[sel].astype(np.int8))
            np.save(ldir / f"gt/instance/{frame.frame_id}.npy", frame.gt.point_instance[sel].astype(np.int32))
            entry["gt"] = {"semantic": f"gt/semantic/{frame.frame_id}.npy",
                           "instance": f"gt/instance/{frame.frame_id}.npy"}
        index.setdefault(log, []).append(json.dumps(entry))
        (out / "calib").mkdir(parents=True, exist_ok=True)
        (out / "calib" / f"{log}.yaml").write_text(yaml.safe_dump(calib_yaml(frame, inclinations)))
        records.append(FolderExport(log, frame.frame_id, sel.astype(np.int64)))
    if first is None:
        raise ValueError("no frames to export")
    for log, lines in index.items():
        (out / "logs" / log / "frames.jsonl").write_text("\n".join(lines) + "\n")
    for (log, name), (images, anns) in coco.items():
        (out / "logs" / log / "boxes2d" / f"{name}.json").write_text(json.dumps(_coco(images, anns)))
    for (log, name), (images, anns) in click_docs.items():
        (out / "logs" / log / "clicks").mkdir(parents=True, exist_ok=True)
        (out / "logs" / log / "clicks" / f"{name}.json").write_text(json.dumps(_coco(images, anns)))
    lid = first.lidar(TOP_LIDAR)
    (out / "dataset.yaml").write_text(yaml.safe_dump(dataset_yaml(point_format, ring, lid.height, lid.width,
                                                                  points_frame), sort_keys=False))
    return records
