"""Your own fleet's logs as mwsis frames: the documented sensor-folder layout (issue 18, ``formats_more.md`` §2).

* :mod:`.layout`: the layout, its conventions, and pure parsers of its index, calibration and COCO box files.
* :mod:`.points`: point files (.npy, .bin, .pcd, .las, .laz) -> named columns.
* :mod:`.rows`: range-image rows and columns from a ring column, beam inclinations or scan order.
* :mod:`.build`: one frame's pieces -> one :class:`~mwsis.data.frame.Frame`.
* :mod:`.source`: a layout root on disk.

``mwsis convert folder`` (``pipelines/convert/folder.py``) converts a whole root; ``mwsis synth --format folder``
writes one (``data/synthetic/export_folder.py``).
"""
from .build import folder_frame, read_folder_frame
from .layout import FORMAT_VERSION, Calib, DatasetSpec, FolderFormatError, FrameEntry, PointSchema
from .rows import RowRecoveryError, Rows, recover_rows
from .source import FolderSource

__all__ = ["folder_frame", "read_folder_frame", "FORMAT_VERSION", "Calib", "DatasetSpec", "FolderFormatError",
           "FrameEntry", "PointSchema", "RowRecoveryError", "Rows", "recover_rows", "FolderSource"]
