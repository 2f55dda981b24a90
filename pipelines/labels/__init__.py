"""The pseudo-label stages as a pipeline: the stage registry (adapters to ``pseudolabel/``), the shard runner, shard selection, and label evaluation (``mwsis eval-labels``)."""
from .. import lazy_exports

_EXPORTS = {
    "run_stages": ".runner",
    "run_stage_shard": ".runner",
    "STAGES": ".stages",
    "StagesConfig": ".stages",
    "evaluate_labels": ".evaluate",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
