"""Learning test: the tiny BoxInst model learns instance masks from boxes alone (BoxInst, MWSIS §3.2).

Small synthetic images with textured backgrounds and coloured ellipses; the model sees only the boxes.
After a bounded number of steps, the masks it predicts for the boxes (``mask_probs_for_boxes``, IPG Eq. 1)
must overlap the true shapes with a mean IoU above a threshold. The pairwise term is warmed up as in
BoxInst: without warm-up it saturates the masks before the projection term can shape them.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from mwsis.train2d.config import Model2DConfig
from mwsis.train2d.model import BoxInstModel
from mwsis.train2d.transforms import collate, prepare_image

H, W = 64, 96


def _scene(rng):
    img = (rng.normal(110, 12, (H, W, 3)) + np.linspace(0, 30, W)[None, :, None]).clip(0, 255)
    yy, xx = np.mgrid[:H, :W]
    masks, boxes, classes = [], [], []
    for k in range(rng.integers(2, 4)):
        cy, cx = rng.uniform(14, H - 14), rng.uniform(14, W - 14)
        ry, rx = rng.uniform(7, 13), rng.uniform(7, 16)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        for prev in masks:
            m &= ~prev
        if m.sum() < 60:
            continue
        color = rng.uniform(0, 255, 3)
        color[k % 3] = 255
        img[m] = color + rng.normal(0, 6, (int(m.sum()), 3))
        ys, xs = np.nonzero(m)
        masks.append(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        classes.append(k % 3)
    return img.clip(0, 255).astype(np.uint8), np.array(boxes, np.float32), np.array(classes), masks


def test_boxinst_learns_masks_from_boxes():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        data = [_scene(rng) for _ in range(4)]
        cfg = Model2DConfig.tiny()
        cfg = replace(cfg, boxinst=replace(cfg.boxinst, pairwise_warmup_iters=60))
        model = BoxInstModel(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        prepared = []
        for img, boxes, classes, _ in data:
            p = prepare_image(img, boxes, scale=(W, H))
            p["classes"] = torch.as_tensor(classes)
            prepared.append(p)

        def mean_iou():
            model.eval()
            ious = []
            with torch.no_grad():
                for p, (_, _, _, masks) in zip(prepared, data):
                    images, targets = collate([p])
                    maps, _ = model.mask_probs_for_boxes(images, targets, fallback=True)[0]
                    up = F.interpolate(maps[None], size=images.shape[-2:], mode="bilinear", align_corners=False)[0]
                    for k, m in enumerate(masks):
                        pm = (up[k, :H, :W] > 0.5).numpy()
                        ious.append((pm & m).sum() / max((pm | m).sum(), 1))
            return float(np.mean(ious))

        before = mean_iou()
        for it in range(180):
            images, targets = collate([prepared[i] for i in rng.choice(len(prepared), 2, replace=False)])
            model.train()
            loss = sum(model(images, targets, iteration=it).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = mean_iou()
    finally:
        torch.set_num_threads(threads)
    assert after >= 0.5 and after > before + 0.2, (before, after)
