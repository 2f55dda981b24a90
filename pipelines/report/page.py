"""``mwsis report``: one HTML page that says how a dataset's pseudo labels and the trained models are doing.

``OUT/index.html`` with its pictures in ``OUT/img/`` (relative links: copy the folder as a whole) and every
number again in ``OUT/report.json``. Contents: the pseudo-label quality table (``evaluate_labels``), the
3D / 2D evaluation of each run (its ``eval.json`` when present, else computed with the functions behind
``mwsis eval-3d`` / ``eval-2d``), training curves from each run's ``metrics.csv``, and a gallery of a few
frames (BEV and range image with ground truth, cameras with boxes and masks, BEV of each stage's labels).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
from html import escape
from pathlib import Path

import numpy as np

from ... import __version__
from ...data.frame import CLASS_NAMES
from ...data.store import StoreError, open_dataset, write_bytes_atomic

log = logging.getLogger(__name__)

KINDS = {"train-3d": "3d", "train-2d": "2d"}


# ------------------------------------------------------------------------------------------------ runs


def run_kind(run: Path) -> str:
    """"3d" or "2d": from run.json's ``kind`` (written by both trainers), else from the config's fields."""
    info = _read_json(run / "run.json") or {}
    if info.get("kind") in KINDS:
        return KINDS[info["kind"]]
    cfg = _read_yaml(run / "config.yaml") or {}
    if "pvc" in cfg and "infer" in cfg:  # Train3DConfig's sections
        return "3d"
    if "lr_steps" in cfg:  # Train2DConfig's schedule
        return "2d"
    raise StoreError(f"{run}: not a training run (no run.json kind and no trainer config.yaml)")


def evaluate_run(run: Path, kind: str, data: Path, show_progress: bool = False) -> dict:
    """What ``mwsis eval-3d --run R --data D`` / ``eval-2d`` print (same defaults: no RSC, min_points 1)."""
    import dataclasses

    from ..training.distributed import DistInfo, pick_device, use_cpu_threads

    device = pick_device(DistInfo())
    if kind == "3d":
        from ..predict.predict3d import evaluate_3d
        from ..training.train3d import load_teacher

        model, cfg = load_teacher(run, device)
        use_cpu_threads(device, cfg.cpu_threads)
        return evaluate_3d(model, data, dataclasses.replace(cfg.infer, min_points=max(cfg.infer.min_points, 1)),
                           device, show_progress=show_progress, points=cfg.points, spg=cfg.spg)
    from ..predict.predict2d import evaluate_2d
    from ..training.train2d import load_teacher_2d

    model, cfg = load_teacher_2d(run, device)
    use_cpu_threads(device, cfg.cpu_threads)
    return evaluate_2d(model, data, cfg, device, show_progress=show_progress)


def run_evaluation(run: Path, kind: str, data: Path, evaluate: bool | None) -> tuple[dict | None, str]:
    """(result, where it came from). ``evaluate`` None: the run's eval.json when present, else compute;
    True: always compute on ``data``; False: only read eval.json."""
    saved = run / "eval.json"
    if evaluate is not True and saved.exists():
        stamp = dt.datetime.fromtimestamp(saved.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return _read_json(saved), f"{saved} (written {stamp}; its dataset is not recorded)"
    if evaluate is False:
        return None, "not evaluated (--no-evaluate and no eval.json in the run)"
    try:
        return evaluate_run(run, kind, data), f"computed now on {data}"
    except StoreError as e:  # e.g. a run without a checkpoint: the page says so, the other runs still show
        return None, f"evaluation failed: {e}"


def plot_curves(rows: list[dict], title: str) -> bytes:
    """PNG: one panel per logged metric (loss first) against the training step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state
    from matplotlib.ticker import MaxNLocator

    names = sorted({r["name"] for r in rows}, key=lambda n: (n != "loss", not n.startswith("loss"), n))
    cols = min(3, max(len(names), 1))
    nrows = max(math.ceil(len(names) / cols), 1)
    fig = Figure(figsize=(4.2 * cols, 2.8 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        pts = sorted((r["step"], r["value"]) for r in rows if r["name"] == name)
        ax = fig.add_subplot(nrows, cols, i + 1)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, marker="." if len(pts) < 40 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers; short runs get 1.25 ticks otherwise
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- gallery


def pick_frames(frame_ids: list[str], n: int) -> list[str]:
    """``n`` frames spread evenly over the dataset (first and last included)."""
    if n <= 0 or not frame_ids:
        return []
    idx = np.unique(np.linspace(0, len(frame_ids) - 1, min(n, len(frame_ids))).round().astype(int))
    return [frame_ids[i] for i in idx]


def gallery(ds, frame_ids: list[str], img_dir: Path) -> list[dict]:
    """Pictures of each frame: {"frame", "pictures": [{"file", "caption"}]} (files relative to the page)."""
    from ...data import viz
    from ...data.click_store import click_sources, read_frame_clicks
    from ...data.label_store import read_frame_labels, stages_with_labels
    from .viz import save_png

    out = []
    for fid in frame_ids:
        frame = ds.frame(fid, images=True)
        # zoom to the cloud (the tiny sensor reaches 40 m, the default view is +-60 m), at most the default
        ext = float(np.clip(np.ceil(np.nanmax(np.abs(frame.points.xyz[:, :2]), initial=0) / 10) * 10, 20, 60))
        # ground-truth BEV first, each stage's BEV next to it (the comparison the page is for), then the sensors
        pics = [("bev", "bird's-eye view, ground truth", lambda: viz.bev(frame, extent=ext))]
        for stage in stages_with_labels(ds):
            try:
                lab = read_frame_labels(ds, stage, fid)
            except (StoreError, FileNotFoundError) as e:
                log.warning("report: no %s labels for %s (%s)", stage, fid, e)
                continue
            if lab.semantic is not None:
                pics.append((f"{stage}_bev", f"{stage} pseudo labels (magenta = ignore)", lambda lab=lab, s=stage:
                             viz.bev(frame, semantic=lab.semantic, instance=lab.instance, extent=ext,
                                     title=f"{fid}: {s}")))
        pics.append(("range", "range image (TOP), ground truth", lambda: viz.range_view(frame)))
        pics += [(f"camera_{c.name}", f"camera {c.name}: boxes and ground-truth masks",
                  lambda c=c: viz.camera_view(frame, c.camera_id)) for c in frame.cameras]
        for source in click_sources(ds.root):  # the first camera with each click set
            try:
                clicks = read_frame_clicks(ds, source, fid)
            except StoreError as e:
                log.warning("report: no %s clicks for %s (%s)", source, fid, e)
                continue
            cam = frame.cameras[0]
            pics.append((f"clicks-{source}_{cam.name}", f"camera {cam.name}: click set {source}",
                         lambda clicks=clicks, cam=cam: viz.camera_view(frame, cam.camera_id, masks=False,
                                                                        clicks=clicks)))
        entry = {"frame": fid, "pictures": []}
        for name, caption, draw in pics:
            path = img_dir / f"{_safe(fid)}_{name}.png"
            save_png(path, draw())
            entry["pictures"].append({"file": f"{img_dir.name}/{path.name}", "caption": caption,
                                      "wide": name == "range"})  # a 360-degree strip: a full row to be legible
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- report


def build_report(data: Path | str, runs: list[Path | str] = (), out: Path | str = "report", frames: int = 3,
                 evaluate: bool | None = None, variants: bool = False, show_progress: bool = False) -> dict:
    """Write ``out/index.html``, ``out/report.json`` and ``out/img/*.png``; returns the report dict."""
    from ..labels.evaluate import evaluate_labels
    from ..training.run import git_commit, read_metrics

    data, out = Path(data), Path(out)
    img_dir = out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data)
    src = ds.manifest.source
    rep: dict = {"dataset": str(data.resolve()), "frames": len(ds), "shards": ds.num_shards,
                 "source": {k: src.get(k) for k in ("kind", "preset", "seed", "src") if src.get(k) is not None},
                 "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                 "mwsis_version": __version__, "git_commit": git_commit(), "runs": []}
    rep["labels"] = evaluate_labels(ds, variants=variants, show_progress=show_progress)
    for r in map(Path, runs):
        kind = run_kind(r)
        result, source = run_evaluation(r, kind, data, evaluate)
        entry = {"path": str(r.resolve()), "name": r.name, "kind": kind, "eval": result, "eval_source": source,
                 "config": (r / "config.yaml").read_text() if (r / "config.yaml").exists() else None,
                 # the command line shows the preset/file and --set values the resolved config came from
                 "command": " ".join((_read_json(r / "run.json") or {}).get("argv", [])) or None, "curves": None}
        if (r / "metrics.csv").exists() and (rows := read_metrics(r)):
            png = img_dir / f"curves_{len(rep['runs'])}_{_safe(r.name)}.png"
            write_bytes_atomic(png, plot_curves(rows, f"{r.name} ({kind.upper()}): metrics.csv"))
            entry["curves"] = f"{img_dir.name}/{png.name}"
            entry["steps"] = max(row["step"] for row in rows)
        rep["runs"].append(entry)
    rep["gallery"] = gallery(ds, pick_frames(ds.frame_ids, frames), img_dir)
    write_bytes_atomic(out / "report.json", (json.dumps(rep, indent=1) + "\n").encode())
    write_bytes_atomic(out / "index.html", render_html(rep).encode())
    log.info("report: %s", out / "index.html")
    return rep


def pct(x) -> str:
    """A fraction as the tables print it (percent, 2 decimals; a dash for no value)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _table(head: list[str], rows: list[list[str]], first_col_text: bool = True) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=t" if first_col_text and j == 0 else ""}>{escape(c)}</td>'
                                    for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def labels_table(res: dict) -> str:
    head = ["stage", "mAP", "AP50", "AP75", "mIoU", *[f"IoU {n}" for n in CLASS_NAMES], "ignored fg %", "SAM mask IoU 2D"]
    rows = [[stage, pct(r.get("ap")), pct(r.get("ap50")), pct(r.get("ap75")), pct(r.get("miou")),
             *[pct(r["per_class"][n]["iou"]) for n in CLASS_NAMES], pct(r.get("ignored_foreground_fraction")),
             pct(r.get("sam_mask_iou"))] for stage, r in res.items() if stage != "frames"]
    return _table(head, rows)


def runs_table(runs: list[dict], kind: str) -> str:
    if kind == "3d":
        head = ["run", "frames", "mAP", "AP50", "AP75", "mIoU", *[f"AP {n}" for n in CLASS_NAMES],
                *[f"IoU {n}" for n in CLASS_NAMES]]
        rows = [[r["name"], str(e.get("frames", "")), pct(e.get("ap")), pct(e.get("ap50")), pct(e.get("ap75")),
                 pct(e.get("miou")), *[pct(e["per_class"].get(n, {}).get("ap")) for n in CLASS_NAMES],
                 *[pct(e["per_class"].get(n, {}).get("iou")) for n in CLASS_NAMES]]
                for r in runs if (e := r["eval"])]
    else:
        head = ["run", "images", "mask AP", "AP50", "AP75", *[f"AP {n}" for n in CLASS_NAMES]]
        rows = [[r["name"], str(e.get("images", "")), pct(e.get("ap")), pct(e.get("ap50")), pct(e.get("ap75")),
                 *[pct(e.get("per_class", {}).get(n, {}).get("ap")) for n in CLASS_NAMES]]
                for r in runs if (e := r["eval"])]
    return _table(head, rows) if rows else "<p class=note>No evaluation.</p>"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.2em 2em;max-width:1500px;
     color:#1d1d1f;background:#fff;line-height:1.4}
h1{margin:.2em 0 .4em}h2{margin-top:1.6em;border-bottom:2px solid #e3e3e8;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:14px}
th,td{border:1px solid #d0d0d7;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f1f2f6}td.t{text-align:left;font-family:ui-monospace,monospace}
tbody tr:nth-child(even){background:#fafafc}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:14px}
dl.meta dt{font-weight:600}dl.meta dd{margin:0;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
.note{color:#666;font-size:13px}.run{margin-bottom:1.5em}
img{max-width:100%;height:auto;border:1px solid #ddd}
.frame{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;align-items:start}
figure{margin:0}figure img{width:100%}figure.wide{grid-column:1/-1}figcaption{font-size:12px;color:#444}
pre{background:#f6f6f9;padding:8px;font-size:12px;max-height:24em;overflow:auto}
"""


def render_html(rep: dict) -> str:
    """The page. Every piece of text from data or runs goes through html.escape."""
    e = escape
    src = ", ".join(f"{k} {v}" for k, v in rep["source"].items()) or "unknown"
    # one <dd> for all runs: the two-column grid of the <dl> pairs each <dt> with exactly one <dd>
    run_list = "<dd>" + ("<br>".join(f"{e(r['path'])} ({e(r['kind'].upper())})" for r in rep["runs"]) or "none") + "</dd>"
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>mwsis report: {e(Path(rep['dataset']).name)}"
             f"</title><style>{_CSS}</style></head><body>",
             "<h1>mwsis report</h1><dl class=meta>",
             f"<dt>dataset</dt><dd>{e(rep['dataset'])}</dd>",
             f"<dt>frames</dt><dd>{rep['frames']} in {rep['shards']} shards; source: {e(src)}</dd>",
             f"<dt>runs</dt>{run_list}",
             f"<dt>date</dt><dd>{e(rep['date'])}</dd>",
             f"<dt>mwsis</dt><dd>{e(rep['mwsis_version'])}"
             f"{e(', commit ' + rep['git_commit']) if rep.get('git_commit') else ''}</dd></dl>"]
    lab = rep["labels"]
    parts.append("<h2>Pseudo-label quality</h2>")
    if any(k != "frames" for k in lab):
        parts.append(f"<p class=note>{lab['frames']} frames with per-point ground truth; percentages; instance AP "
                     "with every pseudo instance scored 1.0 (as <code>mwsis eval-labels</code>).</p>")
        parts.append(labels_table(lab))
    else:
        parts.append("<p class=note>No frame with ground truth, or no stage has labels "
                     "(run <code>mwsis pseudolabels</code>).</p>")
    for kind, title in (("3d", "3D segmentor (EMA teacher)"), ("2d", "2D segmenter (EMA teacher)")):
        runs = [r for r in rep["runs"] if r["kind"] == kind]
        if not runs:
            continue
        parts.append(f"<h2>{e(title)}</h2>" + runs_table(runs, kind) + "<ul class=note>"
                     + "".join(f"<li>{e(r['name'])}: {e(r['eval_source'])}</li>" for r in runs) + "</ul>")
    if rep["runs"]:
        parts.append("<h2>Training curves</h2>")
    for r in rep["runs"]:
        parts.append(f"<div class=run><h3>{e(r['name'])} <span class=note>({e(r['path'])})</span></h3>")
        if r.get("command"):
            parts.append(f"<p class=note>command: <code>{e(r['command'])}</code></p>")
        parts.append(f"<img src=\"{e(r['curves'])}\" alt=\"training curves of {e(r['name'])}\">" if r["curves"]
                     else "<p class=note>No metrics.csv.</p>")
        if r.get("config"):
            parts.append(f"<details><summary>resolved config (config.yaml)</summary><pre>{e(r['config'])}</pre></details>")
        parts.append("</div>")
    parts.append("<h2>Gallery</h2>")
    if not rep["gallery"]:
        parts.append("<p class=note>No frames.</p>")
    for g in rep["gallery"]:
        parts.append(f"<h3>{e(g['frame'])}</h3><div class=frame>")
        parts += [f"<figure{' class=wide' if p.get('wide') else ''}><img src=\"{e(p['file'])}\" alt=\"{e(p['caption'])}\">"
                  f"<figcaption>{e(p['caption'])}</figcaption></figure>" for p in g["pictures"]]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _safe(name: str) -> str:
    """A file-name-safe version of a frame id or run name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
