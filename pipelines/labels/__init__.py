"""The pseudo-label stages as a pipeline: the stage registry (adapters to ``pseudolabel/``), the shard runner, shard selection, and label evaluation (``mwsis eval-labels``)."""
