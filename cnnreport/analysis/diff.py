"""What changed between two models: architecture, weights, activations, predictions, alerts.

:func:`diff_reports` builds one :class:`~cnnreport.report.Report` per model with
:func:`cnnreport.pipeline.build_report` on the *same* probe batch, compares the two reports and
the two models' parameters, and returns a :class:`DiffReport`: plain data, like ``Report``,
that :func:`render_diff_html`, :func:`render_diff_markdown` and :func:`diff_json` format.

Layers are aligned by module path (``features.0``), never by position, so inserting a layer
shows as one added row rather than every later layer "changing".
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..datamodel import (
    Alert,
    FilterGallery,
    ModelSummary,
    Prediction,
    Provenance,
)

if TYPE_CHECKING:  # annotations only: the document is assembled above this stage
    from ..report.document import Report

#: Layers whose filters are drawn old / new / difference, most changed first.
DEFAULT_MAX_GALLERIES = 4


# --------------------------------------------------------------------------------------------
# The data model


@dataclass
class DiffSide:
    """One of the two models: its label (``old``, ``main``, a file name), key numbers, provenance."""

    label: str
    title: str
    model: ModelSummary
    provenance: Provenance
    alerts: int = 0


@dataclass
class LayerChange:
    """A module whose presence, type or shapes differ between the two models."""

    name: str
    status: str  # "added", "removed", "type changed", "shape changed"
    old_type: str = ""
    new_type: str = ""
    old_params: int = 0
    new_params: int = 0
    detail: str = ""  # what changed, in words: "weight 16×3×3×3 → 32×3×3×3"

    @property
    def param_delta(self) -> int:
        return self.new_params - self.old_params


@dataclass
class WeightChange:
    """``||W_new - W_old|| / ||W_old||`` over a module's own parameters (weight and bias together)."""

    name: str
    type: str
    relative: float | None  # None: the old weights are all zero and the new ones are not
    abs_change: float
    old_norm: float
    new_norm: float
    params: int
    bar: float = 0.0  # 0..1 of the largest change, for the bar chart


@dataclass
class ActivationChange:
    """``1 - cosine similarity`` of a layer's activations on the same probes, old vs new."""

    name: str
    label: str
    type: str
    change: float  # 0: same direction; 1: orthogonal; up to 2: opposite
    basis: str  # what was compared: "channel means" or "per-probe mean and std"
    old_mean: float
    new_mean: float
    old_frac_zero: float
    new_frac_zero: float
    bar: float = 0.0


@dataclass
class PredictionChange:
    """One probe's top-1 prediction under each model."""

    probe: str
    old: Prediction | None
    new: Prediction | None
    changed: bool  # the top-1 class differs
    # The new model's probability for the old top-1 class, when it is in the new top-k.
    old_class_new_probability: float | None = None


@dataclass
class FilterComparison:
    """Filters of one changed convolution: old, new, and new minus old, each on its own scale."""

    name: str
    relative: float | None
    old: FilterGallery
    new: FilterGallery
    delta: FilterGallery


# --------------------------------------------------------------------------------------------
# Comparisons (pure functions of two models or two reports)


def _own_params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in module.named_parameters(recurse=False)}


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape) or "scalar"


