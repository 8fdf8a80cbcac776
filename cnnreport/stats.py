"""Activation and weight statistics from what the capture kept, and the health checks.

Pure functions over :mod:`cnnreport.capture`'s reduced arrays and the model's weights; nothing
here draws or runs the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .capture import LayerCapture
from .report import ActivationStats, Histogram, WeightStats


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


def histogram(values: np.ndarray, bins: int) -> Histogram:
    """Counts of the finite values over ``bins`` equal bins spanning their range."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Histogram(edges=[], counts=[])
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    return Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts])


def activation_histogram(layer: LayerCapture, bins: int) -> Histogram | None:
    if not layer.samples:
        return None
    return histogram(np.concatenate(layer.samples), bins)


def channel_means(layer: LayerCapture) -> np.ndarray:
    """Mean activation per channel over every probe, shape (C,)."""
    if not layer.channel_means:
        return np.zeros(0)
    return np.mean(np.stack(layer.channel_means), axis=0)


def dead_channels(layer: LayerCapture, tolerance: float = 1e-8) -> list[int]:
    """Channels whose activation is the same value at every position of every probe."""
    if layer.channel_min is None or layer.channel_max is None:
        return []
    span = np.nan_to_num(layer.channel_max - layer.channel_min, nan=0.0)
    return [int(i) for i in np.flatnonzero(span <= tolerance)]


def weight_stats(weight: torch.Tensor, near_zero: float = 1e-3) -> WeightStats:
    """Norm, mean, std, range and the fraction of weights near zero (relative to the largest)."""
    w = weight.detach().float().cpu()
    finite = torch.isfinite(w)
    nan = int(torch.isnan(w).sum())
    inf = int(torch.isinf(w).sum())
    clean = w[finite]
    if clean.numel() == 0:
        nanv = float("nan")
        return WeightStats(nanv, nanv, nanv, nanv, nanv, 0.0, nan, inf)
    peak = float(clean.abs().max())
    return WeightStats(
        norm=float(torch.linalg.vector_norm(clean)),
        mean=float(clean.mean()),
        std=float(clean.std(correction=0)),
        min=float(clean.min()),
        max=float(clean.max()),
        frac_near_zero=float((clean.abs() <= near_zero * peak).float().mean()) if peak > 0 else 1.0,
        nan_count=nan,
        inf_count=inf,
    )


def weight_histogram(weight: torch.Tensor, bins: int) -> Histogram:
    return histogram(weight.detach().float().cpu().numpy().ravel(), bins)


def conv_weight(module: nn.Module) -> torch.Tensor | None:
    w = getattr(module, "weight", None)
    return w if isinstance(w, torch.Tensor) and w.dim() >= 3 else None


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
