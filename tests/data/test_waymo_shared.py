"""Waymo converters: pure geometry / label / framing unit tests, plus helpers the v1 and v2 tests share.

"Same points within 1e-3 m" is checked against xyz recomputed *in this file* from each native point's
exact (range, row, col) and the native lidar's inclinations and extrinsic (B.2-B.5, vehicle-frame
azimuth ``pi (1 - (2c + 1) / W)``), not against the synthetic xyz, which is the hit of a sub-ray up to
the beam footprint (+-0.35 column) off the pixel centre. The synthetic xyz is checked separately to
lie within that footprint of the converted point.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pyarrow as pa

from mwsis.data.frame import BACKGROUND, IGNORE, Frame, Lidar, Points
from mwsis.data.schema import frame_to_table
from mwsis.data.synthetic import make_frame, preset
from mwsis.data.waymo import geometry as geo
from mwsis.data.waymo import labels as lab
from mwsis.data.waymo.build import object_id
from mwsis.data.waymo.tfrecord import crc32c, encode_record, masked_crc

# --- shared helpers -----------------------------------------------------------------------------------


@functools.cache
def tiny_frames(seed: int = 0, sequences: int = 2, frames: int = 2) -> dict[str, tuple[Frame, ...]]:
    """Native synthetic frames by segment name (rendered once per test process)."""
    out = {}
    for q in range(sequences):
        name = f"synth-s{seed}-{q:04d}"
        out[name] = tuple(make_frame(preset("tiny"), seed, q, i) for i in range(frames))
    return out


def expected_xyz(frame: Frame) -> np.ndarray:
    """Vehicle-frame xyz from (range, row, col) and the native lidar geometry, float64."""
    p = frame.points
    out = np.zeros((len(p), 3))
    for lid in frame.lidars:
        sel = p.laser_id == lid.laser_id
        e = np.asarray(lid.extrinsic, np.float64)
        phi = lid.inclinations.astype(np.float64)[p.row[sel]]
        az = np.pi * (1 - (2 * p.col[sel].astype(np.float64) + 1) / lid.width) - np.arctan2(e[1, 0], e[0, 0])
        r = p.range[sel].astype(np.float64)
        s = np.stack([r * np.cos(phi) * np.cos(az), r * np.cos(phi) * np.sin(az), r * np.sin(phi)], 1)
        out[sel] = s @ e[:3, :3].T + e[:3, 3]
    return out


def assert_same_frame(conv: Frame, nat: Frame, lidar_yaw_deg: float = 0.0, image_bytes: bool = True,
                      footprint: float | None = 0.35) -> None:
    assert (conv.frame_id, conv.sequence, conv.index, conv.timestamp_us) == \
           (nat.frame_id, nat.sequence, nat.index, nat.timestamp_us)
    a, b = conv.points, nat.points
    assert len(a) == len(b), (len(a), len(b))
    for name in ("range", "intensity", "elongation", "return_index", "laser_id", "row", "col", "nlz", "cam_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    has = b.cam_id > 0
    np.testing.assert_array_equal(np.floor(a.cam_uv[has]), np.floor(b.cam_uv[has]))
    assert (a.cam_uv[~has] == -1).all()
    err = np.abs(a.xyz.astype(np.float64) - expected_xyz(nat)).max()
    assert err < 1e-3, err
    if footprint is not None:  # the synthetic hit lies within the beam footprint of the pixel centre
        lid = nat.lidar(1)
        bound = b.range.astype(np.float64) * footprint * 2 * np.pi / lid.width + 2e-3
        assert (np.linalg.norm(a.xyz - b.xyz, axis=1) <= bound).all()
    yaw = np.radians(lidar_yaw_deg)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    assert [l.laser_id for l in conv.lidars] == [l.laser_id for l in nat.lidars]
    for lc, ln in zip(conv.lidars, nat.lidars):
        assert (lc.height, lc.width) == (ln.height, ln.width)
        np.testing.assert_allclose(lc.inclinations, ln.inclinations, rtol=0, atol=2e-7)
        np.testing.assert_allclose(lc.extrinsic[:3, :3], ln.extrinsic[:3, :3] @ rz, atol=1e-12)
        np.testing.assert_array_equal(lc.extrinsic[:3, 3], ln.extrinsic[:3, 3])
    assert [c.camera_id for c in conv.cameras] == [c.camera_id for c in nat.cameras]
    for cc, cn in zip(conv.cameras, nat.cameras):
        assert (cc.width, cc.height) == (cn.width, cn.height)
        for name in ("intrinsic", "distortion", "extrinsic"):
            np.testing.assert_array_equal(getattr(cc, name), getattr(cn, name), err_msg=name)
        if image_bytes:
            assert cc.image_bytes == cn.image_bytes and cc.image_format == cn.image_format
        else:
            assert np.abs(cc.image().astype(int) - cn.image().astype(int)).mean() < 4.0
    nb = nat.boxes2d
    order = np.lexsort((nb.object_id, nb.camera_id))  # the converter's canonical order
    for name in ("camera_id", "class_id", "xyxy", "object_id"):
        np.testing.assert_array_equal(getattr(conv.boxes2d, name), getattr(nb, name)[order], err_msg=name)
    np.testing.assert_array_equal(conv.gt.point_semantic, nat.gt.point_semantic)
    np.testing.assert_array_equal(conv.gt.point_instance, nat.gt.point_instance)
    mc, mn = conv.gt.masks, nat.gt.masks
    key = lambda m: {(int(m.camera_id[i]), int(m.object_id[i])): i for i in range(len(m))}  # noqa: E731
    kc, kn = key(mc), key(mn)
    assert kc.keys() == kn.keys() and len(kc) == len(mc) == len(mn)
    for k, i in kn.items():
        assert mc.class_id[kc[k]] == mn.class_id[i]
        np.testing.assert_array_equal(mc.decode(kc[k]), mn.decode(i))
    for name in ("object_id", "class_id", "center", "size", "heading"):
        np.testing.assert_array_equal(getattr(conv.gt.boxes3d, name), getattr(nat.gt.boxes3d, name), err_msg=name)


def assert_identical_frames(a: Frame, b: Frame) -> None:
    """Bit-identical once stored (the v1 and v2 paths must agree exactly)."""
    ta, tb = frame_to_table(a), frame_to_table(b)
    for name in ta.column_names:
        assert ta.column(name).equals(tb.column(name)), name


def with_front_lidar(frame, seed=0):
    """``frame`` plus a 20 x 60 FRONT lidar: uniform inclinations (stored as min/max only), a tilted and
    yawed extrinsic, no pixel pose, no labels (Waymo labels TOP only), both returns."""
    rng = np.random.default_rng(seed)
    h, w = 20, 60
    e = np.eye(4)
    e[:3, :3] = geo.euler_to_rotation(0.02, 0.15, -0.4)
    e[:3, 3] = [3.8, 0.1, 0.9]
    lid = Lidar(2, h, w, e, geo.inclinations_rows(None, -np.pi / 2, np.pi / 6, h).astype(np.float32))
    p, parts = frame.points, []
    for ret in (0, 1):
        top = p.select(p.return_index == ret)
        pix = np.sort(rng.choice(h * w, 300 if ret == 0 else 40, replace=False))
        row, col = (pix // w).astype(np.int16), (pix % w).astype(np.int16)
        rho = rng.uniform(1, 20, pix.size).astype(np.float32)
        xyz = geo.pixels_to_points(rho, row, col, lid.inclinations.astype(np.float64), geo.azimuths(w, e), e)
        n = pix.size
        front = Points(xyz.astype(np.float32), rng.random(n, np.float32), rng.random(n, np.float32), rho,
                       np.full(n, ret, np.int8), np.full(n, 2, np.int8), row, col, rng.random(n) < 0.2,
                       np.zeros((n, 2), np.int8), np.full((n, 2, 2), -1, np.float32))
        parts += [top, front]
    pts = Points(**{k: np.concatenate([getattr(q, k) for q in parts]) for k in p.__dict__})
    sem_parts, inst_parts = [], []
    for ret in (0, 1):
        m = p.return_index == ret
        n_front = int(((pts.return_index == ret) & (pts.laser_id == 2)).sum())
        sem_parts += [frame.gt.point_semantic[m], np.full(n_front, IGNORE, np.int8)]
        inst_parts += [frame.gt.point_instance[m], np.zeros(n_front, np.int32)]
    gt = dataclasses.replace(frame.gt, point_semantic=np.concatenate(sem_parts),
                             point_instance=np.concatenate(inst_parts))
    return dataclasses.replace(frame, points=pts, lidars=[*frame.lidars, lid], gt=gt)



# --- pure unit tests ----------------------------------------------------------------------------------


def test_euler_rotation_matches_the_upstream_test_case():
    r = geo.euler_to_rotation(np.pi / 2, np.pi / 2, np.pi / 2)  # B.6 [test]
    np.testing.assert_allclose(r, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    rot = geo.euler_to_rotation(0.1, -0.2, 2.5)
    np.testing.assert_allclose(geo.euler_to_rotation(*geo.rotation_to_euler(rot)), rot, atol=1e-12)


def test_inclinations_are_reversed_and_uniform_ones_have_half_row_offsets():
    np.testing.assert_array_equal(geo.inclinations_rows(np.array([-0.3, -0.1, 0.05]), 0, 0, 3), [0.05, -0.1, -0.3])
    rows = geo.inclinations_rows(None, -np.pi / 2, np.pi / 6, 200)  # B.2: max - (r + 0.5)/H (max - min)
    np.testing.assert_allclose(rows[[0, 199]], [np.pi / 6 - 0.5 / 200 * (2 * np.pi / 3),
                                                -np.pi / 2 + 0.5 / 200 * (2 * np.pi / 3)])
    np.testing.assert_allclose(geo.uniform_min_max(rows), (-np.pi / 2, np.pi / 6))
    assert geo.uniform_min_max(np.array([0.1, 0.0, -0.3])) is None


def test_range_image_geometry_with_yawed_extrinsic_and_pixel_pose():
    """A yawed lidar's column c still looks at vehicle azimuth pi (1 - (2c+1)/W) (B.3), and a pixel pose
    different from the frame pose moves the point by frame^-1 * pixel (B.6)."""
    w, yaw = 8, np.radians(147.9)
    e = np.eye(4)
    e[:3, :3] = geo.euler_to_rotation(0, 0, yaw)
    e[:3, 3] = [1, 0, 2]
    rows, cols = np.array([0, 0]), np.array([2, 5])
    p = geo.pixels_to_points(np.array([10.0, 20.0]), rows, cols, np.array([0.0]), geo.azimuths(w, e), e)
    az = np.pi * (1 - (2 * cols + 1) / w)
    np.testing.assert_allclose(p, [[1 + 10 * np.cos(az[0]), 10 * np.sin(az[0]), 2],
                                   [1 + 20 * np.cos(az[1]), 20 * np.sin(az[1]), 2]], atol=1e-12)
    frame_pose = np.eye(4)
    frame_pose[:3, :3] = geo.euler_to_rotation(0.01, 0.02, 0.3)
    frame_pose[:3, 3] = [100, 50, 3]
    delta = np.eye(4)
    delta[:3, :3] = geo.euler_to_rotation(0, 0, 0.05)
    delta[:3, 3] = [0.7, -0.1, 0]
    pix = frame_pose @ delta
    pose_img = np.zeros((1, w, 6))
    pose_img[0, :] = [*geo.rotation_to_euler(pix[:3, :3]), *pix[:3, 3]]
    q = geo.pixels_to_points(np.array([10.0, 20.0]), rows, cols, np.array([0.0]), geo.azimuths(w, e), e,
                             pose_img, frame_pose)
    np.testing.assert_allclose(q, p @ delta[:3, :3].T + delta[:3, 3], atol=1e-9)


def test_projection_encoding_and_box_clipping():
    cam_id, uv = geo.decode_projections(np.array([[1, 10, 20, 2, 0, 5], [0, 0, 0, 0, 0, 0]]))
    np.testing.assert_array_equal(cam_id, [[1, 2], [0, 0]])
    np.testing.assert_array_equal(uv[0], [[10.5, 20.5], [0.5, 5.5]])
    assert (uv[1] == -1).all()
    np.testing.assert_array_equal(geo.encode_projections(cam_id, uv), [[1, 10, 20, 2, 0, 5], [0] * 6])
    xyxy = geo.boxes_center_to_corners([[10, 20], [5, 5], [50, 50]], [[4, 6], [20, 4], [0.5, 3]])
    np.testing.assert_array_equal(xyxy[0], [8, 17, 12, 23])
    clipped, keep = geo.clip_boxes(np.vstack([xyxy, [[np.nan, 0, 1, 1], [200, 0, 300, 10]]]), 100, 40)
    np.testing.assert_array_equal(keep, [True, True, False, False, False])
    np.testing.assert_array_equal(clipped[1], [0, 3, 15, 7])


def test_class_groupings_follow_the_authors():
    raw = np.arange(-1, 24)
    sem, inst = lab.lidar_seg_to_points(np.full(raw.shape, 5), raw)
    expect = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 13: 0, 7: 1, 6: 2, 12: BACKGROUND, 0: IGNORE, -1: IGNORE, 23: IGNORE}
    for r, s in expect.items():
        assert sem[raw == r][0] == s, r
    assert set(sem[(raw >= 8) & (raw <= 22) & (raw != 13)]) == {BACKGROUND}
    assert (inst[sem >= BACKGROUND] == 0).all() and (inst[sem == IGNORE] == 0).all() and (inst[sem == 0] == 5).all()
    np.testing.assert_array_equal(lab.box_classes([0, 1, 2, 3, 4, 5]), [-1, 0, 1, -1, 2, -1])
    pan = np.full((4, 6), 20 * 1000, np.uint16)
    pan[0, :2] = 2 * 1000 + 1  # CAR instance 1
    pan[1, :2] = 16 * 1000 + 2  # PEDESTRIAN_OBJECT instance 2 (pedestrian)
    pan[2, :2] = 6 * 1000 + 2  # BICYCLE, same instance 2: split by class
    pan[3, :2] = 12 * 1000 + 3  # BIRD: not one of our classes
    masks = lab.panoptic_to_masks(pan, 1000, [1, 2], [77, 88])
    assert [(m[0], m[1]) for m in masks] == [(77, 0), (88, 1), (88, 2)]


def test_object_ids_are_stable():
    assert object_id("12345") == 12345
    k = "m2Rq4sAWxYz9QJ0-abcdE_"
    assert object_id(k) == object_id(k) > 2 ** 32 and object_id(k) < 2 ** 62 and object_id(k) != object_id(k + "x")


def test_crc32c_and_record_framing():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA and crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4 vectors
    crc = crc32c(b"abc")
    assert masked_crc(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    rec = encode_record(b"hello")
    assert rec[:8] == (5).to_bytes(8, "little") and rec[12:17] == b"hello" and len(rec) == 21


def test_schema_helpers_cast_documented_variants():
    from mwsis.data.waymo import v2_schema as s

    assert s.ints(pa.array(["1", "TOP", "3"]), s.LASER).tolist() == [1, 1, 3]
    assert s.ints(pa.array(["FRONT", "5"]), s.CAMERA).tolist() == [1, 5]
    t = s.transforms(pa.array([list(range(16))], pa.list_(pa.float32(), 16)))
    assert t.dtype == np.float64 and t[0, 1, 0] == 4


def test_all_zero_pixel_poses_leave_points_in_the_vehicle_frame():
    e, az = np.eye(4), geo.azimuths(4, np.eye(4))
    pose_img = np.zeros((1, 4, 6))
    pose_img[0, 1] = [0, 0, 0.5, 10, 0, 0]
    fp = np.eye(4)
    q = geo.pixels_to_points(np.array([5.0, 5.0]), np.array([0, 0]), np.array([0, 1]), np.array([0.0]), az, e,
                             pose_img, fp)
    np.testing.assert_allclose(q[0], [5 * np.cos(az[0]), 5 * np.sin(az[0]), 0], atol=1e-12)
    np.testing.assert_allclose(q[1], geo.euler_to_rotation(0, 0, 0.5) @ [5 * np.cos(az[1]), 5 * np.sin(az[1]), 0]
                               + [10, 0, 0], atol=1e-12)
