"""``make experiment-2d``: our MWSIS Table 5 rows for the 2D branch on synthetic data (not run in CI).

BoxInst (boxes only) | + IPG | + IPG + CSCS 3D→2D, each evaluated with COCO mask AP on held-out frames.
The CSCS row first trains a 3D teacher on SPG labels and exports its predictions (``predict-3d``).
Writes ``OUT/report.json`` and ``OUT/report.md``.

    python bench/experiment_2d.py --out out/experiment-2d [--train-frames 60] [--val-frames 20] [--epochs 6]
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
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "experiment-2d")
    ap.add_argument("--train-frames", type=int, default=60)
    ap.add_argument("--val-frames", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "train2d-tiny.yaml")
    ap.add_argument("--config-3d", type=Path, default=ROOT / "configs" / "train3d-tiny.yaml")
    ap.add_argument("--image-scale", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    from mwsis.pipelines.predict2d import evaluate_2d
    from mwsis.pipelines.predict3d import export_predictions
    from mwsis.pipelines.runner import run_stages
    from mwsis.pipelines.synth import synth_dataset
    from mwsis.pipelines.train2d import Train2DConfig, load_teacher_2d, train_2d
    from mwsis.pipelines.train3d import Train3DConfig, load_teacher, train_3d
    from mwsis.pipelines.training import load_config

    t0 = time.time()
    out, device = args.out, torch.device("cpu")
    train, val = out / "train", out / "val"
    scale = {"image_scale": args.image_scale}
    synth_dataset(train, "waymo", args.train_frames, seed=1, frames_per_sequence=10, workers=args.workers,
                  overrides=scale)
    synth_dataset(val, "waymo", args.val_frames, seed=2, frames_per_sequence=10, workers=args.workers, overrides=scale)
    run_stages(train, ["spg"], workers=args.workers)
    train_3d(train, out / "run-3d", load_config(Train3DConfig, args.config_3d, ["pvc.enabled=false"]), resume=True)
    teacher3d, cfg3d = load_teacher(out / "run-3d", device)
    export_predictions(train, teacher3d, cfg3d.infer, 1, device, {"run": "run-3d"})
    rows = {}
    for name, sets in {"BoxInst": ["model.ipg.enabled=false"], "+ IPG": [], "+ IPG + CSCS": ["cscs_3d=latest"]}.items():
        run = out / ("run-" + name.replace(" ", "").replace("+", "_"))
        cfg = load_config(Train2DConfig, args.config, [f"epochs={args.epochs}", *sets])
        train_2d(train, run, cfg, resume=True)
        model, cfg = load_teacher_2d(run, device)
        rows[name] = evaluate_2d(model, val, cfg, device)
    report = {"train_frames": args.train_frames, "val_frames": args.val_frames, "epochs": args.epochs,
              "seconds": time.time() - t0, "rows": rows}
    (out / "report.json").write_text(json.dumps(report, indent=1))

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    lines = ["| row | mAP | AP50 | AP75 | AP veh | AP ped | AP cyc |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        pc = r["per_class"]
        lines.append(f"| {name} | {pct(r['ap'])} | {pct(r['ap50'])} | {pct(r['ap75'])} | "
                     + " | ".join(pct(pc.get(c, {}).get("ap")) for c in ("vehicle", "pedestrian", "cyclist")) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
