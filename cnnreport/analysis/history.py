"""The maths of a history of checkpoints: how much each layer's weights moved, and each layer's
activation statistics across the reports. Pure functions over state dicts and JSON views."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch


@dataclass
class WeightChange:
    """One layer's weight across checkpoints: relative change from the previous checkpoint and
    from the first, ``||W_t - W_ref|| / ||W_ref||`` in float64 (None for the first checkpoint, or
    where the layer is missing or changed shape; ``inf`` when the reference is all zeros and the
    weight is not)."""

    layer: str  # the module path (the state-dict key without ``.weight``)
    from_previous: list[float | None] = field(default_factory=list)
    from_first: list[float | None] = field(default_factory=list)


def weight_changes(states: Sequence[Mapping[str, Any]]) -> list[WeightChange]:
    """Every layer with a floating ``<module>.weight`` in the first state dict, in key order."""
    if not states:
        return []
    out = []
    for key, first in states[0].items():
        if not key.endswith(".weight") or not isinstance(first, torch.Tensor) or not first.is_floating_point():
            continue
        change = WeightChange(layer=key[: -len(".weight")])
        previous: torch.Tensor | None = None
        for index, state in enumerate(states):
            current = state.get(key)
            if not isinstance(current, torch.Tensor) or current.shape != first.shape:
                change.from_previous.append(None)
                change.from_first.append(None)
                previous = None
                continue
            current = current.detach().to(torch.float64)
            change.from_previous.append(None if index == 0 or previous is None else _relative(current, previous))
            change.from_first.append(None if index == 0 else _relative(current, first.detach().to(torch.float64)))
            previous = current
        out.append(change)
    return out


def _relative(current: torch.Tensor, reference: torch.Tensor) -> float:
    moved = float(torch.linalg.vector_norm(current - reference))
    base = float(torch.linalg.vector_norm(reference))
    if base == 0.0:
        return 0.0 if moved == 0.0 else math.inf
    return moved / base


@dataclass
class LayerTrend:
    """One section layer's activation statistics across the reports (None where a report has no
    section of that layer): mean, std, fraction of zeros and count of dead channels."""

    layer: str
    mean: list[float | None] = field(default_factory=list)
    std: list[float | None] = field(default_factory=list)
    frac_zero: list[float | None] = field(default_factory=list)
    dead_channels: list[int | None] = field(default_factory=list)


def activation_trends(reports: Sequence[Mapping[str, Any]]) -> list[LayerTrend]:
    """Per section layer (in the order of the first report that has it), its statistics in each
    report's JSON view."""
    order: list[str] = []
    by_report: list[dict[str, Mapping[str, Any]]] = []
    for report in reports:
        sections = {}
        for section in report.get("sections") or []:
            name = section.get("name", "")
            label = name if section.get("call_index", 1) == 1 else f"{name} (call {section['call_index']})"
            sections[label] = section
            if label not in order:
                order.append(label)
        by_report.append(sections)
    trends = []
    for label in order:
        trend = LayerTrend(layer=label)
        for sections in by_report:
            section = sections.get(label)
            stats = (section or {}).get("stats") or {}
            channels = (section or {}).get("channels") or {}
            trend.mean.append(_number(stats.get("mean")) if section else None)
            trend.std.append(_number(stats.get("std")) if section else None)
            trend.frac_zero.append(_number(stats.get("frac_zero")) if section else None)
            trend.dead_channels.append(len(channels.get("dead") or []) if section and channels else None)
        trends.append(trend)
    return trends


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


__all__ = ["LayerTrend", "WeightChange", "activation_trends", "weight_changes"]
