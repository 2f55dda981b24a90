"""eval-labels scores labels with the config they were made with (issue 13 item 3; found on KITTI scans)."""
from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from mwsis.pipelines.cli.main import main

SETS = ["--set", "spg.fg_thresh=0.3", "--set", "points.point_range=[-30,-30,-3,30,30,3]"]


def _eval(ds, tmp_path, *extra):
    out = tmp_path / f"q{len(extra)}.json"
    r = CliRunner().invoke(main, ["eval-labels", "--data", str(ds), "--stages", "spg", "--json", str(out), *extra])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_variants_and_point_set_follow_the_recorded_config(tiny_dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds)
    r = CliRunner().invoke(main, ["pseudolabels", "--data", str(ds), "--stages", "spg", "--no-eval", *SETS])
    assert r.exit_code == 0, r.output
    q = _eval(ds, tmp_path)
    assert q["spg[paper]"]["miou"] == q["spg"]["miou"] and q["spg[paper]"]["ap"] == q["spg"]["ap"]
    assert _eval(ds, tmp_path, *SETS) == q  # --config/--set given explicitly: the same
    default = _eval(ds, tmp_path, "--set", "spg.fg_thresh=0.1")  # another config: another point set and base
    assert default["spg[paper]"]["miou"] != default["spg"]["miou"] or default["spg"] != q["spg"]
