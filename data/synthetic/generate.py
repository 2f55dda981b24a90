"""``make_frame``: one synthetic ``Frame`` (LiDAR sweep, camera images, 2D/3D boxes, exact labels).

A frame is a pure function of ``(cfg, seed, sequence, index)``: all randomness comes from
``SeedSequence`` entropy built from those integers (never a global RNG), the numba kernels are
per-ray independent, and PNG encoding is deterministic, so repeated calls are bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..frame import Boxes2D, Boxes3D, Camera, Frame, GroundTruth, Lidar, Masks2D, Points, TOP_LIDAR, project_to_cameras
from . import camera as cam
from .config import SynthConfig
from .lidar import Sweep, sweep
from .raycast import cull, trace
from .scene import Scene, build_scene

_TAG_LIDAR, _TAG_CAMERA = 11, 12


@dataclass
class Rendered:
    """A frame plus the per-camera buffers it was made from (for tests and diagnostics)."""

    frame: Frame
    scene: Scene
    depth: dict[int, np.ndarray]  # camera id -> (H, W) float32 camera-x depth (inf: sky)
    instance: dict[int, np.ndarray]  # camera id -> (H, W) int32 visible object id (0: background)
    mixed: np.ndarray  # (N,) bool per point: a mixed-pixel return (beam straddles a depth edge)


def _rng(seed: int, sequence: int, index: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(sequence), int(index), *tags]))


def _boxes3d(scene: Scene, cfg: SynthConfig) -> Boxes3D:
    """Objects with any part within LiDAR range (so every labelled point has its box), vehicle frame."""
    centre = scene.box_center - scene.ego
    dist = np.linalg.norm(centre - np.asarray(cfg.lidar_position), axis=1)
    keep = dist - 0.5 * np.linalg.norm(scene.box_size, axis=1) <= cfg.max_range
    order = np.argsort(scene.object_id[keep], kind="stable")
    return Boxes3D(scene.object_id[keep][order].astype(np.int64), scene.class_id[keep][order].astype(np.int8),
                   centre[keep][order].astype(np.float32), scene.box_size[keep][order].astype(np.float32),
                   scene.box_heading[keep][order].astype(np.float32))


def render_camera(cfg: SynthConfig, scene: Scene, geo: cam.CameraGeometry, rng: np.random.Generator):
    """Ray-cast one camera: (PNG bytes, (H, W) instance ids, (H, W) camera-x depth, inf for sky)."""
    origin = scene.ego + geo.extrinsic[:3, 3]
    dirs, tile = cam.pixel_rays(geo)
    binned = cull(scene.prims, origin, cam.camera_tiles(geo), cfg.view_distance)
    far = 3.0 * cfg.view_distance  # the ground continues into the fog beyond the generated scene
    t, hit, nrm = trace(scene.prims, scene.ground, origin, binned, dirs, tile, far)
    rgb = cam.shade(scene.prims, scene.ground, scene.layout, scene.sun, origin, dirs, t, hit, nrm,
                    0.75 * cfg.view_distance)
    h, w = geo.height, geo.width
    _, png = cam.to_png(rgb.reshape(h, w, 3), cam.image_noise(cfg, rng, (h, w, 3)))
    inst = np.where(hit >= 0, scene.prims.inst[np.maximum(hit, 0)], 0).reshape(h, w).astype(np.int32)
    depth = (t * (dirs @ geo.extrinsic[:3, 0])).reshape(h, w).astype(np.float32)
    return png, inst, depth


def render_frame(cfg: SynthConfig, seed: int = 0, sequence: int = 0, index: int = 0) -> Rendered:
    """Build the scene at frame ``index`` and render every sensor; see :func:`make_frame`."""
    scene = build_scene(cfg, seed, sequence, index)
    sw: Sweep = sweep(cfg, scene.prims, scene.ground, scene.layout, scene.ego, _rng(seed, sequence, index, _TAG_LIDAR))

    cameras, boxes, masks, depths, instances = [], [], [], {}, {}
    ids_order = np.argsort(scene.object_id, kind="stable")
    ids_sorted, cls_sorted = scene.object_id[ids_order], scene.class_id[ids_order]
    for spec in sorted(cfg.cameras, key=lambda s: s.camera_id):
        geo = cam.camera_geometry(spec, cfg.image_scale)
        png, inst, depth = render_camera(cfg, scene, geo, _rng(seed, sequence, index, _TAG_CAMERA, spec.camera_id))
        cameras.append(Camera(geo.camera_id, geo.width, geo.height, geo.intrinsic, np.zeros(5), geo.extrinsic,
                              png, "png"))
        b, m = cam.masks_and_boxes(inst, spec.camera_id, cfg.min_box_area, ids_sorted, cls_sorted)
        boxes.append(b)
        masks.append(m)
        instances[spec.camera_id], depths[spec.camera_id] = inst, depth

    cam_id, cam_uv = project_to_cameras(sw.xyz, cameras)
    n = sw.xyz.shape[0]
    points = Points(xyz=sw.xyz, intensity=sw.intensity, elongation=sw.elongation, range=sw.range,
                    return_index=sw.return_index, laser_id=np.full(n, TOP_LIDAR, np.int8), row=sw.row, col=sw.col,
                    nlz=np.zeros(n, bool), cam_id=cam_id, cam_uv=cam_uv)
    lidar_ext = np.eye(4)
    lidar_ext[:3, 3] = cfg.lidar_position
    lidar = Lidar(TOP_LIDAR, cfg.beams, cfg.columns, lidar_ext, cfg.inclinations().astype(np.float32))
    fields = ("camera_id", "class_id", "xyxy", "object_id")
    boxes2d = Boxes2D(*(np.concatenate([getattr(b, f) for b in boxes]) for f in fields)) if boxes else Boxes2D.empty()
    masks2d = Masks2D(np.concatenate([m.camera_id for m in masks]) if masks else np.zeros(0, np.int8),
                      np.concatenate([m.object_id for m in masks]) if masks else np.zeros(0, np.int64),
                      np.concatenate([m.class_id for m in masks]) if masks else np.zeros(0, np.int8),
                      [r for m in masks for r in m.rles])
    gt = GroundTruth(point_semantic=sw.semantic, point_instance=sw.instance, masks=masks2d,
                     boxes3d=_boxes3d(scene, cfg))
    seq_name = f"synth-s{seed}-{sequence:04d}"
    frame = Frame(frame_id=f"{seq_name}-{index:06d}", sequence=seq_name, index=int(index),
                  timestamp_us=int(index) * 100_000, points=points, lidars=[lidar], cameras=cameras,
                  boxes2d=boxes2d, gt=gt)
    return Rendered(frame, scene, depths, instances, sw.mixed)


def make_frame(cfg: SynthConfig, seed: int = 0, sequence: int = 0, index: int = 0) -> Frame:
    """The synthetic frame ``index`` of sequence ``sequence`` for ``seed``: deterministic and pure.

    Frames of one sequence share the street and its objects; the ego drives ``cfg.ego_step`` metres
    per frame and pedestrians, cyclists and vehicles move at their own speeds.
    """
    return render_frame(cfg, seed, sequence, index).frame
