"""Page parts made from what the capture kept: a section per layer, attributions, and the
graph and receptive fields attached to the report. Numbers in, figures and dataclasses out."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from ..analysis import statistics as stats
from ..analysis.graph import receptive_fields
from ..capture.activations import CaptureResult, LayerCapture
from ..capture.attribution import saliency_maps
from ..datamodel import (
    ActivationStats,
    Attribution,
    ChannelFact,
    LayerRow,
    LayerSection,
    Prediction,
    ReportOptions,
    section_id,
)
from ..errors import OptionError
from ..figures import images as figures
from ..figures.graph_svg import build_graph_views, group_views
from ..io.probes import ProbeBatch
from ..model.modules import module_type_name, to_model


def build_section(
    layer: LayerCapture,
    module: nn.Module | None,
    probe_names: Sequence[str],
    options: ReportOptions,
    with_filters: bool,
) -> LayerSection:
    """A layer's page section: statistics, mosaics per probe, channel strip, histogram, filters."""
    sid = section_id(layer.name, layer.call_index)
    section = LayerSection(
        id=sid,
        name=layer.name,
        type=layer.type,
        call_index=layer.call_index,
        output_shape=layer.output_shape,
        stats=stats.activation_stats(layer),
        per_probe_stats=stats.per_probe_stats(layer),
        # One sidebar group per top-level stage (layer1, layer2 ...): grouping by the direct
        # parent gives a ResNet some twenty groups of one or two entries.
        group=layer.name.split(".", 1)[0] if "." in layer.name else "",
    )
    if layer.tile_note:
        section.notes.append(layer.tile_note)
    section.mosaics = figures.activation_mosaics(layer.tiles[: options.max_probes], layer=section.label, probes=probe_names)
    means = stats.channel_means(layer)
    if means.size:
        dead = stats.dead_channels(layer)
        bad = stats.nonfinite_channels(layer)
        bad_alt = f", {len(bad)} holding NaN or Inf (grey)" if bad else ""
        section.channels = ChannelFact(
            means=[float(v) for v in means],
            dead=dead,
            figure=figures.channel_strip(
                means, alt=f"{section.label}: mean activation of each of {means.size} channels{bad_alt}", dead=dead, nonfinite=bad
            ),
            nonfinite=bad,
        )
    hist = stats.activation_histogram(layer, options.histogram_bins)
    if hist is not None and hist.counts:
        hist.figure = figures.histogram_figure(hist.counts, alt=f"{section.label}: histogram of activation values", log=True)
        section.histogram = hist
    add_weights(section, module, options, with_filters)
    return section


def weight_section(name: str, module: nn.Module, options: ReportOptions) -> LayerSection:
    """A section with the filters and weight statistics alone, for a layer whose activations
    cannot be captured (inside a TorchScript archive): its statistics count no values."""
    nan = float("nan")
    section = LayerSection(
        id=section_id(name),
        name=name,
        type=module_type_name(module),
        call_index=1,
        output_shape=[],
        stats=ActivationStats(mean=nan, std=nan, min=nan, max=nan, frac_zero=0.0, numel=0),
        group=name.split(".", 1)[0] if "." in name else "",
        notes=["weights only: the layer runs inside TorchScript, where its activations cannot be captured"],
    )
    add_weights(section, module, options, with_filters=True)
    return section


def add_weights(section: LayerSection, module: nn.Module | None, options: ReportOptions, with_filters: bool) -> None:
    """Weight statistics, weight histogram and (once per module) the filter gallery."""
    weight = stats.conv_weight(module) if module is not None else None
    if weight is not None:
        section.weight_stats = stats.weight_stats(weight)
        wh = stats.weight_histogram(weight, options.histogram_bins)
        if wh.counts:
            wh.figure = figures.histogram_figure(wh.counts, alt=f"{section.label}: histogram of weights")
        section.weight_histogram = wh
        if with_filters:
            section.filters = figures.draw_filters(
                weight,
                layer=section.label,
                groups=int(getattr(module, "groups", 1)),
                max_filters=options.max_filters,
                max_inputs=options.max_filter_inputs,
            )


def graph_views(graph: Any, section_ids: set[str], options: ReportOptions) -> tuple[str, str, dict[str, str]]:
    """The executed graph's collapsed and full SVGs and the per-block opened views; empty
    strings when there is no graph or the options leave it out."""
    if graph is None or not options.graph:
        return "", "", {}

    collapsed, full = build_graph_views(graph, link_sections=section_ids)
    return collapsed, full, group_views(graph, link_sections=section_ids)


