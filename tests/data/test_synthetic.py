"""Synthetic street scenes: determinism, exact labels, Waymo conventions, content that is hard enough."""
from __future__ import annotations

import numpy as np
import pytest

from mwsis.data.frame import BACKGROUND, NUM_CLASSES
from mwsis.data.synthetic import SynthConfig, make_frame, preset, render_frame
from mwsis.data.synthetic import camera as synth_camera
from mwsis.data.synthetic.lidar import beam_dirs, lidar_tiles
from mwsis.data.synthetic.raycast import brute_force_binned, cull, trace
from mwsis.data.synthetic.scene import build_scene
from mwsis.data.validate import validate_frame

TINY = preset("tiny")
FRAMES = [(0, 0, 0), (0, 0, 5), (1, 2, 3), (2, 1, 7)]  # (seed, sequence, index)


@pytest.fixture(scope="module")
def rendered():
    return [render_frame(TINY, *k) for k in FRAMES]


def _arrays(frame):
    p, gt = frame.points, frame.gt
    out = {f"points.{k}": v for k, v in p.__dict__.items()}
    out.update({"boxes2d.xyxy": frame.boxes2d.xyxy, "boxes2d.object_id": frame.boxes2d.object_id,
                "gt.point_semantic": gt.point_semantic, "gt.point_instance": gt.point_instance,
                "gt.boxes3d.center": gt.boxes3d.center, "gt.boxes3d.size": gt.boxes3d.size})
    return out


def test_same_arguments_give_identical_frames_and_bytes(rendered):
    again = make_frame(TINY, *FRAMES[1])
    first = rendered[1].frame
    for key, value in _arrays(first).items():
        other = _arrays(again)[key]
        assert value.dtype == other.dtype and np.array_equal(value, other), key
    assert [c.image_bytes for c in first.cameras] == [c.image_bytes for c in again.cameras]
    assert [r["counts"] for r in first.gt.masks.rles] == [r["counts"] for r in again.gt.masks.rles]
    other_seed = make_frame(TINY, seed=FRAMES[1][0] + 9, sequence=FRAMES[1][1], index=FRAMES[1][2])
    assert first.cameras[0].image_bytes != other_seed.cameras[0].image_bytes
    assert len(first.points) != len(other_seed.points) or not np.array_equal(first.points.xyz, other_seed.points.xyz)


def test_frame_metadata_and_validation(rendered):
    for (seed, seq, idx), r in zip(FRAMES, rendered):
        f = r.frame
        validate_frame(f)
        assert f.frame_id == f"synth-s{seed}-{seq:04d}-{idx:06d}" and f.sequence == f"synth-s{seed}-{seq:04d}"
        assert f.index == idx and f.timestamp_us == idx * 100_000
        assert [c.camera_id for c in f.cameras] == [1, 2] and all(c.image_format == "png" for c in f.cameras)
        assert f.cameras[0].image().shape == (160, 240, 3)
        assert (f.points.laser_id == 1).all() and not f.points.nlz.any()
        assert np.array_equal(f.lidar().extrinsic[:3, :3], np.eye(3))


def test_foreground_points_lie_in_their_3d_box(rendered):
    n_checked = 0
    for r in rendered:
        f = r.frame
        b3, inst = f.gt.boxes3d, f.gt.point_instance
        fg = inst > 0
        assert np.isin(inst[fg], b3.object_id).all(), "every labelled point has a 3D box"
        inside = b3.contains(f.points.xyz[fg], margin=0.02)
        col = np.searchsorted(b3.object_id, inst[fg])
        own = inside[np.arange(fg.sum()), col]
        assert own.all(), f"{(~own).sum()} foreground points outside their box in {f.frame_id}"
        sem = f.gt.point_semantic
        assert np.array_equal(sem[fg], b3.class_id[col]) and (sem[~fg] == BACKGROUND).all()
        n_checked += fg.sum()
    assert n_checked > 1000


def test_2d_boxes_are_tight_mask_extents(rendered):
    for r in rendered:
        f = r.frame
        b, m = f.boxes2d, f.gt.masks
        assert len(b) > 0
        assert np.array_equal(b.camera_id, m.camera_id) and np.array_equal(b.object_id, m.object_id)
        assert np.array_equal(b.class_id, m.class_id) and ((b.class_id >= 0) & (b.class_id < NUM_CLASSES)).all()
        for k in range(len(b)):
            mask = m.decode(k)
            assert mask.sum() >= TINY.min_box_area
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            assert b.xyxy[k].tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
            assert np.array_equal(mask, r.instance[int(b.camera_id[k])] == b.object_id[k])
        for cid, inst in r.instance.items():  # boxes for exactly the instances visible enough
            ids, counts = np.unique(inst[inst > 0], return_counts=True)
            assert sorted(ids[counts >= TINY.min_box_area]) == sorted(b.object_id[b.camera_id == cid])


