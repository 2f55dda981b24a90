"""``mwsis export``: a label stage's per-point labels in formats other tools read (issue 18; encoders in
``data/exports.py``).

* ``semantickitti``: ``OUT/sequences/<sequence>/velodyne/<index>.bin`` and ``labels/<index>.label`` per
  frame (``index`` the frame's position in its sequence, six digits), and ``OUT/label_map.yaml``;
* ``ply``: ``OUT/<frame_id>.ply`` per frame, coloured by class (CloudCompare, MeshLab, Open3D read it);
* ``las`` / ``laz``: ``OUT/<frame_id>.las`` (``.laz``) per frame, LAS 1.4 with the classes and the instance
  ids and scores as extra dimensions (CloudCompare, PDAL, QGIS); needs the ``formats`` extra.

``export_coco`` writes 2D instance masks as COCO: ``OUT/instances_gt.json`` (images with their ``frame_id`` and
``camera_id``, the true masks as eval-2d counts them) and ``OUT/results.json`` (COCO results: RLE masks with
scores), from the ``sam`` stage's masks or a 2D run's predictions; pycocotools scores the pair as eval-2d does.

``export_rerun`` writes one rerun recording, ``OUT/<dataset>.rrd``, of a frame range: points coloured by a
stage's labels (or the ground truth), 3D boxes, every camera posed with its image, 2D boxes and masks, on a
``frame`` timeline (``data/rerun_log.py``); needs the ``viz`` extra (rerun-sdk).

Every file is written atomically; a rerun rewrites them. Frames whose labels are missing fail naming the
stage's shard (``LabelShard``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from ...data.exports import SEMANTICKITTI_NAMES, las_file, ply_bytes, semantickitti_arrays
from ...data.frame import CAMERA_NAMES
from ...data.label_store import LabelShard
from ...data.store import atomic_path, open_dataset, write_bytes_atomic
from ..progress import progress_bar

log = logging.getLogger(__name__)
FORMATS = ("semantickitti", "ply", "las", "laz")


def export_labels(data: Path | str, stage: str, fmt: str, out: Path | str, show_progress: bool = True) -> int:
    """Write stage ``stage``'s labels of every frame of ``data`` in format ``fmt`` under ``out``; returns the
    number of frames."""
    if fmt not in FORMATS:
        raise ValueError(f"export: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt in ("las", "laz"):
        try:
            import laspy  # noqa: F401
        except ImportError:
            raise ValueError("export --format las/laz needs laspy: pip install 'mwsis[formats]'") from None
    ds, out = open_dataset(data), Path(out)
    n = 0
    with progress_bar(len(ds), "frame", f"export {stage} as {fmt}", enabled=show_progress) as bar:
        for pos in range(ds.num_shards):
            labels = LabelShard(ds, stage, ds.manifest.shards[pos].name)
            for i, frame in enumerate(ds.shard(pos).iter_frames(images=False)):
                lab = labels.labels(i)
                if lab.frame_id != frame.frame_id or lab.semantic is None:
                    raise ValueError(f"{labels.path}: row {i} holds no per-point labels of frame {frame.frame_id}")
                p = frame.points
                if fmt == "semantickitti":
                    scan, label = semantickitti_arrays(p.xyz, p.intensity, lab.semantic, lab.instance)
                    seq = out / "sequences" / frame.sequence
                    write_bytes_atomic(seq / "velodyne" / f"{frame.index:06d}.bin", scan.tobytes())
                    write_bytes_atomic(seq / "labels" / f"{frame.index:06d}.label", label.tobytes())
                elif fmt == "ply":
                    write_bytes_atomic(out / f"{frame.frame_id}.ply",
                                       ply_bytes(p.xyz, lab.semantic, lab.instance, f"mwsis {stage} {frame.frame_id}"))
                else:
                    dest = out / f"{frame.frame_id}.{fmt}"
                    with atomic_path(dest) as tmp:
                        las_file(p.xyz, p.intensity, lab.semantic, lab.instance,
                                 lab.inst_score).write(str(tmp), do_compress=fmt == "laz")
                n += 1
                bar.update(1)
    if fmt == "semantickitti":
        write_bytes_atomic(out / "label_map.yaml", yaml.safe_dump(
            {"source": f"mwsis labels/{stage}", "labels": SEMANTICKITTI_NAMES,
             "encoding": "uint32: semantic id in the low 16 bits, instance id in the high 16 bits"}).encode())
    log.info("export: %d frames of labels/%s as %s -> %s", n, stage, fmt, out)
    return n


def export_coco(data: Path | str, source: str, out: Path | str, show_progress: bool = True) -> dict:
    """COCO ground truth and results of 2D instance masks (module docstring). ``source``: ``sam`` (the stage's
    masks, scored by SAM's predicted IoU) or a 2D run directory (its EMA teacher's predictions). Returns
    pycocotools' mask AP of the results (``predict2d.coco_mask_ap``)."""
    import json

    import torch

    from ...data.frame import CLASS_NAMES
    from ..predict.predict2d import _rle, coco_images, coco_mask_ap, model_detector

    ds, out = open_dataset(data), Path(out)
    if Path(source, "run.json").exists():
        from ..training.train2d import load_teacher_2d

        model, cfg = load_teacher_2d(source, torch.device("cpu"))
        detect = model_detector(model, cfg, torch.device("cpu"))
    elif source == "sam":
        from ...data.label_store import read_frame_labels

        def detect(frame, s) -> list[dict]:
            m = read_frame_labels(ds, "sam", frame.frame_id).masks2d
            if m is None:
                raise ValueError(f"labels/sam: frame {frame.frame_id} holds no masks2d")
            from pycocotools import mask as mask_utils
            return [{"category_id": int(m.class_id[k]) + 1, "score": float(m.score[k]),
                     "segmentation": _rle(mask_utils.decode(m.rles[k]).astype(bool))}
                    for k in np.flatnonzero(m.camera_id == s.camera_id)]
    else:
        raise ValueError(f"export --format coco: {source!r} is neither 'sam' nor a 2D run directory (no run.json)")
    images, gts, dets = coco_images(ds, detect, show_progress, desc="export coco")
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(CLASS_NAMES)]
    write_bytes_atomic(out / "instances_gt.json", json.dumps({"images": images, "annotations": gts,
                                                              "categories": cats}).encode())
    write_bytes_atomic(out / "results.json", json.dumps([{k: v for k, v in d.items() if k != "bbox"}
                                                         for d in dets]).encode())
    log.info("export: %d images, %d true masks, %d results -> %s", len(images), len(gts), len(dets), out)
    return coco_mask_ap(images, gts, [{k: v for k, v in d.items() if k != "bbox"} for d in dets])


