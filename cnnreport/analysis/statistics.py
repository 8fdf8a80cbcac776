"""Activation and weight statistics from what the capture kept, and the measures the health checks use.

Pure functions over :mod:`cnnreport.capture`'s reduced arrays and the model's weights; nothing
here draws or runs the model. The checks themselves, and their alerts, are in
:mod:`cnnreport.analysis.alerts`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..capture.activations import CHUNK_ELEMENTS, LayerCapture
from ..datamodel import (
    ActivationStats,
    Histogram,
    WeightStats,
)


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
    # std from the norm and the mean, one cheap pass each: weights are usually centred near
    # zero, so norm^2/n - mean^2 keeps its digits (std_mean was half of this function's time).
    norm = float(torch.linalg.vector_norm(w))
    mean = float(w.sum()) / w.numel()
    var = norm * norm / w.numel() - mean * mean
    # Where the mean is as large as the spread (scales near 1, a constant layer) that
    # difference cancels the float32 sums' digits: recompute from the deviations.
    if var <= mean * mean:
        # float32 holds every other dtype's values exactly; float64 ones are read as they are.
        source = weight.detach().reshape(-1) if nan == inf == 0 and weight.dtype == torch.float64 else w
        if lo == hi and source is w:  # a constant layer: no spread, and the mean is its value
            mean, var = lo, 0.0
        else:
            mean, var = _centred_moments(source, mean)
    std = math.sqrt(max(var, 0.0))
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


def _centred_moments(values: torch.Tensor, centre: float) -> tuple[float, float]:
    """Mean and population variance of finite ``values`` in float64, from their deviations
    from ``centre`` (the corrected two-pass sum: a centre off by e adds e^2, which the sum of
    the deviations takes back out), a chunk at a time into one float64 buffer, so the copy
    stays small and is not reallocated per chunk."""
    n = values.numel()
    total = squares = 0.0
    buffer = torch.empty(min(n, CHUNK_ELEMENTS), dtype=torch.float64, device=values.device)
    for start in range(0, n, CHUNK_ELEMENTS):
        chunk = values[start : start + CHUNK_ELEMENTS]
        d = buffer[: chunk.numel()]
        d.copy_(chunk)
        d.sub_(centre)
        total += float(d.sum())
        squares += float(torch.dot(d, d))
    return centre + total / n, (squares - total * total / n) / n


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
# Measures the health checks (:mod:`cnnreport.analysis.alerts`) judge: constant channels,
# activation scale, and dead and duplicate filters.

#: How many filters of one layer the duplicate check compares pairwise (O(C^2) memory and time).
DUPLICATE_FILTER_CAP = 512

#: Below this input RMS a layer's input is taken as all-zero and no scale ratio is formed.
_TINY_RMS = 1e-30


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
    """Rows whose L2 norm is below ``threshold``. A NaN weight counts as zero; an infinite one
    as the largest float, so a filter holding one is never dead.

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