def test_unoccluded_point_projections_land_on_their_instance_mask(rendered):
    hits = total = 0
    for r in rendered:
        f = r.frame
        inst = f.gt.point_instance
        for cam in f.cameras:
            uv, valid = cam.project(f.points.xyz)
            p_cam = (f.points.xyz.astype(np.float64) - cam.extrinsic[:3, 3]) @ cam.extrinsic[:3, :3]
            u, v = np.floor(uv[valid]).astype(int).T
            depth = r.depth[cam.camera_id][v, u]
            visible = np.abs(p_cam[valid, 0] - depth) < 0.05 + 0.01 * depth
            fg = inst[valid] > 0
            sel = visible & fg
            hits += (r.instance[cam.camera_id][v[sel], u[sel]] == inst[valid][sel]).sum()
            total += sel.sum()
    assert total > 300
    assert hits / total >= 0.95, hits / total


def test_point_camera_projections_follow_waymo_slots(rendered):
    f = rendered[0].frame
    p = f.points
    proj = {c.camera_id: c.project(p.xyz) for c in f.cameras}
    expect_count = sum(proj[c][1].astype(int) for c in proj)
    assert np.array_equal((p.cam_id > 0).sum(1), np.minimum(expect_count, 2))
    for slot in range(2):
        for cid, (uv, valid) in proj.items():
            sel = p.cam_id[:, slot] == cid
            assert valid[sel].all()
            assert np.allclose(p.cam_uv[sel, slot], uv[sel], atol=1e-3)
    assert (p.cam_uv[p.cam_id == 0] == -1).all()
    both = (p.cam_id > 0).all(1)
    assert (p.cam_id[both, 0] < p.cam_id[both, 1]).all()


def test_range_image_rebuilds_every_point(rendered):
    for r in rendered:
        f = r.frame
        p = f.points
        M, W = f.range_image_shape
        assert (M, W) == (TINY.beams, TINY.columns)
        assert (p.row >= 0).all() and (p.row < M).all() and (p.col >= 0).all() and (p.col < W).all()
        key = (p.return_index.astype(np.int64) * M + p.row) * W + p.col
        assert len(np.unique(key)) == len(p), "one point per (return, row, col)"
        ri = f.range_image()
        assert np.array_equal(ri[p.return_index, p.row, p.col], p.range)
        lid = f.lidar()
        assert (np.diff(lid.inclinations) < 0).all(), "row 0 is the highest beam"
        # range is measured from the LiDAR; the point's elevation matches its row's beam
        rel = p.xyz.astype(np.float64) - lid.extrinsic[:3, 3]
        assert np.allclose(np.linalg.norm(rel, axis=1), p.range, atol=1e-3)
        elev = np.arcsin(rel[:, 2] / np.linalg.norm(rel, axis=1))
        assert np.allclose(elev, lid.inclinations[p.row], atol=2e-4)
        az = np.arctan2(rel[:, 1], rel[:, 0])
        az_col = np.pi * (1 - (2 * p.col + 1) / W)
        daz = np.angle(np.exp(1j * (az - az_col)))
        assert np.abs(daz).max() <= (TINY.footprint + 1e-3) * 2 * np.pi / W
        second = p.return_index == 1
        first_range = ri[0, p.row[second], p.col[second]]
        assert (first_range > 0).all() and (p.range[second] > first_range).all()


def test_each_class_appears_and_boxes_contain_background_points(rendered):
    classes = np.concatenate([r.frame.boxes2d.class_id for r in rendered])
    assert set(np.unique(classes)) == {0, 1, 2}
    assert all(len(r.frame.boxes2d) >= 4 for r in rendered)
    # Background (ground, walls, ...) lies behind objects, so box frusta hold background points. The
    # exceptions are objects seen only over or beside another object (occlusion stacks), as in real data.
    with_points = with_bg = 0
    for r in rendered:
        f = r.frame
        sem, b3 = f.gt.point_semantic, f.gt.boxes3d
        near = set(b3.object_id[np.linalg.norm(b3.center, axis=1) < TINY.max_range - 10].tolist())
        for cam in f.cameras:
            uv, valid = cam.project(f.points.xyz)
            b = f.boxes2d.of_camera(cam.camera_id)
            for (x1, y1, x2, y2), oid in zip(b.xyxy, b.object_id):
                inside = valid & (uv[:, 0] >= x1) & (uv[:, 0] < x2) & (uv[:, 1] >= y1) & (uv[:, 1] < y2)
                if inside.sum() >= 5 and int(oid) in near:
                    with_points += 1
                    with_bg += (sem[inside] == BACKGROUND).any()
    assert with_points >= 20 and with_bg >= 0.9 * with_points, (with_bg, with_points)


