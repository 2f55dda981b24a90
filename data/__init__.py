"""Frame data model, Parquet shard store and synthetic driving scenes."""
from .frame import BACKGROUND, CLASS_NAMES, IGNORE, NUM_CLASSES, Boxes2D, Camera, Frame, Points
from .store import Dataset, ShardError, StoreError, open_dataset
from .validate import FrameError, validate_frame

__all__ = ["BACKGROUND", "CLASS_NAMES", "IGNORE", "NUM_CLASSES", "Frame", "Points", "Boxes2D", "Camera", "Dataset", "ShardError",
           "StoreError", "open_dataset", "FrameError", "validate_frame"]
