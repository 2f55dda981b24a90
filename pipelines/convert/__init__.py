"""Datasets in: converters of real formats (Waymo v1/v2, KITTI, nuScenes, the sensor-folder layout of your own logs) and
the built-in synthetic scenes."""
from .. import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".synth": ("synth_dataset",),
    ".kitti": ("convert_kitti",),
    ".folder": ("convert_folder",),
    ".nuscenes": ("convert_nuscenes",),
    ".waymo": ("convert_waymo_v1", "convert_waymo_v2"),
})