def test_second_returns_sit_at_silhouettes(rendered):
    n_second = n_edge = 0
    for r in rendered:
        p, inst = r.frame.points, r.frame.gt.point_instance
        second = p.return_index == 1
        n_second += second.sum()
        ri_inst = np.zeros((2,) + r.frame.range_image_shape, np.int64)
        ri_inst[p.return_index, p.row, p.col] = inst
        # an object in front and something else behind it in the same beam: a silhouette
        first_inst = ri_inst[0, p.row[second], p.col[second]]
        n_edge += ((first_inst > 0) & (first_inst != inst[second])).sum()
        assert r.mixed[second].mean() > 0.5  # mostly mixed pixels; the rest pass through foliage
        assert second.mean() < 0.15  # second returns are the exception, not the rule
    assert n_second > 50 and n_edge > 10


def test_culled_casting_finds_the_same_surfaces_as_brute_force():
    scene = build_scene(TINY, 0, 0, 4)
    prims, ground = scene.prims, scene.ground
    lidar_origin = scene.ego + np.asarray(TINY.lidar_position)
    tiles, ray_tile = lidar_tiles(TINY)
    geo = synth_camera.camera_geometry(TINY.cameras[1], 1.0)
    cam_tiles = synth_camera.camera_tiles(geo)
    cam_dirs, cam_tile = synth_camera.pixel_rays(geo)
    cases = [(lidar_origin, beam_dirs(TINY).reshape(-1, 3), ray_tile, tiles, TINY.max_range),
             (scene.ego + geo.extrinsic[:3, 3], cam_dirs, cam_tile, cam_tiles, TINY.view_distance)]
    for origin, dirs, tile, tl, far in cases:
        t_c, hit_c, _ = trace(prims, ground, origin, cull(prims, origin, tl, far), dirs, tile, far)
        t_b, hit_b, _ = trace(prims, ground, origin, brute_force_binned(prims, origin, len(tl.planes)), dirs, tile, far)
        assert np.array_equal(hit_c, hit_b) and np.array_equal(t_c, t_b)
        assert (hit_c >= 0).mean() > 0.2  # the rays do hit primitives, not only ground and sky


def test_sequence_shares_scene_and_ego_moves_forward():
    a, b = make_frame(TINY, 3, 1, 10), make_frame(TINY, 3, 1, 11)
    ba, bb = a.gt.boxes3d, b.gt.boxes3d
    common, ia, ib = np.intersect1d(ba.object_id, bb.object_id, return_indices=True)
    assert len(common) > 0.7 * min(len(ba), len(bb))
    shift = bb.center[ib, 0] - ba.center[ia, 0]
    # static objects appear 1 m nearer (ego drives ~1 m per frame); moving ones differ
    assert np.sum(np.abs(shift + TINY.ego_step) < 1e-3) > 10
    assert np.sum(np.abs(shift + TINY.ego_step) > 0.05) > 3


def test_presets_and_overrides():
    assert isinstance(TINY, SynthConfig) and preset("tiny", beams=8).beams == 8
    with pytest.raises(ValueError):
        preset("nope")
    with pytest.raises(TypeError):
        preset("tiny", no_such_field=1)


def test_waymo_preset_sensor_layout():
    cfg = preset("waymo", image_scale=0.12)
    f = make_frame(cfg, seed=0, sequence=0, index=0)
    validate_frame(f)
    assert f.range_image_shape == (64, 2650)
    incl = np.degrees(f.lidar().inclinations.astype(np.float64))
    assert incl[0] == pytest.approx(2.4, abs=1e-4) and incl[-1] == pytest.approx(-17.6, abs=1e-4)
    step = -np.diff(incl)
    assert step[0] < 0.6 * step[-1], "beams are denser near the horizon"
    assert [c.camera_id for c in f.cameras] == [1, 2, 3, 4, 5]
    assert f.camera(4).height < f.camera(1).height
    for c in f.cameras[1:]:
        assert np.linalg.norm(c.extrinsic[:3, 3] - f.lidar().extrinsic[:3, 3]) > 0.3
    assert len(f.points) > 100_000 and (f.points.return_index == 1).sum() > 500
    assert (f.range_image()[1] > 0).any() and f.points.range.max() <= cfg.max_range + 0.05


def test_max_grade_bounds_the_street_slope():
    from mwsis.data.synthetic.scene import ground_params

    gentle = [ground_params(preset("tiny"), 0, s)[1] for s in range(20)]
    steep = [ground_params(preset("tiny", max_grade=0.08), 0, s)[1] for s in range(20)]
    assert max(map(abs, gentle)) <= 0.02 and max(map(abs, steep)) <= 0.08
    np.testing.assert_allclose(steep, np.multiply(gentle, 4))  # the same draw, scaled: default scenes unchanged
    assert max(map(abs, steep)) > 0.04
