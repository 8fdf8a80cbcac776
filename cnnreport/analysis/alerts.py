"""The health checks: every finding about a model on its probes, one function per kind of alert.

Each check takes one shared :class:`AlertContext` and returns its findings as (alert, order)
pairs; the order is the layer's position in execution, so the page lists findings where the
data meets them. :data:`ALERT_CHECKS` is the one place the checks are registered, and
:func:`health_alerts` runs them all. The checks, each with the ``ReportOptions`` threshold it
uses:

- non-finite values (error): NaN/Inf in a layer's weights or buffers, and the first layer
  in execution order whose output holds NaN/Inf (later layers only inherit them), saying
  where they came from: the probes (``probe_nonfinite``: NaN/Inf values in the probes,
  None when unknown), the model's own code between two layers, or the layer itself; and a
  model output holding NaN/Inf (``output_nonfinite`` values) that no layer's output did;
- dead channels (``dead_channel_fraction``): channels constant over every probe and
  position. A ReLU channel that is mostly zero is normal; only a constant one is dead.
  Needs the per-channel range the capture keeps for section layers (and for every layer
  once capture records it). A channel is reported once, where it first dies: the same
  channel reaching a later layer through per-channel layers and concatenations (DenseNet),
  constant still or zeroed again, is not reported there (:mod:`.channel_flow`); without a graph,
  a layer whose dead channels are all those of the layer just before it is not reported again;
- exploding / vanishing activations (``explode_ratio``, ``vanish_ratio``): the median over
  probes of a call's output RMS over its input RMS, except for layers whose scale is set by
  design (normalisation, bounded activations, softmax: :data:`SCALE_EXEMPT_TYPES`);
- dead filters (``dead_filter_norm``) and duplicate filters (``duplicate_filter_cosine``,
  on at most :data:`~cnnreport.analysis.statistics.DUPLICATE_FILTER_CAP` filters per layer)
  of convolutions;
- BatchNorm (``bn_min_variance``, ``bn_min_gamma``): collapsed running variance, gammas
  near zero, running statistics never updated in a trained model;
- saturation (``saturation_fraction``): the fraction of a bounded activation's values
  within 0.1% of its limits. The lower limit 0 of ReLU6 / Hardtanh(0, x) is ReLU's normal
  zero and does not count;
- the model as a whole: no convolution at all, activations from a synthetic input, and weights
  that look untrained or not loaded (``untrained_dead_layer_fraction``): dead channels in most
  measured layers while every BatchNorm still holds its initial statistics;
- preprocessing (``preprocess_max_shift``, ``preprocess_max_scale``, ``preprocess_swap_gain``):
  the first BatchNorm's input on the probes against its running statistics, saying what is
  likely wrong (raw 0-255 values, a missing normalisation, BGR against RGB) and how far off;
- float16 range (``fp16_headroom``, ``fp16_underflow_fraction``): layers whose largest
  |value| nears or passes 65,504, and layers with many nonzero values below 6.104e-05;
- training mode: the model, or modules whose mode matters, given in training mode (info);
- pruning: the dead and duplicate filters' parameters and mult-adds, per layer in their
  alerts and in all (info).

Each of the last four puts its figures in :attr:`Alert.numbers` as well as its message.

One alert per (kind, layer); ``section_id`` links to the layer's section when it has one.
Sorted errors first, then warnings, then info, each by execution order; findings at the same
severity and order keep the order of :data:`ALERT_CHECKS`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..capture.activations import FP16_SMALLEST_NORMAL, CaptureResult, LayerCapture
from ..capture.executed_graph import ExecutedGraph
from ..datamodel import (
    ROOT_LABEL,
    Alert,
    AlertKind,
    LayerSection,
    ReportOptions,
    Severity,
    section_id,
)
from ..model.modules import CONV_TYPES
from .channel_flow import repeated_dead_channels
from .statistics import (
    constant_channels,
    dead_filter_indices,
    duplicate_filter_pairs,
    filter_matrix,
    filter_norms,
    finite_or_none,
    scale_ratio,
)

#: Layers whose output scale is set by design, not by their input's: normalisation rescales to
#: unit variance, bounded activations and softmaxes squash. A large or small output/input ratio
#: is their job, so the exploding/vanishing check leaves them out (saturation and the BatchNorm
#: checks cover what can go wrong in them).
SCALE_EXEMPT_TYPES = frozenset(
    {
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d",
        "LazyBatchNorm2d", "LazyBatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
        "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm",
        "Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "ReLU6", "Softmax", "Softmin",
        "LogSoftmax", "Softmax2d", "Softsign", "LogSigmoid",
    }
)

#: One finding: the alert and the position it sorts at (the layer's execution order).
Finding = tuple[Alert, float]


@dataclass
class AlertContext:
    """What every check reads: the model, its capture and options, and lookups built once."""

    model: nn.Module
    capture: CaptureResult
    sections: list[LayerSection] | None
    options: ReportOptions
    synthetic_input: bool = False
    probe_nonfinite: int | None = None
    output_nonfinite: int = 0
    graph: ExecutedGraph | None = None  # the executed graph, where constant channels flow (None: unknown)
    #: Each module's ``training`` flag as the model was given (before the report's passes put
    #: it in eval mode); None: read from the model, which the passes leave as it was.
    training_flags: dict[str, bool] | None = None
    #: The probes as the model gets them, summarised; None: unknown.
    probe_summary: InputSummary | None = None
    modules: dict[str, nn.Module] = field(init=False)
    #: Per owning module, the phrases naming its NaN/Inf weights and buffers.
    bad_tensors: dict[str, list[str]] = field(init=False)
    #: The first recorded call whose output holds NaN/Inf, if any.
    first_bad: LayerCapture | None = field(init=False)

    def __post_init__(self) -> None:
        self.modules = dict(self.model.named_modules())
        # Without the sections (built beside this check), their ids follow from the capture.
        with_sections = [(s.name, s.call_index, s.id) for s in self.sections] if self.sections is not None else [
            (layer.name, layer.call_index, section_id(layer.name, layer.call_index)) for layer in self.capture.detailed()
        ]
        self._section_of = {(name, call): sid for name, call, sid in with_sections}
        self._first_call = {name: sid for name, call, sid in sorted(with_sections, key=lambda t: t[1], reverse=True)}
        self._order_of: dict[str, float] = {}
        for layer in self.capture.layers:
            self._order_of.setdefault(layer.name, float(layer.order))
        self._definition = {name: i for i, name in enumerate(self.modules)}
        self.bad_tensors = _nonfinite_tensors(self.model)
        self.first_bad = next((layer for layer in self.capture.layers if _output_nonfinite(layer)), None)

    @property
    def unexecuted(self) -> float:
        """The order just after every recorded call: where layers that never ran begin."""
        return float(len(self.capture.layers))

    def order(self, name: str) -> float:
        """Where the layer ``name`` sorts: its first call's position in execution."""
        # Layers that never ran come after the ones that did, in definition order.
        return self._order_of.get(name, self.unexecuted + self._definition.get(name, 0) / (len(self._definition) + 1))

    def section_id(self, name: str, call: int = 1) -> str:
        """The id of the section of ``name``'s call ``call``, else of its first call; "" if none."""
        return self._section_of.get((name, call)) or self._first_call.get(name, "")

    def finding(
        self,
        kind: AlertKind,
        severity: Severity,
        name: str,
        message: str,
        value: float | None,
        call: int = 1,
        at: float | None = None,
        *,
        whole_model: bool = False,
        numbers: dict[str, float] | None = None,
    ) -> Finding:
        """One alert about layer ``name`` (call ``call``), sorted at ``at`` or else at the layer's order."""
        # The root module (path "") is a layer like any other, named as its section is;
        # ``whole_model`` findings are about no layer and name none.
        label = "" if whole_model else _label(name, call)
        alert = Alert(
            kind=kind,
            severity=severity,
            layer=label,
            message=message,
            value=finite_or_none(value) if value is not None else None,
            section_id="" if whole_model else self.section_id(name, call),
            numbers={key: finite_or_none(float(v)) for key, v in (numbers or {}).items()},
        )
        return alert, self.order(name) if at is None else at

    def leaf_calls(self) -> Iterator[tuple[LayerCapture, nn.Module | None]]:
        """Every recorded call of a layer without children, in execution order, with its module."""
        for layer in self.capture.layers:
            module = self.modules.get(layer.name)
            if module is not None and any(True for _ in module.children()):
                continue  # a container's figures are its children's, already checked one by one
            yield layer, module

    def sound_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """Every module whose weights and buffers are finite, in definition order."""
        for name, module in self.modules.items():
            if name not in self.bad_tensors:  # NaN weights make every other weight figure meaningless
                yield name, module

    @functools.cached_property
    def filters(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per sound convolution with filters, its filter matrix and their norms, shared by both filter checks."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, module in self.sound_modules():
            matrix = filter_matrix(module)
            if matrix is not None and matrix.shape[0]:
                out[name] = (matrix, filter_norms(matrix))
        return out

    @functools.cached_property
    def filter_findings(self) -> dict[str, tuple[list[int], list[tuple[int, int, float]], int]]:
        """Per convolution of :attr:`filters`: its dead filters, its duplicate pairs and how many
        filters the duplicate search compared, shared by the filter and pruning checks."""
        out = {}
        for name, (filters, norms) in self.filters.items():
            dead = dead_filter_indices(filters, self.options.dead_filter_norm, norms=norms)
            pairs, compared = duplicate_filter_pairs(filters, self.options.duplicate_filter_cosine, norms=norms)
            out[name] = (dead, pairs, compared)
        return out

    def redundant_duplicates(self, name: str) -> list[int]:
        """Of each group of duplicate filters of ``name`` (pairs joined transitively), all but
        its first; dead filters are the dead-filter finding's and left out."""
        dead, pairs, _compared = self.filter_findings[name]
        return _redundant_duplicates(pairs, set(dead))

    @functools.cached_property
    def _calls_by_name(self) -> dict[str, list[LayerCapture]]:
        calls: dict[str, list[LayerCapture]] = {}
        for layer in self.capture.layers:
            calls.setdefault(layer.name, []).append(layer)
        return calls

    def pruning_saving(self, name: str, filters: int) -> tuple[int, int, str]:
        """Parameters and mult-adds per probe that removing ``filters`` filters of convolution
        ``name`` saves, and the two in words: each filter's weights and bias, and its weights
        times the positions it is applied at in every recorded call (the output positions; a
        transposed convolution's input positions). The next layers' inputs are not counted."""
        module, matrix = self.modules[name], self.filters[name][0]
        weights = int(matrix.shape[1])
        params = filters * (weights + (1 if getattr(module, "bias", None) is not None else 0))
        calls = self._calls_by_name.get(name, [])
        mult_adds = filters * weights * sum(_positions(module, layer) for layer in calls)
        words = f"{params:,} parameters" + (f" and {mult_adds:,} mult-adds per probe" if calls else " (it never ran: mult-adds unknown)")
        return params, mult_adds, words

    @functools.cached_property
    def constant(self) -> dict[tuple[str, int], list[int] | None]:
        """Each leaf call's constant channels (:func:`constant_channels`), by (name, call): the
        dead-channel check and the untrained pattern read the same numbers."""
        return {(layer.name, layer.call_index): constant_channels(layer) for layer, _ in self.leaf_calls()}

    @functools.cached_property
    def model_trained(self) -> bool:
        """Whether some BatchNorm's statistics moved from their initial values: the model was trained.
        BatchNorms that keep no running statistics have none to move and say nothing."""
        bns = [m for m in self.modules.values() if _is_batchnorm(m) and getattr(m, "track_running_stats", False)]
        return any(not _bn_at_init(m) or int(getattr(m, "num_batches_tracked", 0) or 0) > 0 for m in bns)


# --------------------------------------------------------------------------------------------
# The checks, one per kind of alert


def check_nonfinite(ctx: AlertContext) -> list[Finding]:
    """NaN/Inf in weights or buffers, the first non-finite layer output, or a non-finite model output.

    Uses no threshold: any NaN or Inf is an error. ``probe_nonfinite`` and ``output_nonfinite``
    of the context say whether the probes and the model's output hold them.
    """
    out: list[Finding] = []
    first_bad = ctx.first_bad
    for owner, problems in ctx.bad_tensors.items():
        msg = "; ".join(problems)
        if first_bad is not None and first_bad.name == owner:
            msg += "; its output is the first non-finite activation of the forward pass"
        out.append(ctx.finding(AlertKind.NON_FINITE, Severity.ERROR, owner, msg, None))
    if first_bad is not None and first_bad.name not in ctx.bad_tensors:
        nan, inf = sum(first_bad.probe_nan), sum(first_bad.probe_inf)
        total = first_bad.numel_per_probe * first_bad.probes
        probes_hit = sum(1 for a, b in zip(first_bad.probe_nan, first_bad.probe_inf) if a or b)
        parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
        msg = (
            f"first layer whose output is non-finite: {' and '.join(p for p in parts if p)} of {total} values "
            f"({probes_hit} of {first_bad.probes} probes); every later layer inherits them"
        )
        msg += "; " + _nonfinite_origin(first_bad, ctx.capture, ctx.modules, ctx.probe_nonfinite)
        out.append(ctx.finding(AlertKind.NON_FINITE, Severity.ERROR, first_bad.name, msg, float(nan + inf), first_bad.call_index, float(first_bad.order)))
    if first_bad is None and ctx.output_nonfinite:
        last = max(ctx.capture.layers, key=lambda layer: layer.order, default=None)
        where = f"after its last layer, {_label(last.name, last.call_index)}, whose output is finite" if last is not None else "outside every layer"
        out.append(
            ctx.finding(
                AlertKind.NON_FINITE,
                Severity.ERROR,
                "",
                f"the model's output holds {ctx.output_nonfinite} NaN/Inf values, made by its own forward code {where}",
                float(ctx.output_nonfinite),
                at=ctx.unexecuted,
                whole_model=True,
            )
        )
    return out


def check_dead_channels(ctx: AlertContext) -> list[Finding]:
    """Channels constant over every probe and position, once per layer, where they become constant.

    Uses ``dead_channel_fraction`` (a warning at or above it, info below) and ``bn_min_gamma``
    (channels a BatchNorm switched off are its finding); a saturated layer (``saturation_fraction``)
    is the saturation check's. A channel is reported where it first dies: the same channel
    reaching a later layer through per-channel layers and concatenations (:mod:`.channel_flow`),
    constant still or zeroed again, is that first layer's finding.
    """
    out: list[Finding] = []
    seen: set[str] = set()
    previous_dead: tuple[int, set[int]] | None = None  # (channels, dead set) of the last layer with channel info
    collapsed = False
    measured = ctx.constant
    repeated = repeated_dead_channels(ctx.graph, {key: set(dead) for key, dead in measured.items() if dead}, measured)
    for layer, module in ctx.leaf_calls():
        dead = measured[(layer.name, layer.call_index)]
        if dead is None or layer.channel_min is None:
            continue
        channels = int(layer.channel_min.shape[0])
        arrived = repeated.get((layer.name, layer.call_index), set())
        inherited = previous_dead is not None and previous_dead[0] == channels and set(dead) <= previous_dead[1]
        # Channels a BatchNorm just before switched off (gamma near zero) are that
        # BatchNorm's finding, raised once there, not a new dead-channel finding here.
        explained = set(dead) | _zero_gamma_channels(module, ctx.options.bn_min_gamma)
        previous_dead = (channels, explained)
        # Once every channel of a layer is constant, nothing downstream carries information:
        # later constant channels are consequences of the first collapse, not new findings.
        # A bounded activation pinned at its limits is reported as saturation instead.
        inherited = inherited or collapsed or _saturated(layer, ctx.options)
        collapsed = collapsed or (channels > 0 and len(explained) >= channels)
        new = [c for c in dead if c not in arrived]
        if new and not inherited and layer.name not in seen:
            seen.add(layer.name)
            frac = len(new) / channels
            severity = Severity.WARNING if frac >= ctx.options.dead_channel_fraction else Severity.INFO
            more = f"; {len(dead) - len(new)} more were found dead in an earlier layer and reach this one" if len(new) < len(dead) else ""
            out.append(
                ctx.finding(
                    AlertKind.DEAD_CHANNELS,
                    severity,
                    layer.name,
                    f"{len(new)} of {channels} channels ({_pct(frac)}) are constant over every probe and position: {_count_list(new)}{more}",
                    frac,
                    layer.call_index,
                    float(layer.order),
                )
            )
    return out


def check_activation_scale(ctx: AlertContext) -> list[Finding]:
    """Exploding or vanishing activations: a call's median output/input RMS ratio.

    Uses ``explode_ratio`` (above it: exploding, unless the output is about the layer's bias
    alone) and ``vanish_ratio`` (below it: vanishing); layers of :data:`SCALE_EXEMPT_TYPES`
    and calls with non-finite output are left out.
    """
    out: list[Finding] = []
    seen: set[tuple[AlertKind, str]] = set()
    for layer, module in ctx.leaf_calls():
        if _output_nonfinite(layer) or layer.type in SCALE_EXEMPT_TYPES:
            continue
        ratio = scale_ratio(layer)
        if ratio is None:
            continue
        out_rms = float(np.median(layer.output_rms))
        in_rms = float(np.median(layer.input_rms))
        if ratio > ctx.options.explode_ratio and not _bias_dominated(module, out_rms) and (AlertKind.EXPLODING, layer.name) not in seen:
            kind = AlertKind.EXPLODING
        elif ratio < ctx.options.vanish_ratio and (AlertKind.VANISHING, layer.name) not in seen:
            kind = AlertKind.VANISHING
        else:
            continue
        seen.add((kind, layer.name))
        out.append(
            ctx.finding(
                kind,
                Severity.WARNING,
                layer.name,
                f"output RMS is {ratio:.3g}x its input's ({in_rms:.3g} -> {out_rms:.3g}, median over probes)",
                ratio,
                layer.call_index,
                float(layer.order),
            )
        )
    return out


def check_saturation(ctx: AlertContext) -> list[Finding]:
    """A bounded activation's values pinned at its limits, once per layer.

    Uses ``saturation_fraction``: the share of values within 0.1% of the limits at or above
    which the layer is reported (ReLU6 / Hardtanh(0, x)'s zeros do not count).
    """
    out: list[Finding] = []
    seen: set[str] = set()
    for layer, _module in ctx.leaf_calls():
        if layer.limits is None or not layer.numel_per_probe or not layer.probes or _output_nonfinite(layer):
            continue
        lo, hi = layer.limits
        total = layer.numel_per_probe * layer.probes
        relu_like = lo == 0.0 and layer.type in ("ReLU6", "Hardtanh")
        frac = _saturated_fraction(layer)
        if frac >= ctx.options.saturation_fraction and layer.name not in seen:
            seen.add(layer.name)
            where = f"at {hi:g}" if relu_like else f"at {lo:g} or {hi:g} ({_pct(layer.saturated_low / total)} low, {_pct(layer.saturated_high / total)} high)"
            out.append(
                ctx.finding(
                    AlertKind.SATURATION,
                    Severity.WARNING,
                    layer.name,
                    f"{_pct(frac)} of values are pinned {where}: gradients through them vanish",
                    frac,
                    layer.call_index,
                    float(layer.order),
                )
            )
    return out


def check_dead_filters(ctx: AlertContext) -> list[Finding]:
    """Convolution filters whose weight norm is below ``dead_filter_norm``.

    Uses ``dead_filter_norm`` and ``dead_channel_fraction`` (a warning when at least that share
    of a layer's filters is dead, info below).
    """
    out: list[Finding] = []
    for name, (filters, _norms) in ctx.filters.items():
        count = filters.shape[0]
        dead = ctx.filter_findings[name][0]
        if not dead:
            continue
        frac = len(dead) / count
        params, mult_adds, saving = ctx.pruning_saving(name, len(dead))
        out.append(
            ctx.finding(
                AlertKind.DEAD_FILTERS,
                Severity.WARNING if frac >= ctx.options.dead_channel_fraction else Severity.INFO,
                name,
                f"{len(dead)} of {count} filters ({_pct(frac)}) have weight norm below {ctx.options.dead_filter_norm:g}: {_count_list(dead)}; "
                f"removing them would save {saving}",
                frac,
                numbers={"filters": float(len(dead)), "params": float(params), "mult_adds": float(mult_adds)},
            )
        )
    return out


def check_duplicate_filters(ctx: AlertContext) -> list[Finding]:
    """Pairs of near-identical convolution filters.

    Uses ``duplicate_filter_cosine`` (the cosine similarity above which two filters are
    duplicates) and ``dead_channel_fraction`` (a warning when at least that share of the
    compared filters is involved, info below).
    """
    out: list[Finding] = []
    for name, (filters, _norms) in ctx.filters.items():
        count = filters.shape[0]
        _dead, pairs, compared = ctx.filter_findings[name]
        if not pairs:
            continue
        involved = {i for i, _, _ in pairs} | {j for _, j, _ in pairs}
        frac = len(involved) / compared
        i, j, c = max(pairs, key=lambda p: p[2])
        capped = f" (first {compared} of {count} compared)" if compared < count else ""
        redundant = ctx.redundant_duplicates(name)
        params, mult_adds, saving = ctx.pruning_saving(name, len(redundant))
        out.append(
            ctx.finding(
                AlertKind.DUPLICATE_FILTERS,
                Severity.WARNING if frac >= ctx.options.dead_channel_fraction else Severity.INFO,
                name,
                f"{len(pairs)} pair(s) of filters with cosine similarity above {ctx.options.duplicate_filter_cosine:g}, "
                f"{len(involved)} of {compared} filters involved{capped}; most similar: {i} and {j} ({c:.4f}); "
                f"keeping one filter of each group of duplicates would remove {len(redundant)} and save {saving}",
                frac,
                numbers={"filters": float(len(redundant)), "params": float(params), "mult_adds": float(mult_adds)},
            )
        )
    return out


def check_batchnorm(ctx: AlertContext) -> list[Finding]:
    """BatchNorm layers with collapsed running variance, near-zero gammas or never-updated statistics.

    Uses ``bn_min_variance`` and ``bn_min_gamma``; an all-zero gamma alone (a zero-initialised
    residual branch) is info, every other finding a warning.
    """
    out: list[Finding] = []
    for name, module in ctx.sound_modules():
        if not _is_batchnorm(module):
            continue
        findings = _batchnorm_findings(module, ctx.options, ctx.model_trained)
        if findings:
            # A zero-initialised residual branch is a deliberate design, worth knowing only.
            only_zero_init = len(findings) == 1 and findings[0].startswith("every gamma is exactly 0")
            out.append(ctx.finding(AlertKind.BATCHNORM, Severity.INFO if only_zero_init else Severity.WARNING, name, "; ".join(findings), None))
    return out


def check_no_convolution(ctx: AlertContext) -> list[Finding]:
    """A model without any convolution layer (info). Uses no threshold."""
    if any(isinstance(m, CONV_TYPES) for m in ctx.modules.values()):
        return []
    return [ctx.finding(AlertKind.NO_CONVOLUTION, Severity.INFO, "", "the model has no convolution layer: no filters or activation maps to show", None, at=-1.0, whole_model=True)]


def check_synthetic_input(ctx: AlertContext) -> list[Finding]:
    """Activations from a synthetic input because no probes were given (info). Uses no threshold."""
    if not ctx.synthetic_input:
        return []
    return [ctx.finding(AlertKind.SYNTHETIC_INPUT, Severity.INFO, "", "no probes were given: activations come from a synthetic input and say little about real data", None, at=-1.0, whole_model=True)]


#: Fewest measured layers on which dead channels "nearly everywhere" can be a pattern.
UNTRAINED_MIN_LAYERS = 4
#: Activations whose channels die by clipping: where a dead channel shows first.
CLIPPING_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "RReLU", "Hardtanh", "Threshold", "CELU", "ELU", "SELU", "GELU", "SiLU", "Mish", "Hardswish", "Softplus"})


