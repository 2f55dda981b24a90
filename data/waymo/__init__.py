"""Waymo Open Dataset readers (v2 Parquet and v1 TFRecord) without TensorFlow.

Section references (A.x, B.x, C.x, D.x) are to ``shared/spec/data_formats.md``.

Modules, one concern each:

* ``geometry``: range image -> points (B.2-B.6), projection decoding (B.7), box corners (A.7). Pure numpy.
* ``labels``: enums (D) and the MWSIS class groupings (method.md §11-12). Pure.
* ``records``: the source-neutral per-frame records both readers produce (what a v1 ``Frame`` proto
  and a set of v2 rows have in common).
* ``build``: records -> :class:`mwsis.data.frame.Frame`, with bad data fixed or dropped and counted.
* ``encode``: the inverse (Frame -> records), used by the synthetic exporters.
* ``v2_schema`` / ``v2_reader``: Parquet components, key joins, row-group streaming (A).
* ``tfrecord`` / ``v1_proto`` / ``v1_reader``: TFRecord framing with CRC32C, a minimal ``Frame`` proto
  built programmatically, and its decoding (C).
"""
from .build import BuildReport, build_frame
from .records import CameraBoxes, CameraCalib, CameraShot, FrameRecords, LaserCalib, LaserScan, LidarBoxes, Panoptic

__all__ = ["BuildReport", "build_frame", "CameraBoxes", "CameraCalib", "CameraShot", "FrameRecords", "LaserCalib",
           "LaserScan", "LidarBoxes", "Panoptic"]
