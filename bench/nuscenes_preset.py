"""SPG's DCS window and CCL radii on a 32-beam sensor: the ``nuscenes`` preset's check (issue 18; not run in CI).

The paper's values were set for Waymo's 64 x 2650 range image. The HDL-32E of nuScenes turns with ~1088
columns (0.33 deg apart, 2.4x Waymo's 0.136 deg) and 32 rows (1.33 deg apart): the same look-back window in
columns spans 2.4x the azimuth, and neighbouring returns on one ring lie 0.12 m apart at 20 m, more than the
pedestrian radius of 0.1 m. Variants of ``stages.spg`` are scored by ``eval-labels`` on synthetic frames of the
``nuscenes`` preset (exact per-point truth), each on two scene seeds:

    paper values | DCS window scaled to the columns (500 x 1088 / 2650) | pedestrian radius 0.25 m |
    radii scaled by the azimuth spacing (x 2.4) | window scaled + pedestrian radius 0.25 m

Writes ``docs/experiments/nuscenes-preset.json`` (``--record``).

    python bench/nuscenes_preset.py [--out out/nuscenes-preset] [--frames 24] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCALE = 1088 / 2650
VARIANTS = {
    "paper values": {},
    "DCS window scaled to 1088 columns": {"dcs_window_scale": 500.0 * SCALE},
    "pedestrian radius 0.25 m": {"radii": [0.6, 0.25, 0.4]},
    "radii x 2.4 (azimuth spacing)": {"radii": [0.6 / SCALE, 0.1 / SCALE, 0.4 / SCALE]},
    "window scaled + pedestrian radius 0.25 m": {"dcs_window_scale": 500.0 * SCALE, "radii": [0.6, 0.25, 0.4]},
}


def flat(q: dict) -> dict:
    return {"ap": q["ap"], "ap50": q["ap50"], "miou": q["miou"], "ignored_fg": q["ignored_foreground_fraction"],
            **{f"iou.{c}": v["iou"] for c, v in q["per_class"].items()},
            **{f"ap.{c}": v["ap"] for c, v in q["per_class"].items()}}


def markdown(rec: dict) -> str:
    def pct(r, k):
        m, h = r["mean"].get(k), r["half_spread"].get(k)
        return "-" if m is None else (f"{100 * m:.1f} ± {100 * h:.1f}" if r["n"] > 1 else f"{100 * m:.1f}")

    keys = ["ap", "ap50", "miou", "iou.vehicle", "iou.pedestrian", "iou.cyclist", "ap.pedestrian", "ignored_fg"]
    lines = ["| SPG on the 32-beam sensor | mAP | AP50 | mIoU | IoU veh | IoU ped | IoU cyc | AP ped | ignored fg |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | " + " | ".join(pct(r, k) for k in keys) + " |" for r in rec["rows"]]
    m = rec["machine"]
    lines += ["", f"{rec['frames']} synthetic frames of the nuscenes preset per seed, seeds {rec['seeds']}; mean ± "
              f"half the spread, in %. Wall time {rec['seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "nuscenes-preset")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "experiments" / "nuscenes-preset.json")
    a = ap.parse_args()

    from mwsis.pipelines.config import load_config
    from mwsis.pipelines.convert.synth import synth_dataset
    from mwsis.pipelines.experiments.harness import machine, write_record
    from mwsis.pipelines.labels.evaluate import evaluate_labels
    from mwsis.pipelines.labels.runner import run_stages
    from mwsis.pipelines.labels.stages import StagesConfig

    t0, info = time.time(), machine()
    base = load_config(StagesConfig, "waymo")  # the paper's values; nuScenes has no no-label zones
    per: dict[str, dict] = {name: {} for name in VARIANTS}
    for seed in a.seeds:
        data = a.out / f"seed{seed}"
        synth_dataset(data, "nuscenes", a.frames, seed=seed, frames_per_sequence=4, overrides={"image_scale": 0.5},
                      show_progress=False)
        for name, over in VARIANTS.items():
            cfg = StagesConfig.resolve({"points": {**vars(base.points), "drop_nlz": False},
                                        "spg": {**vars(base.spg), **over}})
            run_stages(data, ["spg"], cfg, force=True, show_progress=False)
            per[name][seed] = flat(evaluate_labels(data, ["spg"], show_progress=False, config=cfg)["spg"])
        print(f"seed {seed} done ({(time.time() - t0) / 60:.1f} min)", flush=True)
    rows = []
    for name, by_seed in per.items():
        keys = sorted(set().union(*by_seed.values()))
        vals = {k: [m[k] for m in by_seed.values() if m.get(k) is not None] for k in keys}
        rows.append({"name": name, "spg": VARIANTS[name], "per_seed": by_seed, "n": len(by_seed),
                     "mean": {k: float(np.mean(v)) for k, v in vals.items() if v},
                     "half_spread": {k: float(np.ptp(v) / 2) for k, v in vals.items() if v}})
    rec = {"experiment": "nuscenes-preset", "rows": rows, "frames": a.frames, "seeds": a.seeds,
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "seconds": time.time() - t0, "machine": info}
    write_record(a.record, rec)
    print(markdown(rec))


if __name__ == "__main__":
    main()
