"""``cnnreport diff``: two models (or two checkpoints of one) on the same probes, one page."""

from __future__ import annotations

import os
from typing import Any

import click

from ..errors import OptionError
from .exits import handle_errors
from .options import MODEL_OPTIONS, PROBE_OPTIONS, options
from .runs import (
    NO_PROBES,
    class_names_file,
    command_line,
    load_probe_set,
    plan_run_outputs,
    probe_inputs,
    probe_option_rules,
    refuse_inapplicable,
    spec_file,
    summary_line,
    write_planned,
)
from .values import parse_class_names, parse_floats


@click.command("diff")
@click.option("--model", "model_spec", metavar="MODEL", help="Model spec both checkpoints load into (file.py:Name, package.module:Name).")
@click.option("--old", "old_weights", type=click.Path(readable=False), metavar="CKPT", help="Checkpoint of the old model (e.g. main's).")
@click.option("--new", "new_weights", type=click.Path(readable=False), metavar="CKPT", help="Checkpoint of the new model (e.g. the pull request's).")
@click.option("--old-model", metavar="MODEL", help="Model spec of the old side, when the two architectures differ (instead of --model).")
@click.option("--new-model", metavar="MODEL", help="Model spec of the new side, when the two architectures differ (instead of --model).")
@options(*MODEL_OPTIONS, *PROBE_OPTIONS, "output", "json_path", "markdown", "title", output={"default": "diff.html", "help": "HTML diff report to write (atomically)."})
@click.option("--old-label", metavar="TEXT", help="Name of the old side (default: its checkpoint's file name).")
@click.option("--new-label", metavar="TEXT", help="Name of the new side (default: its checkpoint's file name).")
@options(
    "layers", "exclude_layers", "layer_types", "max_probes", "batch_size",
    layers={"help": "Layers whose activations are compared, by module-path glob (repeatable). Default: every convolution."},
    layer_types={"help": "Layers whose activations are compared, by class name (repeatable)."},
    max_probes={"help": "Most probes used.  [default: 16]"},
)
@click.option("--max-galleries", type=click.IntRange(0), default=4, show_default=True, help="Most changed convolutions whose filters are drawn side by side.")
@options("class_names", "timestamp", "quiet", "debug")
@handle_errors
def diff(**kw: Any) -> None:
    """Compare two models on the same probes: architecture, weights, activations, predictions
    and alerts, in one self-contained HTML page (plus Markdown and JSON views).

    \b
    Same architecture, two checkpoints:
      cnnreport diff --model net.py:Net --old main.pt --new pr.pt --probes val/ -o diff.html
    Two architectures:
      cnnreport diff --old-model old.py:Net --old a.pt --new-model new.py:Net --new b.pt \\
          --probes val/ -o diff.html --markdown diff.md
    """
    # Lazy: loading and the diff import torch (and --help must not).
    from ..io.probes import normalisation
    from ..report.diff import diff_reports
    from ..report.pipeline import make_options

    probe_paths = list(kw["probes"] or [])
    # Options the rest of the command makes meaningless, then values that cannot work: both
    # refused before the models load.
    refuse_inapplicable(click.get_current_context(), probe_option_rules(kw, probe_paths, weights_given=bool(kw["old_weights"] or kw["new_weights"])))
    mean, std = parse_floats(kw["mean"], "--mean"), parse_floats(kw["std"], "--std")
    normalisation(mean, std)
    old_spec, new_spec = _model_specs(kw)
    inputs = [
        ("the --old checkpoint", kw["old_weights"]),
        ("the --new checkpoint", kw["new_weights"]),
        ("the old MODEL file", spec_file(old_spec)),
        ("the new MODEL file", spec_file(new_spec)),
        ("the --class-names file", class_names_file(kw["class_names"])),
    ]
    # Before any work: an output that is an input, or that cannot be written, is refused now.
    plan_run_outputs(kw, inputs + probe_inputs(probe_paths))
    old, new = _load_sides(kw, old_spec, new_spec)
    if not probe_paths and not kw["input_size"]:
        raise OptionError(NO_PROBES)
    options = make_options(
        None,
        title=kw["title"],
        layers=list(kw["layers"]),
        exclude_layers=list(kw["exclude_layers"]),
        layer_types=list(kw["layer_types"]),
        max_probes=kw["max_probes"],
        batch_size=kw["batch_size"],
        timestamp=kw["timestamp"] or None,
        progress=not kw["quiet"],
        class_names=parse_class_names(kw["class_names"]) or new.class_names or old.class_names,
    )
    probes = load_probe_set(kw, probe_paths, old.model, mean=mean, std=std, max_probes=options.max_probes)
    plan = plan_run_outputs(kw, inputs + probe_inputs(probe_paths, probes))
    old_label, new_label = _labels(kw, old_spec, new_spec)
    report = diff_reports(
        old.model,
        new.model,
        probes,
        options=options,
        old_label=old_label,
        new_label=new_label,
        old_provenance=_provenance(old),
        new_provenance=_provenance(new),
        input_size=kw["input_size"],
        max_galleries=kw["max_galleries"],
        old_stored_weights=old.stored_weights,
        new_stored_weights=new.stored_weights,
    )
    write_planned(report, plan)
    if not kw["quiet"]:
        top = report.weight_changes[0] if report.weight_changes else None
        biggest = f"; largest weight change {top.name} {top.relative * 100:.2f}%" if top and top.relative is not None else ""
        summary_line(kw["output"], f"{len(report.architecture)} modules changed, {report.predictions_changed} of {len(report.predictions)} top-1 predictions changed{biggest}")


