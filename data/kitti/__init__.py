"""KITTI 3D object detection data (``data_formats.md`` §E) as mwsis frames.

* :mod:`.formats`: parse and write velodyne ``.bin``, ``calib`` and ``label_2`` files (pure, no I/O).
* :mod:`.rings`: range-image rows from scan order and columns from azimuth (§E.4).
* :mod:`.geometry`: KITTI calibration as a Waymo-convention :class:`~mwsis.data.frame.Camera`, label
  boxes in the Velodyne frame.
* :mod:`.build`: one sample -> one :class:`~mwsis.data.frame.Frame` (``kitti_frame`` pure,
  ``read_kitti_frame`` reads the files). Its ground truth is derived from the 3D boxes.

``mwsis convert kitti`` (``pipelines/convert/kitti.py``) converts a whole directory.
"""
from .build import kitti_frame, read_kitti_frame
from .formats import (KITTI_CLASS_MAP, KittiCalib, KittiFormatError, KittiObject, parse_calib, parse_label,
                      parse_velodyne)
from .geometry import kitti_camera, project_velo
from .rings import RingRecovery, hdl64e_inclinations, recover_rings

__all__ = ["kitti_frame", "read_kitti_frame", "KITTI_CLASS_MAP", "KittiCalib", "KittiFormatError", "KittiObject",
           "parse_calib", "parse_label", "parse_velodyne", "kitti_camera", "project_velo", "RingRecovery",
           "hdl64e_inclinations", "recover_rings"]
