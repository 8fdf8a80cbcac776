"""The ``cnnreport`` group with ``generate`` and ``demo``; :mod:`cnnreport.cli` adds ``diff`` and
``verify`` (:mod:`.diff`, :mod:`.verify`).

Only the ``cli`` package knows click. A :class:`~cnnreport.errors.CnnReportError` becomes one
line on stderr and its exit code (:mod:`.exits`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..errors import Interrupted, OptionError
from ..support.version import __version__
from .exits import ExitCode, exit_code_for, fail, handle_errors
from .options import EXAMPLE_OPTIONS, MODEL_OPTIONS, PROBE_OPTIONS, REPORT_OPTIONS, options
from .runs import (
    NO_PROBES,
    class_names_file,
    example_option_rules,
    example_set_of,
    load_probe_set,
    plan_run_outputs,
    probe_inputs,
    probe_option_rules,
    refuse_inapplicable,
    report_option_rules,
    run_report,
    sharded_run,
    spec_file,
)
from .values import parse_floats


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers(ctx: click.Context) -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does, through every ``finally``: temporary
    files are removed and the message says what was written. Restored when the command ends."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is None:
            continue
        try:
            old = signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):
            continue
        ctx.call_on_close(functools.partial(signal.signal, sig, old))


class OneLineErrorGroup(click.Group):
    """click's own usage errors (a bad option value, a missing argument) as one line, like ours:
    CI logs and scripts read one ``cnnreport: error: ...`` line whatever went wrong."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort as exc:
            fail("aborted", exit_code_for(exc))
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `cnnreport`: the help
                click.echo(ctx.get_help())
                sys.exit(exit_code_for(exc))
            where = f" (see '{ctx.command_path} --help')" if isinstance(exc, click.UsageError) and ctx is not None else ""
            fail(" ".join(f"{exc.format_message()}{where}".split()), exit_code_for(exc))
        sys.exit(code if isinstance(code, int) else ExitCode.OK)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnreport")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Turn a PyTorch CNN and a few probe images into one self-contained HTML report:
    architecture, what every layer sees, what it has learned, and what is wrong with it.

    \b
    Try it:   cnnreport demo -o demo-report.html
    Your model:
      cnnreport generate models/net.py:Net --weights ckpt.pt --probes images/ -o report.html
    """
    install_signal_handlers(ctx)


@main.command()
@click.argument("model_spec", metavar="MODEL")
@click.argument("more_probes", nargs=-1, metavar="[PROBES]...")
@options("weights", *MODEL_OPTIONS, *PROBE_OPTIONS, *REPORT_OPTIONS, *EXAMPLE_OPTIONS)
@handle_errors
def generate(model_spec: str, **kwargs: Any) -> None:
    """Write a report of MODEL, given as path/to/file.py:Name, package.module:Name (a class or
    a factory function) or a TorchScript file, on the PROBES images (folders, files or globs;
    given after MODEL or with --probes).

    \b
    Examples:
      cnnreport generate net.py:Net --weights best.pt --probes val_images/ -o report.html
      cnnreport generate mypkg.models:resnet18 --model-arg num_classes=10 --weights ckpt.pt \\
          --probes 'samples/*.jpg' --image-size 224 224 --mean imagenet --json report.json
      cnnreport generate deployed.ts --input-size 3 224 224
    """
    # Lazy: loading imports torch (and --help must not).
    from ..io.loading import load_model, parse_model_args
    from ..io.probes import normalisation
    from ..io.provenance import default_provenance

    # `--probes imgs/*.png` reaches us as one --probes value and the rest as positionals: the
    # shell expanded the glob. Every path after MODEL is a probe, with or without --probes.
    probe_paths = list(kwargs.pop("probes") or []) + list(kwargs.pop("more_probes") or [])
    refuse_inapplicable(
        click.get_current_context(),
        probe_option_rules(kwargs, probe_paths, weights_given=bool(kwargs["weights"])) + report_option_rules(kwargs) + example_option_rules(kwargs, probe_paths),
    )
    # Option values that cannot work are refused before the (possibly slow) model load.
    mean, std = parse_floats(kwargs.pop("mean"), "--mean"), parse_floats(kwargs.pop("std"), "--std")
    normalisation(mean, std)
    inputs = [("the MODEL file", spec_file(model_spec)), ("the --weights checkpoint", kwargs["weights"]), ("the --class-names file", class_names_file(kwargs["class_names"]))]
    inputs += [("the --examples folder", kwargs["examples"])] if kwargs["examples"] else []
    # Before any work: an output that is an input, or that cannot be written, is refused now.
    plan_run_outputs(kwargs, inputs + probe_inputs(probe_paths))
    # Under torchrun, every process joins one group before loading (on GPUs each takes its own).
    with sharded_run(kwargs):
        loaded = load_model(
            model_spec,
            weights=kwargs["weights"],
            weights_key=kwargs["weights_key"],
            model_args=parse_model_args(kwargs["model_args"]),
            trust_checkpoint=kwargs["trust_checkpoint"],
            device=kwargs["device"],
        )
        probes = load_probe_set(kwargs, probe_paths, loaded.model, mean=mean, std=std)
        if probes is None and not kwargs["input_size"]:
            raise OptionError(NO_PROBES)
        # Again with every probe file found and every module the model imported.
        plan = plan_run_outputs(kwargs, inputs + probe_inputs(probe_paths, probes))
        prov = default_provenance()
        prov.checkpoint_path = loaded.checkpoint_path
        prov.checkpoint_sha256 = loaded.checkpoint_sha256
        examples = example_set_of(kwargs, mean=mean, std=std)
        run_report(loaded.model, probes, kwargs, plan=plan, provenance=prov, input_size=kwargs["input_size"], class_names=loaded.class_names, notes=loaded.notes, examples=examples)


@main.command()
@options(*REPORT_OPTIONS)
@handle_errors
def demo(**kwargs: Any) -> None:
    """Write a report of the built-in demo: a small CNN trained on scikit-learn's digits.

    Runs offline in seconds: the weights and ten probe digits ship inside the package.
    """
    # Lazy: the demo model and probes import torch.
    from ..io.demo import CLASS_NAMES, WEIGHTS, demo_probe_paths, load_demo_model
    from ..io.probes import load_probes

    ctx = click.get_current_context()
    if ctx.get_parameter_source("output") == ParameterSource.DEFAULT:
        kwargs["output"] = "demo-report.html"
    if not kwargs.get("title"):
        kwargs["title"] = "Demo: DigitsCNN trained on scikit-learn digits"
    refuse_inapplicable(ctx, report_option_rules(kwargs))
    paths = [str(p) for p in demo_probe_paths()]
    plan = plan_run_outputs(kwargs, [("the demo checkpoint", str(WEIGHTS))] + probe_inputs(paths))
    probes = load_probes(paths)
    # Paths inside the package, not this machine's: the demo page is the same everywhere.
    probes.sources = [f"cnnreport/data/demo/probes/{Path(p).name}" for p in probes.sources]
    run_report(load_demo_model(), probes, kwargs, plan=plan, class_names=CLASS_NAMES)


__all__ = ["demo", "generate", "main"]