def check_untrained(ctx: AlertContext) -> list[Finding]:
    """The pattern behind many dead-channel findings (warning): dead channels in at least
    ``untrained_dead_layer_fraction`` of the measured layers (at least :data:`UNTRAINED_MIN_LAYERS`)
    while every BatchNorm still holds its initial statistics (mean 0, variance 1, never updated). Says nothing on a model without BatchNorm, whose statistics
    cannot tell a trained model from a fresh one."""
    norms = [m for _, m in ctx.sound_modules() if _is_batchnorm(m) and getattr(m, "track_running_stats", False)]
    if not norms or not all(_bn_at_init(m) and int(getattr(m, "num_batches_tracked", 0) or 0) == 0 for m in norms):
        return []
    measured = [(layer.type, ctx.constant[(layer.name, layer.call_index)]) for layer, _ in ctx.leaf_calls()]
    measured = [(kind, dead) for kind, dead in measured if dead is not None]
    # Channels die where an activation clips them: counted over the activations where the
    # capture measured them (a convolution's output is constant only if its filter is dead).
    activations = [(kind, dead) for kind, dead in measured if kind in CLIPPING_ACTIVATIONS]
    where, measured = ("activation layers", activations) if len(activations) >= UNTRAINED_MIN_LAYERS else ("layers", measured)
    with_dead = sum(1 for _, dead in measured if dead)
    if len(measured) < UNTRAINED_MIN_LAYERS or with_dead < ctx.options.untrained_dead_layer_fraction * len(measured):
        return []
    share = with_dead / len(measured)
    message = (
        f"dead channels in {with_dead} of {len(measured)} measured {where} ({_pct(share)}) and all {len(norms)} BatchNorm "
        "layers still at their initial statistics (running mean 0, variance 1, never updated): the weights look "
        "untrained or were not loaded; check the checkpoint (--weights, --weights-key)"
    )
    return [ctx.finding(AlertKind.UNTRAINED, Severity.WARNING, "", message, share, at=-1.0, whole_model=True)]
