"""The ``cnnreport`` command line: ``generate``, ``demo``, ``diff``, ``verify`` and ``history``.

``main`` (with ``generate`` and ``demo``) is in :mod:`.main`; ``diff``, ``verify`` and ``history``
in :mod:`.diff`, :mod:`.verify` and :mod:`.history`. All take their options from :mod:`.options`,
the shared steps from :mod:`.runs` and their exit codes from :mod:`.exits`. The commands are
registered here, so that no command module imports another.
"""

from .diff import diff
from .history import history
from .main import main
from .verify import verify

main.add_command(diff)
main.add_command(verify)
main.add_command(history)

__all__ = ["main"]
