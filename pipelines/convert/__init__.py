"""Datasets in: converters of real formats (Waymo v1/v2, KITTI) and the built-in synthetic scenes."""
