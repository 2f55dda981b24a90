"""The EMA teacher's pseudo-mask quality over a 2D run (the IPG/SIM diagnostic of ``make experiment-2d``).

For each epoch checkpoint of a run: the teacher's pseudo masks for the boxes of a fixed set of training images
(every ``stride``-th camera image, at the test scale, no flip), i.e. IPG's instance maps, or with SIM the
corrected maps from the checkpoint's prototypes (not updated here), thresholded at tau_high as the loss
does, against the true masks: mean IoU over every box, and over the crowded ones (a box overlapping another
box of its class with IoU > 0.1, where spill onto a neighbour shows). Measured after the run, from its
checkpoints, so that it costs the training nothing and applies to runs trained before it existed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ...data.store import open_dataset, write_bytes_atomic
from ...train2d.model import BoxInstModel
from ...train2d.sim import sim_teacher_outputs
from ...train2d.sim_prototypes import PrototypeBank
from ...train2d.transforms import collate
from ..config import apply_overrides, flatten_dict
from ..training.run import load_checkpoint
from ..training.samples2d import iter_camera_samples, prepare_sample
from ..training.train2d import Train2DConfig, pseudo_ious

log = logging.getLogger(__name__)
CACHE = "pseudo_quality.json"


def _batches(data: Path, cfg: Train2DConfig, stride: int, per_batch: int = 2):
    ds = open_dataset(data)
    chosen = [s for i, s in enumerate(iter_camera_samples(ds, list(range(ds.num_shards)), gt_masks=True))
              if i % stride == 0]
    rng = np.random.default_rng(0)  # unused at the test scale
    prepared = [prepare_sample(s, cfg, rng, train=False) for s in chosen]
    return [collate(prepared[i:i + per_batch]) for i in range(0, len(prepared), per_batch)]


def pseudo_mask_quality(run: Path | str, data: Path | str, stride: int = 4) -> list[dict]:
    """One row per epoch checkpoint of 2D run ``run`` on training data ``data``: ``epoch``, ``step``,
    ``iou``, ``iou_crowded`` (means, NaN without boxes), ``boxes``, ``crowded``. Cached in the run's
    ``pseudo_quality.json`` (recomputed when its checkpoints change)."""
    run = Path(run)
    ckpts = sorted((run / "checkpoints").glob("epoch-*.pt"))
    cache = run / CACHE
    if cache.exists():
        got = json.loads(cache.read_text())
        if [r["checkpoint"] for r in got] == [c.name for c in ckpts]:
            return got
    rows, batches = [], None
    for ckpt in ckpts:
        saved = load_checkpoint(ckpt)
        cfg = apply_overrides(Train2DConfig(), flatten_dict(saved["config"]))
        batches = batches or _batches(Path(data), cfg, stride)
        model = BoxInstModel(cfg.model)
        model.load_state_dict(saved["teacher"])
        model.eval()
        bank = None
        if "sim_prototypes" in saved:
            bank = PrototypeBank(cfg.model.num_classes, cfg.model.sim.num_prototypes,
                                 cfg.model.condinst.mask_channels)
            bank.load_state_dict(saved["sim_prototypes"])
        ious, crowded = [], []
        with torch.no_grad():
            for images, targets in batches:
                out = (sim_teacher_outputs(model, bank, images, targets, cfg.model, update=False) if bank is not None
                       else model.ipg_teacher_outputs(images, targets))
                iou, crowd = pseudo_ious(out, targets, images, cfg.model.ipg.tau_high)
                ious.append(iou), crowded.append(crowd)
        iou, crowd = torch.cat(ious), torch.cat(crowded)
        mean = lambda x: float(x.mean()) if len(x) else float("nan")  # noqa: E731
        rows.append({"checkpoint": ckpt.name, "epoch": saved["state"]["epoch"], "step": saved["state"]["step"],
                     "iou": mean(iou), "iou_crowded": mean(iou[crowd]), "boxes": len(iou), "crowded": int(crowd.sum())})
        log.info("%s %s: pseudo-mask IoU %.3f (crowded %.3f, %d boxes)", run.name, ckpt.name, rows[-1]["iou"],
                 rows[-1]["iou_crowded"], len(iou))
    write_bytes_atomic(cache, json.dumps(rows, indent=1).encode())
    return rows
