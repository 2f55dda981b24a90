"""Issue 12: config values are type- and range-checked at load; errors name key, value and what is allowed."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from mwsis.pipelines.cli.main import main
from mwsis.pipelines.config import ConfigError, load_section


@pytest.mark.parametrize("setting,message", [
    ("spg.exclusive=maybe", "spg.exclusive: 'maybe' is not true or false"),
    ("spg.dcs_variant=bogus", "spg.dcs_variant: 'bogus' is not one of 'authors', 'union_find'"),
    ("spg.fg_thresh=-5", "spg.fg_thresh: -5.0 is out of range; allowed: between 0.0 and 1.0"),
    ("spg.fg_thresh=abc", "spg.fg_thresh: 'abc' is not a number"),
    ("spg.radii=[1,2]", "spg.radii: [1.0, 2.0] has 2 values; 3 are needed"),
    ("spg.radii=[1,2,-1]", "spg.radii: [1.0, 2.0, -1.0] is out of range; allowed: >= 0.0"),
    ("pvc.history=0", "pvc.history: 0 is out of range; allowed: >= 1"),
])
def test_stage_settings_are_checked_before_anything_is_written(tiny_dataset, tmp_path, setting, message):
    ds = tmp_path / "ds"
    shutil.copytree(tiny_dataset, ds)
    r = CliRunner().invoke(main, ["stage", "frustum", "--data", str(ds), "--set", setting])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (ds / "labels").exists()


@pytest.mark.parametrize("section,setting,message", [
    ("train3d", "epochs=-1", "epochs: -1 is out of range; allowed: >= 1"),
    ("train3d", "epochs=abc", "epochs: 'abc' is not an integer"),
    ("train3d", "epochs=2.5", "epochs: 2.5 is not an integer"),
    ("train3d", "loss.alpha=2", "loss.alpha: 2.0 is out of range; allowed: between 0.0 and 1.0"),
    ("train2d", "masks=boxs", "masks: 'boxs' is not one of 'boxes', 'gt'"),
    ("train2d", "model.backbone.arch=vgg", "model.backbone.arch: 'vgg' is not one of 'resnet'"),
    ("train2d", "max_long_side=big", "max_long_side: 'big' is not an integer or null"),
    ("train2d", "test_scale=[480]", "test_scale: [480] is not a list of 2 values"),
])
def test_trainer_settings_are_checked(section, setting, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace("'", "'")):
        load_section(section, None, [setting])


def test_values_of_the_right_type_are_accepted_and_lists_become_tuples():
    cfg = load_section("stages", None, ["spg.radii=[0.5, 0.3, 0.4]", "spg.fg_thresh=0", "spg.exclusive=false"])
    assert cfg.spg.radii == (0.5, 0.3, 0.4) and cfg.spg.fg_thresh == 0.0 and cfg.spg.exclusive is False
    cfg = load_section("train2d", None, ["test_scale=[480, 320]", "max_long_side=null", "lr=1"])
    assert cfg.test_scale == (480, 320) and cfg.max_long_side is None and cfg.lr == 1.0


def test_config_file_values_are_checked_and_the_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train3d:\n  max_lr: -0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*max_lr: -0.1 is out of range"):
        load_section("train3d", str(f))
