"""``mwsis report``: the HTML report of a dataset's pseudo labels and of trained runs (``pipelines/report/page.py``)."""
from __future__ import annotations

import click


@click.command("report")
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True,
              help="Dataset directory (its labels are scored, its frames pictured, runs evaluated on it).")
@click.option("--runs", "--run", "runs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A train-3d or train-2d run directory (repeatable); its kind comes from run.json/config.yaml.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output directory: index.html, report.json and img/.")
@click.option("--frames", type=click.IntRange(min=0), default=3, show_default=True,
              help="Frames in the picture gallery, spread over the dataset.")
@click.option("--evaluate/--no-evaluate", default=None,
              help="--evaluate: evaluate every run on --data now. --no-evaluate: only read each run's eval.json. "
                   "Default: eval.json when the run has one (as `make train-3d/train-2d` write), else evaluate.")
@click.option("--variants/--no-variants", default=False, show_default=True,
              help="Also score the SPG variants in the label table (as `mwsis eval-labels`; slower).")
def report_cmd(data, runs, out, frames, evaluate, variants):
    """One HTML page: pseudo-label quality, 3D/2D evaluation of runs, training curves, frame pictures."""
    from pathlib import Path

    from ..report.page import build_report

    build_report(data, list(runs), out, frames=frames, evaluate=evaluate, variants=variants, show_progress=True)
    click.echo(str(Path(out) / "index.html"))
