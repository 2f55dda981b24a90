"""Datasets in: converters of real formats (Waymo v1/v2, KITTI) and the built-in synthetic scenes."""
from .. import lazy_exports

_EXPORTS = {
    "synth_dataset": ".synth",
    "convert_kitti": ".kitti",
    "convert_waymo_v1": ".waymo",
    "convert_waymo_v2": ".waymo",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