@dataclass(frozen=True)
class InputSummary:
    """The probes as the model gets them (its first input): their range and, for ``(N, C, ...)``
    inputs, each channel's mean over every probe and position."""

    min: float
    max: float
    channel_means: tuple[float, ...] = ()


def summarise_input(inputs: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> InputSummary | None:
    """:class:`InputSummary` of the first floating-point input; None without one or when it holds NaN/Inf."""
    x = next((t for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()), None)
    if x is None:
        return None
    x = x.detach().float()
    lo, hi = float(x.amin()), float(x.amax())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    means: tuple[float, ...] = ()
    if x.dim() >= 3:
        means = tuple(float(v) for v in x.transpose(0, 1).reshape(x.shape[1], -1).double().mean(1))
    return InputSummary(lo, hi, means)


#: Below this mean shift (training standard deviations) the probes look like training's, and
#: a channel swap that would explain it is not reported.
MIN_SWAP_SHIFT = 0.25

#: float16's largest finite value.
FP16_MAX = 65504.0


def check_preprocessing(ctx: AlertContext) -> list[Finding]:
    """The probes against what the first BatchNorm to run saw in training (its running statistics).

    Its input's channel means, in training standard deviations from the running means
    (RMS over channels), above ``preprocess_max_shift``; or its spread (geometric mean over
    channels of probe std / training std) more than ``preprocess_max_scale`` times wider or
    narrower; or, for a 3-channel convolution of the probes right before it, swapping their
    first and last channels (RGB/BGR) would shrink that shift ``preprocess_swap_gain`` times
    (from at least :data:`MIN_SWAP_SHIFT`). A BatchNorm whose statistics are still the initial
    0 and 1 records no training data and is left out, as are channels with a collapsed running
    variance (the BatchNorm check's). The message says what is likely wrong, from the probes'
    range and the swap.
    """
    layer = next((c for c in ctx.capture.layers if c.input_channel_mean), None)
    if layer is None or layer.name in ctx.bad_tensors:
        return []
    module = ctx.modules.get(layer.name)
    rm, rv = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    if not _is_batchnorm(module) or rm is None or rv is None or _bn_at_init(module):
        return []
    means, variances = np.stack(layer.input_channel_mean), np.stack(layer.input_channel_var)
    keep = np.isfinite(means).all(1) & np.isfinite(variances).all(1)
    if not keep.any() or means.shape[1] != rm.numel():
        return []
    means, variances = means[keep], variances[keep]
    eps = float(getattr(module, "eps", 1e-5))
    mean = means.mean(0)  # over every probe and position: the probes are one batch
    var = variances.mean(0) + means.var(0)
    train_mean = rm.detach().double().cpu().numpy()
    train_var = rv.detach().double().cpu().numpy()
    # Channels whose running statistics are broken (NaN, a collapsed variance) are the
    # BatchNorm check's finding, not a sign of the probes'.
    sound = np.isfinite(train_mean) & np.isfinite(train_var) & (train_var >= ctx.options.bn_min_variance)
    if not sound.any():
        return []
    mean, var, train_mean, train_var = mean[sound], var[sound], train_mean[sound], train_var[sound]
    train_sd, sd = np.sqrt(np.maximum(train_var, 0) + eps), np.sqrt(var + eps)
    z = (mean - train_mean) / train_sd
    shift = float(np.sqrt(np.mean(z**2)))
    scale = float(np.exp(np.mean(np.log(sd / train_sd))))
    limit = ctx.options.preprocess_max_scale
    swapped = _swapped_shift(ctx, layer, mean, train_mean, train_sd, sound)
    # A swap of the channel order moves the means less than a missing normalisation does, but
    # when swapping them back explains the shift, that is the finding however small it is.
    explained = swapped is not None and shift >= MIN_SWAP_SHIFT and swapped * ctx.options.preprocess_swap_gain <= shift
    if not (shift > ctx.options.preprocess_max_shift or scale > limit or scale < 1 / limit or explained):
        return []
    channels = mean.shape[0]
    spread, train_spread = float(np.sqrt(var.mean())), float(np.sqrt(np.maximum(train_var, 0).mean()))
    what = (
        f"the input to {_label(layer.name)} has mean {_num(float(mean.mean()))} where training saw {_num(float(train_mean.mean()))}, "
        f"and spread {_num(spread)} where training saw {_num(train_spread)} "
        f"(channel means {shift:.3g} training standard deviations off, RMS over {channels} channel{'s' if channels != 1 else ''}; "
        f"spread {_times(scale)} training's)"
    )
    why = _preprocessing_cause(ctx.probe_summary, scale, limit, explained, swapped)
    value = scale if (scale > limit or scale < 1 / limit) else shift
    numbers = {
        "input_mean": float(mean.mean()),
        "training_mean": float(train_mean.mean()),
        "input_spread": spread,
        "training_spread": train_spread,
        "mean_shift": shift,
        "spread_ratio": scale,
    }
    if swapped is not None:
        numbers["mean_shift_channels_swapped"] = swapped
    return [ctx.finding(AlertKind.PREPROCESSING, Severity.WARNING, layer.name, f"{what}: {why}", value, numbers=numbers)]


def _swapped_shift(ctx: AlertContext, bn: LayerCapture, mean: np.ndarray, train_mean: np.ndarray, train_sd: np.ndarray, sound: np.ndarray) -> float | None:
    """The mean shift the first BatchNorm's input would have with the probes' first and last
    channels swapped (RGB <-> BGR), when that input is a 3-channel convolution of the probes,
    the first layer to run: the convolution is linear, so its channel means move by its
    weights summed over each kernel times the change of the probes' channel means (exact up
    to the borders' padding). None where that does not hold."""
    summary = ctx.probe_summary
    first = next((c for c in ctx.capture.layers if c.order == 0), None)
    conv = ctx.modules.get(first.name) if first is not None else None
    if summary is None or len(summary.channel_means) != 3 or first is None or bn.order != 1 or first.call_index != 1:
        return None
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or conv.groups != 1 or conv.in_channels != 3 or conv.out_channels != sound.shape[0]:
        return None
    # The BatchNorm's input is the convolution's output itself: the same RMS, probe by probe.
    if not first.output_rms or len(bn.input_rms) != len(first.output_rms) or not np.allclose(bn.input_rms, first.output_rms, rtol=1e-5, atol=0):
        return None
    kernel_sums = conv.weight.detach().double().cpu().reshape(conv.out_channels, 3, -1).sum(2).numpy()[sound]
    given = np.asarray(summary.channel_means, dtype=np.float64)
    moved = mean + kernel_sums @ (given[::-1] - given)
    return float(np.sqrt(np.mean(((moved - train_mean) / train_sd) ** 2)))


def _preprocessing_cause(summary: InputSummary | None, scale: float, limit: float, explained: bool, swapped: float | None) -> str:
    """What is likely wrong with the probes, as a question to the reader."""
    if summary is not None and summary.min >= 0 and summary.max > 2:
        return f"the probes run from {_num(summary.min)} to {_num(summary.max)}, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    if summary is not None and summary.min >= 0 and summary.max <= 1 and scale < 1:
        return (
            f"the probes lie in [{_num(summary.min)}, {_num(summary.max)}] and reach the layer {_times(1 / scale)} narrower than in training: "
            "was the mean/std normalisation used in training (ImageNet's, for one) left out?"
        )
    if explained and swapped is not None:
        return (
            f"swapping the probes' first and last channels would bring the channel means to {swapped:.2g} training standard deviations: "
            "were they loaded as BGR where training used RGB (or the reverse)?"
        )
    if scale < 1 / limit:
        return f"the input is {_times(1 / scale)} narrower than in training: were the probes normalised twice, or divided by 255 twice?"
    if scale > limit:
        return f"the input is {_times(scale)} wider than in training: were the probes normalised as in training (mean/std, value range)?"
    return "were the probes normalised as in training (mean/std, channel order)?"


def check_fp16_range(ctx: AlertContext) -> list[Finding]:
    """Activations float16 cannot hold: overflow past 65,504 and underflow below its smallest normal.

    Overflow (warning): the first of each run of consecutive layers whose largest |value| is
    within ``fp16_headroom`` of 65,504, and the first beyond it, after which nothing is
    reported (in float16 every later layer inherits its Inf);
    bfloat16's range is wide, and the message says so. Underflow (info): a layer where at
    least ``fp16_underflow_fraction`` of the nonzero values looked at lie below 6.104e-05.
    Layers with NaN/Inf outputs are the non-finite check's.
    """
    out: list[Finding] = []
    seen: set[tuple[AlertKind, str]] = set()
    calls = [(layer, module) for layer, module in ctx.leaf_calls() if not _output_nonfinite(layer)]
    peaks = [(layer, _peak(layer)) for layer, _ in calls]
    limit = FP16_MAX / ctx.options.fp16_headroom
    # Consecutive layers near the limit are one finding, at the first of them (the layers after
    # it carry its values on), and one more at the first that overflows, if another: in
    # float16 every layer after an overflow inherits its Inf, so nothing later is reported.
    runs: list[list[int]] = []
    for index, (_layer, peak) in enumerate(peaks):
        if peak is not None and peak > limit:
            if runs and runs[-1][-1] == index - 1:
                runs[-1].append(index)
            else:
                runs.append([index])
    for run in runs:
        first_over = next((k for k, index in enumerate(run) if (peaks[index][1] or 0.0) > FP16_MAX), None)
        heads = [0] if first_over in (None, 0) else [0, first_over]
        for h, head in enumerate(heads):
            layer, peak = peaks[run[head]]
            assert peak is not None
            if (AlertKind.FP16_OVERFLOW, layer.name) in seen:
                continue
            seen.add((AlertKind.FP16_OVERFLOW, layer.name))
            margin = FP16_MAX / peak
            if peak > FP16_MAX:
                later = sum(1 for other, p in peaks[run[head] + 1 :] if p is not None and p > FP16_MAX)
                also = f"; {later} later layer{'s' if later != 1 else ''} also exceed{'s' if later == 1 else ''} it" if later else ""
                msg = (
                    f"largest |value| {_num(peak)} is {_times(1 / margin)} float16's largest, 65,504: run or exported in float16 "
                    f"it overflows to Inf, and every later layer with it{also}; bfloat16 (up to 3.4e38) holds it"
                )
            else:
                until = heads[h + 1] if h + 1 < len(heads) else len(run)
                followers = [_label(peaks[i][0].name, peaks[i][0].call_index) for i in run[head + 1 : until]]
                then = _followers(followers)
                msg = (
                    f"largest |value| {_num(peak)} is within {_times(margin)} of float16's largest, 65,504: other inputs may "
                    f"overflow it in float16{then}; bfloat16 (up to 3.4e38) holds it"
                )
            out.append(
                ctx.finding(AlertKind.FP16_OVERFLOW, Severity.WARNING, layer.name, msg, margin, layer.call_index, float(layer.order), numbers={"max_abs": peak, "fp16_max": FP16_MAX, "margin": margin})
            )
        if first_over is not None:
            break  # in float16 everything after the first overflow is Inf
    # Consecutive layers below float16's normal range are one finding, at the first of them:
    # the layers after it carry its scale on.
    runs: list[list[tuple[LayerCapture, float]]] = []
    previous = False
    for layer, _module in calls:
        # A saturated activation's values pinned near a limit are the saturation finding.
        frac = layer.fp16_tiny / layer.fp16_nonzero if layer.fp16_nonzero else 0.0
        low = frac >= ctx.options.fp16_underflow_fraction and not _saturated(layer, ctx.options)
        if low and previous:
            runs[-1].append((layer, frac))
        elif low:
            runs.append([(layer, frac)])
        previous = low
    for run in runs:
        layer, frac = run[0]
        if (AlertKind.FP16_UNDERFLOW, layer.name) in seen:
            continue
        seen.add((AlertKind.FP16_UNDERFLOW, layer.name))
        looked = " (of an even sample)" if layer.fp16_sampled else ""
        followers = [_label(other.name, other.call_index) for other, _ in run[1:]]
        then = _followers(followers)
        out.append(
            ctx.finding(
                AlertKind.FP16_UNDERFLOW,
                Severity.INFO,
                layer.name,
                f"{_pct(frac)} of its nonzero values{looked} lie below float16's smallest normal, 6.1e-05: in float16 they keep "
                f"fewer digits, or become 0 where subnormals are flushed{then}; bfloat16 (normal down to 1.2e-38) holds them",
                frac,
                layer.call_index,
                float(layer.order),
                numbers={"below_normal_fraction": frac, "fp16_smallest_normal": FP16_SMALLEST_NORMAL, "layers_after": float(len(followers))},
            )
        )
    return out


def _followers(followers: list[str]) -> str:
    """The clause naming the layers right after a finding's layer that share it; "" for none."""
    if not followers:
        return ""
    if len(followers) == 1:
        return f"; so does the layer right after it ({followers[0]})"
    return f"; so do the {len(followers)} layers right after it ({_names(followers, labelled=True)})"


def _peak(layer: LayerCapture) -> float | None:
    """A call's largest |value| over every probe (finite values), or None without any."""
    values = [abs(v) for v in (*layer.probe_min, *layer.probe_max) if math.isfinite(v)]
    return max(values) if values else None


DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)


