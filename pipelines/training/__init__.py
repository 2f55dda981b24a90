"""The trainers: one ``Trainer`` loop with hooks (``trainer.py``), the 2D and 3D subclasses, their samples, run directories and checkpoints (``run.py``), DDP and preemption, and the CSCS round exchange between two running jobs."""
from .. import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".trainer": ("Trainer", "Hook"),
    ".run": ("load_config", "latest_checkpoint", "read_metrics"),
    ".train3d": ("Train3DConfig", "train_3d", "load_teacher"),
    ".train2d": ("Train2DConfig", "train_2d", "load_teacher_2d"),
})
