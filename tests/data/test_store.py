"""Frames table round trip, manifest, atomic writes and corrupt-shard errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mwsis.data.schema import Manifest
from mwsis.data.store import ShardError, StoreError, atomic_path, open_dataset, write_frame_shard, write_manifest
from mwsis.data.validate import FrameError


def _write(tmp_path, frames, name="seq0"):
    info = write_frame_shard(tmp_path, name, frames)
    write_manifest(tmp_path, Manifest(class_names=["vehicle", "pedestrian", "cyclist"], sensors={}, shards=[info]))
    return info


def _assert_frames_equal(a, b, images=True):
    assert a.frame_id == b.frame_id and a.sequence == b.sequence and a.index == b.index
    assert a.timestamp_us == b.timestamp_us
    for k, v in a.points.__dict__.items():
        got = getattr(b.points, k)
        assert got.dtype == v.dtype, k
        np.testing.assert_array_equal(got, v, err_msg=k)
    for la, lb in zip(a.lidars, b.lidars):
        assert (la.laser_id, la.height, la.width) == (lb.laser_id, lb.height, lb.width)
        np.testing.assert_array_equal(la.extrinsic, lb.extrinsic)
        np.testing.assert_array_equal(la.inclinations, lb.inclinations)
    assert len(a.cameras) == len(b.cameras)
    for ca, cb in zip(a.cameras, b.cameras):
        assert (ca.camera_id, ca.width, ca.height) == (cb.camera_id, cb.width, cb.height)
        for k in ("intrinsic", "distortion", "extrinsic"):
            np.testing.assert_array_equal(getattr(ca, k), getattr(cb, k))
        if images:
            assert ca.image_bytes == cb.image_bytes
            np.testing.assert_array_equal(ca.image(), cb.image())
    for k in ("camera_id", "class_id", "xyxy", "object_id"):
        np.testing.assert_array_equal(getattr(a.boxes2d, k), getattr(b.boxes2d, k))
    assert a.gt.present() == b.gt.present()
    if a.gt.point_semantic is not None:
        np.testing.assert_array_equal(a.gt.point_semantic, b.gt.point_semantic)
        np.testing.assert_array_equal(a.gt.point_instance, b.gt.point_instance)
    if a.gt.masks is not None:
        for i in range(len(a.gt.masks)):
            np.testing.assert_array_equal(a.gt.masks.decode(i), b.gt.masks.decode(i))
        np.testing.assert_array_equal(a.gt.masks.object_id, b.gt.masks.object_id)
    if a.gt.boxes3d is not None:
        for k in ("object_id", "class_id", "center", "size", "heading"):
            np.testing.assert_array_equal(getattr(a.gt.boxes3d, k), getattr(b.gt.boxes3d, k))


def test_frames_round_trip_with_and_without_ground_truth(tmp_path, toy):
    frames = [toy(0), toy(1, gt=False), toy(2, n=1)]
    _write(tmp_path, frames)
    ds = open_dataset(tmp_path)
    assert len(ds) == 3 and ds.frame_ids == [f.frame_id for f in frames]
    for f in frames:
        _assert_frames_equal(f, ds.frame(f.frame_id))
    assert ds.frame("toy-000001").gt.present() == []
    assert [f.frame_id for f in ds.shard("seq0")] == ds.frame_ids


def test_frames_without_images_are_not_decoded(tmp_path, toy):
    _write(tmp_path, [toy(0)])
    f = open_dataset(tmp_path).frame("toy-000000", images=False)
    assert all(c.image_bytes is None for c in f.cameras)
    with pytest.raises(ValueError, match="not loaded"):
        f.cameras[0].image()
    _assert_frames_equal(toy(0), f, images=False)


def test_range_image_rebuild(toy):
    f = toy(0)
    ri = f.range_image()
    assert ri.shape == (2, 8, 64)
    # the last point written to a pixel wins; every point's pixel holds some point's range
    np.testing.assert_array_equal(ri[f.points.return_index, f.points.row, f.points.col] > 0, True)


def test_identical_input_gives_identical_bytes(tmp_path, toy):
    a = write_frame_shard(tmp_path / "a", "s", [toy(0), toy(1)])
    b = write_frame_shard(tmp_path / "b", "s", [toy(0), toy(1)])
    assert a.sha256 == b.sha256 and a.bytes == b.bytes


def test_truncated_shard_names_file_and_problem(tmp_path, toy):
    info = _write(tmp_path, [toy(0), toy(1)])
    path = tmp_path / info.path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"seq0\.parquet: truncated"):
        open_dataset(tmp_path).frame("toy-000000")


def test_corrupt_shard_of_right_size_is_caught(tmp_path, toy):
    info = _write(tmp_path, [toy(0)])
    path = tmp_path / info.path
    data = bytearray(path.read_bytes())
    data[-6:-4] = b"XX"  # clobber the footer length / magic
    path.write_bytes(bytes(data))
    # the checksum on read catches it before Parquet would (same message for any damaged byte)
    with pytest.raises(ShardError, match=r"seq0\.parquet: checksum mismatch.*restore it"):
        open_dataset(tmp_path).frame("toy-000000")


def test_checksum_mismatch_detected_by_verify(tmp_path, toy):
    info = _write(tmp_path, [toy(0)])
    path = tmp_path / info.path
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, valid footer, different content
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="checksum mismatch"):
        open_dataset(tmp_path).verify()


def test_missing_shard_and_bad_manifest(tmp_path, toy):
    info = _write(tmp_path, [toy(0)])
    os.unlink(tmp_path / info.path)
    with pytest.raises(ShardError, match="missing"):
        open_dataset(tmp_path).frame("toy-000000")
    with pytest.raises(KeyError, match="no frame 'nope'"):
        open_dataset(tmp_path).frame("nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: corrupt JSON"):
        open_dataset(tmp_path)
    d = Manifest(class_names=[], sensors={}).to_dict()
    d["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(StoreError, match="schema_version"):
        open_dataset(tmp_path)
    with pytest.raises(StoreError, match="missing; is"):
        open_dataset(tmp_path / "nothing")


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, toy):
    info = _write(tmp_path, [toy(0)])
    before = (tmp_path / info.path).read_bytes()

    def frames():
        yield toy(0)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_frame_shard(tmp_path, "seq0", frames())
    assert (tmp_path / info.path).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["seq0.parquet"]


def test_unwritable_output_is_a_clear_error(tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    (target / "blocker").write_text("a file where a directory should be")
    with pytest.raises(StoreError, match="cannot write"):
        with atomic_path(target / "blocker" / "x.parquet") as tmp:
            tmp.write_bytes(b"x")


def test_bad_frames_are_rejected_before_anything_is_written(tmp_path, toy):
    bad = toy(1)
    bad.points.xyz[3, 1] = np.nan
    with pytest.raises(FrameError, match=r"frame toy-000001: points\.xyz: 1 points with non-finite values"):
        write_frame_shard(tmp_path, "seq0", [toy(0), bad])
    assert not (tmp_path / "frames" / "seq0.parquet").exists()


@pytest.mark.parametrize("breakage, match", [
    (lambda f: setattr(f.points, "intensity", f.points.intensity[:-1]), r"points\.intensity: shape \(499,\)"),
    (lambda f: setattr(f.points, "elongation", None), r"points\.elongation: missing"),  # only a reader may omit it
    (lambda f: f.boxes2d.xyxy.__setitem__(0, [40, 2, 60, 12]), r"boxes2d\.xyxy: box 0 .* outside camera 1"),
    (lambda f: f.boxes2d.xyxy.__setitem__(0, [5, 2, 5, 12]), "x2 <= x1"),
    (lambda f: f.boxes2d.camera_id.__setitem__(0, 4), r"boxes2d\.camera_id: boxes on camera 4"),
    (lambda f: f.points.cam_id.__setitem__((0, 0), 5), r"points\.cam_id: projections into cameras \[5\]"),
    (lambda f: f.boxes2d.object_id.__setitem__(1, 7), "same object id appears twice"),
    (lambda f: setattr(f.gt, "point_instance", f.gt.point_instance[:-1]), r"gt\.point_instance: 499 labels for 500"),
    (lambda f: f.points.row.__setitem__(0, 8), r"points\.row: rows outside \[0, 8\)"),
])
def test_validation_names_frame_and_field(toy, breakage, match):
    from mwsis.data.validate import validate_frame

    f = toy(3)
    breakage(f)
    with pytest.raises(FrameError, match=match) as e:
        validate_frame(f)
    assert e.value.frame_id == "toy-000003"


def test_empty_frame_is_rejected(toy):
    from mwsis.data.validate import validate_frame

    f = toy(0)
    f.points = f.points.select(np.zeros(len(f.points), bool))
    with pytest.raises(FrameError, match="no LiDAR points"):
        validate_frame(f)
