"""``mwsis convert``: real datasets in, frame shards out. Each format's command lives in its own module."""
from __future__ import annotations

import importlib

import click

# (module in mwsis.pipelines, click command attribute)
_COMMANDS = [("convert.waymo", "waymo_v2_cmd"), ("convert.waymo", "waymo_v1_cmd"), ("convert.kitti", "kitti_cmd"),
             ("convert.folder", "folder_cmd"), ("convert.nuscenes", "nuscenes_cmd")]


@click.group("convert")
def convert():
    """Convert Waymo v2 (Parquet), Waymo v1 (TFRecord), KITTI, nuScenes or your own logs (folder) into a dataset.

    One shard per segment/sequence, parallel (--workers), resumable (rerun the same command), and
    a corrupt or missing input fails only its segment, with the cause recorded in manifest.json.
    """


for _module, _attr in _COMMANDS:
    try:
        convert.add_command(getattr(importlib.import_module(f"mwsis.pipelines.{_module}"), _attr))
    except (ImportError, AttributeError):  # a format whose module is not present in this checkout
        pass