def linked_rows(rows: Sequence[LayerRow], sections: Sequence[LayerSection], graph: Any) -> list[LayerRow]:
    """The architecture rows as the page shows them: each linked to its layer's section, with
    FLOPs (two per mult-add), and with the receptive field and effective stride of each
    conv/pool row from the executed graph (left empty when there is no graph)."""
    section_ids = {(s.name, s.call_index): s.id for s in sections}
    fields = _receptive_fields(graph)
    out = []
    for row in rows:
        # The root's row is named "(model)"; its module path (and section's name) is "".
        path = "" if row.depth == 0 else row.name
        changes: dict[str, Any] = {
            "section_id": section_ids.get((path, row.call_index), ""),
            "flops": 2 * row.mult_adds if row.mult_adds else None,
        }
        key = row.name if row.call_index == 1 else f"{row.name} (call {row.call_index})"
        if key in fields:
            rf, stride = fields[key]
            changes["receptive_field"] = int(round(rf))
            changes["effective_stride"] = int(round(stride)) if stride >= 1 else stride
        out.append(dataclasses.replace(row, **changes))
    return out


def _receptive_fields(graph: Any) -> dict[str, tuple[Any, Any]]:
    if graph is None:
        return {}
    try:
        return receptive_fields(graph)
    except Exception:  # an odd graph must not cost the report; the columns stay empty
        return {}


def _attribution(
    batch: ProbeBatch, index: int, heat: np.ndarray, target: int, options: ReportOptions, method: str, layer: str, alt: Callable[[str, str], str]
) -> Attribution:
    """One probe's heat map over its thumbnail, with the peak in the map's own grid as (x, y)."""
    names = options.class_names
    label = names[target] if names and target < len(names) else str(target)
    finite = np.isfinite(heat)
    # The peak among the finite values; a map with none has no peak (argmax would pick a NaN).
    peak = np.unravel_index(int(np.argmax(np.where(finite, heat, -np.inf))), heat.shape) if finite.any() else None
    return Attribution(
        probe=batch.names[index],
        target_class=int(target),
        target_label=label,
        method=method,
        layer=layer,
        figure=figures.heat_overlay(batch.display[index], heat, alt=alt(label, batch.names[index])),
        peak_xy=(int(peak[-1]), int(peak[-2])) if heat.ndim >= 2 and peak is not None else None,
    )


def gradcam_attributions(capture: CaptureResult, batch: ProbeBatch, options: ReportOptions) -> list[Attribution]:
    """Grad-CAM figures of the shown probes, from the maps the capture pass computed."""
    out = []
    for i, (cam, target) in enumerate(zip(capture.gradcam, capture.gradcam_targets)):
        if i >= options.max_probes or i >= len(batch.display) or not batch.display[i].size:
            break
        layer = capture.gradcam_layer
        out.append(_attribution(batch, i, cam, target, options, "Grad-CAM", layer, lambda label, probe: f"Grad-CAM of {layer} for class {label} on {probe}"))
    return out


def nonfinite_attribution_notes(attributions: Sequence[Attribution], maps: Sequence[np.ndarray]) -> list[str]:
    """A line when attribution maps hold NaN or Inf, which are drawn without heat: said, not hidden."""
    bad = [a.probe for a, heat in zip(attributions, maps) if not np.isfinite(heat).all()]
    if not bad:
        return []
    first = attributions[0]
    shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
    return [
        f"{first.method} of {first.layer}: the maps of {len(bad)} of {len(attributions)} probes ({shown}) hold NaN/Inf, "
        "as the layer's activations or their gradients do; those pixels are drawn without heat, and a map with "
        "no finite value has no peak."
    ]


def saliency_attributions(
    model: nn.Module, batch: ProbeBatch, options: ReportOptions, predictions: list[list[Prediction]]
) -> tuple[list[Attribution], list[str]]:
    """Gradient saliency of each shown probe's target class (one extra forward + backward:
    the gradient must reach the input, so it cannot share the capture pass)."""

    limit = min(len(predictions), options.max_probes, len(batch.display))
    shown = [i for i in range(limit) if batch.display[i].size and predictions[i]]
    if not shown:
        return [], []
    targets = [options.target_class if options.target_class is not None else predictions[i][0].class_index for i in shown]
    inputs = tuple(t[shown] for t in to_model(batch.inputs, model))
    try:
        maps = saliency_maps(model, inputs, targets, batch_size=options.first_batch)
    except OptionError as exc:  # Captum missing: the report goes on without saliency, and says so
        return [], [exc.one_line()]
    def alt(label: str, probe: str) -> str:
        return f"gradient saliency for class {label} on {probe}"

    out = [_attribution(batch, i, sal, target, options, "Saliency", "input", alt) for i, target, sal in zip(shown, targets, maps)]
    return out, []
