"""Every command-line option, declared once.

A command takes its options by name with :func:`options`; where an option means something
narrower on one command (``--layers`` of ``diff`` chooses the compared layers), that command
changes its help or default there, never its name, type or meaning of the value.
Nothing here imports torch: ``cnnreport --help`` stays fast.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Help of --max-image-pixels (the number is probes.MAX_IMAGE_PIXELS, written out so that
#: --help does not import torch; a test holds the two equal).
MAX_IMAGE_PIXELS_HELP = (
    "Most pixels (width x height) one probe image may have; larger files are refused from their "
    "header, before decoding.  [default: 268435456, 16384x16384]"
)


def _option(*decls: str, **attrs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return decls, attrs


#: By parameter name: the declarations and click attributes of each option.
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # The model and its checkpoint.
    "weights": _option("--weights", type=click.Path(readable=False), help="Checkpoint: a state dict, a training checkpoint that nests one, or .safetensors."),
    "weights_key": _option("--weights-key", metavar="KEY", help="Key of the state dict inside the checkpoint (e.g. model_state_dict, ema)."),
    "model_args": _option("--model-arg", "model_args", multiple=True, metavar="NAME=VALUE", help="Constructor argument (repeatable); values are Python literals."),
    "trust_checkpoint": _option("--trust-checkpoint", is_flag=True, help="Allow unpickling a whole model object (runs code from the file: only for files you trust)."),
    "device": _option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]), help="Where the model runs."),
    # The probes.
    "probes": _option("--probes", multiple=True, metavar="PATH", help="Probe images: folders, files or globs (repeatable); images, .npy or .pt tensors."),
    "recursive": _option("--recursive", is_flag=True, help="Look for probe images in sub-folders too."),
    "image_size": _option("--image-size", nargs=2, type=click.IntRange(1), metavar="H W", help="Resize probes to H x W (shorter side, then centre crop)."),
    "resize": _option("--resize", type=click.Choice(["crop", "stretch"]), default="crop", show_default=True, help="How --image-size resizes."),
    "max_image_pixels": _option("--max-image-pixels", type=click.IntRange(1), metavar="N", help=MAX_IMAGE_PIXELS_HELP),
    "mean": _option("--mean", metavar="PRESET|M,M,M", help="Normalisation mean: 'imagenet' (sets the std too), 'none' or comma-separated values on the [0, 1] scale."),
    "std": _option("--std", metavar="S,S,S", help="Normalisation std: comma-separated values above 0 (with a numeric --mean; default 1)."),
    "input_size": _option("--input-size", nargs=3, type=click.IntRange(1), metavar="C H W", help="Without probes: run on a synthetic input of this size."),
    # The outputs.
    "output": _option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False), help="HTML report to write (atomically: an existing file is replaced only by a complete report)."),
    "json_path": _option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the JSON view (everything the page shows but the figures)."),
    "markdown": _option("--markdown", type=click.Path(dir_okay=False), help="Also write a Markdown summary (for a pull-request comment, $GITHUB_STEP_SUMMARY)."),
    "title": _option("--title", help="Report title (default: the model class)."),
    "max_html_mb": _option("--max-html-mb", type=click.FloatRange(0), help="Size budget for the HTML file: smaller tiles, then fewer channels are shown to keep it (the page says so); 0 for no limit.  [default: 8]"),
    "timestamp": _option("--timestamp", is_flag=True, help="Put the creation time in the report (off: output is byte-for-byte reproducible)."),
    # What the report shows.
    "layers": _option("--layers", multiple=True, metavar="GLOB", help="Layers that get a section, by module-path glob (repeatable), e.g. 'layer3.*'. Default: every convolution."),
    "exclude_layers": _option("--exclude-layers", multiple=True, metavar="GLOB", help="Layers to leave out, by glob (repeatable)."),
    "layer_types": _option("--layer-types", multiple=True, metavar="TYPE", help="Layers that get a section, by class name (repeatable), e.g. Conv2d, ReLU."),
    "max_channels": _option("--max-channels", type=click.IntRange(0, 1024), help="Most active channels shown per layer and probe.  [default: 16]"),
    "max_probes": _option("--max-probes", type=click.IntRange(1), help="Probes shown in mosaics.  [default: 16]"),
    "tile_size": _option("--tile-size", type=click.IntRange(4, 512), help="Largest side of an activation tile, in pixels.  [default: 48]"),
    "batch_size": _option("--batch-size", type=click.IntRange(1), help="Probes per forward pass: bounds memory; raise it for hundreds of small probes.  [default: 4, smaller later batches where a deep model needs the memory]"),
    "class_names": _option("--class-names", metavar="FILE|LIST", help="Class names: a text file (one a line; a blank line is an unnamed class), a JSON list or index map, or 'cat,dog,...'; matched to the model's classes, the page notes what does not fit."),
    "target_class": _option("--target-class", type=int, help="Class Grad-CAM explains (default: each probe's top prediction)."),
    "cam_layer": _option("--cam-layer", metavar="LAYER", help="Layer Grad-CAM explains (default: the outermost block around the last feature map, e.g. layer4 of a ResNet)."),
    "no_attributions": _option("--no-attributions", is_flag=True, help="Skip Grad-CAM and saliency."),
    "saliency": _option("--saliency", is_flag=True, help="Add gradient saliency maps (one extra forward and a full backward pass: about twice the time)."),
    "spectral": _option("--spectral", is_flag=True, help="Add layer quality without data: each convolution and linear layer's weight-spectrum exponent alpha (WeightWatcher's method; a few seconds on a ResNet-50)."),
    "no_graph": _option("--no-graph", is_flag=True, help="Skip the architecture graph."),
    "fail_on": _option("--fail-on", type=click.Choice(["info", "warning", "error"]), help="Exit with status 4 when an alert of this severity or worse is found (the report is still written)."),
    # Dataset examples: what each channel responds to over a large image set.
    "examples": _option("--examples", type=click.Path(file_okay=False), metavar="DIR", help="A folder of images (hundreds to tens of thousands, read like the probes) streamed through the model: for each section's layer, the images that excite each channel most, cropped to its receptive field. Under torchrun the folder is split across the processes."),
    "example_channels": _option("--channels", "example_channels", metavar="N|I,J,...", help="With --examples: how many of each layer's most active channels over the set get examples, or their indices.  [default: 16]"),
    "example_top_k": _option("--example-k", "example_top_k", type=click.IntRange(1, 64), metavar="K", help="With --examples: examples shown per channel.  [default: 8]"),
    "example_batch_size": _option("--example-batch-size", type=click.IntRange(1), metavar="N", help="With --examples: examples per forward pass.  [default: 4 on the CPU (its fastest size, whose activations stay in cache), 32 on a GPU]"),
    "example_workers": _option("--workers", "example_workers", type=click.IntRange(0, 64), metavar="N", help="With --examples: worker processes decoding the images (0: in this process).  [default: one per spare core, at most 4]"),
    # How the command runs.
    "quiet": _option("-q", "--quiet", is_flag=True, help="No progress bar or summary line."),
    "debug": _option("--debug", is_flag=True, help="Show the full traceback on error."),
}

#: The options of a model and its probes (``generate`` and ``diff``), in --help order.
MODEL_OPTIONS = ("weights_key", "model_args", "trust_checkpoint", "device")
PROBE_OPTIONS = ("probes", "recursive", "image_size", "resize", "max_image_pixels", "mean", "std", "input_size")
#: The dataset examples' options (``generate``).
EXAMPLE_OPTIONS = ("examples", "example_channels", "example_top_k", "example_batch_size", "example_workers")
#: What a report shows and where it goes (``generate`` and ``demo``), in --help order.
REPORT_OPTIONS = (
    "output", "json_path", "markdown", "title", "layers", "exclude_layers", "layer_types", "max_channels",
    "max_probes", "tile_size", "batch_size", "max_html_mb", "class_names", "target_class", "cam_layer",
    "no_attributions", "saliency", "spectral", "no_graph", "fail_on", "timestamp", "quiet", "debug",
)


def options(*names: str, **changes: dict[str, Any]) -> Callable[[F], F]:
    """A decorator giving a command the options ``names`` (from :data:`OPTIONS`), shown in this
    order in --help. ``changes`` maps an option's name to the attributes this command gives it
    differently: ``options("output", output={"default": "diff.html"})``."""
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ValueError(f"changes for options the command does not take: {', '.join(unknown)}")

    def decorate(func: F) -> F:
        for name in reversed(names):
            decls, attrs = OPTIONS[name]
            func = click.option(*decls, **{**attrs, **changes.get(name, {})})(func)
        return func

    return decorate


__all__ = ["MAX_IMAGE_PIXELS_HELP", "MODEL_OPTIONS", "OPTIONS", "PROBE_OPTIONS", "REPORT_OPTIONS", "options"]
