"""Write synthetic frames in the nuScenes v1.0 layout (``formats_more.md`` §1), so ``mwsis convert nuscenes`` is
tested end to end against native frames (``mwsis synth --format nuscenes``; the ``nuscenes`` preset).

One scene per sequence, every frame a keyframe. What makes the reader's job real:

* LIDAR_TOP's calibrated_sensor turns its axes (x right, y forward, as nuScenes'), so the ``.pcd.bin`` holds
  sensor-frame points; intensity x 255; the ring column holds a fixed permutation of the rows (a laser id,
  not the elevation order).
* ego poses are turned and moved in the global frame, and every camera's ego pose lies ``CAMERA_EGO_SHIFT``
  from the LiDAR's (its calibrated_sensor compensates), so only the full chain ``inv(E_lidar) . E_cam . C_cam``
  puts the camera where it was.
* annotations in the global frame with nuScenes' [width, length, height] sizes; cyclists are
  ``vehicle.bicycle`` with ``cycle.with_rider``; visibility 4 for objects with a 2D box in some camera,
  else 1; lidarseg labels from the renderer's exact per-point truth
  (cyclist points as bicycle), with the panoptic README's category indices.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..frame import BACKGROUND, TOP_LIDAR
from ..kitti.geometry import PIXEL_SHIFT, WAYMO_FROM_OPENCV
from ..nuscenes.geometry import matrix_to_quat
from ..nuscenes.tables import CAMERAS, LIDAR

VERSION = "v1.0-mini"
EGO_FROM_LIDAR_AXES = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # sensor x right, y forward
CAMERA_EGO_SHIFT = np.array([0.4, -0.15, 0.0])  # camera-time ego position in the LiDAR-time ego frame
CATEGORIES = {0: "noise", 2: "human.pedestrian.adult", 14: "vehicle.bicycle", 17: "vehicle.car",
              24: "flat.driveable_surface", 28: "static.manmade", 31: "vehicle.ego"}
CLASS_CATEGORY = {0: 17, 1: 2, 2: 14, BACKGROUND: 24, -1: 0}  # mwsis semantic -> category index
RING_PERMUTATION_SEED = 32


def token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def ring_permutation(beams: int) -> np.ndarray:
    """row -> ring id written to the file (the reader must sort rings by elevation to undo it)."""
    return np.random.default_rng(RING_PERMUTATION_SEED).permutation(beams)


def _rec(tok: str, **kw) -> dict:
    return {"token": tok, **kw}


def _ego_pose(seq: int, index: int) -> np.ndarray:
    yaw = 0.4 + 0.1 * seq
    m = np.eye(4)
    m[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    m[:3, 3] = [600.0 + 12.0 * index, 1600.0 + 40.0 * seq, 0.0]
    return m


def export_nuscenes(frames, out_dir: Path | str, version: str = VERSION) -> list[np.ndarray]:
    """Write ``frames`` under ``out_dir``; returns per frame the native indices of the ``.pcd.bin`` rows."""
    out = Path(out_dir)
    t = {name: [] for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose",
                               "sample_annotation", "instance", "category", "attribute", "visibility", "log",
                               "lidarseg")}
    t["category"] = [_rec(token("category", i), name=n, description="", index=i) for i, n in CATEGORIES.items()]
    t["attribute"] = [_rec(token("attribute", n), name=n, description="") for n in ("cycle.with_rider",
                                                                                     "cycle.without_rider")]
    t["visibility"] = [_rec(str(k), level=lvl, description="") for k, lvl in
                       enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), 1)]
    t["sensor"] = [_rec(token("sensor", c), channel=c, modality="camera" if c.startswith("CAM") else "lidar")
                   for c in (LIDAR, *CAMERAS)]
    cat_tok = {i: token("category", i) for i in CATEGORIES}
    kinds = {0: cat_tok[17], 1: cat_tok[2], 2: cat_tok[14]}
    rider = token("attribute", "cycle.with_rider")
    records, scenes, calib_done = [], {}, set()
    instances: dict[tuple, dict] = {}
    for frame in frames:
        lid, p = frame.lidar(TOP_LIDAR), frame.points
        seq = frame.sequence
        scene = scenes.setdefault(seq, {"samples": [], "index": len(scenes)})
        C_lidar = np.eye(4)
        C_lidar[:3, :3], C_lidar[:3, 3] = EGO_FROM_LIDAR_AXES, lid.extrinsic[:3, 3]
        if "lidar" not in calib_done:
            calib_done.add("lidar")
            t["calibrated_sensor"].append(_rec(token("cs", LIDAR), sensor_token=token("sensor", LIDAR),
                                               translation=C_lidar[:3, 3].tolist(),
                                               rotation=matrix_to_quat(C_lidar[:3, :3]), camera_intrinsic=[]))
        E = _ego_pose(scene["index"], frame.index)
        s_tok = token("sample", frame.frame_id)
        scene["samples"].append(s_tok)
        t["sample"].append(_rec(s_tok, timestamp=frame.timestamp_us, scene_token=token("scene", seq), prev="",
                                next=""))
        # LiDAR: first returns of the TOP LiDAR, sensor frame
        sel = np.flatnonzero((p.laser_id == TOP_LIDAR) & (p.return_index == 0))
        xyz = (p.xyz[sel].astype(np.float64) - C_lidar[:3, 3]) @ C_lidar[:3, :3]
        ring = ring_permutation(lid.height)[p.row[sel]]
        scan = np.column_stack([xyz, p.intensity[sel] * 255.0, ring]).astype("<f4")
        sd_tok = token("sd", frame.frame_id, LIDAR)
        rel = f"samples/{LIDAR}/{frame.frame_id}__{LIDAR}__{frame.timestamp_us}.pcd.bin"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(scan.tobytes())
        ego_tok = token("ego", frame.frame_id, LIDAR)
        t["ego_pose"].append(_rec(ego_tok, translation=E[:3, 3].tolist(), rotation=matrix_to_quat(E[:3, :3]),
                                  timestamp=frame.timestamp_us))
        t["sample_data"].append(_rec(sd_tok, sample_token=s_tok, ego_pose_token=ego_tok,
                                     calibrated_sensor_token=token("cs", LIDAR), filename=rel, fileformat="pcd",
                                     width=0, height=0, timestamp=frame.timestamp_us, is_key_frame=True, prev="",
                                     next=""))
        if frame.gt.point_semantic is not None:
            lut = np.vectorize(CLASS_CATEGORY.get)(frame.gt.point_semantic[sel].astype(np.int64))
            seg_rel = f"lidarseg/{version}/{sd_tok}_lidarseg.bin"
            (out / seg_rel).parent.mkdir(parents=True, exist_ok=True)
            (out / seg_rel).write_bytes(lut.astype(np.uint8).tobytes())
            t["lidarseg"].append(_rec(token("lidarseg", sd_tok), sample_data_token=sd_tok, filename=seg_rel))
        # cameras: their ego pose CAMERA_EGO_SHIFT away, compensated in their calibrated_sensor
        shift = np.eye(4)
        shift[:3, 3] = CAMERA_EGO_SHIFT
        E_cam = E @ shift
        cam_ego = token("ego", frame.frame_id, "CAM")
        t["ego_pose"].append(_rec(cam_ego, translation=E_cam[:3, 3].tolist(), rotation=matrix_to_quat(E_cam[:3, :3]),
                                  timestamp=frame.timestamp_us + 20_000))
        for cam in frame.cameras:
            channel = CAMERAS[cam.camera_id - 1]
            if channel not in calib_done:
                calib_done.add(channel)
                V = np.array(cam.extrinsic, np.float64)
                V[:3, :3] = V[:3, :3] @ WAYMO_FROM_OPENCV  # vehicle_from_camera in OpenCV axes
                C = np.linalg.inv(shift) @ V
                K = np.array(cam.intrinsic, np.float64)
                K[:2, 2] -= PIXEL_SHIFT
                t["calibrated_sensor"].append(_rec(token("cs", channel), sensor_token=token("sensor", channel),
                                                   translation=C[:3, 3].tolist(), rotation=matrix_to_quat(C[:3, :3]),
                                                   camera_intrinsic=K.tolist()))
            rel = f"samples/{channel}/{frame.frame_id}__{channel}__{frame.timestamp_us}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(cam.image_bytes)
            t["sample_data"].append(_rec(token("sd", frame.frame_id, channel), sample_token=s_tok,
                                         ego_pose_token=cam_ego, calibrated_sensor_token=token("cs", channel),
                                         filename=rel, fileformat="png", width=cam.width, height=cam.height,
                                         timestamp=frame.timestamp_us + 20_000, is_key_frame=True, prev="", next=""))
        b = frame.gt.boxes3d
        seen = set(frame.boxes2d.object_id.tolist())  # objects with a 2D box somewhere: visible (level 4)
        for k in range(len(b)):
            key = (seq, int(b.object_id[k]))
            inst = instances.setdefault(key, _rec(token("instance", *key), category_token=kinds[int(b.class_id[k])],
                                                  nbr_annotations=0))
            inst["nbr_annotations"] += 1
            h = float(b.heading[k])
            R = E[:3, :3] @ np.array([[math.cos(h), -math.sin(h), 0], [math.sin(h), math.cos(h), 0], [0, 0, 1]])
            centre = E[:3, :3] @ b.center[k].astype(np.float64) + E[:3, 3]
            length, width, height = (float(v) for v in b.size[k])
            t["sample_annotation"].append(_rec(
                token("ann", frame.frame_id, key[1]), sample_token=s_tok, instance_token=inst["token"],
                attribute_tokens=[rider] if int(b.class_id[k]) == 2 else [],
                visibility_token="4" if key[1] in seen else "1",
                translation=centre.tolist(), size=[width, length, height], rotation=matrix_to_quat(R),
                num_lidar_pts=int((frame.gt.point_instance[sel] == key[1]).sum()), num_radar_pts=0, prev="",
                next=""))
        records.append(sel.astype(np.int64))
    by_tok = {s["token"]: s for s in t["sample"]}
    for seq, scene in scenes.items():
        for a, b_ in zip(scene["samples"][:-1], scene["samples"][1:]):
            by_tok[a]["next"], by_tok[b_]["prev"] = b_, a
        t["scene"].append(_rec(token("scene", seq), name=seq, description="synthetic", log_token=token("log"),
                               nbr_samples=len(scene["samples"]), first_sample_token=scene["samples"][0],
                               last_sample_token=scene["samples"][-1]))
    t["log"] = [_rec(token("log"), logfile="synthetic", vehicle="synthetic", date_captured="2026-12-04",
                     location="synthetic")]
    t["instance"] = list(instances.values())
    (out / version).mkdir(parents=True, exist_ok=True)
    for name, recs in t.items():
        (out / version / f"{name}.json").write_text(json.dumps(recs, indent=0))
    return records
