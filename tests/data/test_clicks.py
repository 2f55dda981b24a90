"""Clicks (point supervision, issue 17): derived clicks fall inside their objects; the click store round-trips
and rejects bad clicks naming the file, frame and field."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mwsis.data.click_store import ClickShard, click_sources, write_click_shard
from mwsis.data.clicks import box_centre_clicks, mask_centre_clicks, random_mask_clicks
from mwsis.data.frame import Boxes2D, Clicks2D, Masks2D
from mwsis.data.store import ShardError, open_dataset


def _objects():
    """Two boxes of one camera with true masks: a ring (its centre is not the object) and a bar."""
    ring = np.zeros((60, 80), np.uint8)
    ring[10:50, 10:50] = 1
    ring[20:40, 20:40] = 0
    bar = np.zeros((60, 80), np.uint8)
    bar[5:55, 60:66] = 1
    rles = [mask_utils.encode(np.asfortranarray(m)) for m in (ring, bar)]
    boxes = Boxes2D(np.array([1, 1], np.int8), np.array([0, 1], np.int8),
                    np.array([[10, 10, 50, 50], [60, 5, 66, 55]], np.float32), np.array([7, 8], np.int64))
    masks = Masks2D(np.array([1, 1], np.int8), np.array([7, 8], np.int64), np.array([0, 1], np.int8), rles)
    return boxes, masks, (ring, bar)


def test_mask_clicks_always_fall_inside_their_objects_and_box_centres_may_not():
    boxes, masks, truth = _objects()
    rng = np.random.default_rng(0)
    for clicks in [mask_centre_clicks(boxes, masks)] + [random_mask_clicks(boxes, masks, rng) for _ in range(50)]:
        assert clicks.object_id.tolist() == [7, 8] and clicks.class_id.tolist() == [0, 1]
        for (u, v), m in zip(clicks.uv, truth):
            assert m[int(v), int(u)] == 1
    centre = box_centre_clicks(boxes)
    assert centre.uv.tolist() == [[30.0, 30.0], [63.0, 30.0]]
    assert truth[0][30, 30] == 0  # the ring's box centre misses the ring: what WISE's KITTI protocol risks
    # the distance-transform maximum lies deepest inside: the bar's middle column
    assert 62 <= mask_centre_clicks(boxes, masks).uv[1, 0] <= 64


def test_an_object_without_a_mask_gets_no_mask_click():
    boxes, masks, _ = _objects()
    one = Masks2D(masks.camera_id[:1], masks.object_id[:1], masks.class_id[:1], masks.rles[:1])
    assert mask_centre_clicks(boxes, one).object_id.tolist() == [7]


def test_click_shards_round_trip_and_bad_clicks_name_file_frame_and_field(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    ds = open_dataset(root)
    info = ds.manifest.shards[0]
    frames = list(ds.shard(0).iter_frames(images=False))
    rows = [(f.frame_id, box_centre_clicks(f.boxes2d)) for f in frames]
    write_click_shard(root, "box-centre", info.name, rows, {"derived_from": "box-centre"})
    assert click_sources(root) == ["box-centre"]
    shard = ClickShard(ds, "box-centre", info.name)
    assert shard.metadata["source"] == "box-centre" and len(shard) == len(frames)
    for (fid, c), (want_id, want) in zip(shard, rows):
        assert fid == want_id and np.allclose(c.uv, want.uv) and (c.object_id == want.object_id).all()
    with pytest.raises(ShardError, match="mismatched"):
        shard.clicks(0, frame_id="other")
    cam = int(ds.manifest.sensors["cameras"][0]["camera_id"])
    bad = Clicks2D(np.array([cam], np.int8), np.array([0], np.int8), np.array([[1e6, 3.0]], np.float32),
                   np.array([1], np.int64))
    write_click_shard(root, "bad", info.name, [(frames[0].frame_id, bad)], {})
    with pytest.raises(ShardError, match=rf"{frames[0].frame_id}, field clicks: click 0: \(u, v\)"):
        ClickShard(ds, "bad", info.name).clicks(0)
    with pytest.raises(ShardError, match="missing"):
        ClickShard(ds, "nothing", info.name)
