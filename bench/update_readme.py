"""Write the experiment tables into README.md from their JSON records (``docs/experiments/*.json``), so the
README quotes the records and no number is typed by hand. Each table sits between
``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers; NAME is the record's file stem.

    python bench/update_readme.py        # rewrites README.md in place; run after make experiment-3d / -2d
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDERERS = {"experiment-3d": "experiment_3d.py", "experiment-2d": "experiment_2d.py"}
PROBES = {"regime-2d": "probe_2d.py"}  # one-seed probes that chose (or failed to choose) a regime


def renderer(script: str):
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "bench" / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.markdown


def main() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, script in {**RENDERERS, **PROBES}.items():
        path = ROOT / "docs" / "experiments" / f"{name}.json"
        if not path.exists():
            continue
        table = renderer(script)(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- table:{name} --> ... <!-- /table:{name} --> markers")
        readme = pattern.sub(lambda m: m.group(1) + table + m.group(2), readme)
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
