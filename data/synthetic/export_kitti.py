"""Write synthetic frames in the real KITTI 3D-object training layout (``data_formats.md`` §E).

``export_kitti(frames, out_dir)`` writes ``velodyne/``, ``calib/``, ``label_2/`` and ``image_2/`` with
``NNNNNN`` stems, so ``mwsis convert kitti`` can be tested end to end without KITTI itself. Frames
should come from the ``kitti`` preset (one level FRONT camera, one return); any frame with a TOP LiDAR
and a FRONT camera works, but KITTI's box model assumes a level camera.

* velodyne: TOP first returns in the LiDAR frame as float32 ``x y z reflectance``, in KITTI scan order
  (§E.4): ring after ring from the top beam, each ring sweeping counter-clockwise through one
  revolution that starts at ``seam_deg`` (KITTI: 0, straight ahead), optionally jittered per ring by
  ``seam_jitter_deg`` (firing order follows the nominal column azimuth, so the points' own azimuths
  jitter a little, as real ones do). Rings and pixels without a return are simply absent.
* calib: P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo (§E.2). The FRONT camera becomes camera 2;
  camera 0 sits 6 cm to its right, and R0_rect is a small non-trivial rotation, so a reader must fold
  both R0_rect and P2's translation in to get the geometry right. Pixel coordinates follow KITTI
  (pixel centres at integers: principal point - 0.5 px) and boxes name pixels inclusively
  (right = last column), see ``data/kitti/geometry.py``.
* label_2: one 15-field line per FRONT 2D box (Car/Van/Truck by size, Pedestrian, Cyclist) with the
  object's 3D box, then DontCare lines for objects whose LiDAR points are seen in the image but that
  have no 2D box (too small or hidden). ``truncated``/``occluded`` are estimated from the projected
  3D box.
* image_2: the FRONT PNG as rendered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..frame import TOP_LIDAR, Frame
from ..kitti.formats import KittiCalib, KittiObject, dontcare, format_calib, format_label_line
from ..kitti.geometry import (PIXEL_SHIFT, WAYMO_FROM_OPENCV, box_corners_velo, edges_to_box, label_fields_from_box,
                              project_velo)

FRONT = 1
CAM2_OFFSET = np.array([0.06, -0.0003, 0.0027])  # camera 2 from camera 0, rectified axes (KITTI: P2[:, 3] / f)
BASELINE = 0.537  # camera 1 (grey right) from camera 0


@dataclass
class KittiExport:
    """What one exported sample holds, for tests: native point of each file row and object of each label line."""

    stem: str
    frame_id: str
    point_index: np.ndarray  # (N,) int64: row i of the .bin is native point point_index[i]
    line_object_ids: list[int] = field(default_factory=list)  # native object id per label line, 0 for DontCare
    calib: KittiCalib | None = None


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def kitti_calib(frame: Frame) -> KittiCalib:
    """KITTI calibration of a frame's FRONT camera relative to its TOP LiDAR (module docstring)."""
    cam, lid = frame.camera(FRONT), frame.lidar(TOP_LIDAR)
    velo_from_cam = np.linalg.inv(lid.extrinsic) @ cam.extrinsic  # Waymo camera axes
    cam_from_velo = np.linalg.inv(velo_from_cam)
    opencv_from_waymo = WAYMO_FROM_OPENCV.T
    Rc, tc = opencv_from_waymo @ cam_from_velo[:3, :3], opencv_from_waymo @ cam_from_velo[:3, 3]
    R0 = _rot(math.radians(0.4), math.radians(-0.3), math.radians(0.2))
    # rectified camera 0 = camera 2 shifted by -CAM2_OFFSET; rect_from_velo = R0_rect · Tr_velo_to_cam
    Tr = np.hstack([R0.T @ Rc, (R0.T @ (tc - CAM2_OFFSET))[:, None]])
    K = np.asarray(cam.intrinsic, np.float64).copy()
    K[:2, 2] -= PIXEL_SHIFT  # KITTI puts pixel centres at integers
    P = {"P0": np.hstack([K, np.zeros((3, 1))]),
         "P1": np.hstack([K, (K @ np.array([-BASELINE, 0.0, 0.0]))[:, None]]),
         "P2": np.hstack([K, (K @ CAM2_OFFSET)[:, None]]),
         "P3": np.hstack([K, (K @ (CAM2_OFFSET + np.array([-BASELINE, 0.002, -0.003])))[:, None]])}
    imu = np.hstack([_rot(0.0, 0.0, math.radians(0.5)), np.array([[-0.81], [0.32], [-0.80]])])
    return KittiCalib(P, R0, Tr, imu)


def scan_order(row: np.ndarray, col: np.ndarray, width: int, seams: np.ndarray) -> np.ndarray:
    """Indices sorting points ring by ring (row 0 first), each ring counter-clockwise from its seam."""
    az = np.pi * (1.0 - (2.0 * col.astype(np.float64) + 1.0) / width)  # nominal firing azimuth of the column
    a_rel = np.mod(az - seams[row], 2 * np.pi)
    return np.lexsort((a_rel, row))


def _kitti_type(class_id: int, size: np.ndarray) -> str:
    if class_id == 0:
        return "Truck" if size[0] >= 6.5 else "Van" if size[2] >= 1.95 else "Car"
    return "Pedestrian" if class_id == 1 else "Cyclist"


