"""`mwsis export`: a stage's labels as SemanticKITTI, PLY, LAS, COCO files and a rerun recording, read back;
`mwsis view` without a display."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
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


def test_coco_export_scores_as_eval_2d(tiny_dataset, tmp_path):
    """COCO results of a 2D run's predictions and of the sam stage's masks, scored by pycocotools from the
    written files: the run's numbers equal eval-2d's."""
    import contextlib
    import io
    import json

    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mwsis.pipelines.predict.predict2d import evaluate_2d
    from mwsis.pipelines.training.run import load_config
    from mwsis.pipelines.training.train2d import Train2DConfig, load_teacher_2d, train_2d

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    tiny2d = Path(__file__).resolve().parents[2] / "configs" / "train2d-tiny.yaml"
    run = tmp_path / "run"
    train_2d(root, run, load_config(Train2DConfig, tiny2d, ["epochs=2", "max_steps_per_epoch=3"]), show_progress=False)
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--data", str(root), "--labels", str(run), "--format", "coco",
                             "--out", str(tmp_path / "coco"), "--no-progress"])
    assert r.exit_code == 0, r.output
    gt = json.loads((tmp_path / "coco" / "instances_gt.json").read_text())
    res = json.loads((tmp_path / "coco" / "results.json").read_text())
    assert gt["images"][0]["frame_id"] in open_dataset(root).frame_ids and "camera_id" in gt["images"][0]
    model, cfg = load_teacher_2d(run, torch.device("cpu"))
    want = evaluate_2d(model, root, cfg, torch.device("cpu"), show_progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "coco" / "instances_gt.json"))
        ev = COCOeval(coco, coco.loadRes(res) if res else COCO(), iouType="segm")
        if res:
            ev.evaluate(), ev.accumulate(), ev.summarize()
    if res:
        assert abs(ev.stats[1] - want["ap50"]) < 1e-9 and abs(ev.stats[0] - want["ap"]) < 1e-9
    assert len(res) == want["detections"] and len(gt["annotations"]) == want["gt_instances"]
    run_stages(root, ["sam"], {"sam": {"checkpoint": "tiny"}}, show_progress=False)
    r = runner.invoke(main, ["export", "--data", str(root), "--labels", "sam", "--format", "coco",
                             "--out", str(tmp_path / "sam"), "--no-progress"])
    assert r.exit_code == 0, r.output
    sam = json.loads((tmp_path / "sam" / "results.json").read_text())
    boxes = sum(len(open_dataset(root).frame(f, images=False).boxes2d) for f in open_dataset(root).frame_ids)
    assert len(sam) == boxes and all(np.isfinite(d["score"]) for d in sam)  # one mask per box prompt


def _rrd_columns(path) -> dict:
    """entity path -> {column: concatenated values} of every chunk of a recording (read by the rerun SDK)."""
    import pyarrow as pa
    from rerun.chunk import RrdReader

    out: dict = {}
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        cols = out.setdefault(str(chunk.entity_path), {})
        for field in batch.schema:
            if not pa.types.is_temporal(field.type):  # log_time / time: nanoseconds, not needed here
                cols.setdefault(field.name, []).extend(batch.column(field.name).to_pylist())
    return out


def test_rerun_recording_read_back(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    run_stages(root, ["spg"], show_progress=False)
    r = CliRunner().invoke(main, ["export", "--data", str(root), "--labels", "spg", "--format", "rerun", "--out",
                                  str(tmp_path / "rr"), "--frames", "1:3", "--no-progress"])
    assert r.exit_code == 0, r.output
    cols = _rrd_columns(tmp_path / "rr" / "ds.rrd")
    ds = open_dataset(root)
    cams = [c.name for c in ds.frame(ds.frame_ids[0]).cameras]
    want = {"/world", "/world/lidar", "/world/boxes3d", *(f"/world/cameras/{c}{s}" for c in cams
                                                          for s in ("", "/image", "/boxes"))}
    assert want <= set(cols), sorted(cols)
    lidar = cols["/world/lidar"]
    assert lidar["frame"] == [1, 2]  # the frame timeline: positions 1 and 2 only
    for k, pos in enumerate((1, 2)):
        frame = ds.frame(ds.frame_ids[pos])
        lab = read_frame_labels(ds, "spg", frame.frame_id)
        np.testing.assert_allclose(np.array(lidar["Points3D:positions"][k]), frame.points.xyz, atol=1e-6)
        want_cls = np.where(lab.semantic == IGNORE, 255, lab.semantic.astype(np.int64))
        np.testing.assert_array_equal(np.array(lidar["Points3D:class_ids"][k]), want_cls)
        np.testing.assert_array_equal(np.array(lidar["Points3D:keypoint_ids"][k]), lab.instance)
        image = cols[f"/world/cameras/{cams[0]}/image"]["EncodedImage:blob"][k]
        assert np.asarray(image, np.uint8).ravel().tobytes() == frame.camera(frame.cameras[0].camera_id).image_bytes
    r = CliRunner().invoke(main, ["export", "--data", str(root), "--labels", "gt", "--format", "rerun", "--out",
                                  str(tmp_path / "rr2"), "--frames", "7:9", "--no-progress"])
    assert r.exit_code == 1 and "selects no frame" in r.output


def test_view_without_display_saves_the_recording(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    r = CliRunner().invoke(main, ["view", str(tiny_dataset), "--frames", "0:1", "--save", str(tmp_path / "v"),
                                  "--no-progress"])
    saved = tmp_path / "v" / f"{Path(tiny_dataset).name}.rrd"
    assert r.exit_code == 0 and "no display" in r.output and saved.exists()
    assert "/world/lidar" in _rrd_columns(saved)


def test_view_screenshot_renders_the_viewer_headless(tiny_dataset, tmp_path):
    import os

    if not Path("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json").exists():
        if os.environ.get("MWSIS_REQUIRE_VULKAN") == "1":
            pytest.fail("MWSIS_REQUIRE_VULKAN=1 but Mesa's lavapipe is not installed (mesa-vulkan-drivers)")
        pytest.skip("no software Vulkan (apt-get install mesa-vulkan-drivers; MWSIS_REQUIRE_VULKAN=1 makes this fail)")
    png = tmp_path / "shot.png"
    r = CliRunner().invoke(main, ["view", str(tiny_dataset), "--frames", "0:1", "--screenshot", str(png),
                                  "--window-size", "800x450", "--no-progress"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[0] >= 450 and rgb.shape[1] >= 800 and rgb.std() > 10  # a drawn viewer, not a blank frame
