"""The plain data model between the pipeline's stages and its renderers.

Nothing here holds a tensor or a line of markup: stages fill these dataclasses with strings,
numbers and PNG bytes, and the renderers (HTML, JSON, Markdown) only format them.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .support.batching import DEFAULT_BATCH


@dataclass(frozen=True)
class Figure:
    """An image the page shows: PNG bytes, their pixel size and an alt text.

    The base64 data URI is made at render time, so JSON and Markdown views never carry it.
    """

    png: bytes
    width: int
    height: int
    alt: str
    caption: str = ""

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Tile:
    """One labelled tile of a mosaic figure, in the mosaic's own pixel coordinates."""

    label: str
    x: int
    y: int
    width: int
    height: int
    title: str = ""


@dataclass
class Mosaic:
    """A grid figure whose tiles carry labels (channel indices) the page overlays on hover."""

    figure: Figure
    columns: int
    rows: int
    tiles: list[Tile]
    vmin: float  # the colour scale, over the finite values shown (NaN: none is finite)
    vmax: float
    colormap: str
    probe: str = ""
    nonfinite: int = 0  # NaN and Inf values in the channels shown, drawn grey

    @property
    def scaled(self) -> bool:
        """Whether the colour scale exists: False when no value shown is finite."""
        return math.isfinite(self.vmin) and math.isfinite(self.vmax)


@dataclass
class ActivationStats:
    """Summary statistics of one activation tensor (or of all probes' activations together)."""

    mean: float
    std: float
    min: float
    max: float
    frac_zero: float
    nan_count: int = 0
    inf_count: int = 0
    numel: int = 0


@dataclass
class WeightStats:
    """Statistics of one layer's weight tensor."""

    norm: float
    mean: float
    std: float
    min: float
    max: float
    frac_near_zero: float
    nan_count: int = 0
    inf_count: int = 0


@dataclass
class Prediction:
    class_index: int
    label: str
    probability: float


@dataclass
class ProbeInfo:
    """One probe image: its name, a thumbnail as the user sees it, and the model's top classes."""

    name: str
    thumbnail: Figure | None
    predictions: list[Prediction] = field(default_factory=list)
    source: str = ""
    sha256: str = ""


@dataclass
class LayerRow:
    """One row of the architecture table, copied from torchinfo's summary."""

    name: str
    type: str
    depth: int
    input_shape: list[Any]
    output_shape: list[Any]
    kernel_size: list[int] | None
    params: int
    param_percent: float
    mult_adds: int
    trainable: str  # "yes", "no", "partial" or "" (no parameters of its own)
    is_leaf: bool
    executed: bool = True
    call_index: int = 1
    row_id: str = ""
    section_id: str = ""
    shared_with: list[str] = field(default_factory=list)
    receptive_field: int | None = None
    effective_stride: int | float | None = None
    flops: int | None = None


@dataclass
class ModelSummary:
    """Key numbers about the model as a whole."""

    class_name: str
    input_shape: list[int]
    output_shape: list[Any]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    mult_adds: int
    param_bytes: int
    buffer_bytes: int = 0
    torchinfo_total_params: int | None = None
    was_training: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    num_conv_layers: int = 0


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


class AlertKind(str, enum.Enum):
    """Every kind of finding the health checks can raise."""

    DEAD_CHANNELS = "dead_channels"  #: channels that never vary over the probes
    NON_FINITE = "non_finite"  #: NaN or Inf in weights, buffers or activations
    EXPLODING = "exploding_activations"  #: activation scale grows by orders of magnitude
    VANISHING = "vanishing_activations"  #: activation scale shrinks by orders of magnitude
    DEAD_FILTERS = "dead_filters"  #: filters whose weight norm is near zero
    DUPLICATE_FILTERS = "duplicate_filters"  #: near-identical filters
    BATCHNORM = "batchnorm"  #: collapsed variance, zero gamma or never-updated running stats
    SATURATION = "saturation"  #: values pinned at a bounded activation's limit
    NO_CONVOLUTION = "no_convolution"  #: the model has no convolution layer at all
    SYNTHETIC_INPUT = "synthetic_input"  #: no probes were given
    UNTRAINED = "untrained"  #: dead channels nearly everywhere and BatchNorm never updated: weights not trained or not loaded
    SPECTRAL_ALPHA = "spectral_alpha"  #: a layer's weight-spectrum exponent outside the usual band (--spectral)
    PREPROCESSING = "preprocessing"  #: the probes do not look like what the first BatchNorm saw in training
    FP16_OVERFLOW = "fp16_overflow"  #: activations beyond (or near) float16's largest value, 65,504
    FP16_UNDERFLOW = "fp16_underflow"  #: many nonzero activations below float16's smallest normal
    TRAINING_MODE = "training_mode"  #: the model was given in training mode: dropout, BatchNorm updates
    PRUNABLE = "prunable"  #: parameters and mult-adds that dead and duplicate filters cost


