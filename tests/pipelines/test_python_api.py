"""The README's "Python API" example runs as written (a newcomer's first script)."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_api_example_runs(tmp_path, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md (Python API)", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)
    miou = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= miou <= 1.0
    assert sorted(p.name for p in (tmp_path / "demo" / "labels" / "spg").glob("*.parquet"))
    assert (tmp_path / "runs" / "demo" / "checkpoints" / "epoch-0002.pt").exists()
