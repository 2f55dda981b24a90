"""Every on-disk table of a dataset, in one place (nobody else spells a column name).

* ``frames`` (``frames.py``): the sensor data and optional ground truth, one row per frame.
* ``manifest.json`` (``manifest.py``): schema version, classes, sensors, shard list with checksums.

Later stages add their label and prediction tables here, in the same shard layout.
"""
from .frames import (FRAMES_SCHEMA, IMAGE_COLUMNS, LABELLING_COLUMNS, OPTIONAL_COLUMNS, frame_to_table,
                     table_row_to_frame)
from .manifest import SCHEMA_VERSION, Manifest, ShardInfo

__all__ = ["FRAMES_SCHEMA", "IMAGE_COLUMNS", "LABELLING_COLUMNS", "OPTIONAL_COLUMNS", "frame_to_table",
           "table_row_to_frame", "SCHEMA_VERSION", "Manifest", "ShardInfo"]
