"""The ``cnnreport`` command line: ``generate``, ``demo`` (and the commands later issues add).

Only this module knows click. A :class:`~cnnreport.errors.CnnReportError` becomes one line on
stderr and the error's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import (
    CnnReportError,
    ForwardError,
    HealthCheckFailed,
    Interrupted,
    OptionError,
    terminal_safe,
)
from ..support.version import __version__

#: Help of --max-image-pixels, for every command that reads probe images (the number is
#: probes.MAX_IMAGE_PIXELS, written out so that --help does not import torch).
MAX_IMAGE_PIXELS_HELP = (
    "Most pixels (width x height) one probe image may have; larger files are refused from their "
    "header, before decoding.  [default: 268435456, 16384x16384]"
)

EXIT_USAGE = 2
#: Exit status of a run ended by a signal: 128 + the signal's number, as a shell reports it.
EXIT_SIGNAL_BASE = 128


def _fail(message: str, code: int) -> None:
    # Messages carry layer names, keys and paths from the user's files: no raw control
    # characters may reach the terminal (one_line() escapes too; this covers every caller).
    click.echo(f"cnnreport: error: {terminal_safe(message)}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map cnnreport's errors to one line and an exit code; other exceptions are bugs."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False)
        try:
            return func(*args, **kwargs)
        except CnnReportError as exc:
            if debug:
                traceback.print_exc()
            _fail(exc.one_line(), exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            _fail(interrupted_message(exc, getattr(exc, "planned_outputs", [])), EXIT_SIGNAL_BASE + int(signum))

    return wrapper


def interrupted_message(exc: KeyboardInterrupt, outputs: list[str]) -> str:
    """What an interrupted run did to its outputs: every one replaced, or none (outputs.py)."""
    name = signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"
    replaced = getattr(exc, "replaced_outputs", None)
    if replaced:
        return f"interrupted by {name} after every output was written ({', '.join(outputs) or ', '.join(replaced)})"
    kept = f" ({', '.join(outputs)} left as they were)" if outputs else ""
    return f"interrupted by {name}; no output was written{kept}"


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers(ctx: click.Context) -> None:
    """SIGTERM and SIGHUP end the run as Ctrl-C does, through every ``finally``: temporary
    files are removed and the message says what was written. Restored when the command ends."""
    import threading

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


def partial_path(output: str) -> str:
    """``report.html`` -> ``report.partial.html``: where a failed run leaves what it has."""
    path = Path(output)
    suffix = f".partial{path.suffix or '.html'}"
    stem = path.stem
    # Keep the name within the file system's usual 255 bytes, where the output's own name fits.
    while stem and len(os.fsencode(stem + suffix)) > 255:
        stem = stem[:-1]
    return str(path.with_name(f"{stem}{suffix}"))


#: Largest ``--class-names`` file read: its names are held in memory and shown on the page.
MAX_CLASS_NAMES_BYTES = 16 * 10**6


def _class_names(value: str | None) -> list[str] | dict[int, str] | None:
    """Class names from a text file (one a line), a JSON list or index map, or 'a,b,c'.

    Every form keeps each name's slot: a blank line or an empty field between commas is a
    class without a name (shown by its number), never a shift of every later name. Trailing
    blanks (a final newline, a trailing comma) are not classes. A JSON map stays a map of the
    indices it names, however far apart they are; the report matches it to the model's
    classes and says what did not fit (:func:`cnnreport.pipeline.resolve_class_names`).
    """
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        size = path.stat().st_size
        if size > MAX_CLASS_NAMES_BYTES:
            raise OptionError(
                f"--class-names {value} is {size / 1e6:.1f} MB; a class-name file is a few KB "
                f"(ImageNet-21k's 21,843 names are under 1 MB): limit {MAX_CLASS_NAMES_BYTES // 10**6} MB"
            )
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first name
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError(f"--class-names {value}: cannot read it as UTF-8 text ({exc})") from None
        if path.suffix.lower() != ".json":
            names = _slots(text.splitlines())
            if not any(names):
                raise OptionError(f"--class-names {value}: the file holds no names; give one name a line")
            return names
        try:
            return _names_from_json(json.loads(text, object_pairs_hook=_unique_keys))
        except (ValueError, TypeError) as exc:
            raise OptionError(
                f"--class-names {value}: {exc}; give a JSON list of names, or a map of index to name "
                '(also {"0": ["n01440764", "tench"]}) or of name to index'
            ) from None
    if "," in value:
        names = _slots(value.split(","))
        if not any(names):
            raise OptionError(f"--class-names {value!r} holds no names; give them as 'cat,dog,...'")
        return names
    raise OptionError(f"--class-names {value!r}: not a file; give a text file (one name a line), a JSON file or a comma-separated list")


def _slots(fields: list[str]) -> list[str]:
    """Names by position, stripped; blank ones keep their place, trailing blanks are dropped."""
    names = [f.strip() for f in fields]
    while names and not names[-1]:
        names.pop()
    return names


def _names_from_json(data: Any) -> list[str] | dict[int, str]:
    """Class names by index: a list, or a map of only the indices the file names.

    A map is never expanded here: ``{"0": "cat", "20000000": "dog"}`` is two names, and the
    report matches them against the model's own class count.
    """
    if isinstance(data, list):
        return [_json_name(v, f"entry {i}") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__} is neither a list nor a map")
    if not data:
        raise ValueError("the map is empty")
    by_index: dict[int, str] = {}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):  # {"cat": 0, ...}
        for name, index in data.items():
            if index < 0:
                raise ValueError(f"{name!r} maps to {index}, not a class index 0, 1, 2 ...")
            if index in by_index:
                raise ValueError(f"class {index} is named twice ({by_index[index]!r} and {name!r})")
            by_index[index] = name.strip()
        return by_index
    for key, v in data.items():  # {"0": "cat"} or {"0": ["wnid", "cat"]}
        text = key.strip()
        if not (text.isascii() and text.isdigit()):  # int() also takes "-1", "+1", "1_000"
            raise ValueError(f"key {key!r:.40} is not a class index 0, 1, 2 ...")
        index = int(text)
        if index in by_index:
            raise ValueError(f"class {index} is named twice")
        by_index[index] = _json_name(v, f"class {key}")
    return by_index


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: a repeated key would silently drop a name."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r:.40} appears twice")
        out[key] = value
    return out


def _json_name(value: Any, where: str) -> str:
    """One class name from a JSON value: a string, a number, ``[wnid, name]``, or null (no name)."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"{where} is a JSON {type(value).__name__}, not a name")


