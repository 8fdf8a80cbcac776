"""The command line's shape: exit codes as documented, every option declared once and meaning the
same on every command that takes it."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import click
import pytest

from cnnreport.cli import main
from cnnreport.cli.exits import ExitCode, exit_code_for
from cnnreport.errors import (
    ForwardError,
    HealthCheckFailed,
    Interrupted,
    ModelSpecError,
    OptionError,
    OutputError,
    ProbeError,
    ProvenanceError,
    WeightsError,
)

CLI = Path(__file__).resolve().parents[1] / "cnnreport" / "cli"


def test_exit_codes_are_the_documented_numbers() -> None:
    # README's table, written out: CI scripts branch on these numbers.
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "NO_MATCH": 1, "BAD_INPUT": 2, "FORWARD_FAILED": 3, "ALERTS_FOUND": 4, "SIGNAL_BASE": 128,
    }


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (HealthCheckFailed("3 alerts"), 4),
        (ForwardError("boom"), 3),
        (WeightsError("bad key"), 2),
        (ModelSpecError("no such file"), 2),
        (ProbeError("unreadable"), 2),
        (OptionError("bad value"), 2),
        (OutputError("read-only"), 2),
        (ProvenanceError("two blocks"), 2),  # a subclass of OptionError: still a bad input
        (click.BadParameter("not an int"), 2),
        (click.UsageError("missing argument"), 2),
        (click.exceptions.Abort(), 1),
        (KeyboardInterrupt(), 128 + 2),
        (Interrupted(signal.SIGTERM), 128 + 15),
        (Interrupted(signal.SIGHUP), 128 + 1),
    ],
)
def test_each_error_maps_to_its_exit_status(error: BaseException, status: int) -> None:
    assert exit_code_for(error) == status


def test_a_bug_has_no_exit_status() -> None:
    with pytest.raises(TypeError, match="ZeroDivisionError is a bug"):
        exit_code_for(ZeroDivisionError("x"))


def test_no_bare_exit_numbers_in_the_cli() -> None:
    # Every exit goes through ExitCode: a number written out would drift from the table.
    for path in CLI.glob("*.py"):
        text = path.read_text()
        assert not re.findall(r"(?:sys\.exit|fail)\(\s*-?\d", text), path.name
        assert not re.findall(r"(?:sys\.exit|fail)\([^)]*,\s*-?\d+\s*\)", text), path.name


def _flags_declared(path: Path) -> list[str]:
    text = path.read_text()
    declarations = re.findall(r"(?:click\.option|_option)\(\s*((?:\"-{1,2}[\w-]+\",\s*)+)", text)
    return [flag for group in declarations for flag in re.findall(r"\"(-{1,2}[\w-]+)\"", group)]


def test_every_option_is_declared_once() -> None:
    flags = [flag for path in sorted(CLI.glob("*.py")) for flag in _flags_declared(path)]
    assert len(flags) > 40  # the scan found the declarations, not an empty list
    repeated = sorted({flag for flag in flags if flags.count(flag) > 1})
    assert repeated == []


def test_a_shared_option_means_the_same_on_every_command() -> None:
    seen: dict[str, tuple] = {}
    shared = 0
    for command in main.commands.values():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            shape = (tuple(param.opts), param.name, param.multiple, param.nargs, param.is_flag, repr(param.type))
            key = param.opts[-1]
            if key in seen:
                shared += 1
                assert seen[key] == shape, key
            seen[key] = shape
    assert shared >= 25  # generate, demo and diff do share most of their options


def test_an_error_reads_as_its_message() -> None:
    # str() is what a Python caller's log shows; the CLI prints one_line().
    error = WeightsError("weights w.pt do not fit Net", hint="check MODEL")
    assert str(error) == "weights w.pt do not fit Net"
    assert error.args == ("weights w.pt do not fit Net",)
    assert error.one_line() == "weights w.pt do not fit Net (check MODEL)"
    interrupted = Interrupted(signal.SIGTERM)
    assert interrupted.signum == 15 and interrupted.args == (15,)
