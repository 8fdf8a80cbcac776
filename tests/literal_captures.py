"""Captures written out by hand for the health checks' tests: each layer call's figures are
literal numbers, so a test states exactly what a check reads and what it must say."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from cnnreport.analysis.alerts import AlertContext
from cnnreport.capture.activations import CaptureResult, LayerCapture
from cnnreport.datamodel import ReportOptions


def call(name: str, order: int, *, type: str = "Conv2d", call_index: int = 1, shape: tuple[int, ...] = (4, 2, 2), probes: int = 2, detailed: bool = False, **figures) -> LayerCapture:
    """One recorded call: ``probes`` probes of finite values in [-1, 1] unless ``figures`` say otherwise."""
    values = {
        "probe_mean": [0.0] * probes,
        "probe_std": [1.0] * probes,
        "probe_min": [-1.0] * probes,
        "probe_max": [1.0] * probes,
        "probe_nan": [0] * probes,
        "probe_inf": [0] * probes,
        "numel_per_probe": math.prod(shape),
    }
    values.update(figures)
    return LayerCapture(name=name, type=type, call_index=call_index, order=order, output_shape=list(shape), detailed=detailed, **values)


def ranges(*pairs: tuple[float, float]) -> dict[str, np.ndarray]:
    """``channel_min`` and ``channel_max`` of a call, one (min, max) pair per channel."""
    return {"channel_min": np.array([p[0] for p in pairs]), "channel_max": np.array([p[1] for p in pairs])}


def context(layers: list[LayerCapture], model: nn.Module | None = None, **options) -> AlertContext:
    """The checks' context for ``layers`` on ``model`` (default: an empty module in eval mode)."""
    model = nn.Module().eval() if model is None else model
    return AlertContext(model, CaptureResult(layers), None, ReportOptions(**options))


def plain(findings) -> list[tuple]:
    """(kind, severity, layer, message, value) of each finding, and where it sorts."""
    return [(a.kind.value, a.severity.value, a.layer, a.message, a.value, order) for a, order in findings]