@dataclass
class Alert:
    kind: AlertKind
    severity: Severity
    layer: str
    message: str
    value: float | None = None
    section_id: str = ""
    #: The check's figures by name (mean and spread against training's, the margin to
    #: float16's range, parameters and mult-adds to save ...); empty for most kinds.
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass
class Histogram:
    """Bin edges and counts: the JSON view keeps the numbers, the page shows the figure."""

    edges: list[float]
    counts: list[int]
    figure: Figure | None = None


@dataclass
class ChannelFact:
    """Per-channel mean activation over all probes, for the compact strip and dead-channel checks."""

    means: list[float]  # over the finite values of each channel; NaN where it has none
    dead: list[int] = field(default_factory=list)
    figure: Figure | None = None
    nonfinite: list[int] = field(default_factory=list)  # channels holding NaN or Inf, drawn grey


@dataclass
class FilterGallery:
    figure: Figure
    note: str
    shown_filters: int
    total_filters: int
    vmax: float  # the colour scale: the largest finite |weight| drawn
    colormap: str
    nonfinite: int = 0  # NaN and Inf weights among those drawn, drawn grey


@dataclass
class LayerSection:
    """Everything the page shows about one captured call of one layer."""

    id: str
    name: str
    type: str
    call_index: int
    output_shape: list[int]
    stats: ActivationStats
    per_probe_stats: list[ActivationStats] = field(default_factory=list)
    mosaics: list[Mosaic] = field(default_factory=list)
    channels: ChannelFact | None = None
    histogram: Histogram | None = None
    filters: FilterGallery | None = None
    weight_stats: WeightStats | None = None
    weight_histogram: Histogram | None = None
    notes: list[str] = field(default_factory=list)
    group: str = ""

    @property
    def label(self) -> str:
        return layer_label(self.name, self.call_index)


@dataclass
class Attribution:
    """Grad-CAM and saliency for one probe."""

    probe: str
    target_class: int
    target_label: str
    method: str
    layer: str
    figure: Figure
    peak_xy: tuple[int, int] | None = None


@dataclass
class ForwardFailure:
    """Where a forward pass broke, for the partial report."""

    message: str
    exception_type: str
    failed_at: str
    failed_type: str
    last_completed: str
    input_shapes: list[Any]
    expected: str = ""
    #: The error as one line, as the CLI prints it: the module or op that failed and what it got.
    summary: str = ""


