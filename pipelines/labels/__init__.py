"""The pseudo-label stages as a pipeline: the stage registry (adapters to ``pseudolabel/``), the shard runner, shard selection, and label evaluation (``mwsis eval-labels``)."""
from .. import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".runner": ("run_stages", "run_stage_shard"),
    ".stages": ("STAGES", "StagesConfig"),
    ".evaluate": ("evaluate_labels",),
})
