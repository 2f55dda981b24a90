"""``make experiment-3d``: our MWSIS Table 4 rows on synthetic data (not run in CI).

Renders a training set and a held-out set of waymo-preset frames, makes SPG pseudo labels, trains the
3D segmentor on them without and with the PVC loop, and evaluates on the held-out frames:

    raw SPG labels | model trained on SPG | + PVC | + PVC + RSC

Writes ``OUT/report.json`` and ``OUT/report.md``. On 2 CPU cores the defaults (200 + 40 frames, tiny
model) take about an hour; ``--train-frames``/``--epochs``/``--config`` scale it.

    python bench/experiment_3d.py --out out/experiment-3d [--train-frames 200] [--val-frames 40]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "experiment-3d")
    ap.add_argument("--train-frames", type=int, default=200)
    ap.add_argument("--val-frames", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train3d-tiny.yaml")
    ap.add_argument("--image-scale", type=float, default=0.5, help="camera resolution factor (boxes only need masks)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    from mwsis.pipelines.eval_labels import evaluate_labels
    from mwsis.pipelines.predict3d import evaluate_3d
    from mwsis.pipelines.runner import run_stages
    from mwsis.pipelines.synth import synth_dataset
    from mwsis.pipelines.train3d import Train3DConfig, load_teacher, train_3d
    from mwsis.pipelines.training import load_config

    t0 = time.time()
    out = args.out
    train, val = out / "train", out / "val"
    scale = {"image_scale": args.image_scale}
    synth_dataset(train, "waymo", args.train_frames, seed=1, frames_per_sequence=10, workers=args.workers,
                  overrides=scale)
    synth_dataset(val, "waymo", args.val_frames, seed=2, frames_per_sequence=10, workers=args.workers, overrides=scale)
    run_stages(train, ["spg"], workers=args.workers)
    run_stages(val, ["spg"], workers=args.workers)
    rows = {"raw SPG labels": evaluate_labels(val, ["spg"])["spg"]}
    variants = {"SparseUNet on SPG": ["pvc.enabled=false"], "+ PVC": []}
    device = torch.device("cpu")
    for name, sets in variants.items():
        run = out / ("run-spg" if sets else "run-pvc")
        cfg = load_config(Train3DConfig, args.config, [f"epochs={args.epochs}", *sets])
        train_3d(train, run, cfg, resume=True)
        model, cfg = load_teacher(run, device)
        rows[name] = evaluate_3d(model, val, cfg.infer, device, spg_cfg=cfg.spg)
        if not sets:
            rows["+ PVC + RSC"] = evaluate_3d(model, val, cfg.infer, device, rsc=True, spg_cfg=cfg.spg)
    report = {"train_frames": args.train_frames, "val_frames": args.val_frames, "epochs": args.epochs,
              "config": str(args.config), "seconds": time.time() - t0, "rows": rows}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["| row | mAP | AP50 | AP75 | mIoU | IoU veh | IoU ped | IoU cyc |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        def pct(x):
            return "-" if x is None else f"{100 * x:.2f}"
        pc = r["per_class"]
        lines.append(f"| {name} | {pct(r['ap'])} | {pct(r['ap50'])} | {pct(r['ap75'])} | {pct(r['miou'])} | "
                     + " | ".join(pct(pc[c]["iou"]) for c in ("vehicle", "pedestrian", "cyclist")) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