def spec_file(spec: str | None) -> str | None:
    """The file a MODEL spec reads (``net.py`` of ``net.py:Net``, a TorchScript file), if any."""
    if not spec:
        return None
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return path
    head = path.rpartition(":")[0]
    return head if head and os.path.isfile(head) else None


def class_names_file(value: str | None) -> str | None:
    """The --class-names value when it names a file (it is an input then)."""
    return value if value and os.path.isfile(value) else None


def plan_run_outputs(kwargs: dict[str, Any], inputs: list[tuple[str, str | None]], *, output_key: str = "output") -> Any:
    """Check every output of this run before any work (see :func:`cnnreport.outputs.plan_outputs`):
    an output that is an input or another output, or cannot be written, is refused."""
    from ..io.probes import SUPPORTED_SUFFIXES
    from ..render.outputs import plan_outputs

    output = kwargs[output_key]
    return plan_outputs(
        [("-o", output), ("--json", kwargs.get("json_path")), ("--markdown", kwargs.get("markdown"))],
        inputs,
        partial=partial_path(output) if output else None,
        folder_suffixes=SUPPORTED_SUFFIXES,
    )


def probe_inputs(paths: list[str], probes: Any = None) -> list[tuple[str, str | None]]:
    """The probe paths as given (files, folders, globs) and every file the loaded probes came from."""
    found: list[tuple[str, str | None]] = [("the probe", p) for p in paths]
    for source in getattr(probes, "sources", None) or []:
        if source:
            found.append(("the probe", source))
    return found


