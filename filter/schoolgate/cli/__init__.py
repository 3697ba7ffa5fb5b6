"""The `schoolgate` command line: one module per command group."""

from schoolgate.cli.app import main

__all__ = ["main"]