def _modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules by path, in definition order; the root only when it holds parameters itself."""
    out = {}
    for name, module in model.named_modules():
        if name or _own_params(module):
            out[name or "(model)"] = module
    return out


def _merged_order(old: list[str], new: list[str]) -> list[str]:
    """Both name lists merged so each name sits where it sits in its model (removed ones
    before the additions that replace them); deterministic, no hashing."""
    out: list[str] = []
    seen: set[str] = set()
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        names = old[i1:i2] if tag in ("equal", "delete") else []
        if tag == "replace":
            names = old[i1:i2] + new[j1:j2]
        elif tag == "insert":
            names = new[j1:j2]
        for n in names:
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out


def _output_shapes(report: Report) -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    for row in report.layers:
        shapes.setdefault(row.name, row.output_shape)
    return shapes


def compare_architecture(old_model: nn.Module, new_model: nn.Module, old_report: Report | None = None, new_report: Report | None = None) -> tuple[list[LayerChange], int]:
    """Modules added, removed, or changed in type, parameter shapes or output shape, aligned by
    path; and the number of modules that did not change."""
    old_mods, new_mods = _modules(old_model), _modules(new_model)
    old_out = _output_shapes(old_report) if old_report else {}
    new_out = _output_shapes(new_report) if new_report else {}
    changes: list[LayerChange] = []
    unchanged = 0
    for name in _merged_order(list(old_mods), list(new_mods)):
        o, n = old_mods.get(name), new_mods.get(name)
        op = _own_params(o) if o is not None else {}
        np_ = _own_params(n) if n is not None else {}
        change = LayerChange(
            name=name,
            status="",
            old_type=type(o).__name__ if o is not None else "",
            new_type=type(n).__name__ if n is not None else "",
            old_params=sum(p.numel() for p in op.values()),
            new_params=sum(p.numel() for p in np_.values()),
        )
        if o is None:
            change.status = "added"
            change.detail = ", ".join(f"{k} {_shape_text(p.shape)}" for k, p in np_.items())
        elif n is None:
            change.status = "removed"
            change.detail = ", ".join(f"{k} {_shape_text(p.shape)}" for k, p in op.items())
        elif change.old_type != change.new_type:
            change.status = "type changed"
            change.detail = f"{change.old_type} → {change.new_type}"
        else:
            details = []
            for key in sorted(set(op) | set(np_), key=lambda k: (k not in op, k)):
                a, b = op.get(key), np_.get(key)
                if a is None or b is None or tuple(a.shape) != tuple(b.shape):
                    details.append(f"{key} {_shape_text(a.shape) if a is not None else '–'} → {_shape_text(b.shape) if b is not None else '–'}")
            if name in old_out and name in new_out and old_out[name] != new_out[name]:
                details.append(f"output {_fmt_shape(old_out[name])} → {_fmt_shape(new_out[name])}")
            if details:
                change.status = "shape changed"
                change.detail = "; ".join(details)
        if change.status:
            changes.append(change)
        else:
            unchanged += 1
    return changes, unchanged


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, (list, tuple)) and all(isinstance(s, int) for s in shape):
        return _shape_text(shape)
    if isinstance(shape, (list, tuple)):
        return ", ".join(_fmt_shape(s) for s in shape)
    return str(shape)


def _flat(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().to(device="cpu", dtype=torch.float64).reshape(-1) for p in params.values()]) if params else torch.zeros(0, dtype=torch.float64)


def common_precision(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The coarser of two floating dtypes (the larger rounding step): the precision both hold.

    Weights compared there are equal when one side is the other rounded to its format, so
    re-saving a checkpoint in float16 is no change, while a change either format can tell
    from rounding still shows."""
    if a == b or not (a.is_floating_point and b.is_floating_point):
        return a
    fa, fb = torch.finfo(a), torch.finfo(b)
    return a if (fa.eps, -fa.max) > (fb.eps, -fb.max) else b


