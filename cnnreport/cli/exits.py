"""What a command's ending means to the shell: the named exit codes and the one map from errors
to them.

CI scripts branch on these numbers, so they are part of the interface (README, "Exit status"):
a code is never reused for another meaning.
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from enum import IntEnum
from typing import Any, Callable

import click

from ..errors import CnnReportError, ForwardError, HealthCheckFailed, Interrupted, terminal_safe


class ExitCode(IntEnum):
    """Every status a ``cnnreport`` command exits with."""

    #: The command did what was asked (``verify``: the report matches the checkpoint).
    OK = 0
    #: ``verify``: the report was made from other tensors; also click's abort (no prompt asks today).
    NO_MATCH = 1
    #: A bad input or option: the message names the thing to fix; nothing was written.
    BAD_INPUT = 2
    #: The model's forward pass raised; a partial report of what ran is written beside the output.
    FORWARD_FAILED = 3
    #: ``--fail-on``: alerts of that severity were found; the report was still written.
    ALERTS_FOUND = 4
    #: A run ended by a signal exits with this plus the signal's number, as a shell reports it.
    SIGNAL_BASE = 128


#: The map from an error to its exit code; the first class the error is an instance of wins, so
#: subclasses come before their bases.
EXIT_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (HealthCheckFailed, ExitCode.ALERTS_FOUND),
    (ForwardError, ExitCode.FORWARD_FAILED),
    (CnnReportError, ExitCode.BAD_INPUT),
    (click.exceptions.Abort, ExitCode.NO_MATCH),
    (click.ClickException, ExitCode.BAD_INPUT),  # a bad option value, a missing argument
)


def exit_code_for(exc: BaseException) -> int:
    """The exit status the CLI ends with for ``exc``; a signal adds its number to SIGNAL_BASE."""
    if isinstance(exc, KeyboardInterrupt):
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        return ExitCode.SIGNAL_BASE + int(signum)
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    raise TypeError(f"{type(exc).__name__} is a bug, not an error with an exit status")


def fail(message: str, code: int) -> None:
    """Print ``cnnreport: error: <message>`` on stderr and exit with ``code``."""
    # Messages carry layer names, keys and paths from the user's files: no raw control
    # characters may reach the terminal (one_line() escapes too; this covers every caller).
    click.echo(f"cnnreport: error: {terminal_safe(message)}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Around a command: cnnreport's errors and signals become one line and their exit code;
    other exceptions are bugs and keep their traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CnnReportError as exc:
            if kwargs.get("debug", False):
                traceback.print_exc()
            fail(exc.one_line(), exit_code_for(exc))
        except KeyboardInterrupt as exc:
            fail(interrupted_message(exc, getattr(exc, "planned_outputs", [])), exit_code_for(exc))

    return wrapper


def interrupted_message(exc: KeyboardInterrupt, outputs: list[str]) -> str:
    """What an interrupted run did to its outputs: every one replaced, or none (outputs.py)."""
    name = signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"
    replaced = getattr(exc, "replaced_outputs", None)
    if replaced:
        return f"interrupted by {name} after every output was written ({', '.join(outputs) or ', '.join(replaced)})"
    kept = f" ({', '.join(outputs)} left as they were)" if outputs else ""
    return f"interrupted by {name}; no output was written{kept}"


__all__ = ["EXIT_CODES", "ExitCode", "exit_code_for", "fail", "handle_errors", "interrupted_message"]
