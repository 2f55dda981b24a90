"""``make experiment-2d``: our MWSIS Table 5 rows for the 2D branch in the CPU regime (``configs/cpu-bench.yaml``;
not run in CI).

    full supervision (CondInst's dice on the true masks: the upper bound) | BoxInst (boxes only)
    | + IPG (Eq. 1-2) | + IPG + CSCS 3D→2D (Eq. 5-7)
    | + IPG + SIM (seeds/004, tau 0.1 and 1.0) | + IPG + SIM + copy-paste | + IPG + SIM + CSCS

every row with each seed of ``experiment.seeds``, evaluated with COCO mask AP (method.md §11: original
resolution, GT masks ≤ 200 px dropped) on held-out frames of other scenes, box AP as a diagnostic. The CSCS
row first trains the 3D model on SPG labels (the regime's train3d section) and exports its predictions.
Writes ``docs/experiments/experiment-2d.json`` (``--record``) and ``OUT/report.md``; reruns resume.

    python bench/experiment_2d.py [--out out/experiment-2d] [--config configs/cpu-bench.yaml] [--rows ...]
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = ["model.sim.enabled=true"]
ROWS = {"full supervision": ["masks=gt", "model.ipg.enabled=false"], "BoxInst": ["model.ipg.enabled=false"],
        "+ IPG": [], "+ IPG + CSCS": ["cscs_3d=latest"],
        # SIM (issue 15), its temperature both ways (the paper's text 0.1, its Table 8 best 1.0)
        "+ IPG + SIM": SIM, "+ IPG + SIM (tau 1.0)": [*SIM, "model.sim.temperature=1.0"],
        "+ IPG + SIM + copy-paste": [*SIM, "model.sim.copy_paste.enabled=true"],
        "+ IPG + SIM + CSCS": [*SIM, "cscs_3d=latest"]}
# Joint 2D-3D WSSS's 3D -> 2D feature correlation alone (issue 16; asked for by name, record joint-2d3d.json):
# BoxInst plus the correlation with oracle 3D features (round 901: one random unit vector per true instance)
# or with the 3D teacher's features (round 1, as the CSCS rows)
ORACLE_3D_ROUND = 901
_CORR = ["model.ipg.enabled=false", "model.cscs.weight_3d_to_2d=0", "model.cscs.affinity_weight=1.0"]
JOINT = {"BoxInst + correlation (oracle 3D features)": [*_CORR, f"cscs_3d={ORACLE_3D_ROUND}"],
         "BoxInst + correlation (3D teacher features)": [*_CORR, "cscs_3d=1"]}
DEFAULT_ROWS = list(ROWS)
ROWS.update(JOINT)


def pseudo_summary(res: dict) -> dict:
    """One run's teacher pseudo-mask IoU with the true masks on training images (``pseudo_quality``): at the
    last epoch, and the mean over epochs."""
    q = res.get("pseudo_quality") or []
    if not q:
        return {}
    return {"iou": q[-1]["iou"], "iou_crowded": q[-1]["iou_crowded"],
            "iou_mean_over_epochs": float(sum(r["iou"] for r in q) / len(q))}


def markdown(rec: dict) -> str:
    from mwsis.pipelines.experiments.harness import CLASSES, cell

    keys = ["ap", "ap50", "ap75", *[f"per_class.{c}.ap50" for c in CLASSES], "box.ap50"]
    lines = ["| row | mask AP | AP50 | AP75 | AP50 veh | AP50 ped | AP50 cyc | box AP50 | pseudo IoU | crowded |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rec["rows"]:
        pseudo = row["summary"].get("pseudo", {})
        lines.append(f"| {row['name']} | " + " | ".join(cell(row["summary"]["teacher"], k) for k in keys) + " | "
                     + " | ".join(cell(pseudo, k) for k in ("iou", "iou_crowded")) + " |")
    m = rec["machine"]
    lines += ["", "pseudo IoU: the EMA teacher's pseudo masks (IPG's, or SIM's corrected ones) against the true masks "
              "on every 4th training image at the last epoch; crowded: boxes overlapping a box of their class.",
              "", f"Mean ± half the spread over seeds {rec['config']['experiment']['seeds']}, in %. "
              f"Wall time {rec['seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "experiment-2d")
    ap.add_argument("--data", type=Path, default=ROOT / "out" / "cpu-bench",
                    help="where the regime's train/ and val/ frames are rendered (shared by the experiments)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-bench.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="train2d override, e.g. epochs=8")
    ap.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, choices=list(ROWS))
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "experiments" / "experiment-2d.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    from mwsis.pipelines.config import config_to_dict, load_section
    from mwsis.pipelines.experiments.harness import (machine, prepare_data, record, run_parallel, summarize, train_eval_2d,
                                            write_record)
    from mwsis.data.prediction_store import list_rounds
    from mwsis.pipelines.experiments.oracle import write_oracle_3d
    from mwsis.pipelines.predict.predict3d import export_predictions
    from mwsis.pipelines.labels.runner import run_stages
    from mwsis.pipelines.training.train3d import load_teacher, train_3d

    t0, info = time.time(), machine()
    exp = load_section("experiment", args.config)
    cfg2 = load_section("train2d", args.config, args.sets)
    train, val = prepare_data(args.data, exp, for_2d=True)  # the 2D rows' images (experiment.cameras_2d)
    extra = {"train_frames": exp.train_frames, "val_frames": exp.val_frames, "train_data": str(train)}
    teacher_rows = [r for r in args.rows if "cscs_3d=latest" in ROWS[r] or "cscs_3d=1" in ROWS[r]]
    features = any("cscs_3d=1" in ROWS[r] for r in args.rows)
    if teacher_rows and (1 not in list_rounds(train, "3d") or (features and 1 not in list_rounds(train, "3dfeat"))):
        # the 3D teacher trains in the 3D regime (its frames: experiment.cameras) and predicts the 2D frames'
        # points: the same scenes, seen by every camera of the 2D rows
        train3d_data, _ = prepare_data(args.data, exp)
        run_stages(train3d_data, ["spg"], show_progress=False)
        cfg3 = load_section("train3d", args.config, ["labels=spg", "pvc.enabled=false"])
        t = time.time()
        torch.set_num_threads(1)
        train_3d(train3d_data, args.out / "run-3d", cfg3, resume=True, show_progress=False)
        teacher3d, cfg3 = load_teacher(args.out / "run-3d", torch.device("cpu"))
        export_predictions(train, teacher3d, cfg3.infer, 1, torch.device("cpu"), {"run": "run-3d"},
                           show_progress=False, points=cfg3.points, features=True)
        extra["cscs_teacher_3d_seconds"] = time.time() - t
    if any(f"cscs_3d={ORACLE_3D_ROUND}" in ROWS[r] for r in args.rows) and ORACLE_3D_ROUND not in list_rounds(train, "3d"):
        write_oracle_3d(train, ORACLE_3D_ROUND)
    jobs, keys = [], []
    for name in args.rows:
        for seed in exp.seeds:
            run = args.out / f"run-{name.replace(' ', '').replace('+', '_')}-seed{seed}"
            jobs.append({"train": str(train), "val": str(val), "run": str(run), "config": str(args.config),
                         "sets": [*args.sets, *ROWS[name], f"seed={seed}"]})
            keys.append((name, seed))
    results = run_parallel(train_eval_2d, jobs, exp.parallel)
    by_row: dict[str, dict[int, dict]] = {}
    for (name, seed), res in zip(keys, results):
        by_row.setdefault(name, {})[seed] = res
    rows = [{"name": name, "seeds": {str(s): r for s, r in per_seed.items()},
             "summary": {"teacher": summarize({s: r["teacher"] for s, r in per_seed.items()}),
                         "pseudo": summarize({s: pseudo_summary(r) for s, r in per_seed.items()})}}
            for name, per_seed in by_row.items()]
    config = {"experiment": config_to_dict(exp), "train2d": config_to_dict(cfg2), "sets": args.sets}
    rec = record("experiment-2d", args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config,
                 config, rows, info, t0, extra)
    write_record(args.record, rec)
    md = markdown(rec)
    (args.out / "report.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
