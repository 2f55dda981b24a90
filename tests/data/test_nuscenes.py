"""nuScenes conversion (data/nuscenes, pipelines/convert/nuscenes.py) against synthetic frames written in the
nuScenes v1.0 layout (data/synthetic/export_nuscenes.py): points, rings, the ego-pose chain, 2D boxes from 3D
annotations, the category map, lidarseg ground truth, bad files, the CLI and resume."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.frame import BACKGROUND, IGNORE
from mwsis.data.nuscenes import NuScenesFormatError, Tables, annotation_class, load_tables
from mwsis.data.nuscenes.build import _point_labels
from mwsis.data.nuscenes.geometry import box_2d, box_corners, matrix_to_quat, quat_to_matrix
from mwsis.data.store import open_dataset, read_manifest
from mwsis.data.synthetic import make_frame, preset
from mwsis.data.synthetic.export_nuscenes import export_nuscenes, ring_permutation, token
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.convert.nuscenes import convert_nuscenes

VERSION = "v1.0-mini"


@pytest.fixture(scope="module")
def native():
    cfg = preset("nuscenes", image_scale=0.2)
    return [make_frame(cfg, seed=6, sequence=s, index=i) for s in range(2) for i in range(2)]


@pytest.fixture(scope="module")
def export(native, tmp_path_factory):
    src = tmp_path_factory.mktemp("nuscenes") / "raw"
    return src, export_nuscenes(native, src)


@pytest.fixture(scope="module")
def converted(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("nuscenes_ds") / "ds"
    res = convert_nuscenes(export[0], out, VERSION, min_visibility=2, show_progress=False)
    assert not res.failed and sorted(res.written) == ["synth-s6-0000", "synth-s6-0001"]
    return out


def _object_ids(src):
    """(sequence, native object id) -> converted object id (the instance's position in instance.json + 1)."""
    order = [r["token"] for r in json.loads((src / VERSION / "instance.json").read_text())]
    return lambda seq, oid: order.index(token("instance", seq, int(oid))) + 1


# ------------------------------------------------------------------------------------------ geometry
def test_quaternions_and_box_projection():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        r = quat_to_matrix(q)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(r)), r, atol=1e-12)
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    inside = box_corners([0, 0, 10], [1, 2, 1], np.eye(3))  # width 1, length 2 (x), height 1 at 10 m depth
    near = 9.5  # the nearest face sets the extent
    np.testing.assert_allclose(box_2d(inside, K, 100, 80), [50 - 100 / near, 40 - 50 / near, 50 + 100 / near,
                                                           40 + 50 / near])
    assert box_2d(box_corners([0, 0, -10], [1, 1, 1], np.eye(3)), K, 100, 80) is None  # behind the camera
    assert box_2d(box_corners([100, 0, 10], [1, 1, 1], np.eye(3)), K, 100, 80) is None  # beside the image
    edge = box_2d(box_corners([6, 0, 10], [1, 2, 1], np.eye(3)), K, 100, 80)  # crosses the right border
    assert edge[0] == pytest.approx(50 + 500 / 10.5) and edge[2] == 100  # the far left edge; clipped at the border
    # the hull is cut at u = 100, below the near face's corners: its height there lies between the two faces'
    assert 40 - 50 / near < edge[1] < 40 - 50 / 10.5 and 40 + 50 / 10.5 < edge[3] < 40 + 50 / near
    straddle = box_2d(box_corners([0, 0, 0.0], [1, 4, 1], np.eye(3)), K, 100, 80)  # half behind: clipped
    assert straddle is not None and straddle[0] >= 0 and straddle[2] <= 100


