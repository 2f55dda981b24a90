"""``python -m mwsis.pipelines.cli``: the ``mwsis`` command."""
from .main import main

main()
