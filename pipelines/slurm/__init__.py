"""SLURM array jobs: the label stages (``stages.py``) and the trainers (``train.py``), with requeue on preemption."""
