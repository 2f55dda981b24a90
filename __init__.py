"""mwsis: multimodal weakly supervised instance segmentation (MWSIS, AAAI 2024) for driving data.

Packages: ``data`` (frame model, shard store, synthetic scenes), ``pseudolabel`` (3D/2D pseudo
labels from 2D boxes), ``train2d`` and ``train3d`` (the two segmentors), ``pipelines`` (stages,
CLI, SLURM). See README.md.
"""
__version__ = "0.1.0"
