"""Issue 12: a shared, read-only install with a read-only HOME still runs (numba's cache falls back)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("data", "pseudolabel", "pipelines", "train2d", "train3d", "configs")


def _can_drop_dac() -> bool:
    if os.geteuid() != 0:
        return True  # chmod already binds an ordinary user
    return shutil.which("setpriv") is not None and subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_drop_dac(), reason="root without setpriv: chmod cannot make a directory read-only")
def test_commands_run_from_a_read_only_install_with_a_read_only_home(tmp_path, tiny_dataset):
    site = tmp_path / "site"
    pkg = site / "mwsis"
    shutil.copytree(ROOT, pkg, ignore=lambda d, names: [n for n in names if n in ("__pycache__", ".venv", "out", ".git",
                    "tests", "docs", "bench", "mwsis.egg-info")] if d == str(ROOT) else
                    [n for n in names if n == "__pycache__"])
    home = tmp_path / "home"
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "HOME": str(home),
           "PYTHONPATH": str(site), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    for p in [site, *site.rglob("*"), home]:
        if p.is_dir():
            p.chmod(0o555)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        code = ("import mwsis, sys; assert mwsis.__file__.startswith(sys.argv[1]), mwsis.__file__\n"
                "from mwsis.pipelines.cli.main import main\n"
                "main(['stage', 'ccl', '--data', sys.argv[2], '--force'])")
        data = tmp_path / "ds"
        shutil.copytree(tiny_dataset, data)
        proc = subprocess.run([*prefix, sys.executable, "-c", code, str(site), str(data)], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        for p in [site, *site.rglob("*"), home]:
            if p.is_dir():
                p.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no locator available" not in proc.stderr
    assert proc.stderr.count("numba caches compiled kernels in") == 1
    assert any((tmp_path / "tmp").glob("mwsis-numba-cache-*/*"))  # the kernels went to the fallback
