"""Compare two models on the same probes: the assembly of :class:`DiffReport` from the comparisons in
:mod:`cnnreport.analysis.diff` and the filter galleries drawn beside them."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis import statistics as stats
from ..analysis.diff import (
    DEFAULT_MAX_GALLERIES,
    DiffSide,
    FilterComparison,
    WeightChange,
    _modules,
    compare_activations,
    compare_alerts,
    compare_architecture,
    compare_predictions,
    compare_weights,
    precision_notes,
)
from ..capture.predictions import check_class_names
from ..datamodel import (
    FilterGallery,
    Provenance,
    ReportOptions,
)
from ..errors import OptionError
from ..figures import images as figures
from ..io.provenance import default_provenance, fill_provenance
from ..model.compiled import compiled_inner, compiled_note
from .document import DiffReport
from .pipeline import build_report, make_options, resolve_probes


def _gallery(weight: np.ndarray, module: nn.Module, label: str, options: ReportOptions) -> FilterGallery:
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(
        weight,
        layer=label,
        groups=int(getattr(module, "groups", 1)),
        max_filters=options.max_filters,
        max_inputs=options.max_filter_inputs,
    )
    return FilterGallery(figure=fig, note=note, shown_filters=shown, total_filters=total, vmax=vmax, colormap=cmap)


def filter_comparisons(old_model: nn.Module, new_model: nn.Module, weight_changes: list[WeightChange], options: ReportOptions, limit: int) -> list[FilterComparison]:
    """Old, new and difference filter galleries for the ``limit`` most changed convolutions."""
    old_mods, new_mods = _modules(old_model), _modules(new_model)
    out: list[FilterComparison] = []
    for w in weight_changes:
        if len(out) >= limit:
            break
        if w.relative == 0.0:
            continue
        o, n = old_mods.get(w.name), new_mods.get(w.name)
        wo = stats.conv_weight(o) if o is not None else None
        wn = stats.conv_weight(n) if n is not None else None
        if wo is None or wn is None or tuple(wo.shape) != tuple(wn.shape) or wo.dim() < 3:
            continue
        a = wo.detach().float().cpu().numpy()
        b = wn.detach().float().cpu().numpy()
        out.append(
            FilterComparison(
                name=w.name,
                relative=w.relative,
                old=_gallery(a, o, f"{w.name} (old)", options),
                new=_gallery(b, n, f"{w.name} (new)", options),
                delta=_gallery(b - a, n, f"{w.name} (new − old)", options),
            )
        )
    return out


def diff_reports(
    old_model: nn.Module,
    new_model: nn.Module,
    probes: Any = None,
    *,
    options: ReportOptions | None = None,
    title: str | None = None,
    old_label: str = "old",
    new_label: str = "new",
    old_provenance: Provenance | None = None,
    new_provenance: Provenance | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    input_size: Sequence[int] | None = None,
    max_galleries: int = DEFAULT_MAX_GALLERIES,
    old_stored_weights: Mapping[str, torch.Tensor] | None = None,
    new_stored_weights: Mapping[str, torch.Tensor] | None = None,
) -> DiffReport:
    """Compare two models on the same probes and return the :class:`DiffReport`.

    ``probes`` takes what :func:`cnnreport.build_report` takes; it is loaded once and fed to
    both models. ``options`` shape both reports (layer selection, thresholds); Grad-CAM and
    the graph are skipped, since the diff page shows neither (so attribution options are
    refused). ``old_stored_weights``/``new_stored_weights``: the checkpoints' tensors as
    stored where the models hold a cast of them, so weights compare in their own precision
    (see :func:`compare_weights`). Both models are left exactly as they were.
    """

    for which, m in (("old", old_model), ("new", new_model)):
        if not isinstance(m, nn.Module):
            raise OptionError(f"{which} model must be a torch.nn.Module, got {type(m).__name__}")
    # torch.compile wrappers: the modules inside are compared (their names carry no _orig_mod.).
    (old_model, old_wrapped), (new_model, new_wrapped) = compiled_inner(old_model), compiled_inner(new_model)
    opts = make_options(options)
    if class_names is not None:
        opts = dataclasses.replace(opts, class_names=class_names)  # type: ignore[arg-type]
    opts = dataclasses.replace(opts, class_names=check_class_names(opts.class_names))
    unused = [flag for flag, on in (("cam_layer", opts.cam_layer), ("target_class", opts.target_class is not None), ("saliency", opts.saliency)) if on]
    if unused:
        raise OptionError(f"{', '.join(unused)}: a diff shows no Grad-CAM or saliency, so {'this option has' if len(unused) == 1 else 'these options have'} no effect; leave {'it' if len(unused) == 1 else 'them'} out")
    batch = resolve_probes(old_model, probes, opts, input_size)  # once: both models see the same tensors
    inner = dataclasses.replace(opts, attributions=False, graph=False)
    provs = [
        fill_provenance(prov or default_provenance(), model, probes=batch, timestamp=opts.timestamp)
        for prov, model in ((old_provenance, old_model), (new_provenance, new_model))
    ]
    old_report = build_report(old_model, batch, inner, provenance=provs[0])
    new_report = build_report(new_model, batch, inner, provenance=provs[1])
    architecture, unchanged = compare_architecture(old_model, new_model, old_report, new_report)
    precisions: dict[tuple[str, str, str], int] = {}
    weights = compare_weights(old_model, new_model, old_stored=old_stored_weights, new_stored=new_stored_weights, precisions=precisions)
    appeared, disappeared, kept = compare_alerts(old_report, new_report)
    notes = list(batch.notes)
    # What the inner reports said about the class names (both models see the same names).
    notes += [n for n in dict.fromkeys(old_report.notes + new_report.notes) if n.startswith("--class-names")]
    notes += precision_notes(precisions, old_label, new_label, new_report.model.dtype)
    opts = dataclasses.replace(opts, class_names=new_report.options.class_names)  # one name per class, as shown
    if old_wrapped or new_wrapped:
        notes.append(compiled_note(1, []))
    if batch.synthetic:
        notes.append("No probe images were given: activations and predictions come from a synthetic input.")
    if old_report.model.input_shape != new_report.model.input_shape:
        notes.append("The two models were fed different input shapes.")
    return DiffReport(
        title=title or opts.title or _default_title(old_model, new_model, old_label, new_label),
        old=DiffSide(label=old_label, title=old_report.title, model=old_report.model, provenance=old_report.provenance, alerts=len(old_report.alerts)),
        new=DiffSide(label=new_label, title=new_report.title, model=new_report.model, provenance=new_report.provenance, alerts=len(new_report.alerts)),
        architecture=architecture,
        unchanged_layers=unchanged,
        weight_changes=weights,
        activation_changes=compare_activations(old_report, new_report),
        predictions=compare_predictions(old_report, new_report),
        galleries=filter_comparisons(old_model, new_model, weights, opts, max_galleries),
        alerts_appeared=appeared,
        alerts_disappeared=disappeared,
        alerts_kept=kept,
        options=opts,
        notes=notes,
    )


def _default_title(old_model: nn.Module, new_model: nn.Module, old_label: str, new_label: str) -> str:
    old_cls, new_cls = type(old_model).__name__, type(new_model).__name__
    if old_cls == new_cls:
        return f"{new_cls}: {old_label} → {new_label}"
    return f"{old_cls} ({old_label}) → {new_cls} ({new_label})"
