"""Activation and weight statistics from what the capture kept, and the health checks.

Pure functions over :mod:`cnnreport.capture`'s reduced arrays and the model's weights; nothing
here draws or runs the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..capture.activations import CaptureResult, LayerCapture
from ..datamodel import (
    ROOT_LABEL,
    ActivationStats,
    Alert,
    AlertKind,
    Histogram,
    LayerSection,
    ReportOptions,
    Severity,
    WeightStats,
    section_id,
)
from ..model.modules import CONV_TYPES


def activation_stats(layer: LayerCapture) -> ActivationStats:
    """Statistics of a layer's activations over every probe."""
    return ActivationStats(**layer.overall())


def per_probe_stats(layer: LayerCapture) -> list[ActivationStats]:
    n = layer.numel_per_probe or 1
    return [
        ActivationStats(
            mean=layer.probe_mean[i],
            std=layer.probe_std[i],
            min=layer.probe_min[i],
            max=layer.probe_max[i],
            frac_zero=layer.probe_zeros[i] / n,
            nan_count=int(layer.probe_nan[i]),
            inf_count=int(layer.probe_inf[i]),
            numel=layer.numel_per_probe,
        )
        for i in range(layer.probes)
    ]


def histogram(values: np.ndarray, bins: int, span: tuple[float, float] | None = None) -> Histogram:
    """Counts of the finite values over ``bins`` equal bins spanning their range, or ``span``
    (a range known to hold every value, for a sample of a larger set)."""
    finite = values[np.isfinite(values)].astype(np.float64)
    if finite.size == 0:
        return Histogram(edges=[], counts=[])
    lo, hi = float(finite.min()), float(finite.max())
    if span is not None and math.isfinite(span[0]) and math.isfinite(span[1]):
        lo, hi = min(lo, span[0]), max(hi, span[1])
    # A constant (or nearly constant) layer still gets its bins: widen the range relative to
    # the value, since an absolute epsilon vanishes next to large values.
    pad = max(abs(lo), abs(hi), 1.0) * 1e-6 * bins
    if hi - lo < pad:
        lo, hi = lo - pad / 2, hi + pad / 2
    counts, edges = bin_counts(finite, lo, hi, bins)
    return Histogram(edges=edges.tolist(), counts=counts.tolist())


def bin_counts(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(values, bins, range=(lo, hi))`` for finite values inside the range, as
    one ``bincount``: the same bin rule (half-open bins, the last one closed; a value on an
    edge goes to the bin the edges say), without np.histogram's per-call overhead, which was
    most of the time of a report's hundred small histograms."""
    edges = np.linspace(lo, hi, bins + 1)
    index = ((values - lo) * (bins / (hi - lo))).astype(np.intp)
    np.clip(index, 0, bins - 1, out=index)
    # The scaled index can land one bin off next to an edge (float rounding): the edges decide,
    # as in np.histogram.
    index -= values < edges[index]
    index += (values >= edges[index + 1]) & (index != bins - 1)
    return np.bincount(index, minlength=bins), edges


def activation_histogram(layer: LayerCapture, bins: int) -> Histogram | None:
    if not layer.samples:
        return None
    # The sample's bins span the layer's true range, so the histogram's axis reads the same
    # as the min and max beside it (a strided sample rarely holds the extremes).
    overall = layer.overall()
    return histogram(np.concatenate(layer.samples), bins, (overall["min"], overall["max"]))


def channel_means(layer: LayerCapture) -> np.ndarray:
    """Mean activation per channel over every probe, shape (C,): over the probes where the
    channel's mean is finite, NaN where it is finite in none (never a 0 that was not measured)."""
    if not layer.channel_means:
        return np.zeros(0)
    stacked = np.stack(layer.channel_means).astype(np.float64)
    finite = np.isfinite(stacked)
    if finite.all():
        return np.mean(stacked, axis=0)
    counts = finite.sum(axis=0)
    sums = np.where(finite, stacked, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def nonfinite_channels(layer: LayerCapture) -> list[int]:
    """Channels holding a NaN or an Inf at some position of some probe.

    The per-channel minimum and maximum the capture keeps propagate NaN and keep Inf, so a
    channel is non-finite exactly where either is."""
    if layer.channel_min is None or layer.channel_max is None:
        return []
    lo = np.asarray(layer.channel_min, dtype=np.float64)
    hi = np.asarray(layer.channel_max, dtype=np.float64)
    return [int(i) for i in np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))]