def test_category_map():
    assert annotation_class("vehicle.car", set()) == 0 and annotation_class("vehicle.motorcycle", set()) == 0
    assert annotation_class("vehicle.bus.bendy", set()) == 0 and annotation_class("vehicle.trailer", set()) == 0
    assert annotation_class("human.pedestrian.child", set()) == 1
    assert annotation_class("human.pedestrian.personal_mobility", set()) == 1
    assert annotation_class("vehicle.bicycle", {"cycle.with_rider"}) == 2
    for name, attrs in [("vehicle.bicycle", {"cycle.without_rider"}), ("vehicle.bicycle", set()),
                        ("human.pedestrian.stroller", set()), ("human.pedestrian.wheelchair", set()),
                        ("animal", set()), ("movable_object.barrier", set()), ("static_object.bicycle_rack", set())]:
        assert annotation_class(name, attrs) is None, name


def test_lidarseg_bicycles_need_a_rider_box():
    from mwsis.data.frame import Boxes3D

    cats = {"a": {"token": "a", "name": "vehicle.bicycle", "index": 14},
            "b": {"token": "b", "name": "human.pedestrian.adult", "index": 2},
            "c": {"token": "c", "name": "flat.driveable_surface", "index": 24},
            "d": {"token": "d", "name": "vehicle.car", "index": 17}}
    tables = Tables(None, VERSION, {"category": cats})
    xyz = np.array([[0, 0, 0.5], [0.2, 0, 1.5], [10, 0, 0.5], [20, 0, 0.2], [30, 0, 0.5], [30, 5, 0.5]], np.float64)
    seg = np.array([14, 2, 14, 24, 17, 17])
    boxes = Boxes3D(np.array([7, 8]), np.array([2, 0], np.int8), np.array([[0, 0, 1], [30, 0, 0.5]], np.float32),
                    np.array([[2, 1, 2], [4, 2, 1.5]], np.float32), np.zeros(2, np.float32))
    sem, inst = _point_labels(tables, seg, xyz, boxes, "x")
    # bicycle and rider in the with-rider box: the cyclist; a bicycle in no such box: ignored; a car point in
    # no car box: ignored (no instance claims it)
    assert sem.tolist() == [2, 2, IGNORE, BACKGROUND, 0, IGNORE]
    assert inst.tolist() == [7, 7, 0, 0, 8, 0]


# ------------------------------------------------------------------------------------------ round trip
def test_points_rings_and_cameras_round_trip(native, export, converted):
    src, records = export
    assert not np.array_equal(ring_permutation(32), np.arange(32))  # the ring column is not the row
    ds = open_dataset(converted)
    for nat, idx in zip(native, records):
        f = ds.frame(nat.frame_id)
        p, q = nat.points, f.points
        assert len(q) == len(idx) == int((p.return_index == 0).sum())
        np.testing.assert_allclose(q.xyz, p.xyz[idx], atol=1e-5)
        np.testing.assert_allclose(q.intensity, p.intensity[idx], atol=1e-6)
        np.testing.assert_allclose(q.range, p.range[idx], atol=1e-3)
        np.testing.assert_array_equal(q.row, p.row[idx])
        np.testing.assert_array_equal(q.col, p.col[idx])
        # the ego-pose chain: camera ego poses lie 0.4 m from the LiDAR's; only the full chain gets them right
        np.testing.assert_array_equal(q.cam_id, p.cam_id[idx])
        np.testing.assert_allclose(q.cam_uv, p.cam_uv[idx], atol=1e-3)
        assert len(f.cameras) == 6
        for cam in nat.cameras:
            got = f.camera(cam.camera_id)
            np.testing.assert_allclose(got.extrinsic, cam.extrinsic, atol=1e-9)
            np.testing.assert_allclose(got.intrinsic, cam.intrinsic, atol=1e-9)
            assert got.image_bytes == cam.image_bytes
        assert f.timestamp_us == nat.timestamp_us and f.lidar(1).height == 32


