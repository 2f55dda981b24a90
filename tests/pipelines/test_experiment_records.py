"""The experiment records under docs/experiments/ are complete, and the README and docs pages quote them
verbatim (``bench/update_readme.py`` writes the tables; a hand edit of a number fails here)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("update_readme", ROOT / "bench" / "update_readme.py")
update_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(update_readme)
RECORDS = update_readme.RENDERERS


def assert_quoted(name: str, table: str) -> None:
    """Every page with the table's markers holds exactly the rendered table, and at least one page has them."""
    quoted = [p for p in update_readme.pages() if f"<!-- table:{name} -->" in p.read_text()]
    assert quoted, f"no page quotes {name}"
    for p in quoted:
        assert f"<!-- table:{name} -->\n{table}<!-- /table:{name} -->" in p.read_text(), p.name


@pytest.mark.parametrize("name", list(update_readme.PROBES))
def test_probe_records_are_quoted_by_the_readme(name):
    rec = json.loads((ROOT / "docs" / "experiments" / f"{name}.json").read_text())
    assert {"command", "machine", "rows"} <= set(rec) and rec["rows"]
    table = update_readme.renderer(update_readme.PROBES[name])(rec)
    assert_quoted(name, table)


@pytest.mark.parametrize("name", list(RECORDS))
def test_record_is_complete_and_quoted_by_the_readme(name):
    path = ROOT / "docs" / "experiments" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not recorded yet")
    rec = json.loads(path.read_text())
    assert {"command", "config", "seconds", "machine", "rows"} <= set(rec)
    assert len(rec["config"]["experiment"]["seeds"]) >= 2
    names = [r["name"] for r in rec["rows"]]
    assert any("full supervision" in n for n in names)
    for row in rec["rows"]:
        for model, summary in row["summary"].items():
            for key, stat in summary.items():
                assert 0.0 <= stat["mean"] <= 1.0 and stat["spread"] >= 0, (row["name"], model, key)
    table = update_readme.renderer(RECORDS[name])(rec)
    assert_quoted(name, table)
