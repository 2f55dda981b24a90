"""Configuration of the synthetic street-scene generator: sensors, street layout, object densities.

Three presets exist: ``tiny`` (fast, for tests and smoke runs: 16-beam LiDAR, two small cameras, dense
objects in front of the ego vehicle), ``waymo`` (the Waymo Open Dataset sensor layout: a 64-beam
TOP LiDAR with non-uniform inclinations, 2650 columns, two returns, and five cameras) and ``kitti``
(the KITTI layout: an HDL-64E-like 64-beam LiDAR, +2.0 to -24.8 deg, 2048 columns, one return, and
one 1242x375 front colour camera; ``data/synthetic/export_kitti.py`` writes it in the KITTI file
layout). Every field of :class:`SynthConfig` can be overridden with ``preset(name, field=value)``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera on the ego vehicle, in Waymo camera axes (x optical axis, y left, z up)."""

    camera_id: int  # Waymo CameraName
    width: int  # pixels, before ``SynthConfig.image_scale``
    height: int
    focal: float  # pixels (f_u = f_v), before ``image_scale``
    yaw_deg: float  # heading of the optical axis in the vehicle frame (+ = left)
    pitch_deg: float  # + = looking down
    position: tuple[float, float, float]  # vehicle frame, metres


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes a synthetic frame. Frozen: a config is a value, frames are a function of it."""

    name: str
    # --- TOP LiDAR (Waymo range-image conventions) ---
    beams: int = 64  # range-image rows M
    columns: int = 2650  # range-image columns W
    incl_top_deg: float = 2.4
    incl_bottom_deg: float = -17.6
    incl_warp: float = 0.6  # 0 = uniform rows; > 0 packs rows towards the top (the horizon)
    max_range: float = 75.0
    min_range: float = 0.7
    lidar_position: tuple[float, float, float] = (1.43, 0.0, 2.18)
    second_returns: bool = True
    footprint: float = 0.35  # beam half-footprint in columns (sub-rays at +-footprint for mixed pixels)
    edge_threshold: float = 0.5  # metres (plus 3% of range) between surfaces for a mixed pixel
    second_keep: float = 0.85  # probability a mixed pixel reports its second return
    foliage_pass: float = 0.35  # probability a beam hitting a tree crown also returns from behind it
    glass_pass: float = 0.5  # probability a beam passes vehicle glass without an echo
    range_noise: float = 0.015  # metres, Gaussian sigma ...
    range_noise_clip: float = 0.03  # ... truncated here so labelled points stay within box margins
    dropout: float = 0.02  # probability a first return is lost
    # --- cameras ---
    cameras: tuple[CameraSpec, ...] = ()
    image_scale: float = 1.0  # multiplies every camera's width, height and focal length
    image_noise: float = 2.0  # sensor noise sigma in 8-bit grey levels
    min_box_area: int = 150  # visible mask pixels for an instance to get a 2D box and mask
    view_distance: float = 150.0  # metres: scene extent ahead of the ego and camera far limit
    behind_distance: float = 80.0  # metres: scene extent behind the ego (seen by the LiDAR only)
    # --- street layout (metres, y = 0 at the road centre line) ---
    lanes_per_direction: int = 2
    lane_width: float = 3.5
    bike_lane_width: float = 1.5
    parking_width: float = 2.3
    sidewalk_width: float = 4.5
    curb_height: float = 0.15
    max_grade: float = 0.02  # the street's slope along x is uniform in +-max_grade per sequence (2 %: gentle)
    building_height: tuple[float, float] = (6.0, 28.0)
    # --- objects: probability that a slot of a stream holds an object (density) ---
    p_parked: float = 0.6
    p_moving: float = 0.45
    p_cyclist: float = 0.35
    p_walker: float = 0.3
    p_group: float = 0.35
    p_furniture: float = 0.85
    # --- ego motion ---
    ego_step: float = 1.0  # metres driven per frame (10 Hz, so 10 m/s)
    frame_dt: float = 0.1  # seconds between frames

    def inclinations(self) -> np.ndarray:
        """(M,) beam inclinations in radians, row order (row 0 = highest), denser near the top.

        Real spinning LiDARs (Waymo TOP, Velodyne HDL-64) space their beams more finely near the
        horizon, where objects are far and small; ``incl_warp`` bends a uniform spacing quadratically.
        """
        s = np.linspace(0.0, 1.0, self.beams)
        w = self.incl_warp
        frac = (1.0 - w) * s + w * s * s
        deg = self.incl_top_deg - (self.incl_top_deg - self.incl_bottom_deg) * frac
        return np.radians(deg).astype(np.float64)

    def azimuths(self) -> np.ndarray:
        """(W,) column azimuths in radians, Waymo convention: column 0 = +pi (rear), clockwise."""
        c = np.arange(self.columns, dtype=np.float64)
        return math.pi * (1.0 - (2.0 * c + 1.0) / self.columns)

    @property
    def road_half_width(self) -> float:
        """Centre line to curb face."""
        return self.lanes_per_direction * self.lane_width + self.bike_lane_width + self.parking_width


def _waymo_cameras() -> tuple[CameraSpec, ...]:
    # Waymo's cameras: 1920x1280 front trio (f ~ 2055 px, 50 deg HFOV), 1920x886 sides; here half size.
    # They sit apart from the TOP LiDAR (windscreen / mirror heights) so camera-LiDAR parallax is real.
    f = 1028.0
    return (
        CameraSpec(1, 960, 640, f, 0.0, 1.0, (1.90, 0.00, 1.65)),
        CameraSpec(2, 960, 640, f, 45.0, 1.0, (1.75, 0.45, 1.70)),
        CameraSpec(3, 960, 640, f, -45.0, 1.0, (1.75, -0.45, 1.70)),
        CameraSpec(4, 960, 440, f, 90.0, 1.0, (1.10, 0.90, 1.80)),
        CameraSpec(5, 960, 440, f, -90.0, 1.0, (1.10, -0.90, 1.80)),
    )


def _tiny_cameras() -> tuple[CameraSpec, ...]:
    # Wider field of view than Waymo (about 60 deg) so two small cameras see most of the objects.
    f = 208.0
    return (
        CameraSpec(1, 240, 160, f, 0.0, 2.0, (1.90, 0.00, 1.65)),
        CameraSpec(2, 240, 160, f, 45.0, 2.0, (1.75, 0.45, 1.70)),
    )


def _nuscenes_cameras() -> tuple[CameraSpec, ...]:
    # ids: FRONT 1, FRONT_LEFT 2, FRONT_RIGHT 3, BACK_LEFT 4, BACK_RIGHT 5, BACK 6 (data/nuscenes/build.py)
    f = 1266.0
    return (CameraSpec(1, 1600, 900, f, 0.0, 0.0, (1.70, 0.00, 1.51)),
            CameraSpec(2, 1600, 900, f, 55.0, 0.0, (1.52, 0.49, 1.51)),
            CameraSpec(3, 1600, 900, f, -55.0, 0.0, (1.52, -0.49, 1.51)),
            CameraSpec(4, 1600, 900, f, 110.0, 0.0, (1.04, 0.48, 1.56)),
            CameraSpec(5, 1600, 900, f, -110.0, 0.0, (1.04, -0.48, 1.56)),
            CameraSpec(6, 1600, 900, f * 0.64, 180.0, 0.0, (0.09, 0.00, 1.56)))


def _kitti_cameras() -> tuple[CameraSpec, ...]:
    # KITTI's image_2 colour camera: 1242x375, f ~ 721.5 px (about 81 x 29 deg), level, 1.65 m up,
    # 0.27 m ahead of the Velodyne and 6 cm left of the reference camera 0 (KITTI setup page).
    return (CameraSpec(1, 1242, 375, 721.5, 0.0, 0.0, (1.27, 0.06, 1.65)),)


_PRESETS: dict[str, SynthConfig] = {
    "waymo": SynthConfig(name="waymo", cameras=_waymo_cameras()),
    "tiny": SynthConfig(
        name="tiny",
        beams=16,
        columns=512,
        incl_top_deg=2.0,
        incl_bottom_deg=-15.0,
        incl_warp=0.3,
        max_range=40.0,
        footprint=0.3,
        cameras=_tiny_cameras(),
        min_box_area=40,
        view_distance=70.0,
        behind_distance=30.0,
        lanes_per_direction=1,
        sidewalk_width=3.5,
        building_height=(5.0, 14.0),
        p_parked=0.4,
        p_moving=0.5,
        p_cyclist=0.7,
        p_walker=0.7,
        p_group=0.8,
    ),
    # HDL-64E-like: 64 beams, +2.0 to -24.8 deg, about 1/3 deg apart at the top and 1/2 deg at the bottom
    # (incl_warp 0.2), ~2000 returns per ring, one (strongest) return, mounted 1.73 m above the ground.
    "kitti": SynthConfig(
        name="kitti",
        beams=64,
        columns=2048,
        incl_top_deg=2.0,
        incl_bottom_deg=-24.8,
        incl_warp=0.2,
        max_range=80.0,
        lidar_position=(1.0, 0.0, 1.73),
        second_returns=False,
        cameras=_kitti_cameras(),
        min_box_area=100,
        view_distance=90.0,
        behind_distance=60.0,
    ),
    # nuScenes-like: HDL-32E (32 beams, +10.67 to -30.67 deg, 4/3 deg apart), ~1085 returns per ring, one return,
    # mounted 1.84 m up; six 1600x900 cameras (f ~ 1266 px, 64 deg) looking 0, +-55, +-110 and 180 deg.
    "nuscenes": SynthConfig(
        name="nuscenes",
        beams=32,
        columns=1088,
        incl_top_deg=10.67,
        incl_bottom_deg=-30.67,
        incl_warp=0.0,
        max_range=70.0,
        lidar_position=(0.94, 0.0, 1.84),
        second_returns=False,
        cameras=_nuscenes_cameras(),
        min_box_area=100,
        view_distance=80.0,
        behind_distance=80.0,
    ),
}


def preset(name: str, **overrides) -> SynthConfig:
    """The named preset (``"tiny"``, ``"waymo"``, ``"kitti"`` or ``"nuscenes"``), with any fields replaced by
    ``overrides``."""
    if name not in _PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(_PRESETS)}")
    return dataclasses.replace(_PRESETS[name], **overrides)
