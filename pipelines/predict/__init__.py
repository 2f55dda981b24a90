"""Inference over a dataset: teacher predictions exported as rounds (PVC, CSCS) and the evaluations of both trainers."""
from .. import lazy_exports

_EXPORTS = {
    "evaluate_3d": ".predict3d",
    "export_predictions": ".predict3d",
    "evaluate_2d": ".predict2d",
    "export_predictions_2d": ".predict2d",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