def _model_specs(kw: dict[str, Any]) -> tuple[str, str]:
    """The old and the new model spec: ``--model`` for both, or ``--old-model``/``--new-model``."""
    spec, old_spec, new_spec = kw["model_spec"], kw["old_model"], kw["new_model"]
    if spec and (old_spec or new_spec):
        raise OptionError("give either --model (one architecture) or --old-model/--new-model (two), not both")
    old_spec, new_spec = old_spec or spec, new_spec or spec
    if not old_spec or not new_spec:
        raise OptionError("no model: pass --model SPEC with --old and --new checkpoints, or --old-model and --new-model")
    if spec and not (kw["old_weights"] and kw["new_weights"]):
        raise OptionError("--model compares two checkpoints of one architecture: pass both --old CKPT and --new CKPT")
    return old_spec, new_spec


def _load_sides(kw: dict[str, Any], old_spec: str, new_spec: str) -> tuple[Any, Any]:
    """The old and the new model, loaded in that order with their checkpoints."""
    from ..io.loading import load_model, parse_model_args  # lazy: imports torch

    model_args = parse_model_args(kw["model_args"])
    old, new = (
        load_model(
            spec,
            weights=weights,
            weights_key=kw["weights_key"],
            model_args=model_args,
            trust_checkpoint=kw["trust_checkpoint"],
            device=kw["device"],
            keep_stored_weights=True,  # weights compare in the checkpoints' own precision
        )
        for spec, weights in ((old_spec, kw["old_weights"]), (new_spec, kw["new_weights"]))
    )
    return old, new


def _provenance(loaded: Any) -> Any:
    """One side's provenance: this run's, with the side's checkpoint."""
    from ..io.provenance import default_provenance  # lazy, as the loading it follows

    prov = default_provenance()
    prov.checkpoint_path = loaded.checkpoint_path
    prov.checkpoint_sha256 = loaded.checkpoint_sha256
    prov.command_line = command_line()
    return prov


def _labels(kw: dict[str, Any], old_spec: str, new_spec: str) -> tuple[str, str]:
    """The two sides' names: given, else the checkpoint's file name, else the model spec; two
    equal names become ``old X`` and ``new X``."""
    old_label = kw["old_label"] or _label(kw["old_weights"], old_spec, "old")
    new_label = kw["new_label"] or _label(kw["new_weights"], new_spec, "new")
    if old_label == new_label:
        return f"old {old_label}", f"new {new_label}"
    return old_label, new_label


def _label(weights: str | None, spec: str | None, fallback: str) -> str:
    """A short name for one side: the weights file's name, else the model spec, else old/new."""
    if weights:
        return os.path.basename(weights)
    if spec:
        return spec.rsplit("/", 1)[-1]
    return fallback


__all__ = ["diff"]
