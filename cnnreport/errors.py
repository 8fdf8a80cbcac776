"""One error root for every user mistake cnnreport can name.

The CLI catches :class:`CnnReportError`, prints its message as one line and exits with the
code :data:`cnnreport.cli.exits.EXIT_CODES` maps the error to; anything else is a bug in
cnnreport and keeps its traceback.
Messages name the thing to fix: the file, the layer, the shape or the option.
"""

from __future__ import annotations

import re

# What a terminal would act on instead of printing: C0 and C1 controls (ESC starts colour,
# cursor and title sequences, BEL rings, CR overwrites the line, 0x9b is a one-byte CSI), DEL,
# and the bidirectional overrides and isolates that reorder the text around them.
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every control character and bidi control shown as an escape (``\\x1b``,
    ``\\u202e``), so a layer name, checkpoint key or path from a file cannot drive the
    terminal it is printed to. Idempotent: printable text, backslashes included, is unchanged.
    """
    return _TERMINAL_UNSAFE.sub(_escape_char, str(text))


class CnnReportError(Exception):
    """Base class of every error caused by the user's input, not by cnnreport itself."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint folded into one line, as the CLI prints it: whitespace runs
        become one space, other control characters become escapes (:func:`terminal_safe`)."""
        text = " ".join(str(self.message).split())
        if self.hint:
            text += " (" + " ".join(str(self.hint).split()) + ")"
        return terminal_safe(text)


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

    Carries its message and hint only. For the partial report of everything that ran before the
    failure, call ``build_report(..., on_failure="partial")``, which returns that report (its
    ``failure`` says where the pass broke) instead of raising.
    """


class ProvenanceError(OptionError):
    """A report's provenance cannot vouch for anything: missing, malformed, hidden where the
    browser would not read it, given twice, or contradicting the rest of the report."""


class HealthCheckFailed(CnnReportError):
    """Alerts of at least the ``--fail-on`` severity were found (the report was still written)."""


class Interrupted(KeyboardInterrupt):
    """The run was ended by a signal (SIGTERM, SIGHUP): raised from the CLI's signal handler so
    that every ``finally`` runs and no temporary file is left, as for Ctrl-C (SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
