"""``cnnreport verify``: was this report made from this checkpoint?"""

from __future__ import annotations

import sys

import click

from ..errors import terminal_safe
from .exits import ExitCode, handle_errors
from .options import options


@click.command("verify")
@click.argument("report", metavar="REPORT")
@options(
    "weights", "weights_key", "trust_checkpoint", "quiet", "debug",
    weights={"required": True, "metavar": "CKPT", "help": "Checkpoint the report should have been made from."},
    weights_key={"help": "Key of the state dict inside the checkpoint, as given to generate (e.g. ema)."},
    trust_checkpoint={"help": "Allow unpickling a whole model object to read its tensors (runs code from the file: only for files you trust)."},
    quiet={"help": "Print nothing on a match; only the exit status tells."},
)
@handle_errors
def verify(report: str, weights: str, weights_key: str | None, trust_checkpoint: bool, quiet: bool, debug: bool) -> None:
    """Check that REPORT (an HTML report or its JSON view; a report or a diff) was made from
    the checkpoint CKPT: the tensors in CKPT must have the model fingerprint the report records.

    \b
    Exit status:
      0  match: the same tensors (and the message says whether it is the very same file)
      1  no match: other tensors; the reason names what the report records
      2  the report cannot vouch: unreadable, malformed, two provenance blocks, a block the
         browser would not read, or a report that contradicts itself or the file; or CKPT
         cannot be read

    It checks consistency, not authorship: anyone who can edit a report can recompute its
    hashes. A Markdown view carries no provenance.

    \b
    Example:
      cnnreport verify archive/report.html --weights archive/epoch12.pt
    """
    from ..io.provenance import verify_report  # lazy: reading a checkpoint imports torch

    result = verify_report(report, weights, weights_key=weights_key, trust_checkpoint=trust_checkpoint)
    if result.ok:
        if not quiet:
            click.echo(terminal_safe(f"cnnreport: {result.message}"))
        return
    click.echo(terminal_safe(f"cnnreport: error: {' '.join(result.message.split())}"), err=True)
    sys.exit(ExitCode.NO_MATCH)


__all__ = ["verify"]
