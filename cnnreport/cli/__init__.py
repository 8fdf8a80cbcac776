"""The ``cnnreport`` command line: ``generate``, ``demo``, ``diff`` and ``verify``."""

from .main import main

__all__ = ["main"]
