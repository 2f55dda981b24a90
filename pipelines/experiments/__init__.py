"""The experiment harness (the CPU regime, ``make experiment-*``) and ``mwsis bench``."""