def _as_compared(op: dict[str, torch.Tensor], np_: dict[str, torch.Tensor], prefix: str, old_stored: Mapping[str, torch.Tensor], new_stored: Mapping[str, torch.Tensor], seen: dict[tuple[str, str, str], int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each parameter pair as compared: the checkpoint's own tensor where the model holds a
    cast of it, both sides rounded to their common precision; *seen* counts the dtypes met."""
    a_out, b_out = {}, {}
    for key in op:
        a = old_stored.get(prefix + key, op[key]).detach().cpu()
        b = new_stored.get(prefix + key, np_[key]).detach().cpu()
        common = common_precision(a.dtype, b.dtype)
        trio = (str(a.dtype), str(b.dtype), str(common))
        seen[trio] = seen.get(trio, 0) + 1
        if common.is_floating_point:
            a, b = a.to(common), b.to(common)
        a_out[key], b_out[key] = a, b
    return a_out, b_out


def precision_notes(seen: Mapping[tuple[str, str, str], int], old_label: str = "old", new_label: str = "new", model_dtype: str = "") -> list[str]:
    """Lines for the page on the precision weights were compared in, when it is not plain
    float32 on both sides."""
    def name(dtype: str) -> str:
        return dtype.replace("torch.", "")

    notes = []
    for (a, b, common), count in sorted(seen.items()):
        what = f"{count} parameter tensor{'s' if count != 1 else ''}"
        if a != b:
            notes.append(
                f"Weights are compared at {name(common)}, the coarser of the two precisions ({old_label} {name(a)}, "
                f"{new_label} {name(b)}; {what}): a difference that is only rounding to {name(common)} shows as no change. "
                "Activations and predictions come from the models as loaded, so they may still differ by that rounding."
            )
        elif model_dtype and name(a) != model_dtype:
            notes.append(
                f"Weights are compared in the checkpoints' own {name(a)} ({what}); the models compute in {model_dtype}."
            )
    return notes


def compare_weights(
    old_model: nn.Module,
    new_model: nn.Module,
    *,
    old_stored: Mapping[str, torch.Tensor] | None = None,
    new_stored: Mapping[str, torch.Tensor] | None = None,
    precisions: dict[tuple[str, str, str], int] | None = None,
) -> list[WeightChange]:
    """Relative weight change per module present in both models with the same parameter
    names and shapes, largest first (a change from all-zero weights counts as largest).

    Weights are compared in their own precision: ``old_stored``/``new_stored`` are the
    checkpoints' tensors by state-dict key where the model holds a cast of them
    (:attr:`cnnreport.loading.LoadedModel.stored_weights`), and two sides of different dtypes
    are compared at the coarser (:func:`common_precision`). ``precisions``, when given,
    counts the (old, new, compared) dtypes met, for :func:`precision_notes`."""
    old_mods, new_mods = _modules(old_model), _modules(new_model)
    seen: dict[tuple[str, str, str], int] = precisions if precisions is not None else {}
    out: list[WeightChange] = []
    for name, o in old_mods.items():
        n = new_mods.get(name)
        if n is None or type(o) is not type(n):
            continue
        op, np_ = _own_params(o), _own_params(n)
        if not op or list(op) != list(np_) or any(tuple(op[k].shape) != tuple(np_[k].shape) for k in op):
            continue
        prefix = "" if name == "(model)" else name + "."
        op, np_ = _as_compared(op, np_, prefix, old_stored or {}, new_stored or {}, seen)
        wo, wn = _flat(op), _flat(np_)
        old_norm = float(torch.linalg.vector_norm(wo))
        new_norm = float(torch.linalg.vector_norm(wn))
        diff = float(torch.linalg.vector_norm(wn - wo))
        if old_norm > 0 and math.isfinite(old_norm):
            relative: float | None = diff / old_norm
        else:
            relative = 0.0 if diff == 0 else None
        out.append(WeightChange(name=name, type=type(o).__name__, relative=relative, abs_change=diff, old_norm=old_norm, new_norm=new_norm, params=int(wo.numel())))
    # None (from zero) first, then by change; the name breaks ties so the order is stable.
    out.sort(key=lambda w: (w.relative is not None, -(w.relative if w.relative is not None and math.isfinite(w.relative) else math.inf), w.name))
    top = max((w.relative for w in out if w.relative is not None and math.isfinite(w.relative)), default=0.0)
    for w in out:
        w.bar = 1.0 if w.relative is None or not math.isfinite(w.relative) else (w.relative / top if top > 0 else 0.0)
    return out


def cosine_change(a: Sequence[float], b: Sequence[float]) -> float:
    """``1 - cos(a, b)``, 0 when both are zero and 1 when only one is.

    Only entries finite on both sides count (a NaN is no number, least of all 0); NaN when no
    entry is finite on both, since the change is then unknown.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError("cosine_change needs two sequences of one length")
    both = np.isfinite(x) & np.isfinite(y)
    if not both.all():
        if not both.any():
            return math.nan
        x, y = x[both], y[both]
    if np.array_equal(x, y):
        return 0.0  # exactly, not 1 - cos's rounding error: "unchanged" must read as 0
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0 and ny == 0:
        return 0.0
    if nx == 0 or ny == 0:
        return 1.0
    cos = float(np.dot(x, y) / (nx * ny))
    return float(min(2.0, max(0.0, 1.0 - cos)))


def _left_out(a: Sequence[float], b: Sequence[float]) -> int:
    """How many compared entries :func:`cosine_change` left out as non-finite on a side."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return int((~(np.isfinite(x) & np.isfinite(y))).sum()) if x.shape == y.shape else 0


def compare_activations(old_report: Report, new_report: Report) -> list[ActivationChange]:
    """Activation change of every layer section present in both reports, largest first.

    Compares the per-channel mean activations (a layer's "fingerprint" on these probes) when
    both have the same channel count; otherwise the per-probe means and standard deviations.
    """
    old_sections = {(s.name, s.call_index): s for s in old_report.sections}
    out: list[ActivationChange] = []
    for s in new_report.sections:
        o = old_sections.get((s.name, s.call_index))
        if o is None:
            continue
        if o.channels is not None and s.channels is not None and len(o.channels.means) == len(s.channels.means) and o.channels.means:
            change, basis = cosine_change(o.channels.means, s.channels.means), "channel means"
            dropped = _left_out(o.channels.means, s.channels.means)
        else:
            a = [v for st in o.per_probe_stats for v in (st.mean, st.std)]
            b = [v for st in s.per_probe_stats for v in (st.mean, st.std)]
            if len(a) != len(b) or not a:
                continue
            change, basis = cosine_change(a, b), "per-probe mean and std"
            dropped = _left_out(a, b)
        if dropped:
            basis += f"; {dropped} NaN/Inf value(s) left out" if math.isfinite(change) else "; no value finite on both sides, so the change is unknown"
        out.append(
            ActivationChange(
                name=s.name,
                label=s.label,
                type=s.type,
                change=change,
                basis=basis,
                old_mean=o.stats.mean,
                new_mean=s.stats.mean,
                old_frac_zero=o.stats.frac_zero,
                new_frac_zero=s.stats.frac_zero,
            )
        )
    # Unknown (NaN) changes sort first: a layer that stopped being finite is what to look at.
    out.sort(key=lambda a: (math.isfinite(a.change), -a.change if math.isfinite(a.change) else 0.0, a.label))
    top = max((a.change for a in out if math.isfinite(a.change)), default=0.0)
    for a in out:
        a.bar = a.change / top if top > 0 and math.isfinite(a.change) else 0.0
    return out


def compare_predictions(old_report: Report, new_report: Report) -> list[PredictionChange]:
    """Top-1 class and probability per probe, old -> new (probes paired by position)."""
    out = []
    for o, n in zip(old_report.probes, new_report.probes):
        op = o.predictions[0] if o.predictions else None
        np_ = n.predictions[0] if n.predictions else None
        if op is None and np_ is None:
            continue
        again = next((p.probability for p in n.predictions if op is not None and p.class_index == op.class_index), None)
        out.append(
            PredictionChange(
                probe=n.name,
                old=op,
                new=np_,
                changed=(op is None) != (np_ is None) or (op is not None and np_ is not None and op.class_index != np_.class_index),
                old_class_new_probability=again,
            )
        )
    return out


def _alert_key(alert: Alert) -> tuple[str, str]:
    return (alert.kind.value if hasattr(alert.kind, "value") else str(alert.kind), alert.layer)


def compare_alerts(old_report: Report, new_report: Report) -> tuple[list[Alert], list[Alert], int]:
    """Alerts (by kind and layer) that only the new report has, only the old one has, and the
    number both have."""
    old_keys = {_alert_key(a) for a in old_report.alerts}
    new_keys = {_alert_key(a) for a in new_report.alerts}
    appeared = [a for a in new_report.alerts if _alert_key(a) not in old_keys]
    disappeared = [a for a in old_report.alerts if _alert_key(a) not in new_keys]
    return appeared, disappeared, len(old_keys & new_keys)


# --------------------------------------------------------------------------------------------
# The entry point


# --------------------------------------------------------------------------------------------
# Views


__all__ = [
    "ActivationChange",
    "DiffSide",
    "FilterComparison",
    "LayerChange",
    "PredictionChange",
    "WeightChange",
    "compare_activations",
    "compare_alerts",
    "compare_architecture",
    "compare_predictions",
    "common_precision",
    "compare_weights",
    "cosine_change",
    "precision_notes",
]