@dataclass
class ReportOptions:
    """Every choice that shapes a report. Defaults make a complete report of a CNN."""

    title: str = ""
    layers: list[str] = field(default_factory=list)  # name globs; empty: every convolution
    exclude_layers: list[str] = field(default_factory=list)
    layer_types: list[str] = field(default_factory=list)  # class names, e.g. ["Conv2d", "ReLU"]
    max_channels: int = 16
    max_probes: int = 16
    tile_size: int = 48  # ResNet-50's 56 px maps lose little at 48, and the page stays near 7 MB
    # Probes per forward pass. None: automatic, 4 (half the forward's peak memory of a batch of
    # 8 for ~2% more time), later batches smaller where a deep model's tiles need the room
    # (batching.py); the built report states the size it started with. Raise it for hundreds
    # of small probes, where the per-batch hook cost adds up.
    batch_size: int | None = None
    max_html_mb: float | None = 8.0  # a CI artifact stays small: deeper models show less, and say so; 0 or None: no limit
    top_k: int = 3
    class_names: list[str] | dict[int, str] | None = None  # a map is resolved against the model's classes: a built report holds one name per class
    max_filters: int = 32
    max_filter_inputs: int = 8
    histogram_bins: int = 40
    attributions: bool = True
    target_class: int | None = None
    cam_layer: str | None = None
    # Off by default: the gradient must reach the input, so it costs a second forward and a
    # full backward that holds every activation (about 2x the report's time and 4x its memory
    # on ResNet-50); Grad-CAM shares the capture pass and stays on.
    saliency: bool = False
    graph: bool = True
    # Health-check thresholds, shown in the report.
    dead_channel_fraction: float = 0.25
    explode_ratio: float = 1e3
    vanish_ratio: float = 1e-3
    dead_filter_norm: float = 1e-6
    duplicate_filter_cosine: float = 0.99
    bn_min_variance: float = 1e-5
    bn_min_gamma: float = 1e-3
    saturation_fraction: float = 0.9
    #: Share of measured layers with dead channels that, with every BatchNorm at its initial
    #: statistics, reads as weights never trained or never loaded.
    untrained_dead_layer_fraction: float = 0.5
    # The probes against what the first BatchNorm saw in training: its input's channel means
    # off by more than this many training standard deviations (RMS over channels), or its
    # spread more than this factor wider or narrower than training's.
    preprocess_max_shift: float = 2.0
    preprocess_max_scale: float = 3.0
    # ... or, for a 3-channel first convolution, swapping the probes' first and last channels
    # (RGB/BGR) would shrink that shift at least this many times.
    preprocess_swap_gain: float = 4.0
    # float16: a warning where a layer's largest |value| is within this factor of 65,504
    # (above it: an overflow to Inf), and where at least this share of a layer's nonzero
    # values lies below float16's smallest normal, 6.104e-05 (flushed to zero, or subnormal).
    fp16_headroom: float = 2.0
    fp16_underflow_fraction: float = 0.1
    timestamp: bool = False
    # How the run looks on a terminal, not what the report shows: kept out of every view.
    progress: bool = field(default=True, metadata={"shown": False})
    # Layer quality without data (off by default: 2.6 s of CPU on a ResNet-50, see
    # benchmarks/bench_spectral.py): each convolution and linear layer's weight-spectrum
    # exponent alpha (analysis/spectral.py), and an info alert outside
    # [spectral_alpha_low, spectral_alpha_high] for a layer whose spectrum has at least
    # spectral_min_eigenvalues eigenvalues: below ~50 the fit's alpha is mostly noise
    # (WeightWatcher's own source: "10, really 50"), as on the demo's 9-eigenvalue first layer
    # (alpha 9.4) and 10-eigenvalue classifier (1.6). Those still show their alpha.
    spectral: bool = False
    spectral_alpha_low: float = 2.0
    spectral_alpha_high: float = 6.0
    spectral_min_eigenvalues: int = 50
    # Dataset examples (``examples=`` / ``--examples DIR``; capture/examples.py,
    # report/examples.py): over a set of images streamed in batches, for each section's layer
    # and each channel shown, the example_top_k examples that excite it most, each cropped to
    # the channel's receptive field around its strongest position (example_crop_px a side on
    # the page). example_channels: how many of the most active channels over the set (by
    # mean), or a list of channel indices.
    example_top_k: int = 8
    example_channels: int | list[int] = 16
    example_crop_px: int = 48
    # Examples per forward batch. None: automatic, 4 on the CPU (the probes' batch: the same
    # working memory as their pass, and a CPU's fastest size, whose activations stay in cache:
    # ResNet-50 ran 32 images in about half the time as 8 batches of 4 as in one of 32), 32 on
    # an accelerator. A built report states the size it used.
    example_batch_size: int | None = None
    # DataLoader worker processes decoding the examples; None: min(4, CPUs - 1). How the run
    # goes, not what it shows: kept out of the views (a sharded run uses its own).
    example_workers: int | None = field(default=None, metadata={"shown": False})

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @property
    def first_batch(self) -> int:
        """Probes in the first forward batch: ``batch_size``, or the automatic default."""
        return max(1, self.batch_size or DEFAULT_BATCH)


@dataclass
class ProbeFile:
    """One probe file a report was made from: its name, SHA-256 and path as given."""

    name: str
    sha256: str
    source: str = ""


@dataclass
class Provenance:
    cnnreport_version: str
    torch_version: str
    python_version: str
    model_fingerprint: str = ""
    checkpoint_sha256: str = ""
    checkpoint_path: str = ""
    command_line: str = ""
    created: str = ""
    probe_files: list[ProbeFile] = field(default_factory=list)


