"""Oracles written from the ground truth for the controlled experiments of issue 16 (extensions.md §2.4), so
that Joint 2D-3D WSSS's losses are measured on a known teacher instead of a weak model's.

``write_oracle_3d``: ``predictions/3d`` (the true class at 0.95, others 0.05) and ``predictions/3dfeat`` (each
instance a random unit vector, fixed by its id; background one more), the oracle 3D features of the 3D -> 2D
correlation (the "one-hot of the instance" of the spec, in 16 dimensions).

``write_noisy_oracle_2d``: a noisy 2D teacher for the 2D -> 3D forms:

Per point with a camera projection (one draw per point, both projections alike), over the classes that have
a 2D box in that projection's camera (the others NaN, as ``predict-2d`` writes them):
- with probability ``frac_true`` (0.7) the truth: its class at 0.9 (if the camera has a box of it), every
  other class at 0.1 (a background point: all at 0.1);
- otherwise a wrong guess: a random present class at U(0.4, 0.6), the others at 0.1.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...data.frame import NUM_CLASSES
from ...data.prediction_store import write_prediction_shard
from ...data.schema.predictions import FEATURE_DIM, FEATURES_SOURCE
from ...data.store import open_dataset

log = logging.getLogger(__name__)


def oracle_point_probs(semantic: np.ndarray, cam_id: np.ndarray, present: dict[int, np.ndarray],
                       rng: np.random.Generator, frac_true: float = 0.7) -> np.ndarray:
    """(N,) true classes (0..C-1, background C, ignore -1), (N, 2) camera of each projection (0 = none),
    ``present`` {camera: (C,) bool} -> (N, 2, C) oracle probabilities (NaN where none)."""
    n, C = len(semantic), NUM_CLASSES
    truthful = rng.random(n) < frac_true
    guess_u = rng.random(n)  # which present class a wrong guess takes
    guess_p = rng.uniform(0.4, 0.6, n)
    out = np.full((n, 2, C), np.nan, np.float32)
    for slot in range(2):
        for cam, pres in present.items():
            sel = np.flatnonzero(cam_id[:, slot] == cam)
            if not len(sel) or not pres.any():
                continue
            p = np.where(pres, 0.1, np.nan)[None].repeat(len(sel), 0).astype(np.float32)
            cls = semantic[sel].astype(np.int64)
            ok = truthful[sel] & (cls >= 0) & (cls < C)
            ok &= pres[np.clip(cls, 0, C - 1)]
            p[ok, cls[ok]] = 0.9
            wrong = ~truthful[sel]
            choices = np.flatnonzero(pres)
            pick = choices[np.minimum((guess_u[sel] * len(choices)).astype(np.int64), len(choices) - 1)]
            p[wrong, pick[wrong]] = guess_p[sel][wrong]
            out[sel, slot] = p
    return out


def write_noisy_oracle_2d(data: Path | str, rnd: int, seed: int = 0, frac_true: float = 0.7) -> int:
    """Write round ``rnd`` of ``predictions/2d`` for every frame of ``data`` from its ground truth (frames
    without per-point ground truth raise, naming the frame). Returns the number of frames."""
    ds = open_dataset(data)
    frames = 0
    for pos in range(ds.num_shards):
        shard = ds.shard(pos)

        def rows():
            nonlocal frames
            for frame in shard.iter_frames(images=False):
                if frame.gt.point_semantic is None:
                    raise ValueError(f"{ds.root}: frame {frame.frame_id} has no per-point ground truth "
                                     "(gt.point_semantic) for the 2D oracle")
                rng = np.random.default_rng([seed, frames])
                present = {int(c.camera_id): np.isin(np.arange(NUM_CLASSES),
                                                     frame.boxes2d.of_camera(c.camera_id).class_id)
                           for c in frame.cameras}
                frames += 1
                yield frame.frame_id, oracle_point_probs(frame.gt.point_semantic, frame.points.cam_id, present, rng,
                                                         frac_true)

        write_prediction_shard(ds.root, "2d", rnd, shard.info.name, rows(), (2, NUM_CLASSES),
                               {"source": "noisy 2D oracle", "seed": seed, "frac_true": frac_true})
    log.info("noisy 2D oracle: round %d, %d frames -> %s/predictions/2d/round=%d", rnd, frames, ds.root, rnd)
    return frames


def oracle_point_features(semantic: np.ndarray, instance: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) true classes and (N,) instance ids (0 = none) -> (N, FEATURE_DIM) unit vectors: one per instance
    (drawn from its id and ``seed``, so the same object gets the same vector in every frame), one for every
    point of no instance; NaN where the class is ignore (-1)."""
    out = np.full((len(semantic), FEATURE_DIM), np.nan, np.float32)
    for k in np.unique(instance):
        v = np.random.default_rng([seed, int(k)]).standard_normal(FEATURE_DIM)
        sel = (instance == k) & (semantic >= 0)
        out[sel] = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def write_oracle_3d(data: Path | str, rnd: int, seed: int = 0) -> int:
    """Round ``rnd`` of ``predictions/3dfeat`` (``oracle_point_features``) and ``predictions/3d`` (the true class
    at 0.95, the others 0.05; NaN for ignored points) for every frame of ``data``, each features shard
    first (as ``predict-3d --features``). Returns the number of frames."""
    ds = open_dataset(data)
    frames = 0
    for pos in range(ds.num_shards):
        shard = ds.shard(pos)
        probs, feats = [], []
        for frame in shard.iter_frames(images=False):
            sem, inst = frame.gt.point_semantic, frame.gt.point_instance
            if sem is None or inst is None:
                raise ValueError(f"{ds.root}: frame {frame.frame_id} has no per-point ground truth "
                                 "(gt.point_semantic / gt.point_instance) for the 3D oracle")
            p = np.full((len(sem), NUM_CLASSES), 0.05, np.float32)
            obj = (sem >= 0) & (sem < NUM_CLASSES)
            p[np.flatnonzero(obj), sem[obj].astype(np.int64)] = 0.95
            p[sem < 0] = np.nan
            probs.append((frame.frame_id, p)), feats.append((frame.frame_id, oracle_point_features(sem, inst, seed)))
            frames += 1
        info = {"source": "3D oracle from the ground truth", "seed": seed}
        write_prediction_shard(ds.root, FEATURES_SOURCE, rnd, shard.info.name, feats, (FEATURE_DIM,), info)
        write_prediction_shard(ds.root, "3d", rnd, shard.info.name, probs, (NUM_CLASSES,), info)
    log.info("3D oracle: round %d, %d frames -> %s/predictions/{3d,3dfeat}/round=%d", rnd, frames, ds.root, rnd)
    return frames
