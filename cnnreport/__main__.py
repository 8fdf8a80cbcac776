"""``python -m cnnreport`` is the ``cnnreport`` command (``torchrun ... -m cnnreport generate ...``
runs it in every process of a sharded run)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="cnnreport")