def test_boxes_and_ground_truth_round_trip(native, export, converted):
    src, records = export
    oid = _object_ids(src)
    ds = open_dataset(converted)
    agree = total = inst_agree = fg = 0
    for nat, idx in zip(native, records):
        f = ds.frame(nat.frame_id)
        b3, g3 = nat.gt.boxes3d, f.gt.boxes3d
        for k in range(len(b3)):
            m = int(np.flatnonzero(g3.object_id == oid(nat.sequence, b3.object_id[k]))[0])
            np.testing.assert_allclose(g3.center[m], b3.center[k], atol=1e-4)
            np.testing.assert_allclose(g3.size[m], b3.size[k], atol=1e-5)
            dh = (float(g3.heading[m]) - float(b3.heading[k]) + math.pi) % (2 * math.pi) - math.pi
            assert abs(dh) < 1e-5 and g3.class_id[m] == b3.class_id[k]
        # every native 2D box (the visible silhouette) lies inside the converted one (the projected 3D box)
        nb = nat.boxes2d
        assert len(nb) > 10
        for k in range(len(nb)):
            sel = (f.boxes2d.camera_id == nb.camera_id[k]) & (f.boxes2d.object_id == oid(nat.sequence,
                                                                                           nb.object_id[k]))
            assert sel.sum() == 1 and f.boxes2d.class_id[sel][0] == nb.class_id[k]
            got = f.boxes2d.xyxy[sel][0]
            assert got[0] <= nb.xyxy[k, 0] + 2 and got[1] <= nb.xyxy[k, 1] + 2
            assert got[2] >= nb.xyxy[k, 2] - 2 and got[3] >= nb.xyxy[k, 3] - 2
        # --min-visibility 2 drops the hidden objects' boxes (level 1 in the export)
        assert set(f.boxes2d.object_id.tolist()) == {oid(nat.sequence, o) for o in set(nb.object_id.tolist())}
        sem, nsem = f.gt.point_semantic, nat.gt.point_semantic[idx]
        agree += int((sem == nsem).sum())
        total += len(sem)
        is_fg = (nsem >= 0) & (nsem < BACKGROUND) & (sem == nsem)
        mapped = np.array([oid(nat.sequence, o) if o else 0 for o in nat.gt.point_instance[idx][is_fg]])
        inst_agree += int((f.gt.point_instance[is_fg] == mapped).sum())
        fg += int(is_fg.sum())
    assert agree / total > 0.98 and fg > 500 and inst_agree / fg > 0.98


def test_all_annotations_without_visibility_filter(export, converted, tmp_path):
    """nuScenes' own 2D export keeps every annotation: hidden objects' boxes too (the default)."""
    res = convert_nuscenes(export[0], tmp_path / "ds", VERSION, show_progress=False)
    assert not res.failed and read_manifest(tmp_path / "ds").source["lidarseg"] is True
    every, visible = open_dataset(tmp_path / "ds"), open_dataset(converted)
    n_every = sum(len(every.frame(i).boxes2d) for i in every.frame_ids)
    n_visible = sum(len(visible.frame(i).boxes2d) for i in visible.frame_ids)
    assert n_every > n_visible > 0


def test_pseudolabel_stages_run_on_converted(converted, tmp_path):
    from mwsis.pipelines.labels.runner import run_stages

    shutil.copytree(converted, tmp_path / "ds")
    res = run_stages(tmp_path / "ds", ["spg", "ccl"], show_progress=False)
    assert res and {r.status for r in res} == {"done"}


# ------------------------------------------------------------------------------------------ failures, CLI
def test_bad_tables_are_named(export, tmp_path):
    src = tmp_path / "raw"
    shutil.copytree(export[0], src)
    path = src / VERSION / "calibrated_sensor.json"
    good = path.read_text()
    recs = json.loads(good)
    del recs[0]["rotation"]
    path.write_text(json.dumps(recs))
    with pytest.raises(NuScenesFormatError, match=rf"calibrated_sensor.json: record {recs[0]['token']}: rotation: "
                                                  "missing"):
        load_tables(src, VERSION)
    path.write_text(good)
    (src / VERSION / "ego_pose.json").unlink()
    with pytest.raises(NuScenesFormatError, match="ego_pose.json: missing"):
        load_tables(src, VERSION)
    with pytest.raises(NuScenesFormatError, match="v1.0-trainval: missing"):
        load_tables(src, "v1.0-trainval")


