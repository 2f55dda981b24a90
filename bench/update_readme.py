"""Write the experiment tables into the README and the docs pages from their JSON records
(``docs/experiments/*.json``), so the documentation quotes the records and no number is typed by hand. Each
table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers (NAME: the record's file stem),
in every page that carries them (README.md, docs/*.md); every recorded table must be quoted somewhere.

    python bench/update_readme.py        # rewrites the pages in place; run after make experiment-3d / -2d
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDERERS = {"experiment-3d": "experiment_3d.py", "experiment-2d": "experiment_2d.py",
             "experiment-twist": "experiment_3d.py",  # TWIST's rows (issue 14), the 3D experiment's table
             "joint-2d-to-3d": "experiment_3d.py"}  # issue 16: CSCS 2D -> 3D forms against a noisy 2D oracle
PROBES = {"regime-2d": "probe_2d.py",  # one-seed probes that chose (or failed to choose) a regime
          "twist-labels": "twist_labels.py",  # label-side ablations outside the experiment rows
          "clicks-labels": "clicks_labels.py",
          "kitti-presets": "kitti_presets.py",  # issue 18: the kitti preset against the Waymo defaults
          "nuscenes-preset": "nuscenes_preset.py",  # issue 18: SPG's window and radii on a 32-beam sensor
          "bench-pseudolabels": "bench_table.py"}  # issue 19: `mwsis bench`, fused stages against stage by stage


def renderer(script: str):
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "bench" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.markdown


def pages() -> list[Path]:
    """The markdown pages that may quote a table."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def marker(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)


def main() -> None:
    texts = {p: p.read_text() for p in pages()}
    for name, script in {**RENDERERS, **PROBES}.items():
        path = ROOT / "docs" / "experiments" / f"{name}.json"
        if not path.exists():
            continue
        table = renderer(script)(json.loads(path.read_text()))
        quoted = [p for p, t in texts.items() if marker(name).search(t)]
        if not quoted:
            raise SystemExit(f"no page has <!-- table:{name} --> ... <!-- /table:{name} --> markers")
        for p in quoted:
            texts[p] = marker(name).sub(lambda m: m.group(1) + table + m.group(2), texts[p])
    for p, t in texts.items():
        if t != p.read_text():
            p.write_text(t)


if __name__ == "__main__":
    main()
