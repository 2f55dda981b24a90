"""Shared fixtures: a hand-built toy frame (independent of the synthetic renderer) and a tiny dataset.

The tests mirror the packages (tests/data, tests/pseudolabel, tests/train2d, tests/train3d, tests/pipelines);
helpers shared across them (``_kill.py``, ``golden/``) sit here, on the import path of every test."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mwsis.data.frame import Boxes2D, Boxes3D, Camera, Frame, GroundTruth, Lidar, Masks2D, Points


def toy_frame(index: int = 0, n: int = 500, seed: int = 0, gt: bool = True) -> Frame:
    """A small frame with every field filled and random values (for store round trips)."""
    rng = np.random.default_rng(seed + index)
    h, w = 8, 64
    cam_id = rng.integers(0, 3, size=(n, 2)).astype(np.int8)
    cam_uv = np.where(cam_id[..., None] > 0, rng.uniform(0, 31, (n, 2, 2)), -1).astype(np.float32)
    points = Points(
        xyz=rng.normal(size=(n, 3)).astype(np.float32) * 10, intensity=rng.random(n, np.float32),
        elongation=rng.random(n, np.float32), range=rng.uniform(1, 50, n).astype(np.float32),
        return_index=rng.integers(0, 2, n).astype(np.int8), laser_id=np.ones(n, np.int8),
        row=rng.integers(0, h, n).astype(np.int16), col=rng.integers(0, w, n).astype(np.int16),
        nlz=rng.random(n) < 0.1, cam_id=cam_id, cam_uv=cam_uv)
    lidar = Lidar(1, h, w, np.eye(4), np.linspace(0.05, -0.3, h).astype(np.float32))
    cams = []
    for cid in (1, 2):
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        K = np.array([[20.0, 0, 16], [0, 20, 12], [0, 0, 1]])
        cams.append(Camera(cid, 32, 24, K, np.zeros(5), np.eye(4), buf.getvalue()))
    boxes = Boxes2D(np.array([1, 1, 2], np.int8), np.array([0, 1, 2], np.int8),
                    np.array([[1, 2, 10, 12], [12, 3, 20, 20], [0, 0, 32, 24]], np.float32),
                    np.array([7, 8, 7], np.int64))
    g = GroundTruth()
    if gt:
        m = np.zeros((24, 32), np.uint8, order="F")
        m[2:12, 1:10] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        g = GroundTruth(
            point_semantic=rng.integers(-1, 4, n).astype(np.int8),
            point_instance=rng.integers(0, 9, n).astype(np.int32),
            masks=Masks2D(np.array([1], np.int8), np.array([7], np.int64), np.array([0], np.int8), [rle]),
            boxes3d=Boxes3D(np.array([7, 8], np.int64), np.array([0, 1], np.int8),
                            np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), np.zeros(2, np.float32)))
    return Frame(f"toy-{index:06d}", "toy", index, index * 100_000, points, [lidar], cams, boxes, g)


@pytest.fixture
def toy():
    return toy_frame


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny synthetic dataset (2 sequences x 2 frames), made once per test session."""
    from mwsis.pipelines.convert.synth import synth_dataset

    out = tmp_path_factory.mktemp("tiny") / "ds"
    synth_dataset(out, "tiny", frames=4, seed=0, frames_per_sequence=2, workers=1, show_progress=False)
    return out


@pytest.fixture(scope="session")
def spg_reference(tmp_path_factory):
    """Uninterrupted runs on 4 one-frame shards: ``frames/`` only, and ``labels/`` = frames + spg labels
    (made in-process, stage by stage: the CLI's fused runs must write the same bytes). Crash, lock and disk
    tests compare against it."""
    import shutil

    from mwsis.pipelines.labels.runner import run_stages
    from mwsis.pipelines.convert.synth import synth_dataset

    base = tmp_path_factory.mktemp("ref")
    synth_dataset(base / "frames", "tiny", frames=4, seed=0, frames_per_sequence=1, show_progress=False)
    shutil.copytree(base / "frames", base / "labels")
    assert all(r.status == "done" for r in run_stages(base / "labels", ["spg"], show_progress=False, fused=False))
    return base


@pytest.fixture
def labelled(tiny_dataset, tmp_path):
    """A copy of ``tiny_dataset`` with spg labels, for the trainers."""
    import shutil

    from mwsis.pipelines.labels.runner import run_stages

    out = tmp_path / "ds"
    shutil.copytree(tiny_dataset, out)
    run_stages(out, ["spg"], show_progress=False)
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """numba starts its threads once, at the first parallel call, and raises in whichever later test compiles
    something if ``NUMBA_NUM_THREADS`` then differs: an in-process change (``monkeypatch.setenv``, an
    ``os.environ`` write) fails far from its cause. This check fails the test that made it instead; child
    processes get theirs through ``env=``."""
    import os

    before = os.environ.get("NUMBA_NUM_THREADS")
    result = yield
    after = os.environ.get("NUMBA_NUM_THREADS")
    assert after == before == item.session.config.stash.get(_NUMBA_ENV, before), (
        f"{item.nodeid} set NUMBA_NUM_THREADS in this process ({before!r} -> {after!r}, session started with "
        f"{item.session.config.stash.get(_NUMBA_ENV, None)!r}); pass it to child processes with env= instead")
    return result


_NUMBA_ENV = pytest.StashKey[object]()


def pytest_configure(config):
    import os

    config.stash[_NUMBA_ENV] = os.environ.get("NUMBA_NUM_THREADS")
