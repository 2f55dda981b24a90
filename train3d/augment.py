"""3D training augmentation (MWSIS §4.2 "Data Augmentation"; ``method.md`` §0 pipeline steps 13-17).

"For the 3D branch, we apply global rotation, global translation, global scaling, random flipping, and
shuffling." Order as the authors' pipeline: ``GlobalRotScaleTrans`` (rotate about z, scale, translate), then
``RandomFlip3D`` (BEV flips), then ``PointShuffle``. The authors also re-apply ``PointsRangeFilter`` after the
augmentation; here out-of-range points are kept and flagged by the model instead (:mod:`.voxelize`), so
per-point arrays stay aligned.

Only the scale range 0.95-1.05 is stated in ``method.md`` (§2). The rotation range (+-pi/4), translation std
(0.5 m per axis) and flip probabilities (0.5 each) are the usual mmdet3d/FSD Waymo values, **[UNSURE]** for
MWSIS itself; all are configurable.

Everything is one affine map ``x -> A x + t`` (A = flip . scale . rot). Per-point offsets (vote targets,
decoded) transform with ``A`` alone; sign-sqrt *encoded* offsets are decoded, transformed and re-encoded.
Since instance centres are means of points, transformed targets equal targets recomputed after augmentation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentConfig", "Affine", "random_affine", "augment_frame"]


@dataclass(frozen=True)
class AugmentConfig:
    """3D training augmentation (MWSIS §4.2; method.md §9): global rotation about z, scaling,
    translation noise, BEV flips and point shuffling."""
    rot_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)  # radians about +z  [UNSURE: FSD value]
    scale_range: tuple[float, float] = (0.95, 1.05)  # method.md §2
    translation_std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # metres  [UNSURE: FSD value]
    flip_y_prob: float = 0.5  # mmdet3d "horizontal" BEV flip: y -> -y
    flip_x_prob: float = 0.5  # mmdet3d "vertical" BEV flip: x -> -x
    shuffle: bool = True


@dataclass(frozen=True)
class Affine:
    """One frame's augmentation as x -> linear @ x + translation (points and vote targets alike)."""
    linear: np.ndarray  # (3, 3) float64, applied as A @ x
    translation: np.ndarray  # (3,) float64

    def points(self, xyz: np.ndarray) -> np.ndarray:
        return (np.asarray(xyz, np.float64) @ self.linear.T + self.translation).astype(np.asarray(xyz).dtype)

    def offsets(self, d: np.ndarray) -> np.ndarray:
        return (np.asarray(d, np.float64) @ self.linear.T).astype(np.asarray(d).dtype)

    def encoded_offsets(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, np.float64)
        d = self.offsets(p * np.abs(p))
        return (np.sign(d) * np.sqrt(np.abs(d))).astype(np.float32)


def random_affine(rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> Affine:
    """Draw rotation, scale, translation and flips (in this order of draws) from ``rng``."""
    a = rng.uniform(*cfg.rot_range)
    s = rng.uniform(*cfg.scale_range)
    t = rng.normal(0.0, 1.0, 3) * np.asarray(cfg.translation_std, np.float64)
    fy = rng.random() < cfg.flip_y_prob
    fx = rng.random() < cfg.flip_x_prob
    c, sn = math.cos(a), math.sin(a)
    rot = np.array([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0 if fx else 1.0, -1.0 if fy else 1.0, 1.0])
    return Affine(linear=flip @ (s * rot), translation=flip @ t)


def augment_frame(frame: dict, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig(),
                  offset_keys: tuple[str, ...] = (), encoded_offset_keys: tuple[str, ...] = ()) -> dict:
    """A new dict: ``xyz`` transformed, offsets transformed, every per-point array shuffled alike.

    Per-point arrays are the numpy values whose first dimension equals ``len(xyz)``; other values are copied.
    ``offset_keys`` name (n, ..., 3) decoded offsets, ``encoded_offset_keys`` sign-sqrt encoded ones. The
    result also has ``point_index`` (n,) int64: the original index of each output point (composed with an
    existing ``point_index``), and ``affine``.
    """
    xyz = np.asarray(frame["xyz"])
    n = xyz.shape[0]
    aff = random_affine(rng, cfg)
    perm = rng.permutation(n) if cfg.shuffle else np.arange(n)
    out = {}
    for k, v in frame.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            if k == "xyz":
                v = aff.points(v)
            elif k in offset_keys:
                v = aff.offsets(v)
            elif k in encoded_offset_keys:
                v = aff.encoded_offsets(v)
            out[k] = v[perm]
        else:
            out[k] = v
    if "point_index" not in out:  # an existing point_index was permuted above, i.e. composed
        out["point_index"] = perm.astype(np.int64)
    out["affine"] = aff
    return out
