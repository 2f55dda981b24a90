"""``make experiment-3d``: our MWSIS Table 4 rows in the CPU regime (``configs/cpu-bench.yaml``; not run in CI).

Rows, every trained one with each seed of ``experiment.seeds`` (teacher = the EMA model that eval-3d,
predict-3d and PVC use; the student is reported beside it so that a lagging teacher shows):

    full supervision (trained on the ground truth: the upper bound) | CCL | SPG | SPG + PVC | SPG + PVC + RSC
    | CCL labels | SPG labels (the pseudo labels themselves, on the held-out frames)

TWIST's rows (issue 14; ``--rows`` picks them, ``--record`` names their record): SPG + 5 % full labels (the
labelled frames' ground truth, no round: the control); MWSIS Fig. 7's 1 / 5 / 10 % full labels alone, and the
SPG run fine-tuned on them (both step-matched), and the bound trained as long as the fine-tuned rows (full
supervision, twice the steps) | SPG + TWIST (hybrid: rounds every 2 epochs from the
middle, points in no kept proposal keep their labels) | SPG + TWIST (ignore: those points are ignored) | TWIST's
ablation in the hybrid mode: C alone (every proposal kept, no re-correction) and the naive point-threshold
update. TWIST rows also score what they trained on last on the other training frames (pseudo-label quality).

Joint 2D-3D WSSS's rows (issue 16, asked for by name): SPG labels plus CSCS 2D -> 3D from a noisy 2D oracle
(round 900 of predictions/2d, written from the ground truth: 70 % of points right at 0.9, 30 % a random
class at 0.4-0.6), in the soft form, the argmax form, and the argmax form weighted by confidence.

Each PVC run gets its own copy of the training set (the PVC loop writes ``labels/pvc`` and prediction rounds
into it). Writes ``docs/experiments/experiment-3d.json`` (``--record``) and ``OUT/report.md``; rerunning
resumes finished runs.

    python bench/experiment_3d.py [--out out/experiment-3d] [--config configs/cpu-bench.yaml] [--rows ...]
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# row -> train-3d overrides (labels, PVC); the RSC row is the PVC run evaluated with RSC
TRAINED = {"full supervision": ["labels=gt", "pvc.enabled=false"], "CCL": ["labels=ccl", "pvc.enabled=false"],
           "SPG": ["labels=spg", "pvc.enabled=false"], "SPG + PVC": ["labels=spg", "pvc.enabled=true"]}
_FIVE = ["labels=spg", "pvc.enabled=false", "twist.enabled=true", "twist.label_fraction=0.05"]
TRAINED_TWIST = {"SPG + 5 % full labels": [*_FIVE, "twist.start_epoch=1000"],
                 "SPG + TWIST (hybrid)": [*_FIVE, "twist.every=2", "twist.uncovered=keep"],
                 "SPG + TWIST (ignore)": [*_FIVE, "twist.every=2", "twist.uncovered=ignore"],
                 # TWIST's ablation (its Tab. 5) as trained rows: the update of the other frames
                 "SPG + TWIST (hybrid), C alone": [*_FIVE, "twist.every=2", "twist.uncovered=keep",
                                                   "twist.update=proposals"],
                 "SPG + TWIST (hybrid), naive update": [*_FIVE, "twist.every=2", "twist.uncovered=keep",
                                                        "twist.update=naive"]}
TRAINED.update(TRAINED_TWIST)
# MWSIS Fig. 7's few-full-labels rows (issue 14; asked for by name): the labelled frames alone, step-matched
# (their frames cycled for as many steps as the other rows take), from scratch or fine-tuning the SPG run
_ONLY = ["labels=spg", "pvc.enabled=false", "twist.enabled=true", "twist.labelled_only=true",
         "twist.match_full_steps=true", "twist.start_epoch=1000"]
SPG_RUN = "{spg_run}"  # replaced by the same seed's SPG run: those jobs start once it is trained
TRAINED_FEW = {**{f"{p} % full labels alone": [*_ONLY, f"twist.label_fraction={p / 100}"] for p in (1, 5, 10)},
               **{f"SPG, then {p} % full labels": [*_ONLY, f"twist.label_fraction={p / 100}", f"init_weights={SPG_RUN}"]
                  for p in (1, 5, 10)}}
# the fine-tuned rows train twice as many steps as the bound (the SPG run, then as many on the few labels):
# the bound trained as long, for a fair comparison
TRAINED_FEW["full supervision, twice the steps"] = ["labels=gt", "pvc.enabled=false", "epochs=30"]
TRAINED_TWIST.update(TRAINED_FEW)
TRAINED.update(TRAINED_FEW)
# Joint 2D-3D WSSS's 2D -> 3D forms (issue 16) against a noisy 2D oracle (pipelines/experiments/oracle.py)
ORACLE_ROUND = 900
_ORACLE = ["labels=spg", "pvc.enabled=false", f"cscs.round={ORACLE_ROUND}"]
TRAINED_JOINT = {"SPG + soft CSCS (noisy 2D oracle)": _ORACLE,
                 "SPG + argmax (noisy 2D oracle)": [*_ORACLE, "cscs.form=argmax"],
                 "SPG + argmax + confidence (noisy 2D oracle)": [*_ORACLE, "cscs.form=argmax",
                                                                 "cscs.confidence_weighting=true"]}
TRAINED.update(TRAINED_JOINT)
ROWS = [*TRAINED, "SPG + PVC + RSC", "CCL labels", "SPG labels"]
# Table 4; TWIST's and the joint 2D-3D rows are asked for by name
DEFAULT_ROWS = [r for r in ROWS if r not in TRAINED_TWIST and r not in TRAINED_JOINT]
# train_labels: what a TWIST run trained on last (a round's labels, or SPG's without one), on the training frames
# outside its labelled subset
MODEL_NAMES = {"train_labels": "labels (other train frames)"}
PAPER = {"full supervision": 57.6, "CCL": 34.2, "SPG": 42.3, "SPG + PVC + RSC": 46.9}  # MWSIS Tab. 1/4, Waymo val mAP


def markdown(rec: dict) -> str:
    from mwsis.pipelines.experiments.harness import CLASSES, cell

    keys = ["ap", "ap50", "miou", *[f"per_class.{c}.iou" for c in CLASSES]]
    head = "| row | model | mAP | AP50 | mIoU | IoU veh | IoU ped | IoU cyc | paper mAP |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for row in rec["rows"]:
        for model, summ in row["summary"].items():
            paper = PAPER.get(row["name"], "") if model in ("teacher", "labels", "teacher_rsc") else ""
            lines.append(f"| {row['name']} | {MODEL_NAMES.get(model, model)} | "
                         + " | ".join(cell(summ, k) for k in keys) + f" | {paper} |")
    mean = {(r["name"], m): s.get("ap", {}).get("mean") for r in rec["rows"] for m, s in r["summary"].items()}
    full, best = mean.get(("full supervision", "teacher")), mean.get(("SPG + PVC + RSC", "teacher_rsc"))
    if full and best is not None:
        lines += ["", f"Box supervision reaches {100 * best / full:.0f} % of the fully supervised mAP "
                      f"(SPG + PVC + RSC / full supervision; the paper: 46.9 / 57.6 = 81 %)."]
    m = rec["machine"]
    lines += ["", f"Mean ± half the spread over seeds {rec['config']['experiment']['seeds']}, in %. "
              f"Wall time {rec['seconds'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "experiment-3d")
    ap.add_argument("--data", type=Path, default=ROOT / "out" / "cpu-bench",
                    help="where the regime's train/ and val/ frames are rendered (shared by the experiments)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-bench.yaml")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="train3d override, e.g. epochs=8")
    ap.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, choices=ROWS)
    ap.add_argument("--record", type=Path, default=ROOT / "docs" / "experiments" / "experiment-3d.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from mwsis.pipelines.config import config_to_dict, load_section
    from mwsis.pipelines.labels.evaluate import evaluate_labels
    from mwsis.pipelines.experiments.harness import (machine, prepare_data, record, run_parallel, summarize, train_eval_3d,
                                            write_record)
    from mwsis.data.prediction_store import list_rounds
    from mwsis.pipelines.experiments.oracle import write_noisy_oracle_2d
    from mwsis.pipelines.labels.runner import run_stages

    t0, info = time.time(), machine()
    exp = load_section("experiment", args.config)
    cfg3 = load_section("train3d", args.config, args.sets)
    train, val = prepare_data(args.data, exp)
    for d in (train, val):
        run_stages(d, ["ccl", "spg"], show_progress=False)
    if any(r in TRAINED_JOINT for r in args.rows) and ORACLE_ROUND not in list_rounds(train, "2d"):
        write_noisy_oracle_2d(train, ORACLE_ROUND, seed=0)
    jobs, keys = [], []
    for name, sets in TRAINED.items():
        if name not in args.rows and not (name == "SPG + PVC" and "SPG + PVC + RSC" in args.rows):
            continue
        for seed in exp.seeds:
            data, slug = train, re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')
            if name == "SPG + PVC" or "twist.every=2" in sets:  # PVC and TWIST rounds write into their dataset
                data = args.out / f"train-{slug}-seed{seed}"  # a copy per run
                if not data.exists():
                    shutil.copytree(train, data, ignore=shutil.ignore_patterns(".locks", "predictions"))
            run = args.out / f"run-{slug}-seed{seed}"
            spg_run = args.out / f"run-SPG-seed{seed}"
            jobs.append({"train": str(data), "val": str(val), "run": str(run), "config": str(args.config),
                         "sets": [*args.sets, *[x.replace(SPG_RUN, str(spg_run)) for x in sets], f"seed={seed}"],
                         "rsc": name == "SPG + PVC"})
            keys.append((name, seed))
    # jobs that start from an SPG run go after the SPG runs (trained here if the SPG row was not asked for)
    after = [i for i, (name, _) in enumerate(keys) if any(SPG_RUN in x for x in TRAINED[name])]
    first = [i for i in range(len(jobs)) if i not in after]
    if after:
        have = {(n, s) for n, s in keys}
        for seed in exp.seeds:
            if ("SPG", seed) not in have:
                first.append(len(jobs))
                jobs.append({"train": str(train), "val": str(val), "run": str(args.out / f"run-SPG-seed{seed}"),
                             "config": str(args.config), "sets": [*args.sets, *TRAINED["SPG"], f"seed={seed}"],
                             "rsc": False})
                keys.append(("SPG", seed))
    results = [None] * len(jobs)
    for phase in (first, after):
        for i, res in zip(phase, run_parallel(train_eval_3d, [jobs[i] for i in phase], exp.parallel)):
            results[i] = res
    by_row: dict[str, dict[int, dict]] = {}
    for (name, seed), res in zip(keys, results):
        if name in args.rows or name == "SPG + PVC":
            by_row.setdefault(name, {})[seed] = res
    if "SPG + PVC" in by_row:
        by_row["SPG + PVC + RSC"] = {s: {"teacher_rsc": r.pop("teacher_rsc")} for s, r in by_row["SPG + PVC"].items()}
    rows = []
    for name in args.rows:
        if name in ("CCL labels", "SPG labels"):  # the label stages themselves, not a trained row
            stage = name.split()[0].lower()
            per_seed = {0: {"labels": evaluate_labels(val, [stage], show_progress=False)[stage]}}
        else:
            per_seed = by_row[name]
        models = [k for k in ("teacher", "student", "teacher_rsc", "labels", "train_labels")
                  if k in next(iter(per_seed.values()))]
        rows.append({"name": name, "seeds": {str(s): r for s, r in per_seed.items()},
                     "summary": {m: summarize({s: r[m] for s, r in per_seed.items()}) for m in models}})
    config = {"experiment": config_to_dict(exp), "train3d": config_to_dict(cfg3), "sets": args.sets}
    rec = record(args.record.stem, args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config,
                 config, rows, info, t0, {"train_frames": exp.train_frames, "val_frames": exp.val_frames})
    write_record(args.record, rec)
    md = markdown(rec)
    (args.out / "report.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
