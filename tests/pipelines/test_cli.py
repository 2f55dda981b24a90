"""The CLI through click's test runner: synth, info, viz, help texts, resume and byte-identical output."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main


def _shard_bytes(root):
    return {p.name: p.read_bytes() for p in sorted((root / "frames").glob("*.parquet"))}


def test_every_command_has_help():
    """Walks the whole command tree, so a new command or group is covered without listing it here."""
    import click

    def paths(cmd, prefix):
        yield prefix
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from paths(sub, [*prefix, name])

    runner = CliRunner()
    seen = list(paths(main, []))
    assert {"stage", "report", "slurm"} <= {p[0] for p in seen if p}
    assert ["slurm", "train-3d"] in seen and ["convert", "kitti"] in seen
    for args in seen:
        r = runner.invoke(main, [*args, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and len(r.output) > 200, args


def test_synth_is_byte_identical_and_resumes(tmp_path):
    runner = CliRunner()
    args = ["synth", "--preset", "tiny", "--frames", "3", "--frames-per-sequence", "2", "--seed", "7", "--no-progress"]
    assert runner.invoke(main, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(main, [*args, "--out", str(tmp_path / "b"), "--workers", "2"]).exit_code == 0
    a, b = _shard_bytes(tmp_path / "a"), _shard_bytes(tmp_path / "b")
    assert a == b and len(a) == 2
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    # resume: drop one shard, rerun, only it is rendered again and the other file is untouched
    first, second = sorted((tmp_path / "a" / "frames").glob("*.parquet"))
    mtime = first.stat().st_mtime_ns
    second.unlink()
    r = runner.invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert first.stat().st_mtime_ns == mtime and _shard_bytes(tmp_path / "a") == b
    # other settings into the same directory are refused with a clear message
    r = runner.invoke(main, [*args[:-1], "--seed", "8", "--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "made with other settings" in r.output
    other = runner.invoke(main, ["synth", "--preset", "tiny", "--frames", "3", "--frames-per-sequence", "2",
                                 "--seed", "8", "--no-progress", "--out", str(tmp_path / "c")])
    assert other.exit_code == 0 and _shard_bytes(tmp_path / "c").keys() != a.keys()


def test_info_json_and_text(tiny_dataset):
    runner = CliRunner()
    r = runner.invoke(main, ["info", str(tiny_dataset), "--json", "--verify"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["frames"] == 4 and isinstance(info["frames"], int)
    assert info["range_image_shape"] == [16, 512]
    assert info["points_per_frame"] > 1000
    assert set(info["boxes_per_class"]) == {"vehicle", "pedestrian", "cyclist"}
    assert sum(info["boxes_per_class"].values()) > 10
    assert set(info["ground_truth"]) == {"point_semantic", "point_instance", "masks2d", "boxes3d"}
    r = runner.invoke(main, ["info", str(tiny_dataset)])
    assert r.exit_code == 0 and "range image (TOP)  [16, 512]" in r.output


def test_viz_writes_pictures(tiny_dataset, tmp_path):
    fid = open_dataset(tiny_dataset).frame_ids[0]
    r = CliRunner().invoke(main, ["viz", "frame", str(tiny_dataset), fid, "--out", str(tmp_path / "v"), "--points"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "v").glob("*.png"))
    assert f"{fid}_bev.png" in names and f"{fid}_range.png" in names
    assert sum("camera_" in n for n in names) == 2
    from PIL import Image

    with Image.open(tmp_path / "v" / f"{fid}_camera_FRONT.png") as im:
        assert im.size == (240, 160)


@pytest.mark.parametrize("args, message", [
    (["info", "{missing}"], "does not exist"),
    (["viz", "frame", "{ds}", "no-such-frame", "--out", "{tmp}"], "no frame 'no-such-frame'"),
])
def test_clear_errors(tiny_dataset, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "nope", ds=tiny_dataset, tmp=tmp_path) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and message in r.output


@pytest.mark.parametrize("fmt, preset", [("waymo-v2", "tiny"), ("waymo-v1", "tiny"), ("kitti", "kitti")])
def test_synth_foreign_format_then_convert(tmp_path, fmt, preset):
    runner = CliRunner()
    raw, out = tmp_path / "raw", tmp_path / "ds"
    r = runner.invoke(main, ["synth", "--preset", preset, "--format", fmt, "--frames", "2", "--frames-per-sequence",
                             "2", "--image-scale", "0.25", "--out", str(raw)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["convert", fmt, str(raw), str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    ds = open_dataset(out)
    assert len(ds) == 2 and ds.frame(ds.frame_ids[0]).points.xyz.shape[0] > 1000
    r = runner.invoke(main, ["convert", fmt, str(raw), str(out), "--no-progress"])  # rerun = resume
    assert r.exit_code == 0 and "(0 written" in r.output, r.output
