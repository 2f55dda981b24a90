"""Inference over a dataset: teacher predictions exported as rounds (PVC, CSCS) and the evaluations of both trainers."""