def write_planned(report: Any, plan: Any) -> None:
    """Write the report's views to the planned outputs, all or none."""
    try:
        report.write(html=_str(plan.path_of("-o")), json=_str(plan.path_of("--json")), markdown=_str(plan.path_of("--markdown")))
    except KeyboardInterrupt as exc:
        exc.planned_outputs = [out.given for out in plan.outputs]  # type: ignore[attr-defined]
        raise


def _str(path: Any) -> str | None:
    return None if path is None else str(path)


def write_partial(report: Any, plan: Any) -> None:
    """A failed forward pass: write the partial report beside the output, then exit with the
    forward pass's own error. If the partial report cannot be written, the error still leads."""
    where = plan.partial.given
    error_line = report.failure.summary
    try:
        report.write(html=str(plan.partial.path))
    except CnnReportError as write_error:
        _fail(f"{error_line}; the partial report {where} could not be written either: {write_error.one_line()}", ForwardError.exit_code)
    click.echo(f"cnnreport: error: {error_line}", err=True)
    click.echo(terminal_safe(f"cnnreport: wrote a partial report of what ran to {where}"), err=True)
    sys.exit(ForwardError.exit_code)


def refuse_inapplicable(ctx: click.Context, rules: list[tuple[str, bool, str]]) -> None:
    """Refuse an option given on the command line that the rest of the command makes meaningless.

    Each rule is ``(parameter name, whether it cannot apply, why)``; only options the user typed
    (not defaults) are refused.
    """
    from click.core import ParameterSource

    for name, cannot_apply, why in rules:
        source = ctx.get_parameter_source(name)
        if cannot_apply and source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            option = next((p.opts[-1] if len(p.opts) == 1 else max(p.opts, key=len) for p in ctx.command.params if p.name == name), name)
            raise OptionError(f"{option} {why}")