def parse_frame_range(spec: str | None, n: int) -> range:
    """``"A:B"`` (either end optional, B exclusive) -> the frame positions; None: every frame."""
    if not spec:
        return range(n)
    try:
        a, b = (int(v) if v else None for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"--frames {spec!r}: expected A:B, e.g. 0:20 (positions in the dataset, B excluded)") from None
    return range(n)[slice(a, b)]


def export_rerun(data: Path | str, stage: str, out: Path | str, frames: str | None = None,
                 show_progress: bool = True) -> Path:
    """Write ``OUT/<dataset>.rrd`` of the frames ``frames`` ("A:B") with stage ``stage``'s labels ("gt": the
    ground truth); returns its path."""
    try:
        import rerun as rr
    except ImportError:
        raise ValueError("export --format rerun needs rerun-sdk: pip install 'mwsis[viz]'") from None
    from ...data.rerun_log import blueprint, log_context, log_frame

    ds, out = open_dataset(data), Path(out)
    wanted = parse_frame_range(frames, len(ds))
    if not len(wanted):
        raise ValueError(f"--frames {frames!r} selects no frame of the {len(ds)} in {ds.root}")
    dest = out / f"{ds.root.name}.rrd"
    rec = rr.RecordingStream("mwsis", recording_id=f"{ds.root.name}-{stage}")
    cameras = [CAMERA_NAMES.get(int(c["camera_id"]), f"CAM{c['camera_id']}")  # as Camera.name spells them
               for c in ds.manifest.sensors.get("cameras", [])]
    with atomic_path(dest) as tmp:
        rec.save(str(tmp), default_blueprint=blueprint(cameras))
        log_context(rec)
        pos = 0
        with progress_bar(len(wanted), "frame", f"rerun {stage}", enabled=show_progress) as bar:
            for s in range(ds.num_shards):
                info = ds.manifest.shards[s]
                if pos + info.frames <= wanted.start or pos >= wanted.stop:
                    pos += info.frames
                    continue
                labels = None if stage == "gt" else LabelShard(ds, stage, info.name)
                for i, frame in enumerate(ds.shard(s).iter_frames(images=True)):
                    if pos + i in wanted:
                        lab = None if labels is None else labels.labels(i)
                        if lab is not None and lab.frame_id != frame.frame_id:
                            raise ValueError(f"{labels.path}: row {i} is frame {lab.frame_id}, not {frame.frame_id}")
                        log_frame(rec, frame, pos + i, None if lab is None else lab.semantic,
                                  None if lab is None else lab.instance, lab)
                        bar.update(1)
                pos += info.frames
        rec.flush()
        rec.disconnect()
    log.info("export: %d frames (%s) as rerun -> %s", len(wanted), stage, dest)
    return dest
