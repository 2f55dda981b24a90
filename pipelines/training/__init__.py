"""The trainers: one ``Trainer`` loop with hooks (``trainer.py``), the 2D and 3D subclasses, their samples, run directories and checkpoints (``run.py``), DDP and preemption, and the CSCS round exchange between two running jobs."""
from .. import lazy_exports

_EXPORTS = {
    "Trainer": ".trainer",
    "Hook": ".trainer",
    "load_config": ".run",
    "latest_checkpoint": ".run",
    "read_metrics": ".run",
    "Train3DConfig": ".train3d",
    "train_3d": ".train3d",
    "load_teacher": ".train3d",
    "Train2DConfig": ".train2d",
    "train_2d": ".train2d",
    "load_teacher_2d": ".train2d",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