def dead_channels(layer: LayerCapture) -> list[int]:
    """Channels whose activation is the same value at every position of every probe: the
    health checks' definition (:func:`constant_channels`), so strip and alert agree; a
    channel holding NaN is not "dead"."""
    return constant_channels(layer) or []


def weight_stats(weight: torch.Tensor, near_zero: float = 1e-3) -> WeightStats:
    """Norm, mean, std, range and the fraction of weights near zero (relative to the largest)."""
    w = weight.detach().float().reshape(-1)
    if w.numel() == 0:
        nanv = float("nan")
        return WeightStats(nanv, nanv, nanv, nanv, nanv, 0.0)
    # Each line below is one pass over the weights (a ResNet-50 has 25 M), in the forms torch
    # runs fastest: aminmax over a flat tensor, a float32 sum, comparisons counted as bytes.
    lo, hi = (float(v) for v in torch.aminmax(w))
    nan = inf = 0
    if not (math.isfinite(lo) and math.isfinite(hi)):  # rare: pay for the masks only here
        nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
        w = w[torch.isfinite(w)]
        if w.numel() == 0:
            nanv = float("nan")
            return WeightStats(nanv, nanv, nanv, nanv, nanv, 0.0, nan, inf)
        lo, hi = float(w.min()), float(w.max())
    peak = max(abs(lo), abs(hi))
    # std from the norm and the mean, one cheap pass each: weights are centred near zero, so
    # norm^2/n - mean^2 keeps its digits (std_mean was half of this function's time).
    norm = float(torch.linalg.vector_norm(w))
    mean = float(w.sum()) / w.numel()
    std = math.sqrt(max(norm * norm / w.numel() - mean * mean, 0.0))
    if peak <= 0:
        near = w.numel()
    elif w.device.type == "cpu":
        # numpy's abs, comparison and count_nonzero are vectorised; torch's took 7x as long
        # (ResNet-50: 26 ms of the report's figures).
        near = int(np.count_nonzero(np.abs(w.numpy()) <= near_zero * peak))
    else:
        near = int((w.abs() <= near_zero * peak).sum())
    return WeightStats(
        norm=norm,
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        frac_near_zero=near / w.numel(),
        nan_count=nan,
        inf_count=inf,
    )


HISTOGRAM_WEIGHT_SAMPLE = 1 << 16