def check_training_mode(ctx: AlertContext) -> list[Finding]:
    """The model, or some of its modules, given in training mode (info). Uses no threshold.

    The report runs in eval mode; the user's own inference, as the model was given, would run
    its dropout layers (``p > 0``) at random and its BatchNorm layers on each batch's own
    statistics, updating their running ones. One line naming them.
    """
    flags = ctx.training_flags if ctx.training_flags is not None else {name: m.training for name, m in ctx.modules.items()}
    root = flags.get("", False)
    # In an eval model, a module in training mode matters only where its mode changes what it
    # computes: dropout, normalisation with running statistics, RReLU, or code of the user's
    # own, which may read self.training (torch's other modules ignore the flag).
    training = [name for name, on in flags.items() if on and name in ctx.modules and (root or _mode_sensitive(ctx.modules[name]))]
    if not training:
        return []
    dropout = [n for n in training if isinstance(ctx.modules[n], DROPOUT_TYPES) and float(getattr(ctx.modules[n], "p", 0.0)) > 0]
    batchnorm = [n for n in training if _is_batchnorm(ctx.modules[n]) and getattr(ctx.modules[n], "track_running_stats", False)]
    if root:
        head = "the model was given in training mode"
    else:
        head = f"the model is in eval mode, but {len(training)} of its modules {'is' if len(training) == 1 else 'are'} in training mode ({_names(training)})"
    parts = []
    if dropout:
        shown = [f"{_label(n)} p={float(ctx.modules[n].p):g}" for n in dropout]  # type: ignore[union-attr]
        parts.append(f"{len(dropout)} dropout layer{'s' if len(dropout) != 1 else ''} would drop values at random ({_names(shown, labelled=True)})")
    if batchnorm:
        parts.append(
            f"{len(batchnorm)} BatchNorm layer{'s' if len(batchnorm) != 1 else ''} would normalise by each batch's own statistics "
            f"and update their running ones ({_names(batchnorm)})"
        )
    if parts:
        effect = "; outside it, " + " and ".join(parts) + ": call model.eval() before inference"
    else:
        effect = "; it has no dropout or BatchNorm layer, so only code reading self.training would behave differently"
    msg = f"{head}; the report ran it in eval mode and left its flags as they were{effect}"
    numbers = {"modules_in_training": float(len(training)), "dropout_active": float(len(dropout)), "batchnorm_updating": float(len(batchnorm))}
    return [ctx.finding(AlertKind.TRAINING_MODE, Severity.INFO, "", msg, float(len(training)), at=-1.0, whole_model=True, numbers=numbers)]


