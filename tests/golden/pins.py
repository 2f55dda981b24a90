"""Golden pins of issue 13's refactor: what the code writes must not change when the code is moved.

``compute(tmp)`` makes a fixed tiny dataset, runs every label stage on it (SAM with the seeded tiny random
model), a fixed-seed tiny 3D run (its PVC round writes ``labels/pvc``) and a fixed-seed tiny 2D run, and
returns the sha256 of every frame and label shard and the runs' ``metrics.csv`` rows. ``pins.json`` holds
what the code gave before the refactor (recorded with ``python tests/golden/pins.py``, on the development
machine), recorded again when issue 19 changed the shards' Parquet encoding and no value (see its
``about``); ``tests/test_golden.py`` compares.

Frame shards are pinned too: if they differ, the synthetic renderer (or this machine's floating point)
changed, and the label pins say nothing until that is understood.
"""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINS = Path(__file__).with_name("pins.json")
STAGES = ["frustum", "ccl", "dcs", "spg", "sam"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metrics(run: Path) -> list[list[str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [row for row in csv.reader(f)]


def compute(tmp: Path) -> dict:
    import torch

    from mwsis.pipelines.labels.runner import run_stages
    from mwsis.pipelines.convert.synth import synth_dataset
    from mwsis.pipelines.training.train2d import Train2DConfig, train_2d
    from mwsis.pipelines.training.train3d import Train3DConfig, train_3d
    from mwsis.pipelines.training.run import load_config

    torch.set_num_threads(1)
    ds = tmp / "ds"
    synth_dataset(ds, "tiny", frames=4, seed=0, frames_per_sequence=2, workers=1, show_progress=False)
    res = run_stages(ds, STAGES, {"sam": {"checkpoint": "tiny"}}, show_progress=False)
    assert all(r.status == "done" for r in res), [r for r in res if r.status != "done"]
    cfg3 = load_config(Train3DConfig, ROOT / "configs" / "train3d-tiny.yaml", ["epochs=2", "seed=3"])
    train_3d(ds, tmp / "run3d", cfg3, show_progress=False)  # its PVC round writes labels/pvc
    cfg2 = load_config(Train2DConfig, ROOT / "configs" / "train2d-tiny.yaml",
                       ["epochs=2", "max_steps_per_epoch=2", "seed=3"])
    train_2d(ds, tmp / "run2d", cfg2, show_progress=False)
    shards = {str(p.relative_to(ds)): _sha(p) for p in sorted(ds.rglob("*.parquet"))
              if p.parts[len(ds.parts)] in ("frames", "labels")}
    return {"shards": shards, "metrics_3d": _metrics(tmp / "run3d"), "metrics_2d": _metrics(tmp / "run2d")}


def platform_of(pins: dict, now: dict) -> dict | None:
    """The pinned platform whose frame shards ``now`` reproduces: frames come from the renderer alone, so
    they tell which floating-point platform the label and metric pins must be compared with."""
    frames = {k: v for k, v in now["shards"].items() if k.startswith("frames/")}
    return next((p for p in pins["platforms"]
                 if {k: v for k, v in p["shards"].items() if k.startswith("frames/")} == frames), None)


if __name__ == "__main__":
    # python tests/golden/pins.py COMMIT: adds (or replaces) this platform's entry. Run it from a checkout of
    # the pinned commit (the one in the entries: issue 19's encoding change), so that the new entry pins what
    # that code writes here, not what today's code writes.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        entry = compute(Path(d))
    from mwsis.pipelines.experiments.harness import machine

    entry["recorded_on"] = machine()
    entry["commit"] = sys.argv[1] if len(sys.argv) > 1 else None
    pins = json.loads(PINS.read_text()) if PINS.exists() else {"platforms": []}
    same = platform_of(pins, entry)
    pins["platforms"] = [p for p in pins["platforms"] if p is not same] + [entry]
    PINS.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"{len(entry['shards'])} shards, {len(entry['metrics_3d'])} + {len(entry['metrics_2d'])} metric rows "
          f"-> {PINS} ({len(pins['platforms'])} platforms)")