def report_option_rules(kwargs: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Rules of :func:`refuse_inapplicable` for the options ``generate`` and ``demo`` share."""
    off = bool(kwargs.get("no_attributions"))
    why = "has no effect with --no-attributions, which turns Grad-CAM and saliency off; leave one out"
    return [("saliency", off, why), ("target_class", off, why), ("cam_layer", off, why)]


def probe_option_rules(kwargs: dict[str, Any], probe_paths: list[str], *, weights_given: bool) -> list[tuple[str, bool, str]]:
    """Rules of :func:`refuse_inapplicable` for the model and probe options of ``generate``/``diff``."""
    return [
        ("input_size", bool(probe_paths), "sets a synthetic input, but probes are given and would be used instead: drop --input-size or the probes"),
        ("resize", not kwargs.get("image_size"), "says how --image-size resizes; without --image-size H W nothing is resized"),
        ("recursive", not probe_paths, "looks for probes in sub-folders, but no probe folder is given"),
        ("weights_key", not weights_given, "chooses the state dict inside a checkpoint, but no checkpoint (--weights) is given"),
        ("image_size", not probe_paths, "resizes probe images, but no --probes are given"),
        ("mean", not probe_paths, "normalises probe images, but no --probes are given"),
        ("std", not probe_paths, "normalises probe images, but no --probes are given"),
        ("max_image_pixels", not probe_paths, "limits probe images, but no --probes are given"),
    ]


def _gate(report: Any, fail_on: str | None) -> None:
    if not fail_on:
        return
    from ..datamodel import Severity

    threshold = Severity(fail_on).rank
    hits = [a for a in report.alerts if a.severity.rank >= threshold]
    if hits:
        first = hits[0]
        raise HealthCheckFailed(
            f"{len(hits)} alert(s) of severity {fail_on} or worse (--fail-on {fail_on}); first: "
            f"{first.layer + ': ' if first.layer else ''}{first.message}"
        )


def common_report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``generate`` and ``demo``: what to show and where to write it."""
    options = [
        click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False), help="HTML report to write (atomically: an existing file is replaced only by a complete report)."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the JSON view (everything the page shows but the figures)."),
        click.option("--markdown", type=click.Path(dir_okay=False), help="Also write a Markdown summary (for a pull-request comment)."),
        click.option("--title", help="Report title (default: the model class)."),
        click.option("--layers", multiple=True, metavar="GLOB", help="Layers that get a section, by module-path glob (repeatable), e.g. 'layer3.*'. Default: every convolution."),
        click.option("--exclude-layers", multiple=True, metavar="GLOB", help="Layers to leave out, by glob (repeatable)."),
        click.option("--layer-types", multiple=True, metavar="TYPE", help="Layers that get a section, by class name (repeatable), e.g. Conv2d, ReLU."),
        click.option("--max-channels", type=click.IntRange(0, 1024), help="Most active channels shown per layer and probe.  [default: 16]"),
        click.option("--max-probes", type=click.IntRange(1), help="Probes shown in mosaics.  [default: 16]"),
        click.option("--tile-size", type=click.IntRange(4, 512), help="Largest side of an activation tile, in pixels.  [default: 48]"),
        click.option("--batch-size", type=click.IntRange(1), help="Probes per forward pass: bounds memory; raise it for hundreds of small probes.  [default: 4, smaller later batches where a deep model needs the memory]"),
        click.option("--max-html-mb", type=click.FloatRange(0), help="Size budget for the HTML file: smaller tiles, then fewer channels are shown to keep it (the page says so); 0 for no limit.  [default: 8]"),
        click.option("--class-names", metavar="FILE|LIST", help="Class names: a text file (one a line; a blank line is an unnamed class), a JSON list or index map, or 'cat,dog,...'; matched to the model's classes, the page notes what does not fit."),
        click.option("--target-class", type=int, help="Class Grad-CAM explains (default: each probe's top prediction)."),
        click.option("--cam-layer", metavar="LAYER", help="Layer Grad-CAM explains (default: the outermost block around the last feature map, e.g. layer4 of a ResNet)."),
        click.option("--no-attributions", is_flag=True, help="Skip Grad-CAM and saliency."),
        click.option("--saliency", is_flag=True, help="Add gradient saliency maps (one extra forward and a full backward pass: about twice the time)."),
        click.option("--no-graph", is_flag=True, help="Skip the architecture graph."),
        click.option("--fail-on", type=click.Choice(["info", "warning", "error"]), help="Exit with status 4 when an alert of this severity or worse is found (the report is still written)."),
        click.option("--timestamp", is_flag=True, help="Put the creation time in the report (off: output is byte-for-byte reproducible)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary line."),
        click.option("--debug", is_flag=True, help="Show the full traceback on error."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options_from(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword overrides of ReportOptions that the CLI options give."""
    out: dict[str, Any] = {
        "title": kwargs.get("title"),
        "layers": list(kwargs.get("layers") or []),
        "exclude_layers": list(kwargs.get("exclude_layers") or []),
        "layer_types": list(kwargs.get("layer_types") or []),
        "max_channels": kwargs.get("max_channels"),
        "max_probes": kwargs.get("max_probes"),
        "tile_size": kwargs.get("tile_size"),
        "batch_size": kwargs.get("batch_size"),
        "max_html_mb": kwargs.get("max_html_mb"),
        "target_class": kwargs.get("target_class"),
        "cam_layer": kwargs.get("cam_layer"),
        "timestamp": kwargs.get("timestamp") or None,
        "progress": not kwargs.get("quiet"),
    }
    if kwargs.get("no_attributions"):
        out["attributions"] = False
    if kwargs.get("saliency"):
        out["saliency"] = True
    if kwargs.get("no_graph"):
        out["graph"] = False
    names = _class_names(kwargs.get("class_names"))
    if names:
        out["class_names"] = names
    return {k: v for k, v in out.items() if v is not None}


def _run(
    model: Any,
    probes: Any,
    kwargs: dict[str, Any],
    *,
    plan: Any,
    provenance: Any = None,
    input_size: Any = None,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
) -> None:
    """Build, write and gate one report; a failed forward pass leaves a partial report."""
    from ..io.provenance import default_provenance
    from ..report.pipeline import build_report

    output = kwargs["output"]
    prov = provenance or default_provenance()
    prov.command_line = "cnnreport " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        overrides = _options_from(kwargs)
        if class_names and "class_names" not in overrides:
            overrides["class_names"] = class_names  # names the checkpoint carries
        on_failure = "partial" if plan.partial is not None else "raise"
        report = build_report(model, probes, input_size=input_size, provenance=prov, notes=notes or [], on_failure=on_failure, **overrides)
        if report.failure is not None:
            write_partial(report, plan)
        write_planned(report, plan)
    except KeyboardInterrupt as exc:
        if not hasattr(exc, "planned_outputs"):
            exc.planned_outputs = [out.given for out in plan.outputs]  # type: ignore[attr-defined]
        raise
    if not kwargs.get("quiet"):
        size = Path(output).stat().st_size / 1e6
        counts = {s: sum(1 for a in report.alerts if a.severity.value == s) for s in ("error", "warning")}
        probes = report.probe_count
        shown = f" ({len(report.probes)} shown)" if probes > len(report.probes) else ""
        click.echo(
            terminal_safe(
                f"wrote {output} ({size:.1f} MB): {len(report.sections)} layer sections, {probes} probes{shown}, "
                f"{counts['error']} errors, {counts['warning']} warnings"
            ),
            err=True,
        )
    _gate(report, kwargs.get("fail_on"))


class OneLineErrorGroup(click.Group):
    """click's own usage errors (a bad option value, a missing argument) as one line, like ours:
    CI logs and scripts read one ``cnnreport: error: ...`` line whatever went wrong."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `cnnreport`: the help
                click.echo(ctx.get_help())
                sys.exit(exc.exit_code)
            where = f" (see '{ctx.command_path} --help')" if isinstance(exc, click.UsageError) and ctx is not None else ""
            _fail(" ".join(f"{exc.format_message()}{where}".split()), exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


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
# readable=False here and on diff's --old/--new: loading names an unreadable file in one line
@click.option("--weights", type=click.Path(readable=False), help="Checkpoint: a state dict, a training checkpoint that nests one, or .safetensors.")
@click.option("--weights-key", metavar="KEY", help="Key of the state dict inside the checkpoint (e.g. model_state_dict, ema).")
@click.option("--model-arg", "model_args", multiple=True, metavar="NAME=VALUE", help="Constructor argument (repeatable); values are Python literals.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow unpickling a whole model object (runs code from the file: only for files you trust).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]), help="Where the model runs.")
@click.option("--probes", multiple=True, metavar="PATH", help="Probe images: folders, files or globs (repeatable); images, .npy or .pt tensors.")
@click.option("--recursive", is_flag=True, help="Look for probe images in sub-folders too.")
@click.option("--image-size", nargs=2, type=click.IntRange(1), metavar="H W", help="Resize probes to H x W (shorter side, then centre crop).")
@click.option("--resize", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True, help="How --image-size resizes.")
@click.option("--max-image-pixels", type=click.IntRange(1), metavar="N", help=MAX_IMAGE_PIXELS_HELP)
@click.option("--mean", metavar="PRESET|M,M,M", help="Normalisation mean: 'imagenet' (sets the std too), 'none' or comma-separated values on the [0, 1] scale.")
@click.option("--std", metavar="S,S,S", help="Normalisation std: comma-separated values above 0 (with a numeric --mean; default 1).")
@click.option("--input-size", nargs=3, type=click.IntRange(1), metavar="C H W", help="Without probes: report on a synthetic input of this size.")
@common_report_options
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
    from ..io.loading import load_model, parse_model_args
    from ..io.probes import expected_input_ndim, image_channels, load_probes, normalisation
    from ..io.provenance import default_provenance

    ctx = click.get_current_context()
    probe_paths = list(kwargs.get("probes") or []) + list(kwargs.get("more_probes") or [])
    refuse_inapplicable(ctx, probe_option_rules(kwargs, probe_paths, weights_given=bool(kwargs.get("weights"))) + report_option_rules(kwargs))
    # Option values that cannot work are refused before the (possibly slow) model load.
    mean, std = _floats(kwargs.pop("mean"), "--mean"), _floats(kwargs.pop("std"), "--std")
    normalisation(mean, std)
    inputs = [("the MODEL file", spec_file(model_spec)), ("the --weights checkpoint", kwargs.get("weights")), ("the --class-names file", class_names_file(kwargs.get("class_names")))]
    # Before any work: an output that is an input, or that cannot be written, is refused now.
    plan_run_outputs(kwargs, inputs + probe_inputs(probe_paths))
    loaded = load_model(
        model_spec,
        weights=kwargs.pop("weights"),
        weights_key=kwargs.pop("weights_key"),
        model_args=parse_model_args(kwargs.pop("model_args")),
        trust_checkpoint=kwargs.pop("trust_checkpoint"),
        device=kwargs.pop("device"),
    )
    probes = None
    # `--probes imgs/*.png` reaches us as one --probes value and the rest as positionals: the
    # shell expanded the glob. Every path after MODEL is a probe, with or without --probes.
    kwargs.pop("probes"), kwargs.pop("more_probes")
    image_size, resize, recursive = kwargs.pop("image_size"), kwargs.pop("resize"), kwargs.pop("recursive")
    max_image_pixels = kwargs.pop("max_image_pixels")
    if probe_paths:
        probes = load_probes(
            probe_paths if len(probe_paths) > 1 else probe_paths[0],
            image_size=tuple(image_size) if image_size else None,
            resize=resize,
            mean=mean,
            std=std,
            channels=image_channels(loaded.model),
            sample_ndim=expected_input_ndim(loaded.model),
            recursive=recursive,
            max_image_pixels=max_image_pixels,
        )
    input_size = kwargs.pop("input_size")
    if probes is None and not input_size:
        raise OptionError("no probes: pass --probes PATH (images, a folder or tensors), or --input-size C H W for a synthetic input")
    # Again with every probe file found and every module the model imported.
    plan = plan_run_outputs(kwargs, inputs + probe_inputs(probe_paths, probes))
    prov = default_provenance()
    prov.checkpoint_path = loaded.checkpoint_path
    prov.checkpoint_sha256 = loaded.checkpoint_sha256
    _run(loaded.model, probes, kwargs, plan=plan, provenance=prov, input_size=input_size, class_names=loaded.class_names, notes=loaded.notes)


def _floats(value: str | None, option: str) -> Any:
    """``--mean``/``--std`` text as numbers or a preset name; whether the values can work
    (finite, a positive std, presets only where they mean what they say) is
    :func:`cnnreport.probes.normalisation`'s to judge, for the API and the CLI alike."""
    if value is None:
        return None
    if value.strip().lower() in ("imagenet", "none"):
        return value.strip().lower()
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        if option == "--std":
            raise OptionError(f"--std {value!r}: give comma-separated numbers such as 0.229,0.224,0.225") from None
        raise OptionError(f"{option} {value!r}: give 'imagenet', 'none' or comma-separated numbers such as 0.5,0.5,0.5") from None


@main.command()
@common_report_options
@handle_errors
def demo(**kwargs: Any) -> None:
    """Write a report of the built-in demo: a small CNN trained on scikit-learn's digits.

    Runs offline in seconds: the weights and ten probe digits ship inside the package.
    """
    from click.core import ParameterSource

    from ..io.demo import CLASS_NAMES, demo_probe_paths, load_demo_model

    if click.get_current_context().get_parameter_source("output") == ParameterSource.DEFAULT:
        kwargs["output"] = "demo-report.html"
    if not kwargs.get("title"):
        kwargs["title"] = "Demo: DigitsCNN trained on scikit-learn digits"
    from ..io.demo import WEIGHTS
    from ..io.probes import load_probes

    refuse_inapplicable(click.get_current_context(), report_option_rules(kwargs))
    paths = [str(p) for p in demo_probe_paths()]
    plan = plan_run_outputs(kwargs, [("the demo checkpoint", str(WEIGHTS))] + probe_inputs(paths))
    probes = load_probes(paths)
    # Paths inside the package, not this machine's: the demo page is the same everywhere.
    probes.sources = [f"cnnreport/data/demo/probes/{Path(p).name}" for p in probes.sources]
    _run(load_demo_model(), probes, kwargs, plan=plan, class_names=CLASS_NAMES)




if __name__ == "__main__":  # pragma: no cover
    main()
