"""Inference over a dataset: teacher predictions exported as rounds (PVC, CSCS) and the evaluations of both trainers."""
from .. import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".predict3d": ("evaluate_3d", "export_predictions"),
    ".predict2d": ("evaluate_2d", "export_predictions_2d"),
})
