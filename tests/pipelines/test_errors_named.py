"""Issue 12: the errors that used to be vague now name the file, the frame and the field (no traceback)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.integrity import stamp_path
from mwsis.data.label_store import label_shard_path
from mwsis.data.store import open_dataset, write_frame_shard, write_manifest
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import parse_shard_list, run_stages


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def ds(tiny_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


def _foreign(ds, edit, frame=0):
    d = open_dataset(ds)
    frames = list(d.shard(0).iter_frames())
    edit(frames[frame])
    info = write_frame_shard(ds, d.manifest.shards[0].name, frames, validate=False)
    m = d.manifest
    m.shards[0] = info
    write_manifest(ds, m)
    return frames[frame].frame_id, ds / info.path


def test_eval_labels_on_a_label_shard_of_another_dataset(ds, tmp_path):
    other = tmp_path / "other"
    assert _run("synth", "--preset", "tiny", "--frames", 4, "--frames-per-sequence", 2, "--seed", 5, "--out",
                other, "--no-progress").exit_code == 0
    assert run_stages(other, ["ccl"], show_progress=False) and run_stages(ds, ["ccl"], show_progress=False)
    name, foreign = open_dataset(ds).manifest.shards[0].name, open_dataset(other).manifest.shards[0].name
    dest = label_shard_path(ds, "ccl", name)
    shutil.copy(label_shard_path(other, "ccl", foreign), dest)
    shutil.copy(stamp_path(label_shard_path(other, "ccl", foreign)), stamp_path(dest))
    r = _run("eval-labels", "--data", ds, "--stages", "ccl", "--no-variants")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{dest}: made from other frames" in r.output and "rerun `mwsis stage ccl" in r.output
    assert _run("stage", "ccl", "--data", ds).exit_code == 0  # not up to date: rewritten
    assert _run("eval-labels", "--data", ds, "--stages", "ccl", "--no-variants").exit_code == 0


def test_ground_truth_of_the_wrong_length_names_frame_and_field(ds):
    def cut(f):
        f.gt.point_semantic = f.gt.point_semantic[:-3]
    fid, path = _foreign(ds, cut)
    r = _run("eval-labels", "--data", ds)
    assert r.exit_code == 1 and f"{path}: frame {fid}: gt.point_semantic:" in r.output and "Traceback" not in r.output


def test_range_image_row_out_of_bounds_names_points_row(ds):
    def bad_row(f):
        f.points.row = f.points.row.copy()
        f.points.row[5] = 10_000
    fid, path = _foreign(ds, bad_row, frame=1)
    r = _run("pseudolabels", "--data", ds, "--stages", "dcs", "--no-eval")
    assert r.exit_code == 1 and f"{path}: frame {fid}: points.row: rows outside" in r.output


def test_reversed_shard_range_says_so():
    with pytest.raises(ValueError, match="'1-0' is a reversed range; write 0-1"):
        parse_shard_list("1-0", 2)
    with pytest.raises(ValueError, match="outside 0-1"):
        parse_shard_list("0-2", 2)


def test_kitti_image_that_is_not_an_image(tmp_path):
    from mwsis.pipelines.convert.kitti import synth_export_kitti

    src = tmp_path / "k"
    synth_export_kitti(src, "kitti", frames=1, seed=1, overrides=dict(image_scale=0.25, columns=512))
    png = next((src / "image_2").glob("*.png"))
    png.write_bytes(b"this is not a picture")
    r = _run("convert", "kitti", src, tmp_path / "ds", "--columns", 512, "--no-progress")
    assert r.exit_code == 1 and f"{png}: not a readable image: 21 bytes starting b'this is ', expected PNG" in r.output
    assert "BytesIO" not in r.output


def test_info_says_when_ground_truth_covers_only_some_frames(ds):
    def drop(f):
        f.gt.point_semantic = None
        f.gt.point_instance = None
    _foreign(ds, drop)
    r = _run("info", ds)
    assert r.exit_code == 0 and "point_semantic (only 3 of 4 frames)" in r.output
    assert np.all([s in r.output for s in ("masks2d", "boxes3d")])