def weight_histogram(weight: torch.Tensor, bins: int) -> Histogram:
    """Histogram of the finite weights, counted by torch on an even stride of at most
    ``HISTOGRAM_WEIGHT_SAMPLE`` weights: the shape of the distribution, at a fixed cost."""
    w = weight.detach().float().reshape(-1)
    if w.numel() > HISTOGRAM_WEIGHT_SAMPLE:
        w = w[:: -(-w.numel() // HISTOGRAM_WEIGHT_SAMPLE)]
    w = w[torch.isfinite(w)] if not bool(torch.isfinite(w.min()) and torch.isfinite(w.max())) else w
    if w.numel() == 0:
        return Histogram(edges=[], counts=[])
    lo, hi = float(w.min()), float(w.max())
    pad = max(abs(lo), abs(hi), 1.0) * 1e-6 * bins
    if hi - lo < pad:
        lo, hi = lo - pad / 2, hi + pad / 2
    counts, edges = bin_counts(w.double().cpu().numpy(), lo, hi, bins)
    return Histogram(edges=edges.tolist(), counts=counts.tolist())


def conv_weight(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.dim() >= 3 else None


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Health checks
#
# Each check below looks at one kind of trouble and returns (alert, order) pairs; the order is
# the layer's position in execution, so the page lists findings where the data meets them.

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

#: How many filters of one layer the duplicate check compares pairwise (O(C^2) memory and time).
DUPLICATE_FILTER_CAP = 512

#: Below this input RMS a layer's input is taken as all-zero and no scale ratio is formed.
_TINY_RMS = 1e-30


def _label(name: str, call_index: int = 1) -> str:
    name = name or ROOT_LABEL  # the root module, as its section is named
    return name if call_index == 1 else f"{name} (call {call_index})"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f}%" if fraction >= 0.01 or fraction == 0 else f"{100 * fraction:.2g}%"


def _count_list(indices: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" … (+{len(indices) - limit})" if len(indices) > limit else "")


def constant_channels(layer: LayerCapture) -> list[int] | None:
    """Channels constant over every probe and position, or None when the capture cannot tell.

    None when the layer kept no per-channel range, or when each channel has a single value in
    all (one probe and one position): a single value is trivially constant. The tolerance is
    relative to the layer's range, so a huge-valued layer's rounding noise is not a signal.
    """
    if layer.channel_min is None or layer.channel_max is None or layer.probes == 0:
        return None
    channels = layer.channel_min.shape[0]
    per_channel = (layer.numel_per_probe // channels if channels else 0) * layer.probes
    if channels == 0 or per_channel < 2:
        return None
    lo = np.asarray(layer.channel_min, dtype=np.float64)
    hi = np.asarray(layer.channel_max, dtype=np.float64)
    finite = np.isfinite(lo) & np.isfinite(hi)
    scale = float(np.max(np.abs(np.concatenate([lo[finite], hi[finite]])), initial=0.0))
    tol = max(1e-12, 1e-7 * scale)
    # Spread measured where both ends are finite only: inf - inf would warn and say nothing.
    spread = np.subtract(hi, lo, out=np.full(hi.shape, np.inf), where=finite)
    return [int(i) for i in np.flatnonzero(finite & (spread <= tol))]


def scale_ratio(layer: LayerCapture) -> float | None:
    """Median over probes of output RMS / input RMS, or None when it cannot be formed."""
    if not layer.input_rms or len(layer.input_rms) != len(layer.output_rms):
        return None
    ins = np.asarray(layer.input_rms, dtype=np.float64)
    outs = np.asarray(layer.output_rms, dtype=np.float64)
    ok = np.isfinite(ins) & np.isfinite(outs) & (ins > _TINY_RMS)
    if not ok.any():
        return None
    return float(np.median(outs[ok] / ins[ok]))


def filter_matrix(module: nn.Module) -> torch.Tensor | None:
    """A convolution's weights as one row per output filter, ``(out_channels, fan_in)``."""
    w = conv_weight(module)
    if w is None:
        return None
    w = w.detach().float().cpu()
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # (in, out/groups, k...): output filter j of group g is w[g*in_g:(g+1)*in_g, j].
        groups = int(getattr(module, "groups", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        w = w.reshape(groups, cin // groups, cout_g, -1).permute(0, 2, 1, 3).reshape(groups * cout_g, -1)
        return w
    return w.reshape(w.shape[0], -1)


def filter_norms(filters: torch.Tensor) -> torch.Tensor:
    """Each row's L2 norm, computed once for both filter checks; NaN where a row holds NaN."""
    return torch.linalg.vector_norm(filters.float(), dim=1)


def dead_filter_indices(filters: torch.Tensor, threshold: float, *, norms: torch.Tensor | None = None) -> list[int]:
    """Rows whose L2 norm is below ``threshold``, NaN and Inf counted as zero.

    ``norms``: :func:`filter_norms` of ``filters``, when already known."""
    norms = filter_norms(filters) if norms is None else norms
    if not bool(torch.isfinite(norms).all()):  # only then pay for a cleaned copy
        norms = torch.linalg.vector_norm(torch.nan_to_num(filters.float()), dim=1)
    return [int(i) for i in torch.nonzero(norms < threshold).flatten()]


#: Coordinates the duplicate check first compares long filters on (see duplicate_filter_pairs).
DUPLICATE_SKETCH_COORDINATES = 128


def duplicate_filter_pairs(filters: torch.Tensor, threshold: float, *, cap: int = DUPLICATE_FILTER_CAP, min_norm: float = 1e-6, norms: torch.Tensor | None = None) -> tuple[list[tuple[int, int, float]], int]:
    """Pairs ``(i, j, cosine)``, ``i < j``, of the first ``cap`` filters with cosine above ``threshold``.

    Filters are unit-normalised; those with a norm below ``min_norm`` are left out, since a zero
    filter has no direction (the dead-filter check reports those). Returns the pairs and how
    many filters were compared.

    Exact, and cheap for long filters: for unit vectors, cosine > t means squared distance
    < 2(1 - t), and the distance over a subset of coordinates can only be smaller than the
    whole. So pairs are first compared on evenly spaced coordinates (a Gram matrix of 128
    columns instead of, for a ResNet's late 3x3 layers, 4,608), and only the pairs still
    close enough there get their full cosine. Unrelated filters are far apart already on the
    subset, so few pairs are left; if many are, the full Gram matrix is used.
    """
    f = filters[:cap].float()
    if f.shape[0] < 2 or f.shape[1] < 2:
        # A one-weight filter (1x1 conv on one channel) is a scalar: every same-sign pair has
        # cosine 1, which says nothing about redundancy.
        return [], int(f.shape[0])
    norms = torch.linalg.vector_norm(f, dim=1) if norms is None else norms[:cap]
    if not bool(torch.isfinite(norms).all()):  # NaN/Inf weights: only then pay for a cleaned copy
        f = torch.nan_to_num(f)
        norms = torch.linalg.vector_norm(f, dim=1)
    live = norms >= min_norm
    inverse = 1.0 / norms.clamp(min=min_norm)

    def distinct_live(pairs: torch.Tensor) -> torch.Tensor:
        # (i, j) index pairs from nonzero (row-major, so sorted): i < j, both filters live. On
        # the index list rather than as an (n, n) mask: the few hits cost less than the mask.
        i, j = pairs[:, 0], pairs[:, 1]
        return pairs[(i < j) & live[i] & live[j]]

    width = f.shape[1]
    if width > 2 * DUPLICATE_SKETCH_COORDINATES:
        columns = torch.linspace(0, width - 1, DUPLICATE_SKETCH_COORDINATES, device=f.device).round().long().unique()
        part = f[:, columns] * inverse[:, None]
        sq = (part * part).sum(1)
        partial_distance = sq[:, None] + sq[None, :] - 2.0 * (part @ part.T)
        # The slack covers float rounding of the expanded square; it only adds candidates.
        near = distinct_live(torch.nonzero(partial_distance < 2.0 * (1.0 - threshold) + 1e-4))
        if near.shape[0] <= 4 * f.shape[0]:
            i, j = near[:, 0], near[:, 1]
            cos = (f[i] * f[j]).sum(1) * inverse[i] * inverse[j]
            keep = cos > threshold
            return [(int(a), int(b), float(c)) for a, b, c in zip(i[keep].tolist(), j[keep].tolist(), cos[keep].tolist())], int(f.shape[0])
    unit = f * inverse[:, None]
    cos = unit @ unit.T
    hits = distinct_live(torch.nonzero(cos > threshold))
    pairs = [(int(i), int(j), float(cos[i, j])) for i, j in hits.tolist()]
    return pairs, int(f.shape[0])


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


def health_alerts(
    model: nn.Module,
    capture: CaptureResult,
    sections: list[LayerSection] | None,
    options: ReportOptions,
    *,
    synthetic_input: bool = False,
    probe_nonfinite: int | None = None,
    output_nonfinite: int = 0,
) -> list[Alert]:
    """Every health finding about ``model`` on the probes of ``capture``, worst first.

    Checks, each with the ``ReportOptions`` threshold it uses:

    - non-finite values (error): NaN/Inf in a layer's weights or buffers, and the first layer
      in execution order whose output holds NaN/Inf (later layers only inherit them), saying
      where they came from: the probes (``probe_nonfinite``: NaN/Inf values in the probes,
      None when unknown), the model's own code between two layers, or the layer itself; and a
      model output holding NaN/Inf (``output_nonfinite`` values) that no layer's output did;
    - dead channels (``dead_channel_fraction``): channels constant over every probe and
      position. A ReLU channel that is mostly zero is normal; only a constant one is dead.
      Needs the per-channel range the capture keeps for section layers (and for every layer
      once capture records it); a layer whose dead channels are all inherited from the layer
      just before it (same channel count) is not reported again;
    - exploding / vanishing activations (``explode_ratio``, ``vanish_ratio``): the median over
      probes of a call's output RMS over its input RMS, except for layers whose scale is set by
      design (normalisation, bounded activations, softmax: :data:`SCALE_EXEMPT_TYPES`);
    - dead filters (``dead_filter_norm``) and duplicate filters (``duplicate_filter_cosine``,
      on at most :data:`DUPLICATE_FILTER_CAP` filters per layer) of convolutions;
    - BatchNorm (``bn_min_variance``, ``bn_min_gamma``): collapsed running variance, gammas
      near zero, running statistics never updated in a trained model;
    - saturation (``saturation_fraction``): the fraction of a bounded activation's values
      within 0.1% of its limits. The lower limit 0 of ReLU6 / Hardtanh(0, x) is ReLU's normal
      zero and does not count.

    One alert per (kind, layer); ``section_id`` links to the layer's section when it has one.
    Sorted errors first, then warnings, then info, each by execution order.
    """
    found: list[tuple[Alert, float]] = []
    # Without the sections (built beside this check), their ids follow from the capture.
    with_sections = [(s.name, s.call_index, s.id) for s in sections] if sections is not None else [
        (layer.name, layer.call_index, section_id(layer.name, layer.call_index)) for layer in capture.detailed()
    ]
    section_of = {(name, call): sid for name, call, sid in with_sections}
    first_call = {name: sid for name, call, sid in sorted(with_sections, key=lambda t: t[1], reverse=True)}
    order_of: dict[str, float] = {}
    for layer in capture.layers:
        order_of.setdefault(layer.name, float(layer.order))
    modules = dict(model.named_modules())
    definition = {name: i for i, name in enumerate(modules)}
    unexecuted = float(len(capture.layers))

    def order(name: str) -> float:
        # Layers that never ran come after the ones that did, in definition order.
        return order_of.get(name, unexecuted + definition.get(name, 0) / (len(definition) + 1))

    def sid(name: str, call: int = 1) -> str:
        return section_of.get((name, call)) or first_call.get(name, "")

    def add(
        kind: AlertKind, severity: Severity, name: str, message: str, value: float | None, call: int = 1, at: float | None = None, *, whole_model: bool = False
    ) -> None:
        # The root module (path "") is a layer like any other, named as its section is;
        # ``whole_model`` findings are about no layer and name none.
        label = "" if whole_model else _label(name, call)
        found.append(
            (
                Alert(kind=kind, severity=severity, layer=label, message=message, value=finite_or_none(value) if value is not None else None, section_id="" if whole_model else sid(name, call)),
                order(name) if at is None else at,
            )
        )

    # -- non-finite values: weights and buffers, per owning module ------------------------
    bad_tensors: dict[str, list[str]] = {}
    for kind, items in (("weights", model.named_parameters()), ("buffers", model.named_buffers())):
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
    first_bad = next((layer for layer in capture.layers if sum(layer.probe_nan) or sum(layer.probe_inf)), None)
    for owner, problems in bad_tensors.items():
        msg = "; ".join(problems)
        if first_bad is not None and first_bad.name == owner:
            msg += "; its output is the first non-finite activation of the forward pass"
        add(AlertKind.NON_FINITE, Severity.ERROR, owner, msg, None)
    if first_bad is not None and first_bad.name not in bad_tensors:
        nan, inf = sum(first_bad.probe_nan), sum(first_bad.probe_inf)
        total = first_bad.numel_per_probe * first_bad.probes
        probes_hit = sum(1 for a, b in zip(first_bad.probe_nan, first_bad.probe_inf) if a or b)
        parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
        msg = (
            f"first layer whose output is non-finite: {' and '.join(p for p in parts if p)} of {total} values "
            f"({probes_hit} of {first_bad.probes} probes); every later layer inherits them"
        )
        msg += "; " + _nonfinite_origin(first_bad, capture, modules, probe_nonfinite)
        add(AlertKind.NON_FINITE, Severity.ERROR, first_bad.name, msg, float(nan + inf), first_bad.call_index, float(first_bad.order))
    if first_bad is None and output_nonfinite:
        last = max(capture.layers, key=lambda layer: layer.order, default=None)
        where = f"after its last layer, {_label(last.name, last.call_index)}, whose output is finite" if last is not None else "outside every layer"
        add(
            AlertKind.NON_FINITE,
            Severity.ERROR,
            "",
            f"the model's output holds {output_nonfinite} NaN/Inf values, made by its own forward code {where}",
            float(output_nonfinite),
            at=unexecuted,
            whole_model=True,
        )

    # -- activations, per recorded call -------------------------------------------------------
    seen: set[tuple[AlertKind, str]] = set()
    previous_dead: tuple[int, set[int]] | None = None  # (channels, dead set) of the last layer with channel info
    collapsed = False
    for layer in capture.layers:
        module = modules.get(layer.name)
        if module is not None and any(True for _ in module.children()):
            continue  # a container's figures are its children's, already checked one by one
        at = float(layer.order)
        nonfinite = bool(sum(layer.probe_nan) or sum(layer.probe_inf))
        # Dead channels.
        dead = constant_channels(layer)
        if dead is not None and layer.channel_min is not None:
            channels = int(layer.channel_min.shape[0])
            inherited = previous_dead is not None and previous_dead[0] == channels and set(dead) <= previous_dead[1]
            # Channels a BatchNorm just before switched off (gamma near zero) are that
            # BatchNorm's finding, raised once there, not a new dead-channel finding here.
            explained = set(dead) | _zero_gamma_channels(module, options.bn_min_gamma)
            previous_dead = (channels, explained)
            # Once every channel of a layer is constant, nothing downstream carries information:
            # later constant channels are consequences of the first collapse, not new findings.
            # A bounded activation pinned at its limits is reported as saturation instead.
            inherited = inherited or collapsed or _saturated(layer, options)
            collapsed = collapsed or (channels > 0 and len(explained) >= channels)
            if dead and not inherited and (AlertKind.DEAD_CHANNELS, layer.name) not in seen:
                seen.add((AlertKind.DEAD_CHANNELS, layer.name))
                frac = len(dead) / channels
                severity = Severity.WARNING if frac >= options.dead_channel_fraction else Severity.INFO
                add(
                    AlertKind.DEAD_CHANNELS,
                    severity,
                    layer.name,
                    f"{len(dead)} of {channels} channels ({_pct(frac)}) are constant over every probe and position: {_count_list(dead)}",
                    frac,
                    layer.call_index,
                    at,
                )
        # Exploding / vanishing scale.
        if not nonfinite and layer.type not in SCALE_EXEMPT_TYPES:
            ratio = scale_ratio(layer)
            if ratio is not None:
                out_rms = float(np.median(layer.output_rms))
                in_rms = float(np.median(layer.input_rms))
                if ratio > options.explode_ratio and not _bias_dominated(module, out_rms) and (AlertKind.EXPLODING, layer.name) not in seen:
                    seen.add((AlertKind.EXPLODING, layer.name))
                    add(
                        AlertKind.EXPLODING,
                        Severity.WARNING,
                        layer.name,
                        f"output RMS is {ratio:.3g}x its input's ({in_rms:.3g} -> {out_rms:.3g}, median over probes)",
                        ratio,
                        layer.call_index,
                        at,
                    )
                elif ratio < options.vanish_ratio and (AlertKind.VANISHING, layer.name) not in seen:
                    seen.add((AlertKind.VANISHING, layer.name))
                    add(
                        AlertKind.VANISHING,
                        Severity.WARNING,
                        layer.name,
                        f"output RMS is {ratio:.3g}x its input's ({in_rms:.3g} -> {out_rms:.3g}, median over probes)",
                        ratio,
                        layer.call_index,
                        at,
                    )
        # Saturation of bounded activations.
        if layer.limits is not None and layer.numel_per_probe and layer.probes and not nonfinite:
            lo, hi = layer.limits
            total = layer.numel_per_probe * layer.probes
            relu_like = lo == 0.0 and layer.type in ("ReLU6", "Hardtanh")
            frac = _saturated_fraction(layer)
            if frac >= options.saturation_fraction and (AlertKind.SATURATION, layer.name) not in seen:
                seen.add((AlertKind.SATURATION, layer.name))
                where = f"at {hi:g}" if relu_like else f"at {lo:g} or {hi:g} ({_pct(layer.saturated_low / total)} low, {_pct(layer.saturated_high / total)} high)"
                add(
                    AlertKind.SATURATION,
                    Severity.WARNING,
                    layer.name,
                    f"{_pct(frac)} of values are pinned {where}: gradients through them vanish",
                    frac,
                    layer.call_index,
                    at,
                )

    # -- weights: dead and duplicate filters, BatchNorm ----------------------------------------
    bns = [(n, m) for n, m in modules.items() if _is_batchnorm(m)]
    model_trained = any(not _bn_at_init(m) or int(getattr(m, "num_batches_tracked", 0) or 0) > 0 for _, m in bns)
    for name, module in modules.items():
        if name in bad_tensors:
            continue  # NaN weights make every other weight figure meaningless
        filters = filter_matrix(module)
        if filters is not None and filters.shape[0]:
            count = filters.shape[0]
            norms = filter_norms(filters)  # shared by both filter checks
            dead_f = dead_filter_indices(filters, options.dead_filter_norm, norms=norms)
            if dead_f:
                frac = len(dead_f) / count
                add(
                    AlertKind.DEAD_FILTERS,
                    Severity.WARNING if frac >= options.dead_channel_fraction else Severity.INFO,
                    name,
                    f"{len(dead_f)} of {count} filters ({_pct(frac)}) have weight norm below {options.dead_filter_norm:g}: {_count_list(dead_f)}",
                    frac,
                )
            pairs, compared = duplicate_filter_pairs(filters, options.duplicate_filter_cosine, norms=norms)
            if pairs:
                involved = {i for i, _, _ in pairs} | {j for _, j, _ in pairs}
                frac = len(involved) / compared
                i, j, c = max(pairs, key=lambda p: p[2])
                capped = f" (first {compared} of {count} compared)" if compared < count else ""
                add(
                    AlertKind.DUPLICATE_FILTERS,
                    Severity.WARNING if frac >= options.dead_channel_fraction else Severity.INFO,
                    name,
                    f"{len(pairs)} pair(s) of filters with cosine similarity above {options.duplicate_filter_cosine:g}, "
                    f"{len(involved)} of {compared} filters involved{capped}; most similar: {i} and {j} ({c:.4f})",
                    frac,
                )
        if _is_batchnorm(module):
            findings = _batchnorm_findings(module, options, model_trained)
            if findings:
                # A zero-initialised residual branch is a deliberate design, worth knowing only.
                only_zero_init = len(findings) == 1 and findings[0].startswith("every gamma is exactly 0")
                add(AlertKind.BATCHNORM, Severity.INFO if only_zero_init else Severity.WARNING, name, "; ".join(findings), None)

    # -- the model as a whole -------------------------------------------------------------------
    if not any(isinstance(m, CONV_TYPES) for m in modules.values()):
        add(AlertKind.NO_CONVOLUTION, Severity.INFO, "", "the model has no convolution layer: no filters or activation maps to show", None, at=-1.0, whole_model=True)
    if synthetic_input:
        add(AlertKind.SYNTHETIC_INPUT, Severity.INFO, "", "no probes were given: activations come from a synthetic input and say little about real data", None, at=-1.0, whole_model=True)

    found.sort(key=lambda pair: (-pair[0].severity.rank, pair[1]))
    return [alert for alert, _ in found]


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
