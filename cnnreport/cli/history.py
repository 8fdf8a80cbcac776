"""``cnnreport history``: a report per checkpoint of an archive, and one index page over them."""

from __future__ import annotations

import glob as globlib
from typing import Any

import click

from ..errors import OptionError, terminal_safe
from .exits import handle_errors
from .options import MODEL_OPTIONS, PROBE_OPTIONS, options
from .runs import NO_PROBES, load_probe_set, plan_run_outputs, probe_inputs, probe_option_rules, refuse_inapplicable, spec_file
from .values import parse_floats, report_overrides


@click.command("history")
@click.argument("model_spec", metavar="MODEL")
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINTS...")
@options(*MODEL_OPTIONS, *PROBE_OPTIONS, "output", "title", output={"default": "index.html", "help": "Index page to write (the reports go beside their checkpoints)."})
@click.option("--evolve-layers", multiple=True, metavar="GLOB", help="Convolutions whose filters are drawn across checkpoints, by module-path glob (repeatable). Default: the first convolution.")
@options("layers", "exclude_layers", "layer_types", "max_channels", "max_probes", "tile_size", "batch_size", "max_html_mb", "class_names", "no_attributions", "no_graph", "quiet", "debug")
@handle_errors
def history(model_spec: str, checkpoints: tuple[str, ...], **kw: Any) -> None:
    """One report per checkpoint of MODEL (a glob such as 'runs/exp1/*.pt' is expanded) and an
    index page over them: a row per checkpoint, each layer's weight change, activation
    statistics and alerts across checkpoints, filters forming, and each probe's predictions.

    A report already beside its checkpoint (x.pt -> x.html, x.json) is reused when it is
    current: the same tensors, probes, options and cnnreport version. So after a new epoch,
    running it again costs one report.

    \b
    Example:
      cnnreport history net.py:Net 'runs/exp1/*.pt' --probes probes/ -o runs/exp1/index.html
    """
    # Lazy: loading and reporting import torch (and --help must not).
    from ..history.archive import write_history
    from ..io.loading import load_model, parse_model_args
    from ..io.probes import normalisation
    from ..report.pipeline import make_options

    files = _expand(checkpoints)
    probe_paths = list(kw["probes"] or [])
    refuse_inapplicable(click.get_current_context(), probe_option_rules(kw, probe_paths, weights_given=True))
    mean, std = parse_floats(kw["mean"], "--mean"), parse_floats(kw["std"], "--std")
    normalisation(mean, std)
    inputs = [("the MODEL file", spec_file(model_spec))] + [("a checkpoint", f) for f in files]
    plan_run_outputs(kw, inputs + probe_inputs(probe_paths))
    model_args = parse_model_args(kw["model_args"])

    loaded_already: dict[str, Any] = {}

    def load(checkpoint: str) -> Any:
        if checkpoint in loaded_already:  # the first one, loaded to fit the probes to the model
            return loaded_already.pop(checkpoint)
        return load_model(model_spec, weights=checkpoint, weights_key=kw["weights_key"], model_args=model_args, trust_checkpoint=kw["trust_checkpoint"], device=kw["device"])

    first = load(files[0])
    loaded_already[files[0]] = first
    probes = load_probe_set(kw, probe_paths, first.model, mean=mean, std=std)
    if probes is None and not kw["input_size"]:
        raise OptionError(NO_PROBES)
    plan_run_outputs(kw, inputs + probe_inputs(probe_paths, probes))
    overrides = report_overrides(kw)
    if first.class_names and "class_names" not in overrides:
        overrides["class_names"] = first.class_names
    report_options = make_options(None, **overrides)

    def said(done: Any) -> None:
        if not kw["quiet"]:
            what = "kept, current" if done.reused else "written"
            click.echo(terminal_safe(f"{done.checkpoint}: report {done.html} {what}"), err=True)

    done = write_history(
        files, load, probes, report_options, kw["output"], input_size=kw["input_size"], evolve_layers=list(kw["evolve_layers"]), weights_key=kw["weights_key"], on_checkpoint=said
    )
    if not kw["quiet"]:
        built = sum(1 for d in done if not d.reused)
        click.echo(terminal_safe(f"wrote {kw['output']}: {len(done)} checkpoints, {built} reports built, {len(done) - built} reused"), err=True)


def _expand(patterns: tuple[str, ...]) -> list[str]:
    """Checkpoint paths: globs the shell did not expand (quoted) are expanded here."""
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(globlib.glob(pattern)) if globlib.has_magic(pattern) else [pattern]
        if not matches:
            raise OptionError(f"no checkpoint matches {pattern!r}")
        files += [m for m in matches if m not in files]
    return files


__all__ = ["history"]
