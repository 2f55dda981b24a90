"""``mwsis report`` (pipelines/report/page.py): tables with the right numbers, curves, gallery, a real browser render."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import escape
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from mwsis.data.frame import CLASS_NAMES
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.config import config_to_dict, load_section
from mwsis.pipelines.labels.evaluate import evaluate_labels
from mwsis.pipelines.report.page import build_report, evaluate_run, pct, run_kind
from mwsis.pipelines.labels.runner import run_stages
from mwsis.pipelines.training.train2d import Train2DConfig
from mwsis.pipelines.training.train3d import train_3d

EVAL_2D = {"images": 8, "gt_instances": 20, "detections": 31, "ap": 0.1234, "ap50": 0.25, "ap75": None,
           "per_class": {"vehicle": {"ap": 0.2, "ap50": 0.4, "ap75": 0.1}}}


@pytest.fixture(scope="module")
def setup(tiny_dataset, tmp_path_factory):
    """A labelled copy of the tiny dataset, a 3D run of 3 steps, and a 2D run dir that holds an eval.json
    (its name has HTML characters: the page must escape them)."""
    tmp = tmp_path_factory.mktemp("report")
    ds = tmp / "ds"
    shutil.copytree(tiny_dataset, ds)
    run_stages(ds, ["frustum", "spg"], show_progress=False)
    run3d = tmp / "run3d"
    cfg = load_section("train3d", "synthetic-tiny", ["epochs=1", "max_steps_per_epoch=3", "pvc.enabled=false"])
    train_3d(ds, run3d, cfg, show_progress=False)
    run2d = tmp / "run<2d>&x"
    run2d.mkdir()
    (run2d / "run.json").write_text(json.dumps({"kind": "train-2d"}))
    (run2d / "config.yaml").write_text(yaml.safe_dump(config_to_dict(Train2DConfig())))
    (run2d / "metrics.csv").write_text("step,epoch,name,value\n1,0,loss,2.0\n2,0,loss,1.5\n1,0,lr,0.01\n2,0,lr,0.01\n")
    (run2d / "eval.json").write_text(json.dumps(EVAL_2D))
    return ds, run3d, run2d


def _cells(html: str, row_label: str) -> list[str]:
    """The cell texts of the table row whose first cell is ``row_label`` (already escaped)."""
    m = re.search(r"<tr><td class=t>" + re.escape(row_label) + r"</td>(.*?)</tr>", html)
    assert m, f"no row {row_label!r}"
    return re.findall(r"<td>(.*?)</td>", m.group(1))


def test_report_tables_curves_and_gallery(setup, tmp_path):
    ds, run3d, run2d = setup
    out = tmp_path / "report"
    rep = build_report(ds, [run3d, run2d], out, frames=2)
    html = (out / "index.html").read_text()
    # the label table is evaluate_labels' output, printed as eval-labels prints it
    want = evaluate_labels(ds, show_progress=False)
    assert rep["labels"] == want and json.loads((out / "report.json").read_text())["labels"] == want
    for stage in ("frustum", "spg"):
        r = want[stage]
        assert _cells(html, stage) == [pct(r["ap"]), pct(r["ap50"]), pct(r["ap75"]), pct(r["miou"]),
                                       *[pct(r["per_class"][n]["iou"]) for n in CLASS_NAMES],
                                       pct(r["ignored_foreground_fraction"]), pct(r.get("sam_mask_iou"))]
    # 3D: evaluated now, the numbers of eval-3d; 2D: read from the run's eval.json
    assert [r["kind"] for r in rep["runs"]] == ["3d", "2d"] and run_kind(run2d) == "2d"
    e3 = evaluate_run(run3d, "3d", ds)
    assert rep["runs"][0]["eval"] == e3 and rep["runs"][0]["eval_source"].startswith("computed now")
    assert _cells(html, "run3d")[:5] == [str(e3["frames"]), pct(e3["ap"]), pct(e3["ap50"]), pct(e3["ap75"]),
                                         pct(e3["miou"])]
    assert rep["runs"][1]["eval"] == EVAL_2D and "eval.json" in rep["runs"][1]["eval_source"]
    assert _cells(html, escape("run<2d>&x"))[:4] == ["8", "12.34", "25.00", "–"]
    assert "run<2d>" not in html  # every text is escaped
    # curves: one PNG per run, valid images, linked from the page
    for r in rep["runs"]:
        png = out / r["curves"]
        assert Image.open(png).size[0] > 300 and f'src="{escape(r["curves"])}"' in html
    # gallery: 2 frames, each with GT BEV, both stages' BEV, range image and every camera
    assert len(rep["gallery"]) == 2
    for g in rep["gallery"]:
        names = [Path(p["file"]).name for p in g["pictures"]]
        assert len(names) == 1 + 2 + 1 + 2 and any(n.endswith("_spg_bev.png") for n in names)
        for p in g["pictures"]:
            assert (out / p["file"]).stat().st_size > 1000 and f'src="{escape(p["file"])}"' in html
    for text in (str(Path(ds).resolve()), rep["date"], rep["mwsis_version"], str(run3d.resolve())):
        assert escape(text) in html


def test_report_cli_and_evaluate_flags(setup, tmp_path):
    ds, run3d, run2d = setup
    out = tmp_path / "r"
    r = CliRunner().invoke(main, ["report", "--data", str(ds), "--runs", str(run3d), "--runs", str(run2d),
                                  "--out", str(out), "--frames", "0", "--no-evaluate"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["runs"][0]["eval"] is None and "not evaluated" in rep["runs"][0]["eval_source"]
    assert rep["runs"][1]["eval"] == EVAL_2D and rep["gallery"] == []
    assert "not evaluated" in (out / "index.html").read_text()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def test_page_renders_in_headless_chromium(request, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("MWSIS_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MWSIS_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (set MWSIS_REQUIRE_CHROMIUM=1 to make this a failure)")
    ds, run3d, run2d = request.getfixturevalue("setup")  # after the check: a skip costs no training
    out = tmp_path / "report"
    build_report(ds, [run3d, run2d], out, frames=1)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,2000", (out / "index.html").resolve().as_uri()],
                   capture_output=True, timeout=120, cwd=tmp_path, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert img.shape == (2000, 1280)
    assert img.std() > 20  # not a blank page: text, tables, plots and pictures
    assert (img < 245).mean() > 0.05  # a real share of the page is drawn on (a white page with an error: ~1 %)
    shutil.copy(shot, out / "screenshot.png")  # kept next to the page for a look when the test is debugged


def test_report_shows_click_sets(setup, tmp_path):
    from mwsis.pipelines.labels.clicks import derive_clicks

    ds = tmp_path / "ds"
    shutil.copytree(setup[0], ds)
    derive_clicks(ds, "box-centre", show_progress=False)
    rep = build_report(ds, [], tmp_path / "report", frames=1)
    pics = [p for p in rep["gallery"][0]["pictures"] if "clicks-box-centre" in p["file"]]
    assert len(pics) == 1 and "click set box-centre" in pics[0]["caption"]
    assert (tmp_path / "report" / pics[0]["file"]).stat().st_size > 1000
