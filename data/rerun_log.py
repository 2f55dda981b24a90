"""A frame and its labels as rerun entities (``formats_more.md`` §3.5; ``mwsis export --format rerun``,
``mwsis view``). Logs into a ``rerun.RecordingStream`` the caller owns; nothing here touches a file.

Entity paths, per frame on the ``frame`` timeline (the frame's position in the export) and the ``time``
timeline (its timestamp):

* ``world/lidar``: the points in the vehicle frame, coloured by instance (foreground) or class, with
  ``class_ids`` (0 vehicle, 1 pedestrian, 2 cyclist, 3 background, 255 ignore; named by the static annotation
  context at ``world``) and the instance ids as ``keypoint_ids``;
* ``world/boxes3d``: the ground-truth 3D boxes, labelled by object id;
* ``world/cameras/<NAME>``: each camera posed by its extrinsic (Waymo axes: ``ViewCoordinates.FLU``) with its
  pinhole model, under it ``image`` (the encoded image as stored), ``boxes`` (the 2D boxes, class + 1, labelled
  by object id) and ``masks`` (the labels' 2D masks as a segmentation image, class + 1, where the stage has them).
"""
from __future__ import annotations

import numpy as np

from .frame import BACKGROUND, CLASS_NAMES, IGNORE, Frame
from .viz import BG_COLOR, CLASS_COLORS, IGNORE_COLOR, instance_colors

IGNORE_ID = 255  # rerun class ids are unsigned


def class_ids(semantic: np.ndarray) -> np.ndarray:
    """(N,) uint16 rerun class ids of our semantic ids (IGNORE -> 255)."""
    s = np.asarray(semantic, np.int64)
    return np.where(s == IGNORE, IGNORE_ID, s).astype(np.uint16)


def log_context(rec) -> None:
    """The static class names and colours every ``class_ids`` refers to."""
    import rerun as rr

    infos = [rr.AnnotationInfo(id=c, label=name, color=tuple(int(v) for v in CLASS_COLORS[c]))
             for c, name in enumerate(CLASS_NAMES)]
    infos += [rr.AnnotationInfo(id=BACKGROUND, label="background", color=tuple(int(v) for v in BG_COLOR)),
              rr.AnnotationInfo(id=IGNORE_ID, label="ignore", color=tuple(int(v) for v in IGNORE_COLOR))]
    rec.log("world", rr.AnnotationContext(infos), static=True)
    masks = [rr.AnnotationInfo(id=c + 1, label=name, color=tuple(int(v) for v in CLASS_COLORS[c]))
             for c, name in enumerate(CLASS_NAMES)]
    rec.log("world/cameras", rr.AnnotationContext(masks), static=True)  # segmentation images: class + 1
    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)  # vehicle frame: x forward, y left, z up


def blueprint(camera_names: list[str]):
    """The viewer's default layout: the 3D scene large on top, the cameras in a row below, panels collapsed."""
    import rerun.blueprint as rrb

    cams = [rrb.Spatial2DView(origin=f"world/cameras/{n}", name=n) for n in camera_names]
    top = rrb.Spatial3DView(origin="world", name="LiDAR and cameras")
    layout = rrb.Vertical(top, rrb.Horizontal(*cams), row_shares=[3, 1]) if cams else top
    return rrb.Blueprint(layout, collapse_panels=True)


def _camera_masks(labels, camera_id: int, width: int, height: int, box_classes: np.ndarray) -> np.ndarray | None:
    """(H, W) uint16 image of class ids (0 = no mask) from the labels' 2D masks of one camera (None without)."""
    m = getattr(labels, "masks2d", None)
    if m is None or not len(m.rles):
        return None
    from pycocotools import mask as mask_utils

    out = np.zeros((height, width), np.uint16)
    for k in np.flatnonzero(np.asarray(m.camera_id) == camera_id):
        out[mask_utils.decode(m.rles[k]).astype(bool)] = int(box_classes[m.box_index[k]]) + 1
    return out


def log_frame(rec, frame: Frame, position: int, semantic: np.ndarray | None = None,
              instance: np.ndarray | None = None, labels=None) -> None:
    """Log one frame (module docstring). ``semantic``/``instance`` (N,) default to the frame's ground truth;
    ``labels`` (a ``FrameLabels``) may add 2D masks."""
    import rerun as rr

    rec.set_time("frame", sequence=int(position))
    rec.set_time("time", timestamp=frame.timestamp_us * 1e-6)
    p = frame.points
    sem = frame.gt.point_semantic if semantic is None else semantic
    inst = frame.gt.point_instance if instance is None else instance
    if sem is None:
        sem = np.full(len(p), BACKGROUND, np.int8)
    if inst is None:
        inst = np.zeros(len(p), np.int32)
    sem, inst = np.asarray(sem), np.asarray(inst)
    colors = np.where((inst > 0)[:, None], instance_colors(inst), CLASS_COLORS[np.clip(sem, 0, 2)])
    colors[sem == BACKGROUND] = BG_COLOR
    colors[sem == IGNORE] = IGNORE_COLOR
    rec.log("world/lidar", rr.Points3D(p.xyz, colors=colors, class_ids=class_ids(sem),
                                       keypoint_ids=np.clip(inst, 0, 65535).astype(np.uint16), radii=0.04))
    b = frame.gt.boxes3d
    if b is not None and len(b):
        rec.log("world/boxes3d", rr.Boxes3D(
            centers=b.center, half_sizes=b.size / 2.0, class_ids=b.class_id.astype(np.uint16),
            rotation_axis_angles=[rr.RotationAxisAngle(axis=[0, 0, 1], radians=float(h)) for h in b.heading],
            labels=[str(int(o)) for o in b.object_id]))
    for cam in frame.cameras:
        path = f"world/cameras/{cam.name}"
        rec.log(path, rr.Transform3D(translation=cam.extrinsic[:3, 3], mat3x3=cam.extrinsic[:3, :3]))
        # Waymo camera axes (x forward, y left, z up): rerun maps them through camera_xyz
        K = cam.intrinsic
        rec.log(path, rr.Pinhole(focal_length=[float(K[0, 0]), float(K[1, 1])],
                                 principal_point=[float(K[0, 2]), float(K[1, 2])], resolution=[cam.width, cam.height],
                                 camera_xyz=rr.ViewCoordinates.FLU))
        if cam.image_bytes is not None:
            rec.log(f"{path}/image", rr.EncodedImage(contents=cam.image_bytes, media_type=f"image/{cam.image_format}"))
        b2 = frame.boxes2d.of_camera(cam.camera_id)
        rec.log(f"{path}/boxes", rr.Boxes2D(array=b2.xyxy, array_format=rr.Box2DFormat.XYXY,
                                            class_ids=b2.class_id.astype(np.uint16) + 1,
                                            labels=[str(int(o)) for o in b2.object_id]))
        masks = _camera_masks(labels, cam.camera_id, cam.width, cam.height, frame.boxes2d.class_id)
        if masks is not None:  # class + 1, so that 0 stays "no mask"; its own context names them
            rec.log(f"{path}/masks", rr.SegmentationImage(masks))
