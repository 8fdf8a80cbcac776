"""The ``cnnreport`` command line: ``generate``, ``demo``, ``diff`` and ``verify``.

``main`` (with ``generate`` and ``demo``) is in :mod:`.main`, ``diff`` and ``verify`` in
:mod:`.diff` and :mod:`.verify`; all three take their options from :mod:`.options`, the shared
steps from :mod:`.runs` and their exit codes from :mod:`.exits`. The two commands are
registered here, so that no command module imports another.
"""

from .diff import diff
from .main import main
from .verify import verify

main.add_command(diff)
main.add_command(verify)

__all__ = ["main"]
