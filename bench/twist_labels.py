"""TWIST's label ablation on tiny synthetic frames (extensions.md §3.4 "Integration"; not run in CI).

40 tiny frames, 5 % (2 frames) fully labelled. A tiny 3D model trains on SPG labels plus the labelled frames'
ground truth (no round); then, from its EMA teacher, three label variants of the 38 other frames are scored
against their ground truth (pseudo-label instance AP over the model's point set):

    SPG (the box labels the model trained on) | naive (point thresholds 0.4 / 0.6, the model's clusters)
    | C (every proposal kept, the teacher's class) | B + C (Ψ trained on the 2 labelled frames' proposals,
    certain proposals only)

The claim to test (TWIST's ablation, 5 %: naive 21.3 < C 24.8 < B + C 27.0 mAP): B + C ≥ C > naive on AP50.
Writes ``docs/experiments/twist-labels.json`` (``--record``).

    python bench/twist_labels.py [--out out/twist-labels] [--seeds 0 1] [--epochs 8]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["SPG", "naive", "C", "B+C"]


def markdown(rec: dict) -> str:
    """The table of ``docs/experiments/twist-labels.json`` (``bench/update_readme.py`` writes it)."""
    def pct(r, k):
        return f"{100 * r['mean'][k]:.1f} ± {100 * r['half_spread'][k]:.1f}"

    lines = ["| labels of the unlabelled frames | pseudo AP50 | pseudo AP |", "|---|---|---|"]
    lines += [f"| {r['name']} | {pct(r, 'ap50')} | {pct(r, 'ap')} |" for r in rec["rows"]]
    m, c = rec["machine"], rec["config"]
    lines += ["", f"Mean ± half the spread over seeds {rec['seeds']}; {c['frames']} tiny frames, "
              f"{int(100 * c['label_fraction'])} % labelled, the teacher after {c['epochs']} epochs. "
              f"Wall time {rec['seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores)."]
    return "\n".join(lines) + "\n"


def _score(items, num_classes: int) -> dict:
    from mwsis.pseudolabel.metrics import InstanceAP, instances_from_labels

    ap = InstanceAP(num_classes)
    for s, (sem, inst, score) in items:
        ap.add(instances_from_labels(sem, inst, num_classes, inst_score=score),
               instances_from_labels(s.gt_semantic, s.gt_instance, num_classes))
    r = ap.compute()
    return {"ap": r["ap"], "ap50": r["ap50"], "per_class_ap50": {int(c): v.get("ap50") for c, v in r["per_class"].items()}}


def one_seed(data: Path, out: Path, seed: int, epochs: int, sets: list[str]) -> dict:
    import torch

    from mwsis.data.frame import NUM_CLASSES
    from mwsis.data.label_store import read_frame_labels
    from mwsis.data.store import open_dataset
    from mwsis.pipelines.training.run import load_config
    from mwsis.pipelines.training.train3d import Train3DConfig, load_teacher, train_3d
    from mwsis.pipelines.training.twist_round import label_variants
    from mwsis.train3d.twist import RecorrectionNet

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = load_config(Train3DConfig, ROOT / "configs" / "train3d-tiny.yaml",
                      ["labels=spg", "pvc.enabled=false", "twist.enabled=true", "twist.label_fraction=0.05",
                       f"twist.start_epoch={epochs + 1}", f"epochs={epochs}", f"seed={seed}", *sets])
    t = time.time()
    summary = train_3d(data, out / f"run-{seed}", cfg, resume=True, show_progress=False)
    teacher, cfg = load_teacher(out / f"run-{seed}", torch.device("cpu"))
    psi = RecorrectionNet(teacher.conv_seg.in_features, cfg.twist.psi)
    opt = torch.optim.AdamW(psi.parameters(), lr=cfg.twist.psi_lr)
    labelled = set(summary["labelled_frames"])
    variants = label_variants(teacher, psi, opt, open_dataset(data), cfg, labelled, torch.device("cpu"), seed)
    ds = open_dataset(data)
    items = {"SPG": []}
    for frame, s, _ in variants["naive"]:
        spg = read_frame_labels(ds, "spg", frame.frame_id)
        items["SPG"].append((s, (spg.semantic[s.point_index], spg.instance[s.point_index], None)))
    for name in ("naive", "C", "B+C"):
        items[name] = [(s, (sem, inst, score)) for _, s, (sem, inst, _c, score) in variants[name]]
    return {"seconds": time.time() - t, "labelled_frames": sorted(labelled), "frames": len(items["SPG"]),
            "kept_B+C": int(sum((r[2][3] > cfg.twist.certainty_thresh).sum() for r in variants["B+C"])),
            "proposals": int(sum(len(r[2][3]) for r in variants["C"])),
            **{name: _score(items[name], NUM_CLASSES) for name in VARIANTS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "twist-labels")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--set", dest="sets", action="append", default=[], help="train-3d override")
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "experiments" / "twist-labels.json")
    a = ap.parse_args()
    import sys

    from mwsis.pipelines.convert.synth import synth_dataset
    from mwsis.pipelines.experiments.harness import machine, write_record
    from mwsis.pipelines.labels.runner import run_stages

    t0, info = time.time(), machine()
    data = a.out / "data"
    if not (data / "manifest.json").exists():
        synth_dataset(data, "tiny", frames=a.frames, seed=3, frames_per_sequence=4, workers=1, show_progress=False)
    run_stages(data, ["spg"], show_progress=False)
    per_seed = {seed: one_seed(data, a.out, seed, a.epochs, a.sets) for seed in a.seeds}
    rows = []
    for name in VARIANTS:
        vals = {k: [per_seed[s][name][k] for s in a.seeds] for k in ("ap", "ap50")}
        rows.append({"name": name, "per_seed": {s: per_seed[s][name] for s in a.seeds},
                     "mean": {k: float(np.mean(v)) for k, v in vals.items()},
                     "half_spread": {k: float(np.ptp(v) / 2) for k, v in vals.items()}})
    rec = {"experiment": "twist-labels", "rows": rows, "seeds": a.seeds,
           "config": {"frames": a.frames, "epochs": a.epochs, "label_fraction": 0.05, "sets": a.sets,
                      "train3d": "configs/train3d-tiny.yaml"},
           "details": {s: {k: v for k, v in per_seed[s].items() if k not in VARIANTS} for s in a.seeds},
           "command": " ".join(sys.argv), "seconds": time.time() - t0, "machine": info}
    write_record(a.record, rec)
    for r in rows:
        print(f"{r['name']:<6} AP50 {100 * r['mean']['ap50']:5.1f} ± {100 * r['half_spread']['ap50']:4.1f}   "
              f"AP {100 * r['mean']['ap']:5.1f} ± {100 * r['half_spread']['ap']:4.1f}")
    print(json.dumps({s: per_seed[s]["kept_B+C"] for s in a.seeds}), "proposals kept by B+C")


if __name__ == "__main__":
    main()
