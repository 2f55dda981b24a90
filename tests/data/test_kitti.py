"""KITTI conversion (data/kitti, pipelines/convert_kitti) against synthetic frames exported in the real
KITTI layout (data/synthetic/export_kitti.py): points, rings, projections, boxes, box-derived ground
truth, corrupt files, the CLI and resume."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.frame import BACKGROUND, IGNORE
from mwsis.data.kitti import KittiFormatError, parse_calib, parse_label, parse_velodyne, read_kitti_frame
from mwsis.data.kitti.rings import hdl64e_inclinations, recover_rings
from mwsis.data.store import open_dataset, read_manifest
from mwsis.data.synthetic import make_frame, preset
from mwsis.data.synthetic.export_kitti import export_kitti
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.convert.kitti import convert_kitti

W = 1024  # columns in these tests (the preset's 2048 halved to keep them fast)
SEAM = 137.0  # not KITTI's 0: the reader must find the seam itself
OVERRIDES = dict(image_scale=0.5, columns=W)


@pytest.fixture(scope="module")
def native():
    cfg = preset("kitti", **OVERRIDES)
    return cfg, [make_frame(cfg, seed=3, sequence=0, index=i) for i in range(3)]


@pytest.fixture(scope="module")
def export(native, tmp_path_factory):
    src = tmp_path_factory.mktemp("kitti") / "training"
    records = export_kitti(native[1], src, seam_deg=SEAM, seam_jitter_deg=1.5, seed=3)
    return src, records


@pytest.fixture(scope="module")
def converted(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("kitti_ds") / "ds"
    res = convert_kitti(export[0], out, columns=W, frames_per_shard=2, show_progress=False)
    assert not res.failed and len(res.written) == 2
    return out


def _pairs(native, export, converted):
    ds = open_dataset(converted)
    for nat, rec in zip(native[1], export[1]):
        yield nat, rec, ds.frame(f"kitti-{int(rec.stem):06d}")


# ------------------------------------------------------------------------------------------ ring recovery
def _scan(rng, seam_deg, drop=0.1, crop=None, empty_top=0, seam_jitter=0.0, elev_noise=0.0):
    """A real-looking HDL-64E scan: 64 rings in file order, each sweeping 2000 x 0.18 deg CCW from its seam,
    random dropouts, sky (no returns) ahead of and behind the top 12 beams, ranges 4-60 m all round."""
    incl = hdl64e_inclinations()
    pts, rows = [], []
    for r in range(empty_top, 64):
        az = math.radians(seam_deg + rng.uniform(-seam_jitter, seam_jitter)) + np.radians(0.18) * np.arange(2000)
        az = np.mod(az + np.pi, 2 * np.pi) - np.pi
        keep = rng.random(az.size) > drop
        if r < 12:
            keep &= np.abs(np.sin(az)) > 0.5
        if crop is not None:
            keep &= np.abs(az) < math.radians(crop)
        az = az[keep]
        el = incl[r] + math.radians(elev_noise) * rng.standard_normal(az.size)
        d = rng.uniform(4, 60, az.size)
        pts.append(np.stack([d * np.cos(el) * np.cos(az), d * np.cos(el) * np.sin(az), d * np.sin(el)], 1))
        rows.append(np.full(az.size, r))
    return np.concatenate(pts).astype(np.float32), np.concatenate(rows)


@pytest.mark.parametrize("kw", [dict(seam_deg=0.0), dict(seam_deg=137.0), dict(seam_deg=-100.0, drop=0.3),
                                dict(seam_deg=0.0, crop=40.0), dict(seam_deg=60.0, empty_top=5),
                                dict(seam_deg=0.0, crop=40.0, empty_top=3), dict(seam_deg=-30.0, seam_jitter=3.0),
                                dict(seam_deg=137.0, elev_noise=0.37)])
def test_rings_recovered_from_scan_order(kw):
    xyz, row = _scan(np.random.default_rng(7), **kw)
    rec = recover_rings(xyz, width=2048)
    assert rec.rings == 64 - kw.get("empty_top", 0) and rec.non_monotone == 0
    np.testing.assert_array_equal(rec.row, row)  # absolute rows, also when top rings are empty
    az = np.arctan2(xyz[:, 1].astype(np.float64), xyz[:, 0].astype(np.float64))
    np.testing.assert_array_equal(rec.col, np.floor(2048 * (np.pi - az) / (2 * np.pi)).astype(int) % 2048)
    assert rec.shared == 0 and rec.inclinations.shape == (64,)
    assert np.all(np.diff(rec.inclinations) < 0)


# ------------------------------------------------------------------------------------------ pure parsers
def test_parsers_name_file_and_line():
    with pytest.raises(KittiFormatError, match=r"velodyne/000001.bin: 20 bytes is not a multiple of 16"):
        parse_velodyne(b"\0" * 20, "velodyne/000001.bin")
    good = "P2: " + " ".join(["1"] * 12) + "\nR0_rect: " + " ".join(["1"] * 9) + "\n"
    with pytest.raises(KittiFormatError, match=r"calib/000002.txt: missing Tr_velo_to_cam"):
        parse_calib(good, "calib/000002.txt")
    with pytest.raises(KittiFormatError, match=r"calib/x.txt line 2: R0_rect: 8 numbers, expected 9"):
        parse_calib("P2: " + " ".join(["1"] * 12) + "\nR0_rect: " + " ".join(["1"] * 8), "calib/x.txt")
    tracking = good.replace("R0_rect", "R_rect") + "Tr_velo_cam: " + " ".join(["0"] * 12)
    assert parse_calib(tracking, "c").Tr_velo_to_cam.shape == (3, 4)  # tracking-benchmark key names
    line = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"
    with pytest.raises(KittiFormatError, match=r"label_2/000003.txt line 2: 9 fields"):
        parse_label(line + "\nCar 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65\n", "label_2/000003.txt")
    with pytest.raises(KittiFormatError, match=r"line 1: Car: not a number"):
        parse_label(line.replace("46.70", "4b.70"), "l.txt")
    (obj,) = parse_label("\n" + line + " 0.93\n", "l.txt")  # a 16th column (score) is allowed
    assert obj.object_id == 2 and obj.class_id == 0 and obj.score == pytest.approx(0.93)


# ------------------------------------------------------------------------------------------ round trip
def test_export_is_kitti_layout(export, native):
    src, records = export
    for rec in records:
        assert (src / "velodyne" / f"{rec.stem}.bin").stat().st_size == 16 * len(rec.point_index)
        keys = [ln.split(":")[0] for ln in (src / "calib" / f"{rec.stem}.txt").read_text().splitlines()]
        assert keys == ["P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"]
        lines = (src / "label_2" / f"{rec.stem}.txt").read_text().splitlines()
        assert lines and all(len(ln.split()) == 15 for ln in lines) and len(lines) == len(rec.line_object_ids)
        scan = parse_velodyne((src / "velodyne" / f"{rec.stem}.bin").read_bytes(), "v")
        first_az = math.degrees(math.atan2(scan[0, 1], scan[0, 0]))
        assert abs(first_az - SEAM) < 3.0  # ring 0 starts at the seam


def test_points_rows_columns_and_projections_round_trip(native, export, converted):
    cfg = native[0]
    lidar_pos = np.asarray(cfg.lidar_position)
    row_hits = total = 0
    for nat, rec, f in _pairs(native, export, converted):
        p, q = nat.points, f.points
        idx = rec.point_index
        assert len(q) == len(idx) and q.row.dtype == np.int16
        np.testing.assert_allclose(q.xyz, p.xyz[idx] - lidar_pos, atol=1e-3)
        np.testing.assert_allclose(q.range, np.linalg.norm(p.xyz[idx] - lidar_pos, axis=1), atol=1e-3)
        assert (q.return_index == 0).all() and (q.laser_id == 1).all() and not q.nlz.any()
        row_hits += int((q.row == p.row[idx]).sum())
        total += len(q)
        assert (q.col == p.col[idx]).mean() > 0.999
        lid = f.lidar(1)
        assert (lid.height, lid.width) == (64, W) and np.allclose(lid.extrinsic, np.eye(4))
        np.testing.assert_allclose(lid.inclinations, cfg.inclinations(), atol=2e-4)
        ri = f.range_image()
        assert ri.shape == (2, 64, W) and (ri[0] > 0).sum() == len(q)  # one point per pixel
        # projections: KITTI chain == the native camera's Waymo model == the converted camera's
        cam, ncam = f.camera(1), nat.camera(1)
        assert (cam.width, cam.height) == (ncam.width, ncam.height)
        np.testing.assert_allclose(cam.intrinsic, ncam.intrinsic, atol=1e-9)
        np.testing.assert_allclose(cam.extrinsic, np.linalg.inv(nat.lidar(1).extrinsic) @ ncam.extrinsic, atol=1e-9)
        uv_n, ok_n = ncam.project(p.xyz[idx])
        uv_c, ok_c = cam.project(q.xyz)
        slot = q.cam_id[:, 0] == 1
        assert (q.cam_id[:, 1] == 0).all() and slot.sum() > 1000
        assert (slot != ok_n).mean() < 1e-4 and (slot != ok_c).mean() < 1e-4  # only float ties at the border
        both = slot & ok_n & ok_c
        np.testing.assert_allclose(q.cam_uv[both, 0], uv_n[both], atol=2e-3)
        np.testing.assert_allclose(q.cam_uv[both, 0], uv_c[both], atol=2e-3)
        assert f.camera(1).image_bytes == ncam.image_bytes
        np.testing.assert_array_equal(f.camera(1).image(), ncam.image())
    assert row_hits / total > 0.999  # ring recovery on the export (seam 137 deg, per-ring jitter)


def test_boxes_round_trip(native, export, converted):
    lidar_pos = np.asarray(native[0].lidar_position)
    for nat, rec, f in _pairs(native, export, converted):
        b2 = nat.boxes2d.of_camera(1)
        lines = {oid: i + 1 for i, oid in enumerate(rec.line_object_ids) if oid}
        assert sorted(f.boxes2d.object_id.tolist()) == sorted(lines.values())  # object_id = line number
        for k, oid in enumerate(b2.object_id):
            if int(oid) not in lines:
                continue  # beyond LiDAR range: exported as DontCare
            j = int(np.flatnonzero(f.boxes2d.object_id == lines[int(oid)])[0])
            np.testing.assert_allclose(f.boxes2d.xyxy[j], b2.xyxy[k], atol=1e-3)
            assert f.boxes2d.class_id[j] == b2.class_id[k] and f.boxes2d.camera_id[j] == 1
            b3, g3 = nat.gt.boxes3d, f.gt.boxes3d
            i, m = int(np.flatnonzero(b3.object_id == oid)[0]), int(np.flatnonzero(g3.object_id == lines[int(oid)])[0])
            np.testing.assert_allclose(g3.center[m], b3.center[i] - lidar_pos, atol=1e-3)
            np.testing.assert_allclose(g3.size[m], b3.size[i], atol=1e-3)
            dh = (float(g3.heading[m]) - float(b3.heading[i]) + math.pi) % (2 * math.pi) - math.pi
            assert abs(dh) < 1e-3 and g3.class_id[m] == b3.class_id[i]


def test_box_derived_ground_truth(native, export, converted):
    agree = judged_total = fg_agree = fg = 0
    for nat, rec, f in _pairs(native, export, converted):
        sem, inst = f.gt.point_semantic, f.gt.point_instance
        nsem, ninst = nat.gt.point_semantic[rec.point_index], nat.gt.point_instance[rec.point_index]
        out_of_image = (f.points.cam_id[:, 0] == 0) & (inst == 0)
        assert (sem[out_of_image] == IGNORE).all()  # KITTI labels only what image_2 sees
        judged = sem != IGNORE
        agree += int((sem[judged] == nsem[judged]).sum())
        judged_total += int(judged.sum())
        line_to_native = {i + 1: oid for i, oid in enumerate(rec.line_object_ids)}
        mapped = np.array([line_to_native.get(int(i), 0) for i in inst])
        is_fg = judged & (sem < BACKGROUND)
        fg += int(is_fg.sum())
        fg_agree += int((mapped[is_fg] == ninst[is_fg]).sum())
        assert set(np.unique(sem)) <= {IGNORE, 0, 1, 2, BACKGROUND}
        assert ((inst > 0) == ((sem >= 0) & (sem < BACKGROUND))).all()
    assert agree / judged_total > 0.97  # semantic class of every judged point vs the renderer's exact labels
    assert fg > 500 and fg_agree / fg > 0.9  # points in a box are mostly that object (ground grazes the box)


def test_label_mapping_dontcare_and_clipping(export, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(export[0], src)
    stem = export[1][0].stem
    before, _ = read_kitti_frame(src, stem, 0, W)
    img_w = before.camera(1).width
    real = (src / "label_2" / f"{stem}.txt").read_text().splitlines()[0].split()  # a vehicle with LiDAR points
    text = "Tram " + " ".join(real[1:]) + "\n"
    far = "1.50 1.60 3.90 0.50 1.70 200.00 -1.57"  # 200 m ahead: no points, no overlap with the Tram
    rows = ["Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Misc", "Bus"]
    text += "".join(f"{t} 0.00 0 0.00 {10 + 20 * i} 40.00 {25 + 20 * i} 60.00 {far}\n" for i, t in enumerate(rows))
    text += "DontCare -1 -1 -10 200.00 50.00 260.00 80.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
    text += f"Car 0.50 0 0.00 {img_w - 10} 40.00 {img_w + 30} 60.00 {far}\n"  # leaves the image: clipped
    text += f"Car 0.90 0 0.00 {img_w + 5} 40.00 {img_w + 30} 60.00 {far}\n"  # entirely outside: dropped
    (src / "label_2" / f"{stem}.txt").write_text(text)
    f, notes = read_kitti_frame(src, stem, 0, W)
    assert f.boxes2d.class_id.tolist() == [0, 0, 0, 1, 1, 2, 0]
    assert f.boxes2d.object_id.tolist() == [2, 3, 4, 5, 6, 7, 11]  # line numbers; Tram/Misc/Bus/DontCare skipped
    assert f.boxes2d.xyxy[-1, 2] == img_w
    assert any("line 12" in n and "dropped" in n for n in notes) and any("[11] clipped" in n for n in notes)
    assert any("unknown object types" in n and "Bus" in n for n in notes)
    assert f.gt.boxes3d.object_id.tolist() == [2, 3, 4, 5, 6, 7, 11, 12]  # 3D boxes also where the 2D box is dropped
    sem, inst = f.gt.point_semantic, f.gt.point_instance
    was_car = before.gt.point_instance == 1  # the same box as line 1, then a Car, now a Tram
    assert was_car.sum() > 20 and (sem[was_car] == IGNORE).all() and (inst[was_car] == 0).all()
    uv, p = f.points.cam_uv[:, 0], f.points
    in_dc = (p.cam_id[:, 0] == 1) & (uv[:, 0] >= 200) & (uv[:, 0] < 260) & (uv[:, 1] >= 50) & (uv[:, 1] < 80)
    assert in_dc.any() and (sem[in_dc] == IGNORE).all()
    assert (sem[~in_dc & ~was_car & (p.cam_id[:, 0] == 1)] == BACKGROUND).mean() > 0.9


def test_pseudolabel_stages_run_on_converted(converted, tmp_path):
    from mwsis.pipelines.labels.runner import run_stages

    ds = tmp_path / "ds"
    shutil.copytree(converted, ds)
    res = run_stages(ds, ["spg", "ccl"], show_progress=False)
    assert res and {r.status for r in res} == {"done"}


# ------------------------------------------------------------------------------------------ failures, CLI
def _broken_copy(export, tmp_path):
    """Five samples: 000000 good, 000001 truncated scan, 000002 no calib, 000003 bad label line, 000004 good."""
    src = tmp_path / "src"
    shutil.copytree(export[0], src)
    for d, ext in (("velodyne", "bin"), ("calib", "txt"), ("label_2", "txt"), ("image_2", "png")):
        shutil.copy(src / d / f"000000.{ext}", src / d / f"000003.{ext}")
        shutil.copy(src / d / f"000001.{ext}", src / d / f"000004.{ext}")
    good = {p: p.read_bytes() for p in (src / "velodyne" / "000001.bin", src / "calib" / "000002.txt",
                                        src / "label_2" / "000003.txt")}
    bin1 = src / "velodyne" / "000001.bin"
    bin1.write_bytes(bin1.read_bytes()[:-5])
    (src / "calib" / "000002.txt").unlink()
    lab = src / "label_2" / "000003.txt"
    lines = lab.read_text().splitlines()
    lab.write_text("\n".join([lines[0], "Car 0.0 0 oops"] + lines[1:]) + "\n")
    return src, good


def test_corrupt_files_fail_only_their_unit_then_resume(export, tmp_path):
    src, good = _broken_copy(export, tmp_path)
    out = tmp_path / "ds"
    res = convert_kitti(src, out, columns=W, frames_per_shard=1, show_progress=False)
    assert sorted(res.written) == ["kitti-000000-000000", "kitti-000004-000004"]
    errs = res.failed
    assert "velodyne/000001.bin" in errs["kitti-000001-000001"] and "multiple of 16" in errs["kitti-000001-000001"]
    assert "calib/000002.txt: missing" in errs["kitti-000002-000002"]
    assert "label_2/000003.txt line 2: 4 fields" in errs["kitti-000003-000003"]
    assert set(read_manifest(out).source["failed"]) == set(errs)
    for path, data in good.items():
        path.write_bytes(data)
    again = convert_kitti(src, out, columns=W, frames_per_shard=1, show_progress=False)
    assert sorted(again.skipped) == ["kitti-000000-000000", "kitti-000004-000004"] and not again.failed
    assert len(again.written) == 3 and len(open_dataset(out)) == 5
    assert "failed" not in read_manifest(out).source


def test_cli_convert_kitti(export, tmp_path):
    out = tmp_path / "ds"
    args = ["convert", "kitti", str(export[0]), str(out), "--columns", str(W), "--frames-per-shard", "2",
            "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "3 frames in 2 shards (2 written, 0 already done)" in r.output
    r = CliRunner().invoke(main, args)  # rerun = resume
    assert r.exit_code == 0 and "(0 written, 2 already done)" in r.output
    r = CliRunner().invoke(main, args[:-2] + ["4", "--no-progress"])  # other settings: refused
    assert r.exit_code != 0 and "other settings" in r.output
    src, _ = _broken_copy(export, tmp_path)
    r = CliRunner().invoke(main, ["convert", "kitti", str(src), str(tmp_path / "bad"), "--columns", str(W),
                                  "--frames-per-shard", "1", "--no-progress"])
    assert r.exit_code == 1 and "FAILED kitti-000002-000002" in r.output and "3 of 5 shards failed" in r.output


def test_synth_export_kitti_entry_point(tmp_path):
    from mwsis.pipelines.convert.kitti import synth_export_kitti

    recs = synth_export_kitti(tmp_path / "k", "kitti", frames=1, seed=1, overrides=dict(image_scale=0.25, columns=512))
    assert [r.stem for r in recs] == ["000000"]
    for d, ext in (("velodyne", "bin"), ("calib", "txt"), ("label_2", "txt"), ("image_2", "png")):
        assert (tmp_path / "k" / d / f"000000.{ext}").stat().st_size > 0