def _mode_sensitive(module: nn.Module) -> bool:
    """Whether ``module``'s own computation may depend on its ``training`` flag."""
    if isinstance(module, (*DROPOUT_TYPES, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.RReLU)):
        return True
    return not type(module).__module__.startswith("torch.")


def _names(names: list[str], limit: int = 6, *, labelled: bool = False) -> str:
    shown = [n if labelled else _label(n) for n in names[:limit]]
    return ", ".join(shown) + (f" … (+{len(names) - limit})" if len(names) > limit else "")


def check_prunable(ctx: AlertContext) -> list[Finding]:
    """What removing every dead and duplicate filter would save, in all (info): the sum of the
    savings the dead- and duplicate-filter alerts give per layer. Uses ``dead_filter_norm`` and
    ``duplicate_filter_cosine``, through those checks' findings.
    """
    layers = filters = params = mult_adds = 0
    for name, (dead, _pairs, _compared) in ctx.filter_findings.items():
        removable = len(dead) + len(ctx.redundant_duplicates(name))
        if not removable:
            continue
        p, m, _words = ctx.pruning_saving(name, removable)
        layers, filters, params, mult_adds = layers + 1, filters + removable, params + p, mult_adds + m
    if not layers:
        return []
    model_params = sum(p.numel() for p in ctx.model.parameters())
    share = f" ({_pct(params / model_params)} of the model's)" if model_params else ""
    msg = (
        f"removing the {filters} dead and duplicate filter{'s' if filters != 1 else ''} of {layers} layer{'s' if layers != 1 else ''} "
        f"would save {params:,} parameters{share} and {mult_adds:,} mult-adds per probe, before the inputs the layers after them would lose"
    )
    numbers = {"layers": float(layers), "filters": float(filters), "params": float(params), "mult_adds": float(mult_adds)}
    return [ctx.finding(AlertKind.PRUNABLE, Severity.INFO, "", msg, float(params), at=ctx.unexecuted, whole_model=True, numbers=numbers)]


