"""`mwsis export`: a stage's labels as SemanticKITTI and PLY files, read back."""
from __future__ import annotations

import shutil

import numpy as np
import yaml
from click.testing import CliRunner

from mwsis.data.exports import decode_semantickitti_label, read_ply, semantickitti_arrays
from mwsis.data.frame import BACKGROUND, IGNORE
from mwsis.data.label_store import read_frame_labels
from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import run_stages


def test_semantickitti_encoding():
    sem = np.array([0, 1, 2, BACKGROUND, IGNORE])
    inst = np.array([3, 65535, 1, 0, 0])
    scan, label = semantickitti_arrays(np.zeros((5, 3)), np.arange(5), sem, inst)
    s, i = decode_semantickitti_label(label)
    assert s.tolist() == [10, 30, 31, 99, 0] and i.tolist() == inst.tolist() and scan.dtype == np.float32
    try:
        semantickitti_arrays(np.zeros((1, 3)), np.zeros(1), np.zeros(1, int), np.array([70000]))
    except ValueError as e:
        assert "65535" in str(e)
    else:
        raise AssertionError("an instance id beyond 16 bits must fail")


def test_export_round_trips(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    run_stages(root, ["spg"], show_progress=False)
    runner = CliRunner()
    for fmt in ("semantickitti", "ply"):
        r = runner.invoke(main, ["export", "--data", str(root), "--labels", "spg", "--format", fmt,
                                 "--out", str(tmp_path / fmt), "--no-progress"])
        assert r.exit_code == 0, r.output
    ds = open_dataset(root)
    to_kitti = {0: 10, 1: 30, 2: 31, BACKGROUND: 99, IGNORE: 0}
    for fid in ds.frame_ids:
        frame = ds.frame(fid, images=False)
        lab = read_frame_labels(ds, "spg", fid)
        seq = tmp_path / "semantickitti" / "sequences" / frame.sequence
        scan = np.fromfile(seq / "velodyne" / f"{frame.index:06d}.bin", np.float32).reshape(-1, 4)
        sem, inst = decode_semantickitti_label(np.fromfile(seq / "labels" / f"{frame.index:06d}.label", np.uint32))
        assert np.array_equal(scan[:, :3], frame.points.xyz) and np.array_equal(inst, lab.instance)
        assert np.array_equal(sem, np.vectorize(to_kitti.get)(lab.semantic))
        v = read_ply((tmp_path / "ply" / f"{fid}.ply").read_bytes())
        assert np.array_equal(v["class"], lab.semantic) and np.array_equal(v["instance"], lab.instance)
        assert np.allclose(np.column_stack([v["x"], v["y"], v["z"]]), frame.points.xyz)
    label_map = yaml.safe_load((tmp_path / "semantickitti" / "label_map.yaml").read_text())
    assert label_map["labels"][10].startswith("vehicle")
    r = runner.invoke(main, ["export", "--data", str(root), "--labels", "nothing", "--format", "ply",
                             "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "nothing" in r.output
