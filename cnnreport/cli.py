"""The ``cnnreport`` command line: ``generate``, ``demo`` (and the commands later issues add).

Only this module knows click. A :class:`~cnnreport.errors.CnnReportError` becomes one line on
stderr and the error's exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .errors import CnnReportError, ForwardError, HealthCheckFailed, OptionError, terminal_safe

EXIT_USAGE = 2


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
        except KeyboardInterrupt:
            _fail("interrupted; no report was written", 130)

    return wrapper


def partial_path(output: str) -> str:
    """``report.html`` -> ``report.partial.html``: where a failed run leaves what it has."""
    path = Path(output)
    return str(path.with_name(f"{path.stem}.partial{path.suffix or '.html'}"))


def _class_names(value: str | None) -> list[str] | None:
    """Class names from a text file (one a line), a JSON list or index map, or 'a,b,c'."""
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OptionError(f"--class-names {value}: cannot read it as UTF-8 text ({exc})") from None
        if path.suffix.lower() != ".json":
            return [line.strip() for line in text.splitlines() if line.strip()]
        try:
            return _names_from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise OptionError(
                f"--class-names {value}: {exc}; give a JSON list of names, or a map of index to name "
                '(also {"0": ["n01440764", "tench"]}) or of name to index'
            ) from None
    if "," in value:
        return [v.strip() for v in value.split(",")]
    raise OptionError(f"--class-names {value!r}: not a file; give a text file (one name a line), a JSON file or a comma-separated list")


def _names_from_json(data: Any) -> list[str]:
    """Class names by index; indices a map leaves out are named by their number."""
    if isinstance(data, list):
        return [str(v[-1] if isinstance(v, list) and v else v) for v in data]
    if not isinstance(data, dict):
        raise TypeError(f"a JSON {type(data).__name__} is neither a list nor a map")
    if data and all(isinstance(v, int) for v in data.values()):  # {"cat": 0, ...}
        by_index = {int(i): str(name) for name, i in data.items()}
    else:  # {"0": "cat"} or {"0": ["wnid", "cat"]}
        try:
            by_index = {int(k): str(v[-1] if isinstance(v, list) and v else v) for k, v in data.items()}
        except ValueError:
            raise ValueError("its keys are not class indices") from None
    if not by_index or min(by_index) < 0:
        raise ValueError("no class indices from 0 up")
    return [by_index.get(i, str(i)) for i in range(max(by_index) + 1)]


def _write_outputs(report: Any, output: str, json_path: str | None, markdown: str | None) -> None:
    report.write_html(output)
    if json_path:
        report.write_json(json_path)
    if markdown:
        report.write_markdown(markdown)


def _check_writable(*paths: str | None) -> None:
    """Fail before the (possibly long) forward pass if an output cannot be written."""
    for p in paths:
        if not p:
            continue
        target = Path(p)
        folder = target.parent if str(target.parent) else Path(".")
        if target.is_dir():
            raise OptionError(f"output {p} is a folder; give a file name such as {target / 'report.html'}")
        if not folder.is_dir():
            raise OptionError(f"cannot write {p}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise OptionError(f"cannot write {p}: folder {folder} is not writable")


def _gate(report: Any, fail_on: str | None) -> None:
    if not fail_on:
        return
    from .report import Severity

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
        click.option("--class-names", metavar="FILE|LIST", help="Class names: a text file (one a line), a JSON list/dict, or 'cat,dog,...'."),
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
    provenance: Any = None,
    input_size: Any = None,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
) -> None:
    """Build, write and gate one report; a failed forward pass leaves a partial report."""
    from .pipeline import build_report, default_provenance

    output = kwargs["output"]
    _check_writable(output, kwargs.get("json_path"), kwargs.get("markdown"))
    prov = provenance or default_provenance()
    prov.command_line = "cnnreport " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        overrides = _options_from(kwargs)
        if class_names and "class_names" not in overrides:
            overrides["class_names"] = class_names  # names the checkpoint carries
        report = build_report(model, probes, input_size=input_size, provenance=prov, notes=notes or [], **overrides)
    except ForwardError as exc:
        if exc.report is not None:
            where = partial_path(output)
            exc.report.write_html(where)
            click.echo(f"cnnreport: error: {exc.one_line()}", err=True)
            click.echo(terminal_safe(f"cnnreport: wrote a partial report of what ran to {where}"), err=True)
            sys.exit(exc.exit_code)
        raise
    _write_outputs(report, output, kwargs.get("json_path"), kwargs.get("markdown"))
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnreport")
def main() -> None:
    """Turn a PyTorch CNN and a few probe images into one self-contained HTML report:
    architecture, what every layer sees, what it has learned, and what is wrong with it.

    \b
    Try it:   cnnreport demo -o demo-report.html
    Your model:
      cnnreport generate models/net.py:Net --weights ckpt.pt --probes images/ -o report.html
    """


@main.command()
@click.argument("model_spec", metavar="MODEL")
@click.argument("more_probes", nargs=-1, metavar="[PROBES]...")
@click.option("--weights", type=click.Path(), help="Checkpoint: a state dict, a training checkpoint that nests one, or .safetensors.")
@click.option("--weights-key", metavar="KEY", help="Key of the state dict inside the checkpoint (e.g. model_state_dict, ema).")
@click.option("--model-arg", "model_args", multiple=True, metavar="NAME=VALUE", help="Constructor argument (repeatable); values are Python literals.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow unpickling a whole model object (runs code from the file: only for files you trust).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]), help="Where the model runs.")
@click.option("--probes", multiple=True, metavar="PATH", help="Probe images: folders, files or globs (repeatable); images, .npy or .pt tensors.")
@click.option("--recursive", is_flag=True, help="Look for probe images in sub-folders too.")
@click.option("--image-size", nargs=2, type=click.IntRange(1), metavar="H W", help="Resize probes to H x W (shorter side, then centre crop).")
@click.option("--resize", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True, help="How --image-size resizes.")
@click.option("--mean", metavar="PRESET|M,M,M", help="Normalisation mean: 'imagenet', 'none' or comma-separated values.")
@click.option("--std", metavar="S,S,S", help="Normalisation std (comma-separated).")
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
    from .loading import load_model, parse_model_args
    from .pipeline import default_provenance
    from .probes import expected_input_ndim, image_channels, load_probes

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
    probe_paths = list(kwargs.pop("probes") or []) + list(kwargs.pop("more_probes") or [])
    mean, std = kwargs.pop("mean"), kwargs.pop("std")
    image_size, resize, recursive = kwargs.pop("image_size"), kwargs.pop("resize"), kwargs.pop("recursive")
    if probe_paths:
        probes = load_probes(
            probe_paths if len(probe_paths) > 1 else probe_paths[0],
            image_size=tuple(image_size) if image_size else None,
            resize=resize,
            mean=_floats(mean, "--mean"),
            std=_floats(std, "--std"),
            channels=image_channels(loaded.model),
            sample_ndim=expected_input_ndim(loaded.model),
            recursive=recursive,
        )
    input_size = kwargs.pop("input_size")
    if probes is None and (mean or std or image_size):
        raise OptionError("--mean, --std and --image-size preprocess probe images; with no --probes there is nothing to preprocess")
    if probes is None and not input_size:
        raise OptionError("no probes: pass --probes PATH (images, a folder or tensors), or --input-size C H W for a synthetic input")
    prov = default_provenance()
    prov.checkpoint_path = loaded.checkpoint_path
    prov.checkpoint_sha256 = loaded.checkpoint_sha256
    _run(loaded.model, probes, kwargs, provenance=prov, input_size=input_size, class_names=loaded.class_names, notes=loaded.notes)


def _floats(value: str | None, option: str) -> Any:
    if value is None:
        return None
    if value.strip().lower() in ("imagenet", "none"):
        return value.strip().lower()
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise OptionError(f"{option} {value!r}: give 'imagenet', 'none' or comma-separated numbers such as 0.5,0.5,0.5") from None


@main.command()
@common_report_options
@handle_errors
def demo(**kwargs: Any) -> None:
    """Write a report of the built-in demo: a small CNN trained on scikit-learn's digits.

    Runs offline in seconds: the weights and ten probe digits ship inside the package.
    """
    from .demo import CLASS_NAMES, demo_probe_paths, load_demo_model

    if kwargs.get("output") == "report.html" and "-o" not in sys.argv and "--output" not in sys.argv:
        kwargs["output"] = "demo-report.html"
    if not kwargs.get("title"):
        kwargs["title"] = "Demo: DigitsCNN trained on scikit-learn digits"
    from .probes import load_probes

    probes = load_probes([str(p) for p in demo_probe_paths()])
    # Paths inside the package, not this machine's: the demo page is the same everywhere.
    probes.sources = [f"cnnreport/data/demo/probes/{Path(p).name}" for p in probes.sources]
    _run(load_demo_model(), probes, kwargs, class_names=CLASS_NAMES)


from .cli_extra import diff as _diff_command  # noqa: E402
from .cli_extra import verify as _verify_command

main.add_command(_diff_command)
main.add_command(_verify_command)


if __name__ == "__main__":  # pragma: no cover
    main()
