"""The ``mwsis`` command line (click): one module per command family; ``main.main`` is the entry point."""
