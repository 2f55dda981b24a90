"""nuScenes v1.0 keyframes as mwsis frames (issue 18, ``formats_more.md`` §1), read from the JSON tables directly.

* :mod:`.tables`: load and index the metadata tables (the devkit's reverse index, without the devkit).
* :mod:`.geometry`: quaternions, poses, box corners, the devkit's 2D box export.
* :mod:`.build`: one keyframe -> one :class:`~mwsis.data.frame.Frame`, the category map.

``mwsis convert nuscenes`` (``pipelines/convert/nuscenes.py``) converts a whole version folder.
"""
from .build import CATEGORY_CLASSES, annotation_class, nuscenes_frame
from .tables import NuScenesFormatError, Tables, load_tables

__all__ = ["CATEGORY_CLASSES", "annotation_class", "nuscenes_frame", "NuScenesFormatError", "Tables", "load_tables"]
