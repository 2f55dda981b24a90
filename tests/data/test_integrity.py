"""Issue 12: every input verified on read (checksums, manifest, frames from any writer)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mwsis.data.integrity import IntegrityError, check_file, read_stamp, sha256_file, stamp_path
from mwsis.data.label_store import label_shard_metadata, label_shard_path, read_frame_labels
from mwsis.data.store import StoreError, open_dataset, write_frame_shard, write_manifest
from mwsis.pipelines.cli.main import main
from mwsis.pipelines.labels.runner import run_stages


@pytest.fixture
def ds(tiny_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    return out


def _flip_middle(path, n=64):
    """Flip ``n`` bytes in the middle of a file, keeping its size."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bit_flip_in_a_frame_shard_fails_naming_it_and_labels_record_what_was_read(ds):
    d = open_dataset(ds)
    shard = ds / d.manifest.shards[0].path
    good = shard.read_bytes()
    _flip_middle(shard)
    r = _run("pseudolabels", "--data", ds, "--stages", "spg", "--no-eval")
    assert r.exit_code == 1 and f"{shard}: checksum mismatch" in r.output and "restore it" in r.output
    assert not label_shard_path(ds, "spg", d.manifest.shards[0].name).exists()  # nothing made from bad bytes
    r = _run("stage", "ccl", "--data", ds, "--force")
    assert r.exit_code == 1 and f"{shard}: checksum mismatch" in r.output
    shard.write_bytes(good)
    r = _run("stage", "spg", "--data", ds)  # dependencies first
    assert r.exit_code == 1 and "needs stage" in r.output
    assert _run("pseudolabels", "--data", ds, "--stages", "spg", "--no-eval").exit_code == 0
    # the labels record the hash of the bytes they were made from: the restored, manifest-listed file
    assert label_shard_metadata(ds, "spg", d.manifest.shards[0].name)["inputs"]["frames"] == sha256_file(shard)


def test_stage_on_a_truncated_or_deleted_frame_shard_is_not_up_to_date(ds):
    assert run_stages(ds, ["spg"], show_progress=False)
    d = open_dataset(ds)
    shard = ds / d.manifest.shards[1].path
    shard.write_bytes(shard.read_bytes()[:-10])
    r = _run("stage", "spg", "--data", ds)
    assert r.exit_code == 1 and "up to date" not in r.output.split("\n")[-2]
    assert f"FAILED spg/{d.manifest.shards[1].name}: {shard}: checksum mismatch" in r.output
    shard.unlink()
    r = _run("stage", "spg", "--data", ds)
    assert r.exit_code == 1 and f"{shard}: missing" in r.output
    assert "1 shards written, 1 up to date" not in r.output and "0 shards written, 1 up to date" in r.output


