"""``mwsis convert waymo-v1``: TFRecord round trips (same frames as native and as the v2 path), the
minimal proto's field numbers, unknown fields, damaged files (truncated, bad CRCs) and the CLI."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from test_waymo_shared import assert_identical_frames, assert_same_frame, tiny_frames, with_front_lidar

from mwsis.data.store import open_dataset
from mwsis.data.synthetic.export_waymo import export_waymo_v1, export_waymo_v2
from mwsis.data.waymo.tfrecord import count_records, encode_record, iter_records
from mwsis.data.waymo.v1_proto import MESSAGES, messages
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.convert.waymo import convert_waymo_v1, convert_waymo_v2

YAW = 147.9


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    out = tmp_path_factory.mktemp("waymo_v1") / "src"
    export_waymo_v1(tiny_frames().items(), out, lidar_yaw_deg=YAW)
    return out


def _file(src, seg):
    return src / f"segment-{seg}_with_camera_labels.tfrecord"


def test_round_trip_matches_native_and_the_v2_path(src, tmp_path):
    r = convert_waymo_v1(src, tmp_path / "v1", show_progress=False)
    assert not r.failed and sorted(r.written) == sorted(tiny_frames())
    export_waymo_v2(tiny_frames().items(), tmp_path / "v2src", lidar_yaw_deg=YAW)
    assert not convert_waymo_v2(tmp_path / "v2src", tmp_path / "v2", show_progress=False).failed
    d1, d2 = open_dataset(tmp_path / "v1"), open_dataset(tmp_path / "v2")
    for frames in tiny_frames().values():
        for f in frames:
            a = d1.frame(f.frame_id)
            assert_same_frame(a, f, lidar_yaw_deg=YAW)
            assert_identical_frames(a, d2.frame(f.frame_id))


def test_all_lidars_uniform_inclinations_and_jpeg(tmp_path):
    seg = sorted(tiny_frames())[0]
    frame = with_front_lidar(tiny_frames()[seg][0])
    export_waymo_v1([(seg, [frame])], tmp_path / "src", jpeg_quality=95)
    assert not convert_waymo_v1(tmp_path / "src", tmp_path / "all", lidars="all", show_progress=False).failed
    conv = next(open_dataset(tmp_path / "all").iter_frames())
    assert_same_frame(conv, frame, image_bytes=False)
    assert [l.laser_id for l in conv.lidars] == [1, 2] and conv.cameras[0].image_format == "jpeg"


# data_formats.md C.3, written out here independently of v1_proto.MESSAGES
PINNED = {
    ("Frame", "context"): 1, ("Frame", "timestamp_micros"): 2, ("Frame", "pose"): 3, ("Frame", "images"): 4,
    ("Frame", "lasers"): 5, ("Frame", "laser_labels"): 6, ("Frame", "camera_labels"): 8,
    ("Context", "name"): 1, ("Context", "camera_calibrations"): 2, ("Context", "laser_calibrations"): 3,
    ("CameraCalibration", "intrinsic"): 2, ("CameraCalibration", "extrinsic"): 3, ("CameraCalibration", "width"): 4,
    ("CameraCalibration", "height"): 5, ("CameraCalibration", "rolling_shutter_direction"): 6,
    ("LaserCalibration", "beam_inclinations"): 2, ("LaserCalibration", "beam_inclination_min"): 3,
    ("LaserCalibration", "beam_inclination_max"): 4, ("LaserCalibration", "extrinsic"): 5,
    ("Transform", "transform"): 1, ("CameraImage", "name"): 1, ("CameraImage", "image"): 2,
    ("CameraImage", "pose"): 3, ("CameraImage", "camera_segmentation_label"): 10,
    ("CameraSegmentationLabel", "panoptic_label_divisor"): 1, ("CameraSegmentationLabel", "panoptic_label"): 2,
    ("CameraSegmentationLabel", "instance_id_to_global_id_mapping"): 3,
    ("InstanceIdToGlobalIdMapping", "local_instance_id"): 1, ("InstanceIdToGlobalIdMapping", "global_instance_id"): 2,
    ("Laser", "name"): 1, ("Laser", "ri_return1"): 2, ("Laser", "ri_return2"): 3,
    ("RangeImage", "range_image_compressed"): 2, ("RangeImage", "camera_projection_compressed"): 3,
    ("RangeImage", "range_image_pose_compressed"): 4, ("RangeImage", "segmentation_label_compressed"): 6,
    ("MatrixFloat", "data"): 1, ("MatrixFloat", "shape"): 2, ("MatrixInt32", "data"): 1, ("MatrixShape", "dims"): 1,
    ("CameraLabels", "name"): 1, ("CameraLabels", "labels"): 2, ("Label", "box"): 1, ("Label", "type"): 3,
    ("Label", "id"): 4, ("LabelBox", "center_x"): 1, ("LabelBox", "center_y"): 2, ("LabelBox", "center_z"): 3,
    ("LabelBox", "width"): 4, ("LabelBox", "length"): 5, ("LabelBox", "height"): 6, ("LabelBox", "heading"): 7,
}


def test_minimal_proto_uses_the_real_field_numbers():
    declared = {(m, name): number for m, fields in MESSAGES.items() for name, number, _, _ in fields}
    assert {k: declared.get(k) for k in PINNED} == PINNED
    M = messages()
    box = M.LabelBox(width=1.0, length=2.0).SerializeToString()
    assert box[0] == (4 << 3 | 1) and box[9] == (5 << 3 | 1)  # width is field 4, length field 5 (doubles)
    # unknown fields of a real Frame (no_label_zones = 7, map_pose_offset = 11) are skipped
    payload = M.Frame(timestamp_micros=7).SerializeToString() + bytes([7 << 3 | 2, 2, 1, 2, 11 << 3 | 2, 0])
    assert M.Frame.FromString(payload).timestamp_micros == 7


def test_damaged_files_fail_with_file_and_offset_others_convert(src, tmp_path):
    seg0, seg1 = sorted(tiny_frames())
    d = tmp_path / "src"
    d.mkdir()
    good = _file(src, seg1)
    offsets = [o for o, _ in iter_records(good)]
    assert len(offsets) == 2 and count_records(good) == 2
    data = good.read_bytes()
    files = {name: d / f"segment-{name}_with_camera_labels.tfrecord" for name in ("good", "trunc", "crc", "len")}
    shutil.copy(good, files["good"])
    files["trunc"].write_bytes(data[: offsets[1] + 1000])  # second record cut short
    bad = bytearray(data)
    bad[offsets[1] + 12 + 100] ^= 0xFF  # a payload byte of the second record
    files["crc"].write_bytes(bytes(bad))
    bad = bytearray(data)
    bad[offsets[1] + 3] ^= 0x01  # the second record's length: its header CRC no longer matches
    files["len"].write_bytes(bytes(bad))
    r = convert_waymo_v1(d, tmp_path / "out", show_progress=False)
    assert r.written == ["good"] and sorted(r.failed) == ["crc", "len", "trunc"]
    for name, problem in (("trunc", "truncated record"), ("crc", "data CRC mismatch"), ("len", "length CRC mismatch")):
        assert f"{files[name].resolve()}: record at byte offset {offsets[1]}: {problem}" in r.failed[name], name
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == 2 and ds.manifest.source["failed"] == r.failed


def test_a_record_that_is_not_a_frame_names_file_and_offset(tmp_path):
    path = tmp_path / "segment-junk_with_camera_labels.tfrecord"
    path.write_bytes(encode_record(b"\xff\xff\xff"))
    r = convert_waymo_v1(path, tmp_path / "out", show_progress=False)
    assert f"{path.resolve()}: record at byte offset 0 (frame 0): DecodeError" in r.failed["junk"]


def test_cli_converts_and_resumes(src, tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    args = ["convert", "waymo-v1", str(src), str(out), "--no-progress"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0 and "4 frames in 2 shards (2 written, 0 already done, 0 failed)" in r.output, r.output
    first = sorted((out / "frames").glob("*.parquet"))[0]
    mtime = first.stat().st_mtime_ns
    sorted((out / "frames").glob("*.parquet"))[1].unlink()
    r = runner.invoke(main, args)
    assert r.exit_code == 0 and "(1 written, 1 already done, 0 failed)" in r.output, r.output
    assert first.stat().st_mtime_ns == mtime
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(_file(src, sorted(tiny_frames())[0]), d)
    (d / "segment-broken_with_camera_labels.tfrecord").write_bytes(b"\x01\x02")
    r = runner.invoke(main, ["convert", "waymo-v1", str(d), str(tmp_path / "o2"), "--no-progress"])
    assert r.exit_code == 1 and "1 segments failed" in r.output and "truncated header" in r.output


def test_synth_export_helpers_write_what_the_converters_read(tmp_path):
    from mwsis.pipelines.convert.waymo import synth_export_waymo_v1, synth_export_waymo_v2

    paths = synth_export_waymo_v1(tmp_path / "v1", "tiny", frames=1, seed=0, frames_per_sequence=1)
    assert [p.name for p in paths] == ["segment-synth-s0-0000_with_camera_labels.tfrecord"]
    assert synth_export_waymo_v2(tmp_path / "v2", "tiny", frames=1, seed=0, frames_per_sequence=1) == ["synth-s0-0000"]
    native = tiny_frames()["synth-s0-0000"][0]
    for fmt, convert in (("v1", convert_waymo_v1), ("v2", convert_waymo_v2)):
        assert not convert(tmp_path / fmt, tmp_path / f"out_{fmt}", show_progress=False).failed
        assert_same_frame(next(open_dataset(tmp_path / f"out_{fmt}").iter_frames()), native)