def _redundant_duplicates(pairs: list[tuple[int, int, float]], dead: set[int]) -> list[int]:
    """Of each group of duplicate filters (pairs joined transitively), all but its first; dead ones left out."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for i, j, _ in pairs:
        if i in dead or j in dead:
            continue
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return sorted(i for i in parent if root(i) != i)


def _positions(module: nn.Module, layer: LayerCapture) -> int:
    """Positions one filter of ``module`` is applied at in the call ``layer``, over one probe."""
    spatial = math.prod(int(v) for v in layer.output_shape[1:]) if len(layer.output_shape) > 1 else 1
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        spatial //= max(1, math.prod(int(s) for s in module.stride))
    return spatial


def _num(value: float) -> str:
    """A figure for a message: three significant digits, no exponent for everyday sizes."""
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:.3g}"


def _times(factor: float) -> str:
    return f"{factor:.3g}x"


#: Every health check, in the order their findings are listed when severity and position tie.
ALERT_CHECKS: tuple[Callable[[AlertContext], list[Finding]], ...] = (
    check_nonfinite,
    check_dead_channels,
    check_activation_scale,
    check_saturation,
    check_dead_filters,
    check_duplicate_filters,
    check_batchnorm,
    check_no_convolution,
    check_synthetic_input,
    check_untrained,
    check_preprocessing,
    check_fp16_range,
    check_training_mode,
    check_prunable,
)


def health_alerts(
    model: nn.Module,
    capture: CaptureResult,
    sections: list[LayerSection] | None,
    options: ReportOptions,
    *,
    synthetic_input: bool = False,
    probe_nonfinite: int | None = None,
    output_nonfinite: int = 0,
    graph: ExecutedGraph | None = None,
    training_flags: dict[str, bool] | None = None,
    probe_summary: InputSummary | None = None,
) -> list[Alert]:
    """Every health finding about ``model`` on the probes of ``capture``, worst first.

    Runs every check of :data:`ALERT_CHECKS` (the module docstring lists them with their
    ``ReportOptions`` thresholds). ``probe_nonfinite``: NaN/Inf values in the probes, None when
    unknown; ``output_nonfinite``: NaN/Inf values in the model's output; ``training_flags``:
    each module's ``training`` flag as given (:func:`~cnnreport.model.state.training_flags`);
    ``probe_summary``: the probes' range and channel means (:func:`summarise_input`). One
    alert per (kind, layer); sorted errors first, then warnings, then info, each by execution order.
    """
    ctx = AlertContext(
        model,
        capture,
        sections,
        options,
        synthetic_input=synthetic_input,
        probe_nonfinite=probe_nonfinite,
        output_nonfinite=output_nonfinite,
        graph=graph,
        training_flags=training_flags,
        probe_summary=probe_summary,
    )
    found = [finding for check in ALERT_CHECKS for finding in check(ctx)]
    found.sort(key=lambda pair: (-pair[0].severity.rank, pair[1]))
    return [alert for alert, _ in found]


# --------------------------------------------------------------------------------------------
# What the checks share


def _label(name: str, call_index: int = 1) -> str:
    name = name or ROOT_LABEL  # the root module, as its section is named
    return name if call_index == 1 else f"{name} (call {call_index})"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 or fraction == 0 else f"{100 * fraction:.2g}%"


def _count_list(indices: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" … (+{len(indices) - limit})" if len(indices) > limit else "")


def _output_nonfinite(layer: LayerCapture) -> bool:
    """Whether some probe's output of this call held NaN or Inf."""
    return bool(sum(layer.probe_nan) or sum(layer.probe_inf))


