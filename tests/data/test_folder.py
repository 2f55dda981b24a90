"""Sensor-folder conversion (data/folder, pipelines/convert/folder.py) against synthetic frames written in the
layout (data/synthetic/export_folder.py): every point-file type, the three row recoveries, the clouds no
recovery can order, the CLI, failure isolation and resume."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.folder import FolderSource, RowRecoveryError, recover_rows
from mwsis.data.store import open_dataset, read_manifest
from mwsis.data.synthetic import make_frame, preset
from mwsis.data.synthetic.export_folder import LAS_INTENSITY_SCALE, export_folder
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.convert.folder import convert_folder


@pytest.fixture(scope="module")
def native():
    cfg = preset("tiny")
    return [make_frame(cfg, seed=5, sequence=s, index=i) for s in range(2) for i in range(2)]


def _convert(native, tmp_path, fmt, **export):
    src, out = tmp_path / "src", tmp_path / "ds"
    records = export_folder(native, src, fmt, **export)
    res = convert_folder(src, out, frames_per_shard=1, show_progress=False)
    assert not res.failed and len(res.written) == 4
    ds = open_dataset(out)
    return records, [ds.frame(r.frame_id) for r in records]


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("fmt, export", [("npy", {}), ("bin", dict(ring=False, inclinations=True)),
                                         ("pcd", dict(points_frame="vehicle")), ("las", {}), ("laz", {})])
def test_round_trip_equals_native_synthesis(native, tmp_path, fmt, export):
    """Every point-file type: the converted frames are the native ones (LAS: millimetre-scale coordinates and
    16-bit intensity). bin rows come from the inclinations, the others from the ring column."""
    lossy = fmt in ("las", "laz")
    records, frames = _convert(native, tmp_path, fmt, **export)
    for nat, rec, f in zip(native, records, frames):
        p, q, idx = nat.points, f.points, rec.point_index
        assert (f.frame_id, f.sequence, f.index, f.timestamp_us) == (nat.frame_id, nat.sequence, nat.index,
                                                                      nat.timestamp_us)
        assert len(q) == len(p) and len(idx) == len(p)  # every point of the sweep, both returns
        np.testing.assert_allclose(q.xyz, p.xyz[idx], atol=1e-4 if lossy else 1e-5)
        np.testing.assert_allclose(q.range, p.range[idx], atol=1e-3)  # from the sensor, not the vehicle origin
        inten = np.minimum(p.intensity[idx], LAS_INTENSITY_SCALE) if lossy else p.intensity[idx]
        np.testing.assert_allclose(q.intensity, inten, atol=1e-4 * LAS_INTENSITY_SCALE if lossy else 0)
        np.testing.assert_allclose(q.elongation, p.elongation[idx], atol=1e-6)
        np.testing.assert_array_equal(q.return_index, p.return_index[idx])
        np.testing.assert_array_equal(q.row, p.row[idx])
        np.testing.assert_array_equal(q.col, p.col[idx])
        np.testing.assert_array_equal(q.cam_id, p.cam_id[idx])
        np.testing.assert_allclose(q.cam_uv, p.cam_uv[idx], atol=2e-2 if lossy else 1e-3)
        lid, nlid = f.lidar(1), nat.lidar(1)
        assert (lid.height, lid.width) == (nlid.height, nlid.width)
        np.testing.assert_allclose(lid.extrinsic, nlid.extrinsic, atol=1e-12)
        np.testing.assert_allclose(lid.inclinations, nlid.inclinations, atol=2e-4)
        for cam in nat.cameras:  # OpenCV axes and integer pixel centres in the files, Waymo's in the frame
            got = f.camera(cam.camera_id)
            assert (got.width, got.height, got.image_bytes) == (cam.width, cam.height, cam.image_bytes)
            np.testing.assert_allclose(got.intrinsic, cam.intrinsic, atol=1e-9)
            np.testing.assert_allclose(got.extrinsic, cam.extrinsic, atol=1e-9)
        for field in ("camera_id", "class_id", "object_id"):
            np.testing.assert_array_equal(getattr(f.boxes2d, field), getattr(nat.boxes2d, field))
        np.testing.assert_allclose(f.boxes2d.xyxy, nat.boxes2d.xyxy, atol=1e-4)
        np.testing.assert_array_equal(f.gt.point_semantic, nat.gt.point_semantic[idx])
        np.testing.assert_array_equal(f.gt.point_instance, nat.gt.point_instance[idx])


def test_pseudolabel_stages_run_on_converted(native, tmp_path):
    from mwsis.pipelines.labels.runner import run_stages

    _convert(native, tmp_path, "npy")
    res = run_stages(tmp_path / "ds", ["spg", "ccl"], show_progress=False)
    assert res and {r.status for r in res} == {"done"}


# ------------------------------------------------------------------------------------------ row recovery
@pytest.mark.parametrize("name, kw", [("tiny", {}), ("kitti", dict(image_scale=0.25, columns=1024)),
                                      ("waymo", dict(image_scale=0.25, columns=1325))])
def test_rows_from_scan_order_for_any_beam_count(name, kw, tmp_path):
    """16, 64 evenly and 64 unevenly spaced beams: no ring column, no inclinations, only the file order."""
    cfg = preset(name, **kw)
    frame = make_frame(cfg, seed=2, sequence=0, index=0)
    (rec,) = export_folder([frame], tmp_path / "src", "bin", ring=False, scan_order_only=True)
    got, notes = next(FolderSource(tmp_path / "src").frames(frame.sequence))
    assert len(rec.point_index) > 5000 and not notes
    np.testing.assert_array_equal(got.points.row, frame.points.row[rec.point_index])
    assert (got.points.col == frame.points.col[rec.point_index]).mean() > 0.999
    assert got.lidar(1).height == cfg.beams


def test_clouds_no_recovery_can_order_are_refused():
    frame = make_frame(preset("tiny"), seed=2, sequence=0, index=0)
    p = frame.points
    first = np.flatnonzero(p.return_index == 0)
    order = first[np.lexsort((p.col[first], p.row[first]))]  # ring by ring, clockwise (column grows)
    xyz = p.xyz[order].astype(np.float64) - np.asarray(frame.lidar(1).extrinsic[:3, 3])
    for spin in (xyz, xyz[np.lexsort((-p.col[order], p.row[order]))]):  # a sensor spinning either way
        rows = recover_rows(spin, 512, beams=16)
        assert rows.method == "scan order"
        np.testing.assert_array_equal(np.sort(rows.row), np.sort(p.row[order]))
    np.testing.assert_array_equal(recover_rows(xyz, 512, beams=16).row, p.row[order])
    np.testing.assert_array_equal(recover_rows(xyz, 512, beams=16).col, p.col[order])
    shuffled = xyz[np.random.default_rng(0).permutation(len(xyz))]
    with pytest.raises(RowRecoveryError, match=r"not in scan order: \d+ rings found for 16 beams"):
        recover_rows(shuffled, 512, beams=16)
    with pytest.raises(RowRecoveryError, match="32 rings found for 16 beams"):  # two sweeps merged
        recover_rows(np.concatenate([xyz, xyz]), 512, beams=16)
    with pytest.raises(RowRecoveryError, match="needs the sensor's beam count"):
        recover_rows(xyz, 512)
    with pytest.raises(RowRecoveryError, match="ring: value 16 but the sensor has 16 beams"):
        recover_rows(xyz, 512, ring=np.full(len(xyz), 16), beams=16)
    # a ring column numbered from the bottom beam
    rows = recover_rows(xyz, 512, ring=15 - p.row[order], ring_order="bottom_first", beams=16)
    np.testing.assert_array_equal(rows.row, p.row[order])


# ------------------------------------------------------------------------------------------ failures, CLI
def test_bad_frame_fails_only_its_unit_then_resume(native, tmp_path):
    src, out = tmp_path / "src", tmp_path / "ds"
    records = export_folder(native, src, "npy")
    bad = src / "logs" / records[1].log / "lidar" / f"{records[1].frame_id}.npy"
    good = bad.read_bytes()
    bad.write_bytes(good[:200])
    res = convert_folder(src, out, frames_per_shard=1, show_progress=False)
    assert len(res.written) == 3 and list(res.failed) == [f"{records[1].log}-000001"]
    err = res.failed[f"{records[1].log}-000001"]
    assert str(bad) in err and f"frame {records[1].frame_id}" in err and "not a readable .npy" in err
    assert set(read_manifest(out).source["failed"]) == set(res.failed)
    bad.write_bytes(good)
    again = convert_folder(src, out, frames_per_shard=1, show_progress=False)
    assert len(again.skipped) == 3 and len(again.written) == 1 and len(open_dataset(out)) == 4


def test_cli_synth_and_convert_folder(tmp_path):
    src, out = tmp_path / "src", tmp_path / "ds"
    r = CliRunner().invoke(main, ["synth", "--format", "folder", "--point-format", "pcd", "--frames", "3",
                                  "--frames-per-sequence", "2", "--seed", "1", "--out", str(src)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (src / "logs").iterdir()) == ["synth-s1-0000", "synth-s1-0001"]
    assert len(list((src / "logs").glob("*/lidar/*.pcd"))) == 3
    args = ["convert", "folder", str(src), str(out), "--frames-per-shard", "1", "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "3 frames in 3 shards (3 written, 0 already done)" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "(0 written, 3 already done)" in r.output
    frames = src / "logs" / "synth-s1-0000" / "frames.jsonl"
    lines = frames.read_text().splitlines()
    frames.write_text("\n".join([lines[0], json.dumps({**json.loads(lines[1]), "timestamp_us": -1})]) + "\n")
    r = CliRunner().invoke(main, ["convert", "folder", str(src), str(tmp_path / "other"), "--no-progress"])
    assert r.exit_code == 1 and f"{frames} line 2: frame synth-s1-0000-000001: timestamp_us" in r.output
    assert not (tmp_path / "other").exists()  # the index is checked before anything is written
    r = CliRunner().invoke(main, ["convert", "folder", "--help"])
    assert r.exit_code == 0 and "ring column" in r.output


def test_duplicate_frame_ids_across_logs_are_refused(native, tmp_path):
    src = tmp_path / "src"
    records = export_folder(native, src, "npy")
    shutil.copytree(src / "logs" / records[0].log, src / "logs" / "copy")
    with pytest.raises(ValueError, match=r"frame_id: also in log .*frame ids must be unique"):
        convert_folder(src, tmp_path / "ds", show_progress=False)


def test_clicks_become_the_folder_click_set(native, tmp_path):
    from mwsis.data.click_store import read_frame_clicks
    from mwsis.data.clicks import box_centre_clicks
    from mwsis.data.folder import FolderFormatError

    src = tmp_path / "src"
    export_folder(native, src, "npy", clicks=True)
    convert_folder(src, tmp_path / "ds", show_progress=False)
    ds = open_dataset(tmp_path / "ds")
    total = 0
    for nat in native:
        got, want = read_frame_clicks(ds, "folder", nat.frame_id), box_centre_clicks(nat.boxes2d)
        order = lambda c: np.lexsort((c.object_id, c.camera_id))  # noqa: E731
        g, w = order(got), order(want)
        for field in ("camera_id", "class_id", "object_id"):
            np.testing.assert_array_equal(getattr(got, field)[g], getattr(want, field)[w])
        np.testing.assert_allclose(got.uv[g], want.uv[w], atol=1e-4)
        total += len(got)
    assert total > 10
    path = next((src / "logs").glob("*/clicks/FRONT.json"))
    doc = json.loads(path.read_text())
    doc["annotations"][0]["keypoints"] = [9999.0, 1.0, 2]
    path.write_text(json.dumps(doc))
    with pytest.raises(FolderFormatError, match=rf"{path}: frame .*: annotations.keypoints: click 0: .*outside"):
        convert_folder(src, tmp_path / "ds2", show_progress=False)


def test_a_rerun_reads_the_files_as_they_are_now(native, tmp_path):
    """The per-process cache of parsed index and COCO files does not outlive a conversion."""
    src = tmp_path / "src"
    records = export_folder(native[:1], src, "npy")
    convert_folder(src, tmp_path / "a", show_progress=False)
    path = src / "logs" / records[0].log / "boxes2d" / "FRONT.json"
    doc = json.loads(path.read_text())
    kept = len(doc["annotations"]) - 1
    doc["annotations"] = doc["annotations"][1:]
    path.write_text(json.dumps(doc))
    convert_folder(src, tmp_path / "b", show_progress=False)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    fid = records[0].frame_id
    assert len(b.frame(fid).boxes2d.of_camera(1)) == kept == len(a.frame(fid).boxes2d.of_camera(1)) - 1
