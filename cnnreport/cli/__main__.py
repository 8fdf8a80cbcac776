"""``python -m cnnreport.cli``: the same as the ``cnnreport`` command."""

from . import main

main()
