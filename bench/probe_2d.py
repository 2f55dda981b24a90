"""One 2D training run + evaluation in the CPU regime, for choosing the regime (docs/experiments/regime-2d.json).

    python bench/probe_2d.py --train out/cpu-bench/train --val out/cpu-bench/val --out /tmp/probe \
        --config configs/cpu-bench.yaml --set masks=gt --set model.ipg.enabled=false

Prints the EMA teacher's COCO mask AP50 (and per class), the box AP50, and writes ``probe.json`` into the run.
One thread, as every experiment run (two runs share the two cores of the development machine).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mwsis.pipelines.experiments.harness import train_eval_2d


def _pct(x) -> str:
    return "no detection" if x is None or x < 0 else f"{100 * x:.1f}"


def markdown(rec: dict) -> str:
    """The README table of ``docs/experiments/regime-2d.json`` (``bench/update_readme.py`` writes it)."""
    lines = ["| probe | images | steps | train time | mask AP50 | vehicle | pedestrian | cyclist |",
             "|---|---|---|---|---|---|---|---|"]
    e = rec.get("earlier")
    if e:
        pc = e["teacher_per_class_ap50"]
        lines.append(f"| ResNet-18 (the preset), epoch-6 checkpoint of a stopped run | FRONT, 80 | 278 | — | "
                     f"{_pct(e['teacher_mask_ap50'])} | {_pct(pc['vehicle'])} | {_pct(pc['pedestrian'])} | "
                     f"{_pct(pc['cyclist'])} |")
    for r in rec["rows"]:
        t, pc = r["teacher"], r["teacher"]["per_class"]
        images = "all five cameras, 400" if "5cam" in r["name"] else "FRONT, 80"
        lines.append(f"| {r['name']} | {images} | {r['steps']} | {r['train_seconds'] / 60:.0f} min | {_pct(t['ap50'])} | "
                     + " | ".join(_pct(pc[c]["ap50"]) for c in ("vehicle", "pedestrian", "cyclist")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="training dataset")
    ap.add_argument("--val", required=True, help="held-out dataset")
    ap.add_argument("--out", required=True, help="run directory (resumed when it exists)")
    ap.add_argument("--config", default="configs/cpu-bench.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="train2d override (repeatable)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    r = train_eval_2d(a.train, a.val, a.out, a.config, a.sets)
    t = r["teacher"]
    per_class = {c: round(v.get("ap50") or -1, 3) for c, v in t["per_class"].items()}
    print(a.out, "steps", r["steps"], f"train_s {r['train_seconds']:.0f}",
          f"AP {t['ap']:.3f} AP50 {t['ap50']:.3f} box50 {t['box']['ap50']:.3f}", per_class)
    Path(a.out, "probe.json").write_text(json.dumps(r, indent=1, default=str))


if __name__ == "__main__":
    main()