def test_corrupt_scan_fails_only_its_scene_then_resume(export, tmp_path):
    src, out = tmp_path / "raw", tmp_path / "ds"
    shutil.copytree(export[0], src)
    scan = next(iter(sorted((src / "samples" / "LIDAR_TOP").glob("synth-s6-0001-*"))))
    good = scan.read_bytes()
    scan.write_bytes(good[:-7])
    res = convert_nuscenes(src, out, VERSION, show_progress=False)
    assert res.written == ["synth-s6-0000"] and "synth-s6-0001" in res.failed
    assert str(scan) in res.failed["synth-s6-0001"] and "not a positive multiple of 20" in res.failed["synth-s6-0001"]
    bad = np.frombuffer(good, "<f4").reshape(-1, 5).copy()
    bad[3, 4] = 40
    scan.write_bytes(bad.tobytes())
    again = convert_nuscenes(src, out, VERSION, show_progress=False)
    assert "ring column (5th value) must hold integers 0..31" in again.failed["synth-s6-0001"]
    scan.write_bytes(good)
    again = convert_nuscenes(src, out, VERSION, show_progress=False)
    assert again.skipped == ["synth-s6-0000"] and again.written == ["synth-s6-0001"] and not again.failed


def test_cli_synth_and_convert_nuscenes(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "ds"
    r = CliRunner().invoke(main, ["synth", "--format", "nuscenes", "--preset", "nuscenes", "--frames", "2",
                                  "--image-scale", "0.1", "--seed", "2", "--out", str(src)])
    assert r.exit_code == 0, r.output
    args = ["convert", "nuscenes", str(src), str(out), "--version", VERSION, "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "2 frames in 1 shards (1 written, 0 already done)" in r.output, r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "(0 written, 1 already done)" in r.output
    r = CliRunner().invoke(main, args + ["--scenes", "scene-0061"])
    assert r.exit_code == 1 and "no scene named 'scene-0061'" in r.output
    r = CliRunner().invoke(main, ["synth", "--format", "nuscenes", "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "needs a 32-beam sensor" in r.output
    r = CliRunner().invoke(main, ["convert", "nuscenes", "--help"])
    assert r.exit_code == 0 and "--min-visibility" in r.output and "devkit" in r.output


def test_panoptic_labels_give_the_same_ground_truth(export, converted, tmp_path):
    """Without lidarseg, the panoptic add-on's index * 1000 + instance labels give the same per-point truth."""
    src = tmp_path / "raw"
    shutil.copytree(export[0], src)
    records = []
    for rec in json.loads((src / VERSION / "lidarseg.json").read_text()):
        seg = np.frombuffer((src / rec["filename"]).read_bytes(), np.uint8).astype(np.uint16)
        rel = f"panoptic/{VERSION}/{rec['sample_data_token']}_panoptic.npz"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(src / rel, data=seg * 1000 + (seg < 24) * 7)  # things get an instance number
        records.append({**rec, "filename": rel})
    (src / VERSION / "lidarseg.json").unlink()
    (src / VERSION / "panoptic.json").write_text(json.dumps(records))
    res = convert_nuscenes(src, tmp_path / "ds", VERSION, min_visibility=2, show_progress=False)
    assert not res.failed and read_manifest(tmp_path / "ds").source["panoptic"] is True
    a, b = open_dataset(tmp_path / "ds"), open_dataset(converted)
    for fid in a.frame_ids:
        np.testing.assert_array_equal(a.frame(fid).gt.point_semantic, b.frame(fid).gt.point_semantic)
        np.testing.assert_array_equal(a.frame(fid).gt.point_instance, b.frame(fid).gt.point_instance)