@dataclass
class ExampleHit:
    """One of the examples that excite a channel most (``--examples``)."""

    example: str  # the file, as listed under the examples folder (relative to it)
    index: int  # its position in the example set's sorted list
    value: float  # the channel's largest value in that example
    position: tuple[int, int] | None  # (row, column) of that value in the layer's output; None: no spatial grid (an (N, C) output)
    box: tuple[int, int, int, int]  # (top, left, height, width) in input pixels: the receptive field around it, clipped to the image


@dataclass
class ChannelExamples:
    """What one channel responds to over the example set."""

    channel: int
    mean: float  # over every value of every example; NaN where none is finite
    zero_fraction: float  # of every value, those exactly zero
    max_mean: float  # the mean over the examples of the channel's largest value in each
    hits: list[ExampleHit]  # strongest first; ties: the earlier example
    max_histogram: Histogram | None = None  # of the per-example maximum
    strip: Figure | None = None  # the hits' crops side by side, in order


@dataclass
class LayerExamples:
    """One section layer's channels over the example set, beside the probes' own statistics."""

    section_id: str
    name: str
    call_index: int
    channels: list[ChannelExamples]  # those shown, most active first (or as asked)
    means: list[float]  # every channel's mean over the set
    zero_fractions: list[float]  # every channel's share of exact zeros over the set
    dead: list[int]  # channels constant over the whole set
    receptive_field: int | float | None = None  # in input pixels; None: unknown (crops are the whole image)
    stride: int | float | None = None  # effective stride in input pixels
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return layer_label(self.name, self.call_index)


@dataclass
class ExampleSet:
    """The dataset examples of a report (``examples=`` / ``--examples DIR``)."""

    source: str  # the folder as given
    count: int  # examples reduced
    layers: list[LayerExamples]
    notes: list[str] = field(default_factory=list)


@dataclass
class LayerSpectrum:
    """One layer's weight spectrum, as WeightWatcher fits it (``--spectral``; analysis/spectral.py)."""

    name: str
    type: str
    alpha: float | None  # the power-law exponent of the spectrum's tail; None: not fitted (see note)
    xmin: float | None  # the eigenvalue where the fitted tail starts
    ks_distance: float | None  # Kolmogorov-Smirnov distance of the fit over the tail
    eigenvalues: int  # eigenvalues in the pooled spectrum (above 1e-5)
    tail: int  # of them, those at or above xmin
    matrices: int  # weight matrices pooled: kernel positions of a convolution, 1 for a linear layer
    note: str = ""  # why there is no alpha


JSON_SCHEMA_VERSION = 1


def layer_label(name: str, call_index: int) -> str:
    """How the page names one call of a layer: its path ("(model)" for the model itself, one of
    its layers), with "(call k)" after the first."""
    name = name or ROOT_LABEL
    return name if call_index == 1 else f"{name} (call {call_index})"

#: How the page names the root module (module path ""), as torchinfo's table row does.
ROOT_LABEL = "(model)"


def _slug(name: str) -> str:
    """An HTML id fragment for a module path, distinct for distinct paths.

    ``layer1.0.conv1`` becomes ``layer1-0-conv1``. A path that holds anything besides letters,
    digits, ``_`` and ``.`` (``a-b``, ``a b``, ``α``) would collide with another, so it also
    gets a short hash of itself: deterministic, and unique.
    """
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "model"
    if not re.fullmatch(r"[A-Za-z0-9_.]*", name) or not name:
        slug += "-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return slug


def row_id(name: str) -> str:
    """The HTML id of a layer's row in the architecture table, derived from its module path."""
    return "row-" + _slug(name)


def section_id(name: str, call_index: int = 1) -> str:
    """The HTML id of a layer's section; stable across runs because it comes from the path."""
    sid = "sec-" + _slug(name)
    return sid if call_index == 1 else f"{sid}-call{call_index}"


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, enums to values; figures and SVG markup are left out."""
    if isinstance(value, Figure):
        return {"width": value.width, "height": value.height, "alt": value.alt}
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in fields(value):
            if f.name.startswith("graph_") or not f.metadata.get("shown", True):
                continue
            out[f.name] = _plain(getattr(value, f.name))
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return None
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value

