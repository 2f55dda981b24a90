"""Stages, scheduling and the `mwsis` CLI: the only code that touches the filesystem (through `data/`)."""
