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
  measured layers while every BatchNorm still holds its initial statistics.

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

from ..capture.activations import CaptureResult, LayerCapture
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
        self, kind: AlertKind, severity: Severity, name: str, message: str, value: float | None, call: int = 1, at: float | None = None, *, whole_model: bool = False
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
    def model_trained(self) -> bool:
        """Whether some BatchNorm's statistics moved from their initial values: the model was trained."""
        bns = [m for m in self.modules.values() if _is_batchnorm(m)]
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
    measured = {(layer.name, layer.call_index): constant_channels(layer) for layer, _ in ctx.leaf_calls()}
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
    for name, (filters, norms) in ctx.filters.items():
        count = filters.shape[0]
        dead = dead_filter_indices(filters, ctx.options.dead_filter_norm, norms=norms)
        if not dead:
            continue
        frac = len(dead) / count
        out.append(
            ctx.finding(
                AlertKind.DEAD_FILTERS,
                Severity.WARNING if frac >= ctx.options.dead_channel_fraction else Severity.INFO,
                name,
                f"{len(dead)} of {count} filters ({_pct(frac)}) have weight norm below {ctx.options.dead_filter_norm:g}: {_count_list(dead)}",
                frac,
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
    for name, (filters, norms) in ctx.filters.items():
        count = filters.shape[0]
        pairs, compared = duplicate_filter_pairs(filters, ctx.options.duplicate_filter_cosine, norms=norms)
        if not pairs:
            continue
        involved = {i for i, _, _ in pairs} | {j for _, j, _ in pairs}
        frac = len(involved) / compared
        i, j, c = max(pairs, key=lambda p: p[2])
        capped = f" (first {compared} of {count} compared)" if compared < count else ""
        out.append(
            ctx.finding(
                AlertKind.DUPLICATE_FILTERS,
                Severity.WARNING if frac >= ctx.options.dead_channel_fraction else Severity.INFO,
                name,
                f"{len(pairs)} pair(s) of filters with cosine similarity above {ctx.options.duplicate_filter_cosine:g}, "
                f"{len(involved)} of {compared} filters involved{capped}; most similar: {i} and {j} ({c:.4f})",
                frac,
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
    measured = [(layer.type, constant_channels(layer)) for layer, _ in ctx.leaf_calls()]
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
) -> list[Alert]:
    """Every health finding about ``model`` on the probes of ``capture``, worst first.

    Runs every check of :data:`ALERT_CHECKS` (the module docstring lists them with their
    ``ReportOptions`` thresholds). ``probe_nonfinite``: NaN/Inf values in the probes, None when
    unknown; ``output_nonfinite``: NaN/Inf values in the model's output. One alert per (kind,
    layer); sorted errors first, then warnings, then info, each by execution order.
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
