"""``make experiment-2d``: our MWSIS Table 5 rows for the 2D branch on synthetic data (not run in CI).

BoxInst (boxes only) | + IPG (Eq. 1-2) | + IPG + CSCS 3D→2D (Eq. 5-7), each evaluated with COCO mask AP
(method.md §11: original resolution, GT masks ≤ 200 px dropped, detections ranked by box score) on held-out
frames of other scenes (seed 2; training uses seed 1). The CSCS row first trains the tiny 3D teacher on SPG
labels and exports its predictions (``predict-3d``). Defaults: configs/experiment2d-cpu.yaml (why each value:
see its comments), 40 training + 20 held-out waymo-preset frames at image_scale 0.5, one thread; 34 minutes
on the 2-core development machine (AMD EPYC) with other jobs running. Writes ``OUT/report.json`` and ``OUT/report.md`` (with the
machine and the wall time of every stage); re-running resumes finished stages.

    python bench/experiment_2d.py --out out/experiment-2d [--train-frames 40] [--val-frames 20] [--set k=v ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"BoxInst": ["model.ipg.enabled=false"], "+ IPG": [], "+ IPG + CSCS": ["cscs_3d=latest"]}
CLASSES = ("vehicle", "pedestrian", "cyclist")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_start": list(os.getloadavg())}


def markdown(report: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    head = "| row | AP | AP50 | AP75 | " + " | ".join(f"{c} AP | {c} AP50 | {c} AP75" for c in CLASSES) + \
        " | box AP50 | train s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in report["rows"].items():
        pc = r["per_class"]
        cells = [pct(r[k]) for k in ("ap", "ap50", "ap75")]
        cells += [pct(pc.get(c, {}).get(k)) for c in CLASSES for k in ("ap", "ap50", "ap75")]
        cells += [pct(r.get("box", {}).get("ap50")), f"{r['train_seconds']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    m = report["machine"]
    lines += ["", f"{report['train_frames']} training / {report['val_frames']} held-out frames "
              f"({report['gt_instances']} GT masks > 200 px in {report['images']} camera images), "
              f"{report['steps']} steps per row, config `{report['config']}`.",
              f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s); load average "
              f"{m['load_avg_start'][0]:.1f} at start, {m['load_avg_end'][0]:.1f} at the end. Wall time "
              f"{report['seconds'] / 60:.1f} min: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["stages"].items())
              + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "experiment-2d")
    ap.add_argument("--train-frames", type=int, default=40)
    ap.add_argument("--val-frames", type=int, default=20)
    ap.add_argument("--frames-per-sequence", type=int, default=5, help="more, shorter sequences: more scenes")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "experiment2d-cpu.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="2D config override, e.g. epochs=8")
    ap.add_argument("--config-3d", type=Path, default=ROOT / "configs" / "train3d-tiny.yaml")
    ap.add_argument("--image-scale", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

    import torch

    from mwsis.pipelines.predict2d import evaluate_2d
    from mwsis.pipelines.predict3d import export_predictions
    from mwsis.pipelines.runner import run_stages
    from mwsis.pipelines.synth import synth_dataset
    from mwsis.pipelines.train2d import Train2DConfig, load_teacher_2d, train_2d
    from mwsis.pipelines.train3d import Train3DConfig, load_teacher, train_3d
    from mwsis.pipelines.training import load_config

    torch.set_num_threads(1)
    info, stages, t0 = machine(), {}, time.time()

    def timed(name, fn, *a, **kw):
        t = time.time()
        out = fn(*a, **kw)
        stages[name] = stages.get(name, 0.0) + time.time() - t
        return out

    out, device = args.out, torch.device("cpu")
    train, val = out / "train", out / "val"
    synth = {"frames_per_sequence": args.frames_per_sequence, "workers": args.workers,
             "overrides": {"image_scale": args.image_scale}, "show_progress": False}
    for path, n, seed in ((train, args.train_frames, 1), (val, args.val_frames, 2)):
        if not (path / "manifest.json").exists():
            timed("synth", synth_dataset, path, "waymo", n, seed=seed, **synth)
    if "+ IPG + CSCS" in args.rows:
        timed("spg", run_stages, train, ["spg"], workers=args.workers, show_progress=False)
        cfg3 = load_config(Train3DConfig, args.config_3d, ["pvc.enabled=false", "cpu_threads=1"])
        timed("train-3d", train_3d, train, out / "run-3d", cfg3, resume=True, show_progress=False)
        if not (train / "predictions" / "3d" / "round=1").exists():
            teacher3d, cfg3 = load_teacher(out / "run-3d", device)
            timed("predict-3d", export_predictions, train, teacher3d, cfg3.infer, 1, device, {"run": "run-3d"},
                  show_progress=False)
    rows = {}
    for name in args.rows:
        run = out / ("run-" + name.replace(" ", "").replace("+", "_"))
        cfg = load_config(Train2DConfig, args.config, [*args.sets, *ROWS[name]])
        summary = timed(f"train {name}", train_2d, train, run, cfg, resume=True, show_progress=False)
        model, cfg = load_teacher_2d(run, device)
        rows[name] = timed(f"eval {name}", evaluate_2d, model, val, cfg, device, show_progress=False, box_ap=True)
        rows[name].update(train_seconds=stages[f"train {name}"], steps=summary["steps"])
        logging.info("%s: AP %.4f AP50 %.4f", name, rows[name]["ap"] or 0, rows[name]["ap50"] or 0)
    info["load_avg_end"] = list(os.getloadavg())
    first = next(iter(rows.values()))
    report = {"train_frames": args.train_frames, "val_frames": args.val_frames, "image_scale": args.image_scale,
              "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
              "sets": args.sets, "steps": first["steps"], "images": first["images"],
              "gt_instances": first["gt_instances"], "machine": info, "seconds": time.time() - t0,
              "stages": stages, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