def test_frame_shard_with_bytes_flipped_and_mtime_restored_is_caught_by_verify_and_readers(ds):
    assert run_stages(ds, ["ccl"], show_progress=False)
    d = open_dataset(ds)
    shard = ds / d.manifest.shards[0].path
    st = shard.stat()
    _flip_middle(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # a tool that hides its edit
    assert _run("stage", "ccl", "--data", ds).exit_code == 0  # the cheap guard trusts size and mtime ...
    r = _run("stage", "ccl", "--data", ds, "--verify")  # ... --verify hashes every byte
    assert r.exit_code == 1 and f"{shard}: checksum mismatch" in r.output
    with pytest.raises(IntegrityError, match="checksum mismatch"):  # and every reader does, once per process
        open_dataset(ds).frame(d.manifest.shards[0].frame_ids[0])


def test_label_shard_with_flipped_bytes_is_rewritten_and_readers_say_how_to_repair(ds):
    assert run_stages(ds, ["ccl"], show_progress=False)
    d = open_dataset(ds)
    name = d.manifest.shards[0].name
    path = label_shard_path(ds, "ccl", name)
    good = path.read_bytes()
    _flip_middle(path, 16)
    with pytest.raises(IntegrityError, match=rf"ccl/{name}\.parquet: checksum mismatch.*rerun `mwsis stage ccl"):
        read_frame_labels(d, "ccl", d.manifest.shards[0].frame_ids[0])
    r = _run("eval-labels", "--data", ds, "--stages", "ccl", "--no-variants")
    assert r.exit_code == 1 and "checksum mismatch" in r.output and "Traceback" not in r.output
    r = _run("stage", "ccl", "--data", ds)
    assert r.exit_code == 0 and "1 shards written, 1 up to date" in r.output
    assert path.read_bytes() == good  # rewritten, byte-identical


def test_label_shard_without_its_stamp_is_not_current_and_not_readable(ds):
    assert run_stages(ds, ["ccl"], show_progress=False)
    d = open_dataset(ds)
    path = label_shard_path(ds, "ccl", d.manifest.shards[0].name)
    assert read_stamp(path)["sha256"] == check_file(path, verify=True)
    stamp_path(path).unlink()
    with pytest.raises(IntegrityError, match="no checksum record"):
        read_frame_labels(d, "ccl", d.manifest.shards[0].frame_ids[0])
    assert _run("stage", "ccl", "--data", ds).output.count("1 shards written") == 1


def _manifest(ds):
    return json.loads((ds / "manifest.json").read_text())


def _write(ds, m):
    (ds / "manifest.json").write_text(json.dumps(m))


def test_manifest_with_a_shard_listed_twice_or_a_frame_in_two_shards_is_rejected(ds):
    m = _manifest(ds)
    _write(ds, {**m, "shards": m["shards"] + [m["shards"][0]]})
    r = _run("info", ds)
    assert r.exit_code == 1 and "shards[0] and shards[2] have the same name" in r.output
    dup = dict(m["shards"][1], frame_ids=[m["shards"][0]["frame_ids"][0], m["shards"][1]["frame_ids"][1]])
    _write(ds, {**m, "shards": [m["shards"][0], dup]})
    r = _run("info", ds, "--verify")
    assert r.exit_code == 1 and f"frame id {m['shards'][0]['frame_ids'][0]!r} appears in shards" in r.output


@pytest.mark.parametrize("field,value,expect", [
    ("sha256", None, "shards[1] ('{name}'): field 'sha256' is missing, expected str"),
    ("frames", "2", "shards[1] ('{name}'): field 'frames' is str, expected int"),
    ("frames", 3, "shards[1] ('{name}'): field 'frames' is 3, but 'frame_ids' lists 2"),
])
def test_manifest_entry_with_a_missing_or_ill_typed_field_is_named(ds, field, value, expect):
    m = _manifest(ds)
    entry = dict(m["shards"][1])
    if value is None:
        del entry[field]
    else:
        entry[field] = value
    _write(ds, {**m, "shards": [m["shards"][0], entry]})
    with pytest.raises(StoreError, match="manifest.json: " + expect.format(name=entry["name"]).replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        open_dataset(ds)


def _foreign(ds, edit):
    """Rewrite shard 0 as another tool would (no validation on write), with ``edit`` applied to frame 0."""
    d = open_dataset(ds)
    frames = list(d.shard(0).iter_frames())
    edit(frames[0])
    info = write_frame_shard(ds, d.manifest.shards[0].name, frames, validate=False)
    m = d.manifest
    m.shards[0] = info
    write_manifest(ds, m)
    return frames[0].frame_id, ds / info.path


def _swap_x(f):
    f.boxes2d.xyxy[0, [0, 2]] = f.boxes2d.xyxy[0, [2, 0]]


def _outside(f):
    f.boxes2d.xyxy[0] = [5000, 5000, 5010, 5010]


def _repeat_id(f):
    f.boxes2d.camera_id[1] = f.boxes2d.camera_id[0]
    f.boxes2d.object_id[1] = f.boxes2d.object_id[0]


def _class7(f):
    f.boxes2d.class_id[0] = 7


@pytest.mark.parametrize("edit,field", [(_swap_x, "boxes2d.xyxy: boxes with x2 <= x1"),
                                        (_outside, "boxes2d.xyxy: box 0"),
                                        (_repeat_id, "boxes2d.object_id: the same object id appears twice"),
                                        (_class7, "boxes2d.class_id: class ids outside [0, 3)")])
def test_frames_from_another_writer_are_validated_on_read(ds, edit, field):
    fid, path = _foreign(ds, edit)
    r = _run("pseudolabels", "--data", ds, "--stages", "frustum", "--no-eval")
    assert r.exit_code == 1
    assert f"{path}: frame {fid}: {field}" in r.output
    assert not label_shard_path(ds, "frustum", path.stem).exists()


def test_unexpected_errors_are_one_line_unless_debug(ds, monkeypatch):
    import mwsis.pipelines.labels.evaluate as ev

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ev, "evaluate_labels", boom)
    r = _run("eval-labels", "--data", ds)
    assert r.exit_code == 1 and "Error: ZeroDivisionError: boom (rerun with `mwsis --debug" in r.output
    r = _run("--debug", "eval-labels", "--data", ds)
    assert isinstance(r.exception, ZeroDivisionError)


def test_checksum_guard_costs_a_stat_and_full_hash_when_the_file_changed(tmp_path):
    from mwsis.data.integrity import sealer
    from mwsis.data.store import atomic_path

    f = tmp_path / "x.parquet"
    with atomic_path(f, before_rename=sealer(f)) as tmp:
        tmp.write_bytes(b"abc" * 1000)
    digest = check_file(f)
    f.write_bytes(b"abd" * 1000)  # same size, new mtime
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        check_file(f)
    assert np.isscalar(digest) and len(digest) == 64
