"""The ``l2fast`` command line (:mod:`l2fast.cli.main`)."""

from l2fast.cli.main import main

__all__ = ["main"]
