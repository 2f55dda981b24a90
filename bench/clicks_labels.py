"""Clicks against boxes on the 3D label side (issue 17; not run in CI): the ``clicks3d`` stage from three click
sources beside SPG from the boxes, scored by ``eval-labels`` on the CPU regime's training frames, and where each
click source lands (inside its object's true mask or not).

    SPG (boxes) | clicks3d, box-centre clicks (WISE's KITTI protocol) | clicks3d, mask-centre clicks (WISE's
    COCO protocol, an oracle) | clicks3d, human-like clicks (a random pixel of the visible mask; seeds 0, 1)

and two ablations of the stage for box-centre and human-like clicks: the seed on the front surface, and a
5 m vehicle extent.

Writes ``docs/experiments/clicks-labels.json`` (``--record``).

    python bench/clicks_labels.py [--data out/cpu-bench] [--config configs/cpu-bench.yaml]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"box-centre clicks": ("box-centre", [0]), "mask-centre clicks": ("mask-centre", [0]),
           "human-like clicks": ("mask-random", [0, 1])}
# why human-like clicks do worse: the seed's surface (the point in front instead of the nearest projection)
# and the growth's reach from a seed off the object's centre (a longer vehicle extent)
ABLATIONS = {"seed in front": {"seed_rule": "front"}, "vehicle extent 5 m": {"extent": [5.0, 1.0, 1.5]}}


def markdown(rec: dict) -> str:
    """The table of ``docs/experiments/clicks-labels.json`` (``bench/update_readme.py`` writes it)."""
    def pct(r, k):
        m, h = r["mean"].get(k), r["half_spread"].get(k)
        return "-" if m is None else (f"{100 * m:.1f} ± {100 * h:.1f}" if r["n"] > 1 else f"{100 * m:.1f}")

    keys = ["ap", "ap50", "miou", "iou.vehicle", "iou.pedestrian", "iou.cyclist", "click_hit"]
    lines = ["| labels | mAP | AP50 | mIoU | IoU veh | IoU ped | IoU cyc | clicks inside their object |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | " + " | ".join(pct(r, k) for k in keys) + " |" for r in rec["rows"]]
    m = rec["machine"]
    lines += ["", f"{rec['frames']} training frames of the CPU regime; mean ± half the spread over the click "
              f"seeds where a source draws at random. Wall time {rec['seconds'] / 60:.1f} min on {m['cpu']} "
              f"({m['cores']} cores)."]
    return "\n".join(lines) + "\n"


def click_hits(data: Path, source: str) -> float:
    """The fraction of a click set's clicks that fall inside their object's true mask."""
    from mwsis.data.click_store import ClickShard
    from mwsis.data.store import open_dataset

    ds = open_dataset(data)
    hit = total = 0
    for pos in range(ds.num_shards):
        shard = ClickShard(ds, source, ds.manifest.shards[pos].name)
        for i, frame in enumerate(ds.shard(pos).iter_frames(images=False)):
            _, clicks = shard.clicks(i, frame.frame_id)
            m = frame.gt.masks
            at = {(int(c), int(o)): k for k, (c, o) in enumerate(zip(m.camera_id, m.object_id))}
            for c, o, (u, v) in zip(clicks.camera_id, clicks.object_id, clicks.uv):
                k = at.get((int(c), int(o)))
                total += 1
                hit += k is not None and bool(m.decode(k)[int(v), int(u)])
    return hit / max(total, 1)


def flat(q: dict) -> dict:
    return {"ap": q["ap"], "ap50": q["ap50"], "miou": q["miou"],
            **{f"iou.{c}": v["iou"] for c, v in q["per_class"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "out" / "cpu-bench")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-bench.yaml")
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "experiments" / "clicks-labels.json")
    a = ap.parse_args()

    from mwsis.pipelines.config import load_section
    from mwsis.pipelines.experiments.harness import machine, prepare_data, write_record
    from mwsis.pipelines.labels.clicks import derive_clicks
    from mwsis.pipelines.labels.evaluate import evaluate_labels
    from mwsis.pipelines.labels.runner import run_stages

    t0, info = time.time(), machine()
    exp = load_section("experiment", a.config)
    train, _ = prepare_data(a.data, exp)
    run_stages(train, ["spg"], show_progress=False)
    rows = [{"name": "SPG (boxes)", "per_seed": {0: flat(evaluate_labels(train, ["spg"], show_progress=False)["spg"])}}]
    variants = [(name, how, seeds, "", {}) for name, (how, seeds) in SOURCES.items()]
    variants += [(name, how, seeds, f" ({ab})", cfg) for ab, cfg in ABLATIONS.items()
                 for name, (how, seeds) in SOURCES.items() if how != "mask-centre"]
    for name, how, seeds, suffix, extra in variants:
        per_seed = {}
        for seed in seeds:
            source = derive_clicks(train, how, seed, show_progress=False)
            run_stages(train, ["clicks3d"], {"clicks3d": {"source": source, **extra}}, show_progress=False)
            q = evaluate_labels(train, ["clicks3d"], show_progress=False)["clicks3d"]
            per_seed[seed] = {**flat(q), "click_hit": click_hits(train, source)}
        rows.append({"name": f"clicks3d, {name}{suffix}", "per_seed": per_seed})
    for r in rows:
        keys = sorted(set().union(*r["per_seed"].values()))
        vals = {k: [p[k] for p in r["per_seed"].values() if p.get(k) is not None] for k in keys}
        r.update(n=len(r["per_seed"]), mean={k: float(np.mean(v)) for k, v in vals.items() if v},
                 half_spread={k: float(np.ptp(v) / 2) for k, v in vals.items() if v})
    rec = {"experiment": "clicks-labels", "rows": rows, "frames": exp.train_frames, "config_file": str(a.config),
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "seconds": time.time() - t0,
           "machine": info}
    write_record(a.record, rec)
    print(markdown(rec))


if __name__ == "__main__":
    main()
