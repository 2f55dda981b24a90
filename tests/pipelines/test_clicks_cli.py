"""`mwsis clicks`: derived click sets, a COCO-style import (the documented example's format), `mwsis info`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from mwsis.data.click_store import ClickShard
from mwsis.data.store import open_dataset
from mwsis.pipelines.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "clicks.coco.json"


def test_derive_import_and_info(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    runner = CliRunner()
    for how in ("box-centre", "mask-centre", "mask-random"):
        r = runner.invoke(main, ["clicks", "--data", str(root), "--from", how, "--seed", "3", "--no-progress"])
        assert r.exit_code == 0, r.output
    ds = open_dataset(root)
    name = ds.manifest.shards[0].name
    fid, clicks = ClickShard(ds, "mask-random-s3", name).clicks(0)
    frame = ds.frame(fid, images=False)
    by_obj = {(int(c), int(o)): k for k, (c, o) in enumerate(zip(frame.gt.masks.camera_id, frame.gt.masks.object_id))}
    assert len(clicks) > 0
    for c, o, (u, v) in zip(clicks.camera_id, clicks.object_id, clicks.uv):  # inside the object's true mask
        assert frame.gt.masks.decode(by_obj[(int(c), int(o))])[int(v), int(u)]

    # a COCO-style file in the documented example's format, for this dataset's first frame
    doc = json.loads(EXAMPLE.read_text())
    cam = ds.manifest.sensors["cameras"][0]
    doc["images"][0].update(frame_id=fid, camera_id=cam["camera_id"], width=cam["width"], height=cam["height"])
    doc["annotations"][0]["keypoints"] = [2.5, 3.5, 2]
    doc["annotations"][1]["keypoints"] = [4.0, 5.0, 0, 6.0, 7.0, 1]  # the first visible keypoint is the click
    path = tmp_path / "clicks.json"
    path.write_text(json.dumps(doc))
    r = runner.invoke(main, ["clicks", "--data", str(root), "--from", "coco", "--coco", str(path), "--no-progress"])
    assert r.exit_code == 0, r.output
    got_id, got = ClickShard(ds, "coco", name).clicks(0)
    assert got_id == fid and got.uv.tolist() == [[2.5, 3.5], [6.0, 7.0]] and got.object_id.tolist() == [3, 11]
    assert got.class_id.tolist() == [0, 1]

    r = runner.invoke(main, ["info", str(root), "--json"])
    sets = json.loads(r.output)["click_sets"]
    assert set(sets) == {"box-centre", "mask-centre", "mask-random-s3", "coco"} and sets["coco"] == 2
    assert "click sets" in runner.invoke(main, ["info", str(root)]).output

    # viz draws each click set on every camera
    out = tmp_path / "viz"
    r = runner.invoke(main, ["viz", "frame", str(root), fid, "--out", str(out)])
    assert r.exit_code == 0, r.output
    pics = sorted(p.name for p in out.glob(f"{fid}_clicks-*"))
    assert len(pics) == 4 * len(ds.manifest.sensors["cameras"])
    from mwsis.data import viz

    full = ds.frame(fid, images=True)
    box_clicks = ClickShard(ds, "box-centre", name).clicks(0)[1].of_camera(cam["camera_id"])
    plain = viz.camera_view(full, cam["camera_id"], masks=False).astype(int)
    drawn = viz.camera_view(full, cam["camera_id"], masks=False, clicks=box_clicks).astype(int)
    ys, xs = np.nonzero(np.abs(drawn - plain).sum(2))
    ys, xs = ys[ys > 16], xs[ys > 16]  # below the title line (it counts the clicks)
    assert len(ys) > 0 and len(box_clicks) > 0
    d = np.hypot(xs[:, None] - box_clicks.uv[None, :, 0], ys[:, None] - box_clicks.uv[None, :, 1]).min(1)
    assert d.max() <= 7.5  # every changed pixel belongs to a drawn click

    # bad input: named file, entry and field; nothing written
    doc["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(doc))
    r = runner.invoke(main, ["clicks", "--data", str(root), "--from", "coco", "--coco", str(path), "--source", "x"])
    assert r.exit_code != 0 and "annotations[0].category_id" in r.output and not (root / "clicks" / "x").exists()
    doc["annotations"][0].update(category_id=1, keypoints=[1e5, 1.0, 2])
    path.write_text(json.dumps(doc))
    r = runner.invoke(main, ["clicks", "--data", str(root), "--from", "coco", "--coco", str(path), "--source", "x"])
    assert r.exit_code != 0 and f"frame {fid}, field keypoints" in r.output and not (root / "clicks" / "x").exists()
    assert np.isfinite(got.uv).all()


def test_clicks3d_stage_beside_spg(tiny_dataset, tmp_path):
    from mwsis.data.label_store import LabelShard
    from mwsis.pipelines.labels.clicks import derive_clicks
    from mwsis.pipelines.labels.evaluate import evaluate_labels
    from mwsis.pipelines.labels.runner import run_stages

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    res = run_stages(root, ["clicks3d"], {"clicks3d": {"source": "mask-centre"}}, show_progress=False)
    failed = [r for r in res if r.status == "failed"]
    assert failed and all("click set 'mask-centre'" in r.error and "mwsis clicks" in r.error for r in failed)
    derive_clicks(root, "mask-centre", show_progress=False)
    res = run_stages(root, ["spg", "clicks3d"], {"clicks3d": {"source": "mask-centre"}}, show_progress=False)
    assert all(r.status == "done" for r in res if r.stage == "clicks3d")
    ds = open_dataset(root)
    lab = LabelShard(ds, "clicks3d", ds.manifest.shards[0].name)
    assert lab.metadata["inputs"]["clicks/mask-centre"]
    q = evaluate_labels(root, ["spg", "clicks3d"], show_progress=False)
    assert q["clicks3d"]["miou"] > 0.2 and q["clicks3d"]["per_class"]["vehicle"]["iou"] > 0.3
    # the same clicks again: up to date; other clicks in one shard: that shard is rewritten
    derive_clicks(root, "mask-centre", show_progress=False)
    res = run_stages(root, ["clicks3d"], {"clicks3d": {"source": "mask-centre"}}, show_progress=False)
    assert all(r.status == "skipped" for r in res if r.stage == "clicks3d")
    from mwsis.data.click_store import write_click_shard
    from mwsis.data.frame import Clicks2D

    name = ds.manifest.shards[0].name
    ids = [f.frame_id for f in ds.shard(0).iter_frames(images=False)]
    write_click_shard(root, "mask-centre", name, [(f, Clicks2D.empty()) for f in ids], {})
    res = run_stages(root, ["clicks3d"], {"clicks3d": {"source": "mask-centre"}}, show_progress=False)
    assert [r.shard for r in res if r.stage == "clicks3d" and r.status == "done"] == [name]
    assert not (LabelShard(open_dataset(root), "clicks3d", name).labels(0).instance > 0).any()


def test_sam_stage_with_click_prompts(tiny_dataset, tmp_path):
    """The SAM stage prompts with clicks alone (masks and instances per click) or with boxes and clicks;
    box prompts record the same config as before clicks existed."""
    from mwsis.data.label_store import LabelShard
    from mwsis.pipelines.labels.clicks import derive_clicks
    from mwsis.pipelines.labels.runner import run_stages

    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    derive_clicks(root, "mask-centre", show_progress=False)
    ds = open_dataset(root)
    name = ds.manifest.shards[0].name
    for prompts in ("clicks", "boxes+clicks", "boxes"):
        cfg = {"sam": {"checkpoint": "tiny", "prompts": prompts, "clicks": "mask-centre"}}
        res = run_stages(root, ["sam"], cfg, show_progress=False, force=True)
        assert all(r.status == "done" for r in res), [r.error for r in res]
        shard = LabelShard(ds, "sam", name)
        lab = shard.labels(0)
        clicks = ClickShard(ds, "mask-centre", name).clicks(0)[1]
        n_prompts = len(clicks) if prompts == "clicks" else len(ds.frame(lab.frame_id, images=False).boxes2d)
        assert len(lab.masks2d.rles) == n_prompts
        recorded = shard.metadata["config"]["sam"]
        assert ("prompts" in recorded) == (prompts != "boxes")
        assert ("clicks/mask-centre" in shard.metadata["inputs"]) == (prompts != "boxes")
        if prompts == "clicks":
            assert lab.instance.max(initial=0) <= len(clicks)
            assert (lab.masks2d.class_id == clicks.class_id[lab.masks2d.box_index]).all()
