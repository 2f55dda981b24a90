"""Synthetic driving frames: procedural streets ray-cast into LiDAR sweeps and camera images.

``make_frame(preset("tiny"), seed, sequence, index)`` returns a :class:`mwsis.data.frame.Frame` with
exact ground truth (per-point semantics and instances, visible instance masks, tight 3D boxes) and
2D boxes derived from the visible masks, for tests, demos and benchmarks without real data.
"""
from .config import CameraSpec, SynthConfig, preset
from .generate import make_frame, render_frame

__all__ = ["CameraSpec", "SynthConfig", "preset", "make_frame", "render_frame"]
