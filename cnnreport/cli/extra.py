"""``cnnreport diff`` and ``cnnreport verify``: click commands that ``cnnreport.cli`` registers.

They use :mod:`.main`'s error mapping and option parsers; :mod:`.main` never imports this module.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .main import (
    MAX_IMAGE_PIXELS_HELP,
    _class_names,
    _floats,
    class_names_file,
    handle_errors,
    plan_run_outputs,
    probe_inputs,
    probe_option_rules,
    refuse_inapplicable,
    spec_file,
    write_planned,
)


def _handled(func: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`.main.handle_errors` around a command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return handle_errors(func)(*args, **kwargs)

    return wrapper


def _label(weights: str | None, spec: str | None, fallback: str) -> str:
    """A short name for one side: the weights file's name, else the model spec, else old/new."""
    if weights:
        return os.path.basename(weights)
    if spec:
        return spec.rsplit("/", 1)[-1]
    return fallback


@click.command("diff")
@click.option("--model", "model_spec", metavar="MODEL", help="Model spec both checkpoints load into (file.py:Name, package.module:Name).")
@click.option("--old", "old_weights", type=click.Path(readable=False), metavar="CKPT", help="Checkpoint of the old model (e.g. main's).")
@click.option("--new", "new_weights", type=click.Path(readable=False), metavar="CKPT", help="Checkpoint of the new model (e.g. the pull request's).")
@click.option("--old-model", metavar="MODEL", help="Model spec of the old side, when the two architectures differ (instead of --model).")
@click.option("--new-model", metavar="MODEL", help="Model spec of the new side, when the two architectures differ (instead of --model).")
@click.option("--weights-key", metavar="KEY", help="Key of the state dict inside both checkpoints (e.g. model_state_dict, ema).")
@click.option("--model-arg", "model_args", multiple=True, metavar="NAME=VALUE", help="Constructor argument for both models (repeatable); values are Python literals.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow unpickling whole model objects (runs code from the files: only for files you trust).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]), help="Where the models run.")
@click.option("--probes", multiple=True, metavar="PATH", help="Probe images both models see: folders, files or globs (repeatable).")
@click.option("--recursive", is_flag=True, help="Look for probe images in sub-folders too.")
@click.option("--image-size", nargs=2, type=click.IntRange(1), metavar="H W", help="Resize probes to H x W.")
@click.option("--resize", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True, help="How --image-size resizes.")
@click.option("--max-image-pixels", type=click.IntRange(1), metavar="N", help=MAX_IMAGE_PIXELS_HELP)
@click.option("--mean", metavar="PRESET|M,M,M", help="Normalisation mean: 'imagenet' (sets the std too), 'none' or comma-separated values on the [0, 1] scale.")
@click.option("--std", metavar="S,S,S", help="Normalisation std: comma-separated values above 0 (with a numeric --mean; default 1).")
@click.option("--input-size", nargs=3, type=click.IntRange(1), metavar="C H W", help="Without probes: compare on a synthetic input of this size.")
@click.option("-o", "--output", default="diff.html", show_default=True, type=click.Path(dir_okay=False), help="HTML diff report to write (atomically).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the JSON view.")
@click.option("--markdown", type=click.Path(dir_okay=False), help="Also write a Markdown summary (PR comment, $GITHUB_STEP_SUMMARY).")
@click.option("--title", help="Report title.")
@click.option("--old-label", metavar="TEXT", help="Name of the old side (default: its checkpoint's file name).")
@click.option("--new-label", metavar="TEXT", help="Name of the new side (default: its checkpoint's file name).")
@click.option("--layers", multiple=True, metavar="GLOB", help="Layers whose activations are compared, by module-path glob (repeatable). Default: every convolution.")
@click.option("--exclude-layers", multiple=True, metavar="GLOB", help="Layers to leave out, by glob (repeatable).")
@click.option("--layer-types", multiple=True, metavar="TYPE", help="Layers whose activations are compared, by class name (repeatable).")
@click.option("--max-probes", type=click.IntRange(1), help="Most probes used.  [default: 16]")
@click.option("--batch-size", type=click.IntRange(1), help="Probes per forward pass (bounds memory).  [default: 4, smaller later batches where a deep model needs the memory]")
@click.option("--max-galleries", type=click.IntRange(0), default=4, show_default=True, help="Most changed convolutions whose filters are drawn side by side.")
@click.option("--class-names", metavar="FILE|LIST", help="Class names: a text file (one a line; a blank line is an unnamed class), a JSON list or index map, or 'cat,dog,...'; matched to the model's classes, the page notes what does not fit.")
@click.option("--timestamp", is_flag=True, help="Put the creation time in the report (off: output is byte-for-byte reproducible).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary line.")
@click.option("--debug", is_flag=True, help="Show the full traceback on error.")
@_handled
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
    from ..errors import OptionError
    from ..io.loading import load_model, parse_model_args
    from ..io.probes import expected_input_ndim, image_channels, load_probes, normalisation
    from ..io.provenance import default_provenance
    from ..report.diff import diff_reports
    from ..report.pipeline import make_options

    probe_paths = list(kw["probes"] or [])
    # Options the rest of the command makes meaningless, then values that cannot work: both
    # refused before the models load.
    refuse_inapplicable(click.get_current_context(), probe_option_rules(kw, probe_paths, weights_given=bool(kw["old_weights"] or kw["new_weights"])))
    mean, std = _floats(kw["mean"], "--mean"), _floats(kw["std"], "--std")
    normalisation(mean, std)

    spec, old_spec, new_spec = kw["model_spec"], kw["old_model"], kw["new_model"]
    if spec and (old_spec or new_spec):
        raise OptionError("give either --model (one architecture) or --old-model/--new-model (two), not both")
    old_spec, new_spec = old_spec or spec, new_spec or spec
    if not old_spec or not new_spec:
        raise OptionError("no model: pass --model SPEC with --old and --new checkpoints, or --old-model and --new-model")
    if spec and not (kw["old_weights"] and kw["new_weights"]):
        raise OptionError("--model compares two checkpoints of one architecture: pass both --old CKPT and --new CKPT")
    inputs = [
        ("the --old checkpoint", kw["old_weights"]),
        ("the --new checkpoint", kw["new_weights"]),
        ("the old MODEL file", spec_file(old_spec)),
        ("the new MODEL file", spec_file(new_spec)),
        ("the --class-names file", class_names_file(kw["class_names"])),
    ]
    # Before any work: an output that is an input, or that cannot be written, is refused now.
    plan_run_outputs(kw, inputs + probe_inputs(probe_paths))
    model_args = parse_model_args(kw["model_args"])

    def load(model_spec: str, weights: str | None) -> Any:
        return load_model(
            model_spec,
            weights=weights,
            weights_key=kw["weights_key"],
            model_args=model_args,
            trust_checkpoint=kw["trust_checkpoint"],
            device=kw["device"],
            keep_stored_weights=True,  # weights compare in the checkpoints' own precision
        )

    old = load(old_spec, kw["old_weights"])
    new = load(new_spec, kw["new_weights"])
    if not probe_paths and not kw["input_size"]:
        raise OptionError("no probes: pass --probes PATH (images, a folder or tensors), or --input-size C H W for a synthetic input")
    overrides = {
        "title": kw["title"],
        "layers": list(kw["layers"]),
        "exclude_layers": list(kw["exclude_layers"]),
        "layer_types": list(kw["layer_types"]),
        "max_probes": kw["max_probes"],
        "batch_size": kw["batch_size"],
        "timestamp": kw["timestamp"] or None,
        "progress": not kw["quiet"],
        "class_names": _class_names(kw["class_names"]) or new.class_names or old.class_names,
    }
    options = make_options(None, **overrides)
    probes = None
    if probe_paths:
        probes = load_probes(
            probe_paths if len(probe_paths) > 1 else probe_paths[0],
            image_size=tuple(kw["image_size"]) if kw["image_size"] else None,
            resize=kw["resize"],
            mean=mean,
            std=std,
            channels=image_channels(old.model),
            sample_ndim=expected_input_ndim(old.model),
            recursive=kw["recursive"],
            max_probes=options.max_probes,
            max_image_pixels=kw["max_image_pixels"],
        )
    plan = plan_run_outputs(kw, inputs + probe_inputs(probe_paths, probes))
    command_line = "cnnreport " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    provenances = []
    for loaded in (old, new):
        prov = default_provenance()
        prov.checkpoint_path = loaded.checkpoint_path
        prov.checkpoint_sha256 = loaded.checkpoint_sha256
        prov.command_line = command_line
        provenances.append(prov)
    old_label = kw["old_label"] or _label(kw["old_weights"], old_spec, "old")
    new_label = kw["new_label"] or _label(kw["new_weights"], new_spec, "new")
    if old_label == new_label:
        old_label, new_label = f"old {old_label}", f"new {new_label}"
    report = diff_reports(
        old.model,
        new.model,
        probes,
        options=options,
        old_label=old_label,
        new_label=new_label,
        old_provenance=provenances[0],
        new_provenance=provenances[1],
        input_size=kw["input_size"],
        max_galleries=kw["max_galleries"],
        old_stored_weights=old.stored_weights,
        new_stored_weights=new.stored_weights,
    )
    write_planned(report, plan)
    if not kw["quiet"]:
        size = Path(kw["output"]).stat().st_size / 1e6
        top = report.weight_changes[0] if report.weight_changes else None
        biggest = f"; largest weight change {top.name} {top.relative * 100:.2f}%" if top and top.relative is not None else ""
        from ..errors import terminal_safe  # layer names come from the models

        click.echo(
            terminal_safe(
                f"wrote {kw['output']} ({size:.1f} MB): {len(report.architecture)} modules changed, "
                f"{report.predictions_changed} of {len(report.predictions)} top-1 predictions changed{biggest}"
            ),
            err=True,
        )


@click.command("verify")
@click.argument("report", metavar="REPORT")
@click.option("--weights", required=True, metavar="CKPT", help="Checkpoint the report should have been made from.")
@click.option("--weights-key", metavar="KEY", help="Key of the state dict inside the checkpoint, as given to generate (e.g. ema).")
@click.option("--trust-checkpoint", is_flag=True, help="Allow unpickling a whole model object to read its tensors (runs code from the file: only for files you trust).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on a match; only the exit status tells.")
@click.option("--debug", is_flag=True, help="Show the full traceback on error.")
@_handled
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
    from ..errors import terminal_safe
    from ..io.provenance import verify_report

    result = verify_report(report, weights, weights_key=weights_key, trust_checkpoint=trust_checkpoint)
    if result.ok:
        if not quiet:
            click.echo(terminal_safe(f"cnnreport: {result.message}"))
        return
    click.echo(terminal_safe(f"cnnreport: error: {' '.join(result.message.split())}"), err=True)
    sys.exit(1)


__all__ = ["diff", "verify"]