def _nonfinite_tensors(model: nn.Module) -> dict[str, list[str]]:
    """Per owning module, a phrase for each weight or buffer holding NaN/Inf, in model order."""
    bad_tensors: dict[str, list[str]] = {}
    for items in (model.named_parameters(), model.named_buffers()):
        for full, tensor in items:
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            if math.isfinite(float(tensor.detach().sum())):
                continue  # one fast reduction: NaN or Inf anywhere makes the sum non-finite (an
                # overflowing float32 sum only costs the exact count below, which finds nothing)
            nan = int(torch.isnan(tensor.detach()).sum())
            inf = int(torch.isinf(tensor.detach()).sum())
            if nan or inf:
                owner, _, attr = full.rpartition(".")
                parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
                bad_tensors.setdefault(owner, []).append(f"{attr} has {' and '.join(p for p in parts if p)} of {tensor.numel()} values")
    return bad_tensors


def _bias_dominated(module: nn.Module | None, output_rms: float) -> bool:
    """Whether a layer's output is about its bias alone (within 2x of the bias's RMS).

    A layer after a vanished one outputs roughly its bias: a large output/input ratio, but the
    input was not amplified, and the vanishing layer before it is the finding.
    """
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor) or bias.numel() == 0:
        return False
    b = bias.detach().float()
    bias_rms = float(torch.linalg.vector_norm(b)) / math.sqrt(b.numel())
    return bias_rms > 0 and output_rms <= 2.0 * bias_rms


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _bn_at_init(module: nn.Module) -> bool:
    rm, rv = getattr(module, "running_mean", None), getattr(module, "running_var", None)
    if rm is None or rv is None:
        return False
    return bool(torch.all(rm == 0)) and bool(torch.all(rv == 1))


