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
    import laspy

    for fmt in ("las", "laz"):
        r = runner.invoke(main, ["export", "--data", str(root), "--labels", "spg", "--format", fmt,
                                 "--out", str(tmp_path / fmt), "--no-progress"])
        assert r.exit_code == 0, r.output
        fid = ds.frame_ids[0]
        las = laspy.read(tmp_path / fmt / f"{fid}.{fmt}")
        frame, lab = ds.frame(fid, images=False), read_frame_labels(ds, "spg", fid)
        assert str(las.header.version) == "1.4" and las.header.point_format.id == 6
        assert np.allclose(np.column_stack([las.x, las.y, las.z]), frame.points.xyz, atol=1e-3)
        assert np.array_equal(np.asarray(las.instance), lab.instance)
        assert np.array_equal(np.asarray(las.mwsis_class), lab.semantic)
        to_las = {0: 64, 1: 65, 2: 66, BACKGROUND: 1, IGNORE: 0}
        assert np.array_equal(np.asarray(las.classification), np.vectorize(to_las.get)(lab.semantic))
        assert np.all(np.asarray(las.score) == 1.0)  # spg ranks no instance
    label_map = yaml.safe_load((tmp_path / "semantickitti" / "label_map.yaml").read_text())
    assert label_map["labels"][10].startswith("vehicle")
    r = runner.invoke(main, ["export", "--data", str(root), "--labels", "nothing", "--format", "ply",
                             "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "nothing" in r.output


def test_las_carries_instance_scores(tmp_path):
    import laspy

    from mwsis.data.exports import las_file

    xyz = np.array([[0.0, 0, 0], [1, 2, 3], [4, 5, 6]])
    las = las_file(xyz, np.array([0.0, 0.5, 1.0]), np.array([0, 1, BACKGROUND]), np.array([2, 1, 0]),
                   np.array([0.25, 0.75], np.float32))
    las.write(str(tmp_path / "a.las"))
    back = laspy.read(tmp_path / "a.las")
    assert np.allclose(np.asarray(back.score), [0.75, 0.25, 1.0])
    assert np.asarray(back.intensity).tolist() == [0, 32767, 65535]