def _truncation_occlusion(calib: KittiCalib, corners: np.ndarray, box2d: np.ndarray, w: int,
                          h: int) -> tuple[float, int]:
    """truncated = share of the projected 3D box outside the image; occluded 0/1/2 from the visible 2D
    box's share of the projected box inside the image (3 unknown when the box reaches behind the camera)."""
    uv, _ = project_velo(calib, corners, w, h)
    depth = (corners @ calib.rect_from_velo()[:3, :3].T + calib.rect_from_velo()[:3, 3])[:, 2]
    if (depth <= 0.1).any():
        return 1.0, 3
    x1, y1 = uv.min(axis=0)
    x2, y2 = uv.max(axis=0)
    full = max((x2 - x1) * (y2 - y1), 1e-9)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    inside = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
    vis = (box2d[2] - box2d[0]) * (box2d[3] - box2d[1]) / max(inside, 1e-9)
    return float(np.clip(1 - inside / full, 0, 1)), 0 if vis >= 0.8 else 1 if vis >= 0.4 else 2


def frame_objects(frame: Frame, calib: KittiCalib) -> tuple[list[KittiObject], list[int]]:
    """label_2 rows of a frame and the native object id of each (0 for DontCare)."""
    cam, lid = frame.camera(FRONT), frame.lidar(TOP_LIDAR)
    velo_from_vehicle = np.linalg.inv(lid.extrinsic)
    yaw = math.atan2(velo_from_vehicle[1, 0], velo_from_vehicle[0, 0])
    b3 = frame.gt.boxes3d
    by_id = {int(o): k for k, o in enumerate(b3.object_id)} if b3 is not None else {}
    b2 = frame.boxes2d.of_camera(FRONT)
    objects, ids = [], []
    for k in range(len(b2)):
        oid, line = int(b2.object_id[k]), len(objects) + 1
        j = by_id.get(oid)
        if j is None:  # seen by the camera beyond LiDAR range: no 3D box, as KITTI's far DontCare
            objects.append(dontcare(edges_to_box(b2.xyxy[k]), line))
            ids.append(0)
            continue
        centre = velo_from_vehicle[:3, :3] @ b3.center[j].astype(np.float64) + velo_from_vehicle[:3, 3]
        heading = float(b3.heading[j]) + yaw
        f = label_fields_from_box(calib, centre, b3.size[j], heading)
        trunc, occ = _truncation_occlusion(calib, box_corners_velo(centre, b3.size[j], heading),
                                           b2.xyxy[k], cam.width, cam.height)
        objects.append(KittiObject(_kitti_type(int(b3.class_id[j]), b3.size[j]), trunc, occ, f["alpha"],
                                   edges_to_box(b2.xyxy[k]), f["hwl"], f["location"], f["rotation_y"], line))
        ids.append(oid)
    # DontCare: objects whose LiDAR points land in the image but that have no 2D box
    p, inst = frame.points, frame.gt.point_instance
    if inst is not None:
        seen = (p.cam_id[:, 0] == FRONT) & (inst > 0) & ~np.isin(inst, b2.object_id)
        for oid in np.unique(inst[seen]):
            uv = p.cam_uv[seen & (inst == oid), 0]
            if len(uv) >= 10:  # a few stray points make no region worth a DontCare
                box = np.floor([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])  # pixels hit
                objects.append(dontcare(np.clip(box, 0, [cam.width - 1, cam.height - 1] * 2), len(objects) + 1))
                ids.append(0)
    return objects, ids


def export_kitti(frames, out_dir: Path | str, seam_deg: float = 0.0, seam_jitter_deg: float = 0.0, seed: int = 0,
                 first_index: int = 0) -> list[KittiExport]:
    """Write ``frames`` as KITTI samples ``first_index``, ``first_index + 1``, ...; see the module docstring."""
    out = Path(out_dir)
    for d in ("velodyne", "calib", "label_2", "image_2"):
        (out / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4B495454]))
    records = []
    for i, frame in enumerate(frames):
        stem = f"{first_index + i:06d}"
        lid, cam = frame.lidar(TOP_LIDAR), frame.camera(FRONT)
        p = frame.points
        sel = np.flatnonzero((p.laser_id == TOP_LIDAR) & (p.return_index == 0))
        seams = math.radians(seam_deg) + np.radians(rng.uniform(-seam_jitter_deg, seam_jitter_deg, lid.height))
        idx = sel[scan_order(p.row[sel], p.col[sel], lid.width, seams)]
        velo_from_vehicle = np.linalg.inv(lid.extrinsic)
        xyz = p.xyz[idx].astype(np.float64) @ velo_from_vehicle[:3, :3].T + velo_from_vehicle[:3, 3]
        scan = np.column_stack([xyz, np.clip(p.intensity[idx], 0.0, 1.0)]).astype("<f4")
        (out / "velodyne" / f"{stem}.bin").write_bytes(scan.tobytes())
        calib = kitti_calib(frame)
        (out / "calib" / f"{stem}.txt").write_text(format_calib(calib))
        objects, ids = frame_objects(frame, calib)
        (out / "label_2" / f"{stem}.txt").write_text("".join(format_label_line(o) + "\n" for o in objects))
        if cam.image_format != "png":
            raise ValueError(f"frame {frame.frame_id}: FRONT image is {cam.image_format}, KITTI image_2 needs PNG")
        (out / "image_2" / f"{stem}.png").write_bytes(cam.image_bytes)
        records.append(KittiExport(stem, frame.frame_id, idx.astype(np.int64), ids, calib))
    return records