def _bn_affine_at_init(module: nn.Module) -> bool:
    w, b = getattr(module, "weight", None), getattr(module, "bias", None)
    if w is None or b is None:
        return True
    return bool(torch.all(w == 1)) and bool(torch.all(b == 0))


def _batchnorm_findings(module: nn.Module, options: ReportOptions, model_trained: bool) -> list[str]:
    """One-phrase findings about one BatchNorm layer's buffers and affine weights."""
    out: list[str] = []
    rv = getattr(module, "running_var", None)
    if rv is not None:
        v = rv.detach().float().cpu()
        low = torch.isfinite(v) & (v < options.bn_min_variance)
        if bool(low.any()):
            out.append(
                f"running variance below {options.bn_min_variance:g} in {int(low.sum())} of {v.numel()} channels "
                f"(min {float(v[torch.isfinite(v)].min()):.3g}): those channels are divided by almost nothing"
            )
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor):
        g = w.detach().float().cpu()
        small = torch.isfinite(g) & (g.abs() < options.bn_min_gamma)
        if bool(small.all()) and bool((g == 0).all()):
            out.append("every gamma is exactly 0 (a zero-initialised residual branch that never trained?): the layer outputs its bias only")
        elif bool(small.any()):
            out.append(f"|gamma| below {options.bn_min_gamma:g} in {int(small.sum())} of {g.numel()} channels: those channels are switched off")
    tracked = getattr(module, "num_batches_tracked", None)
    never = tracked is not None and int(tracked) == 0
    if getattr(module, "track_running_stats", False) and _bn_at_init(module):
        # Default buffers are only a finding when something says the model was trained: its
        # own affine weights moved, or another BatchNorm's statistics were updated.
        if not _bn_affine_at_init(module) or model_trained:
            why = "num_batches_tracked is 0" if never else "still the initial 0 and 1"
            out.append(f"running mean/variance never updated ({why}) although the model was trained: eval mode normalises with 0/1")
    return out


def _nonfinite_origin(first_bad: LayerCapture, capture: CaptureResult, modules: dict[str, nn.Module], probe_nonfinite: int | None) -> str:
    """Where the first non-finite output's NaN/Inf came from, as a clause for its alert.

    Its input non-finite: from the probes when they hold NaN/Inf, else from the model's own
    code since the last layer before it (whose output was finite). Its input finite: the layer
    made them itself, with finite weights (non-finite ones are their own alert)."""
    input_bad = bool(first_bad.input_rms) and not all(math.isfinite(v) for v in first_bad.input_rms)
    if input_bad:
        if probe_nonfinite:
            return f"its input was already non-finite: the probes hold {probe_nonfinite} NaN/Inf values, check the probes"
        before = [layer for layer in capture.layers if layer.order < first_bad.order]
        previous = max(before, key=lambda layer: layer.order) if before else None
        where = (
            f"between {_label(previous.name, previous.call_index)}, whose output is finite, and this layer"
            if previous is not None
            else "before this layer, the first to run"
        )
        known = "the probes are finite" if probe_nonfinite == 0 else "no layer before it output any"
        return f"its input was already non-finite though {known}: the model's own forward code made them {where}"
    module = modules.get(first_bad.name)
    own = [p for p in module.parameters(recurse=False)] if module is not None else []
    weights = "its weights are finite" if own else "it has no weights of its own"
    state = _bad_state(module)
    if state:
        return f"its input is finite and {weights}, but {state}: that state made them"
    return f"its input is finite and {weights}: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)"


def _bad_state(module: nn.Module | None) -> str:
    """A buffer of ``module`` that makes NaN by itself: a non-finite value, or a BatchNorm
    running variance below zero (its square root is NaN), in words; "" when none."""
    if module is None:
        return ""
    for name, buffer in module.named_buffers(recurse=False):
        if buffer is None or not buffer.is_floating_point() or buffer.numel() == 0:
            continue
        values = buffer.detach().float().cpu()
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            return f"its buffer {name} holds {bad} NaN/Inf value(s)"
        if name == "running_var" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            eps = float(getattr(module, "eps", 0.0))
            negative = torch.nonzero(values + eps < 0).flatten().tolist()
            if negative:
                shown = ", ".join(str(i) for i in negative[:8]) + (" ..." if len(negative) > 8 else "")
                return f"its running_var is negative for channel(s) {shown} (a variance cannot be, and its square root is NaN)"
    return ""


def _zero_gamma_channels(module: nn.Module | None, threshold: float) -> set[int]:
    """Channels a BatchNorm scales by (near) zero: their output is constant by construction."""
    weight = getattr(module, "weight", None) if isinstance(module, nn.modules.batchnorm._BatchNorm) else None
    if not isinstance(weight, torch.Tensor):
        return set()
    return {int(i) for i in torch.nonzero(weight.detach().abs().float().cpu() < threshold).flatten()}


def _saturated_fraction(layer: LayerCapture) -> float:
    """Share of a bounded activation's values pinned at its limits (ReLU-like zeros excluded)."""
    if layer.limits is None or not layer.numel_per_probe or not layer.probes:
        return 0.0
    lo = layer.limits[0]
    relu_like = lo == 0.0 and layer.type in ("ReLU6", "Hardtanh")
    pinned = layer.saturated_high + (0 if relu_like else layer.saturated_low)
    return pinned / (layer.numel_per_probe * layer.probes)


def _saturated(layer: LayerCapture, options: ReportOptions) -> bool:
    return _saturated_fraction(layer) >= options.saturation_fraction
