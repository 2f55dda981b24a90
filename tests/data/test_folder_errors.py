"""One bad-input test per field of the sensor-folder layout: each error names the file, the field and, where
there is one, the frame (data/folder/layout.py, points.py, build.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from mwsis.data.folder import FolderFormatError, FolderSource
from mwsis.data.synthetic import make_frame, preset
from mwsis.data.synthetic.export_folder import export_folder

FID = "synth-s4-0000-000000"
LOG = "synth-s4-0000"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    src = tmp_path_factory.mktemp("folder") / "src"
    export_folder([make_frame(preset("tiny"), seed=4, sequence=0, index=0)], src, "npy")
    return src


@pytest.fixture
def src(exported, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(exported, dst)
    return dst


def _read_all(root):
    source = FolderSource(root)
    return [f for log in source.logs() for f, _ in source.frames(log)]


def _edit_yaml(path, fn):
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc))


def _edit_index(src, fn):
    path = src / "logs" / LOG / "frames.jsonl"
    entry = json.loads(path.read_text())
    fn(entry)
    path.write_text(json.dumps(entry) + "\n")
    return path


def _fails(root, *parts):
    with pytest.raises(FolderFormatError) as e:
        _read_all(root)
    for part in parts:
        assert str(part) in str(e.value), str(e.value)
    return str(e.value)


def test_the_untouched_export_reads(src):
    assert [f.frame_id for f in _read_all(src)] == [FID]


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d.update(format_version=2), "format_version", "this mwsis reads version 1"),
    (lambda d: d.update(point=d.pop("points")), "point", "unknown key"),
    (lambda d: d["points"].update(columns=["x", "y", "height"]), "points.columns", "x y z required"),
    (lambda d: d["points"].update(colums=["x"]), "points.colums", "unknown key"),
    (lambda d: d["points"].update(frame="world"), "points.frame", "is not one of lidar, vehicle"),
    (lambda d: d["points"].update(beams=0), "points.beams", "an integer from 1 to 512"),
    (lambda d: d["points"].update(azimuth_columns=4), "points.azimuth_columns", "from 8 to 32767"),
    (lambda d: d["points"].update(intensity_scale=-1), "points.intensity_scale", "a positive number"),
    (lambda d: d["points"].update(ring_order="left"), "points.ring_order", "top_first, bottom_first"),
    (lambda d: d["classes"].update(Car="truck"), "classes.Car", "one of vehicle, pedestrian, cyclist or ignore"),
])
def test_dataset_yaml_fields(src, edit, field, problem):
    _edit_yaml(src / "dataset.yaml", edit)
    _fails(src, src / "dataset.yaml", field, problem)


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d.pop("lidar"), "lidar", "missing"),
    (lambda d: d["lidar"]["vehicle_from_lidar"][0].__setitem__(0, 2.0), "lidar.vehicle_from_lidar", "not a rigid"),
    (lambda d: d["lidar"].update(vehicle_from_lidar=[[1, 0, 0]]), "lidar.vehicle_from_lidar", "finite 4x4"),
    (lambda d: d["lidar"].update(inclinations_deg=[1.0, 2.0]), "lidar.inclinations_deg", "strictly decreasing"),
    (lambda d: d["cameras"].update(wide=d["cameras"].pop("FRONT")), "cameras.wide.id", "give it an id"),
    (lambda d: d["cameras"]["FRONT"].update(id=d["cameras"]["FRONT_LEFT"].get("id", 2)), "cameras.FRONT_LEFT.id",
     "used by another camera"),
    (lambda d: d["cameras"]["FRONT"].update(fx=0), "cameras.FRONT.fx", "must be positive"),
    (lambda d: d["cameras"]["FRONT"].pop("cy"), "cameras.FRONT.cy", "missing"),
    (lambda d: d["cameras"]["FRONT"].update(width="wide"), "cameras.FRONT.width", "expected int"),
    (lambda d: d["cameras"]["FRONT"].update(distortion=[0.1]), "cameras.FRONT.distortion", "finite 5"),
    (lambda d: d["cameras"]["FRONT"].update(axes="ros"), "cameras.FRONT.axes", "opencv, waymo"),
])
def test_calibration_fields(src, edit, field, problem):
    _edit_yaml(src / "calib" / f"{LOG}.yaml", edit)
    _fails(src, src / "calib" / f"{LOG}.yaml", field, problem)


def test_missing_calibration_file(src):
    _edit_index(src, lambda e: e.update(calib="van-7"))
    _fails(src, src / "calib" / "van-7.yaml", "missing")


@pytest.mark.parametrize("edit, field, problem", [
    (lambda e: e.pop("lidar"), "lidar", "missing"),
    (lambda e: e.update(timestamp_us="noon"), "timestamp_us", "expected int"),
    (lambda e: e.update(cameras=["FRONT"]), "cameras", "expected {camera name: image path}"),
    (lambda e: e["cameras"].update(REAR="cameras/FRONT/x.png"), "cameras.REAR", "not in calibration"),
    (lambda e: e.update(gt={"semantic": e["gt"]["semantic"]}), "gt", "give both semantic and instance"),
    (lambda e: e.update(gt=["gt/semantic/x.npy"]), "gt", "expected {"),
])
def test_index_fields(src, edit, field, problem):
    path = _edit_index(src, edit)
    _fails(src, path, field, problem)


def test_index_lines(src):
    path = src / "logs" / LOG / "frames.jsonl"
    line = path.read_text().strip()
    path.write_text(line + "\n{oops\n")
    _fails(src, f"{path} line 2", "not a JSON object")
    path.write_text(line + "\n" + line + "\n")
    _fails(src, f"{path} line 2", f"frame {FID}", "frame_id", "appears twice")
    path.write_text("")
    _fails(src, path, "no frames")


def _lidar(src):
    return src / "logs" / LOG / "lidar" / f"{FID}.npy"


def test_point_file_fields(src):
    a = np.load(_lidar(src))
    for damage, parts in [
        (lambda: _lidar(src).write_bytes(b"\x93NUMPY garbage"), ["not a readable .npy"]),
        (lambda: np.save(_lidar(src), a[["y", "z", "intensity"]]), ["x: missing point field"]),
        (lambda: np.save(_lidar(src), np.ones((5, 3), np.float32)), ["points.columns", "(N, 7)"]),
        (lambda: np.save(_lidar(src), a[:0]), ["no points"]),
    ]:
        damage()
        _fails(src, _lidar(src), f"frame {FID}", *parts)
    b = a.copy()
    b["z"][7] = np.nan
    np.save(_lidar(src), b)
    _fails(src, _lidar(src), f"frame {FID}", "z: 1 non-finite values (first: point 7)")
    b = a.copy()
    b["ring"][3] = 40
    np.save(_lidar(src), b)
    _fails(src, "frames.jsonl line 1", f"frame {FID}", "lidar", "ring: value 40 but the sensor has 16 beams")
    b = a.copy()
    b["return"][3] = 2
    np.save(_lidar(src), b)
    _fails(src, f"frame {FID}", "return", "0 (first return) or 1")


@pytest.mark.parametrize("suffix, payload, problem", [
    (".bin", b"\0" * 30, "30 bytes is not a multiple of 28"),
    (".pcd", b"VERSION 0.7\nFIELDS x y\nDATA ascii\n1 2\n", "not a readable PCD file"),
    (".las", b"LASF" + b"\0" * 40, "not a readable LAS/LAZ file"),
    (".ply", b"ply\n", "unknown point file type '.ply'"),
])
def test_point_file_types(src, suffix, payload, problem):
    rel = f"lidar/{FID}{suffix}"
    (src / "logs" / LOG / rel).write_bytes(payload)
    _edit_index(src, lambda e: e.update(lidar=rel))
    _fails(src, src / "logs" / LOG / rel, f"frame {FID}", problem)


def test_missing_point_file(src):
    _lidar(src).unlink()
    _fails(src, _lidar(src), "lidar: missing")


def test_image_fields(src):
    img = src / "logs" / LOG / "cameras" / "FRONT" / f"{FID}.png"
    good = img.read_bytes()
    img.write_bytes(b"not a png")
    _fails(src, img, f"frame {FID}", "cameras.FRONT", "not a readable image")
    from PIL import Image

    Image.new("RGB", (7, 5)).save(img)
    _fails(src, img, "cameras.FRONT", "image is 7x5 but the calibration says")
    img.write_bytes(good)
    img.unlink()
    _fails(src, img, "cameras.FRONT: missing")


@pytest.mark.parametrize("edit, field, problem", [
    (lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "annotations[0].bbox", "w, h > 0"),
    (lambda d: d["annotations"][0].update(image_id=99), "annotations[0].image_id", "99 is not in images"),
    (lambda d: d["annotations"][0].update(category_id=42), "annotations[0].category_id", "42 is not in categories"),
    (lambda d: d["annotations"][0].update(track_id=-1), "annotations[0].track_id", "a positive integer object id"),
    (lambda d: d["categories"].append({"id": 50, "name": "Bus"}), "categories[4].name", "nor mapped in dataset.yaml"),
    (lambda d: d["images"][0].pop("frame_id"), "images[0].frame_id", "missing"),
    (lambda d: d["images"][0].update(frame_id="elsewhere"), "images.frame_id", "not in frames.jsonl"),
])
def test_box_file_fields(src, edit, field, problem):
    path = src / "logs" / LOG / "boxes2d" / "FRONT.json"
    doc = json.loads(path.read_text())
    assert doc["annotations"], "the fixture frame must have a FRONT box"
    edit(doc)
    path.write_text(json.dumps(doc))
    _fails(src, path, field, problem)


def test_ignored_categories_give_no_box(src):
    path = src / "logs" / LOG / "boxes2d" / "FRONT.json"
    doc = json.loads(path.read_text())
    n = len(doc["annotations"])
    doc["annotations"][0]["category_id"] = 9  # Tram: 'ignore' in the export's dataset.yaml
    path.write_text(json.dumps(doc))
    (frame,) = _read_all(src)
    assert len(frame.boxes2d.of_camera(1)) == n - 1


def test_ground_truth_fields(src):
    sem = src / "logs" / LOG / "gt" / "semantic" / f"{FID}.npy"
    a = np.load(sem)
    np.save(sem, a[:-1])
    _fails(src, sem, f"frame {FID}", "gt.semantic", f"expected ({len(a)},) integers")
    b = a.copy()
    b[0] = 9
    np.save(sem, b)
    _fails(src, sem, "semantic", "values outside -1..3")
    np.save(sem, a.astype(np.float32))
    _fails(src, sem, "gt.semantic", "float32 array")
