"""The ``cnnreport`` command line: ``generate``, ``demo``, ``diff`` and ``verify``.

``main`` (with ``generate`` and ``demo``) is in :mod:`.main`; ``diff`` and ``verify`` in :mod:`.extra`,
which uses main's option parsers and error handling; they are registered here, so the two modules
import one way only.
"""

from .extra import diff, verify
from .main import main

main.add_command(diff)
main.add_command(verify)

__all__ = ["main"]
