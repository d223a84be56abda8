"""The ``ccdask`` command line: one module per command, each importing only what it needs."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
