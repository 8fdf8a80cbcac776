"""One error root for every user mistake cnnreport can name.

The CLI catches :class:`CnnReportError`, prints its message as one line and exits with the
error's ``exit_code``; anything else is a bug in cnnreport and keeps its traceback.
Messages name the thing to fix: the file, the layer, the shape or the option.
"""

from __future__ import annotations

from typing import Any


class CnnReportError(Exception):
    """Base class of every error caused by the user's input, not by cnnreport itself."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint folded into one line, as the CLI prints it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += " (" + " ".join(self.hint.split()) + ")"
        return text


class ModelSpecError(CnnReportError):
    """A model spec (``file.py:Name``, ``package.module:Name``, TorchScript file) cannot be used."""


class WeightsError(CnnReportError):
    """A checkpoint cannot be read or does not fit the model."""


class ProbeError(CnnReportError):
    """A probe image or tensor cannot be read or does not fit the model."""


class OptionError(CnnReportError):
    """An option has a value cnnreport cannot use (a layer pattern matching nothing, say)."""


class OutputError(CnnReportError):
    """The report cannot be written where it was asked to go."""


class ForwardError(CnnReportError):
    """The model raised inside its forward pass.

    ``report`` holds the partial :class:`~cnnreport.report.Report` built from everything that ran
    before the failure, when one could be built.
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, report: Any = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class HealthCheckFailed(CnnReportError):
    """Alerts of at least the ``--fail-on`` severity were found (the report was still written)."""

    exit_code = 4


class Interrupted(KeyboardInterrupt):
    """The run was ended by a signal (SIGTERM, SIGHUP): raised from the CLI's signal handler so
    that every ``finally`` runs and no temporary file is left, as for Ctrl-C (SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
