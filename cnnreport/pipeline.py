"""``build_report``: the stages in order, from (model, probes, options) to a :class:`Report`.

load probes -> one capture pass over the probe batches (activations, predictions, Grad-CAM and
the executed graph share it) -> torchinfo table -> sections, figures, alerts -> ``Report``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from concurrent.futures import ThreadPoolExecutor
import platform
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__, budget, figures, stats
from .architecture import Architecture, inspect_model
from .capture import CONV_TYPES, ActivationCapture, CaptureResult, LayerCapture, preserved_model_state, run_forward
from .errors import CnnReportError, ForwardError, OptionError
from .probes import ProbeBatch, expected_input_channels, expected_input_ndim, load_probes, synthetic_probes
from .progress import Progress
from .provenance import fill_provenance
from .report import (
    Attribution,
    row_id,
    ChannelFact,
    FilterGallery,
    LayerRow,
    LayerSection,
    ModelSummary,
    Prediction,
    ProbeInfo,
    Provenance,
    Report,
    ReportOptions,
    section_id,
)


# --------------------------------------------------------------------------------------------
# Options and layer selection


def make_options(options: ReportOptions | None = None, **overrides: Any) -> ReportOptions:
    """``options`` with keyword overrides applied; unknown keywords name themselves."""
    base = options or ReportOptions()
    known = {f.name for f in dataclasses.fields(ReportOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise OptionError(f"unknown report option(s): {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_layers(model: nn.Module, options: ReportOptions) -> list[str]:
    """Module paths that get a section, in definition order.

    Default: every convolution. ``layers`` globs (``layer3.*``) and ``layer_types`` (class
    names) add to nothing but themselves; ``exclude_layers`` removes. A pattern that matches no
    module is an error naming a few that exist, since a typo would silently drop sections.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    names = [n for n, _ in named]
    for pattern in [*options.layers, *options.exclude_layers]:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise OptionError(
                f"layer pattern {pattern!r} matches no module; modules are named like: "
                + ", ".join(names[:6])
                + (" ..." if len(names) > 6 else "")
            )
    types = {t.lower() for t in options.layer_types}
    if types:
        known_types = {type(m).__name__.lower() for _, m in named}
        missing = sorted(types - known_types)
        if missing:
            raise OptionError(
                f"layer type(s) {', '.join(missing)} not in the model; its types are: "
                + ", ".join(sorted({type(m).__name__ for _, m in named})[:12])
            )
    chosen = []
    for name, module in named:
        if options.layers or types:
            keep = _matches(name, options.layers) or type(module).__name__.lower() in types
        else:
            keep = isinstance(module, CONV_TYPES)
        if keep and not _matches(name, options.exclude_layers):
            chosen.append(name)
    return chosen


def default_cam_layer(model: nn.Module, options: ReportOptions, rows: Sequence[LayerRow] = ()) -> str | None:
    """The layer Grad-CAM explains: ``cam_layer`` if given, else the last feature map.

    From torchinfo's rows (execution order): the last module call with a spatial output
    (N, C, H, W, H*W > 1), lifted to its outermost enclosing block that still has one, so
    ResNets get ``layer4``, Inception ``Mixed_7c`` and DenseNet ``features``: the whole last
    stage, as Grad-CAM is usually applied, rather than one branch of it. Without rows
    (torchinfo could not run), the last convolution in definition order.
    """
    names = dict(model.named_modules())
    if options.cam_layer:
        if options.cam_layer not in names:
            raise OptionError(
                f"--cam-layer {options.cam_layer!r} is not a module of the model; convolutions are: "
                + ", ".join([n for n, m in names.items() if isinstance(m, CONV_TYPES)][-6:])
            )
        return options.cam_layer
    def spatial(shape: Sequence[Any]) -> bool:
        return len(shape) >= 3 and all(isinstance(v, int) for v in shape) and math.prod(shape[2:]) > 1

    maps = [r for r in rows if r.name and r.name in names and r.call_index == 1 and spatial(r.output_shape)]
    if maps:
        last = maps[-1].name
        with_map = {r.name for r in maps}
        parts = last.split(".")
        for depth in range(1, len(parts) + 1):
            ancestor = ".".join(parts[:depth])
            if ancestor in with_map:
                return ancestor
        return last
    convs = [n for n, m in names.items() if n and isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d))]
    return convs[-1] if convs else None


# --------------------------------------------------------------------------------------------
# Outputs and predictions


def classification_scores(output: Any) -> torch.Tensor | None:
    """The ``(N, classes)`` tensor in a model's output, if there is exactly such a thing."""
    candidate: Any = output
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        candidate = next((getattr(output, f.name) for f in dataclasses.fields(output) if isinstance(getattr(output, f.name), torch.Tensor)), None)
    elif isinstance(output, dict):
        candidate = output.get("logits", output.get("out", next(iter(output.values()), None) if len(output) == 1 else None))
    elif isinstance(output, (list, tuple)):
        candidate = output[0] if output else None
    if isinstance(candidate, torch.Tensor) and candidate.dim() == 2 and candidate.shape[1] >= 2 and candidate.is_floating_point():
        return candidate
    return None


def probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Softmax of logits; outputs that already are (log-)probabilities are taken as such."""
    s = scores.detach().float().cpu()
    if bool(((s >= 0) & (s <= 1)).all()) and bool(torch.allclose(s.sum(1), torch.ones(s.shape[0]), atol=1e-3)):
        return s
    if bool((s <= 0).all()) and bool(torch.allclose(s.exp().sum(1), torch.ones(s.shape[0]), atol=1e-3)):
        return s.exp()
    return torch.softmax(s, dim=1)


def top_predictions(probs: torch.Tensor, k: int, class_names: Sequence[str] | None) -> list[list[Prediction]]:
    k = min(k, probs.shape[1])
    values, indices = torch.topk(probs, k, dim=1)
    result = []
    for vals, idxs in zip(values.tolist(), indices.tolist()):
        result.append(
            [
                Prediction(
                    class_index=i,
                    label=class_names[i] if class_names and i < len(class_names) else str(i),
                    probability=float(v),
                )
                for v, i in zip(vals, idxs)
            ]
        )
    return result


# --------------------------------------------------------------------------------------------
# The capture pass


@dataclass
class PassResult:
    capture: CaptureResult
    predictions: list[list[Prediction]]
    graph: Any = None
    failure: dict[str, Any] | None = None
    error: ForwardError | None = None


def _batches(batch: ProbeBatch, size: int) -> Iterable[tuple[torch.Tensor, ...]]:
    n = len(batch)
    for start in range(0, n, max(1, size)):
        yield tuple(t[start : start + size] for t in batch.inputs)


def _to_model(inputs: tuple[torch.Tensor, ...], model: nn.Module) -> tuple[torch.Tensor, ...]:
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    if param is None:
        return inputs
    return tuple(
        t.to(device=param.device, dtype=param.dtype if t.is_floating_point() and param.is_floating_point() else t.dtype)
        for t in inputs
    )


def capture_pass(
    model: nn.Module,
    batch: ProbeBatch,
    options: ReportOptions,
    detailed: list[str],
    cam_layer: str | None,
    progress: Progress,
) -> PassResult:
    """Forward every probe batch once with the capture hooks (and the graph recorder on the
    first batch); Grad-CAM backpropagates from the output to the CAM layer only."""
    want_cam = options.attributions and cam_layer is not None
    capture = ActivationCapture(
        model,
        set(detailed),
        max_channels=options.max_channels,
        tile_size=options.tile_size,
        cam_layer=cam_layer if want_cam else None,
    )
    predictions: list[list[Prediction]] = []
    recorder = None
    graph = None
    failure = None
    error = None
    with preserved_model_state(model), capture:
        for index, inputs in enumerate(_batches(batch, options.batch_size)):
            inputs = _to_model(inputs, model)
            capture.start_batch()
            # The recorder runs on the first batch even without a graph on the page: it is what
            # names the module or op where a failing forward pass broke.
            record = index == 0
            try:
                recorder = _recorder(model) if record else None
                with (recorder if recorder is not None else _null()), torch.set_grad_enabled(want_cam):
                    output = run_forward(model, inputs)
            except ForwardError as exc:
                if recorder is not None:
                    failure = recorder.failure_context()
                    graph = _graph_of(recorder)  # the graph of everything that ran
                    _name_failure(exc, failure)
                error = exc
                break
            if recorder is not None:
                graph = _graph_of(recorder)
            scores = classification_scores(output)
            if scores is not None:
                predictions += top_predictions(probabilities(scores), options.top_k, options.class_names)
                if want_cam:
                    targets = [options.target_class] * scores.shape[0] if options.target_class is not None else scores.detach().argmax(1).tolist()
                    if options.target_class is not None and not 0 <= options.target_class < scores.shape[1]:
                        raise OptionError(f"--target-class {options.target_class} is outside the model's {scores.shape[1]} classes")
                    capture.gradcam_backward(scores, targets)
            del output, scores
            progress.advance(inputs[0].shape[0])
    return PassResult(capture=capture.result(), predictions=predictions, graph=graph, failure=failure, error=error)


def _name_failure(error: ForwardError, failure: dict[str, Any] | None) -> None:
    """Rewrite the error's one line to name the module or op that failed and what it got."""
    if not failure or not failure.get("failed_at"):
        return
    cause = error.__cause__
    shapes = ", ".join(str(tuple(s)) for s in failure.get("input_shapes") or [] if isinstance(s, (list, tuple)))
    where = f"{failure['failed_at']} ({failure.get('failed_type') or 'op'})"
    text = f"the forward pass failed in {where}" + (f" given input {shapes}" if shapes else "")
    if failure.get("expected"):
        text += f", but it expects {failure['expected']}"
    if cause is not None:
        text += f": {type(cause).__name__}: " + " ".join(str(cause).split())
    error.message = text
    error.args = (text,)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _recorder(model: nn.Module) -> Any:
    try:
        from .tracing import CallRecorder
    except ImportError:
        return None
    return CallRecorder(model)


def _graph_of(recorder: Any) -> Any:
    try:
        return recorder.graph()
    except Exception:  # a graph we cannot build must not cost the user the whole report
        return None


# --------------------------------------------------------------------------------------------
# Sections


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
    for tiles, probe in zip(layer.tiles[: options.max_probes], probe_names):
        section.mosaics.append(figures.activation_mosaic(tiles, layer=section.label, probe=probe))
    means = stats.channel_means(layer)
    if means.size:
        dead = stats.dead_channels(layer)
        section.channels = ChannelFact(
            means=[float(v) for v in means],
            dead=dead,
            figure=figures.channel_strip(means, alt=f"{section.label}: mean activation of each of {means.size} channels", dead=dead),
        )
    hist = stats.activation_histogram(layer, options.histogram_bins)
    if hist is not None and hist.counts:
        hist.figure = figures.histogram_figure(hist.counts, alt=f"{section.label}: histogram of activation values", log=True)
        section.histogram = hist
    weight = stats.conv_weight(module) if module is not None else None
    if weight is not None:
        section.weight_stats = stats.weight_stats(weight)
        wh = stats.weight_histogram(weight, options.histogram_bins)
        if wh.counts:
            wh.figure = figures.histogram_figure(wh.counts, alt=f"{section.label}: histogram of weights")
        section.weight_histogram = wh
        if with_filters:
            fig, note, shown, total, vmax, cmap = figures.filter_gallery(
                weight.detach().float().cpu().numpy(),
                layer=section.label,
                groups=int(getattr(module, "groups", 1)),
                max_filters=options.max_filters,
                max_inputs=options.max_filter_inputs,
            )
            section.filters = FilterGallery(figure=fig, note=note, shown_filters=shown, total_filters=total, vmax=vmax, colormap=cmap)
    return section


# --------------------------------------------------------------------------------------------
# The public entry points


def resolve_probes(model: nn.Module, probes: Any, options: ReportOptions, input_size: Sequence[int] | None) -> ProbeBatch:
    """Whatever the user gave as probes, as one :class:`ProbeBatch` (see :func:`build_report`)."""
    if isinstance(probes, ProbeBatch):
        return probes
    if probes is None:
        if not input_size:
            raise OptionError("no probes given: pass probe images (--probes) or an input size (--input-size C H W)")
        return synthetic_probes(tuple(input_size))
    # Tensors are taken as given (the user prepared them); images are converted to the channel
    # count of the first convolution. Every probe counts in the statistics; max_probes only
    # limits the figures shown.
    is_tensor = isinstance(probes, (torch.Tensor, np.ndarray)) or (isinstance(probes, tuple) and all(isinstance(p, (torch.Tensor, np.ndarray)) for p in probes))
    channels = None if is_tensor else expected_input_channels(model)
    return load_probes(probes, channels=channels, sample_ndim=expected_input_ndim(model))


def build_report(
    model: nn.Module,
    probes: Any = None,
    options: ReportOptions | None = None,
    *,
    input_size: Sequence[int] | None = None,
    provenance: Provenance | None = None,
    class_names: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    **overrides: Any,
) -> Report:
    """Inspect ``model`` on ``probes`` and return the :class:`Report` the page shows.

    ``probes``: a float tensor ``(N, C, H, W)``, a folder, an image path or a list of them, a
    :class:`~cnnreport.probes.ProbeBatch`, a tuple of tensors for a model with several inputs,
    or None with ``input_size`` for a synthetic input. Keyword overrides set
    :class:`ReportOptions` fields (``title=``, ``layers=[...]``, ``max_channels=`` ...);
    ``notes`` are lines the page shows in the overview (the CLI passes what loading did).
    The model is left exactly as it was: weights, buffers, flags, hooks and RNG state.
    """
    if not isinstance(model, nn.Module):
        raise OptionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    opts = make_options(options, **overrides)
    if class_names is not None:
        opts = dataclasses.replace(opts, class_names=list(class_names))
    batch = resolve_probes(model, probes, opts, input_size)
    detailed = select_layers(model, opts)
    example = tuple(t[:1] for t in _to_model(batch.inputs, model))
    arch: Architecture | None = None
    try:
        arch = inspect_model(model, example)
    except Exception as exc:  # a failing forward is diagnosed by the capture pass; an unknown output type gets our own table below
        arch_error: BaseException = exc
    cam_layer = default_cam_layer(model, opts, arch.rows if arch is not None else ()) if opts.attributions else None
    progress = Progress(total=len(batch), enabled=opts.progress, label="forward")
    result = capture_pass(model, batch, opts, detailed, cam_layer, progress)
    progress.close()
    if result.error is not None:
        try:
            result.error.report = partial_report(model, batch, opts, result, provenance)
        except Exception as exc:  # never let the partial report hide the user's real error
            result.error.hint = f"no partial report: {type(exc).__name__}: {exc}"
        raise result.error
    if arch is None:
        arch = fallback_architecture(model, example, result.capture, arch_error)
    modules = dict(model.named_modules())
    detailed_layers = result.capture.detailed()
    # Filters are drawn once per module, at its first call.
    first_calls = {layer.name: layer.call_index for layer in reversed(detailed_layers)}
    jobs = [(layer, modules.get(layer.name), first_calls[layer.name] == layer.call_index) for layer in detailed_layers]
    # Sections are independent and their work (PNG encoding, numpy, torch reductions) releases
    # the GIL, so threads use every core; map keeps the order, so the output is unchanged.
    # The health checks and the model fingerprint need no section, so they run beside them.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        alerts_job = pool.submit(stats.health_alerts, model, result.capture, None, opts, synthetic_input=batch.synthetic)
        provenance_job = pool.submit(fill_provenance, provenance or default_provenance(), model, probes=batch, timestamp=opts.timestamp)
        sections = list(pool.map(lambda job: build_section(job[0], job[1], batch.names, opts, with_filters=job[2]), jobs))
        alerts, provenance = alerts_job.result(), provenance_job.result()
    section_ids = {(s.name, s.call_index): s.id for s in sections}
    for row in arch.rows:
        row.section_id = section_ids.get((row.name, row.call_index), "")
    probes_info = []
    for i, name in enumerate(batch.names[: opts.max_probes]):
        thumb = figures.thumbnail(batch.display[i], alt=f"probe {name}") if i < len(batch.display) and batch.display[i].size else None
        probes_info.append(
            ProbeInfo(
                name=name,
                thumbnail=thumb,
                predictions=result.predictions[i] if i < len(result.predictions) else [],
                source=batch.sources[i] if i < len(batch.sources) else "",
                sha256=batch.sha256[i] if i < len(batch.sha256) else "",
            )
        )
    attributions = gradcam_attributions(result.capture, batch, opts)
    notes = list(notes) + list(batch.notes) + list(arch.notes)
    if opts.attributions and opts.saliency:
        saliency, why = saliency_attributions(model, batch, opts, result.predictions)
        attributions += saliency
        notes += why
    if not detailed:
        notes.append("The model has no convolution layer: no activation sections (choose layers with --layers or --layer-types).")
    report = Report(
        title=opts.title or f"{type(model).__name__} report",
        model=arch.summary,
        layers=arch.rows,
        sections=sections,
        probes=probes_info,
        options=opts,
        provenance=provenance,
        attributions=attributions,
        alerts=alerts,
        synthetic_input=batch.synthetic,
        notes=notes,
    )
    attach_graph(report, result.graph, opts)
    attach_receptive_fields(report.layers, result.graph)
    report.notes += budget.apply_budget(report, result.capture, opts.max_html_mb)
    return report


def fallback_architecture(model: nn.Module, example: tuple[torch.Tensor, ...], capture: CaptureResult, error: BaseException) -> Architecture:
    """Our own table from the capture, for a model torchinfo cannot summarise (it rejects some
    output types, such as dataclasses), with a note saying why."""
    from .architecture import count_parameters

    reason = " ".join(str(error.__cause__ or error).split())[:160]
    total, trainable, param_bytes = count_parameters(model)
    summary = ModelSummary(
        class_name=type(model).__name__,
        input_shape=list(example[0].shape[1:]),
        output_shape=[],
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        mult_adds=0,
        param_bytes=param_bytes,
        was_training=model.training,
        num_conv_layers=sum(1 for m in model.modules() if isinstance(m, CONV_TYPES)),
    )
    note = f"torchinfo could not summarise this model ({reason}); the table lists the module calls cnnreport captured, without mult-adds."
    return Architecture(rows=rows_from_capture(model, capture, 1), summary=summary, notes=[note])


def partial_report(
    model: nn.Module,
    batch: ProbeBatch,
    options: ReportOptions,
    result: PassResult,
    provenance: Provenance | None,
) -> Report | None:
    """What the page can show of a forward pass that raised: the failure first, then a table,
    sections and graph of every module call that completed before it."""
    from .architecture import count_parameters
    from .report import ForwardFailure, ModelSummary

    error = result.error
    context = result.failure or {}
    completed = [layer for layer in result.capture.layers]
    cause = error.__cause__ if error is not None else None
    failure = ForwardFailure(
        message=" ".join(str(cause or error).split()),
        exception_type=type(cause or error).__name__,
        failed_at=str(context.get("failed_at", "")),
        failed_type=str(context.get("failed_type", "")),
        last_completed=str(context.get("last_completed", completed[-1].name if completed else "")),
        input_shapes=list(context.get("input_shapes", [])),
        expected=str(context.get("expected", "")),
    )
    modules = dict(model.named_modules())
    total, trainable, param_bytes = count_parameters(model)
    rows = rows_from_capture(model, result.capture, len(batch))
    sections = [
        build_section(layer, modules.get(layer.name), batch.names, options, with_filters=layer.call_index == 1)
        for layer in result.capture.detailed()
    ]
    summary = ModelSummary(
        class_name=type(model).__name__,
        input_shape=list(batch.inputs[0].shape[1:]),
        output_shape=[],
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        mult_adds=0,
        param_bytes=param_bytes,
        was_training=model.training,
    )
    report = Report(
        title=(options.title or f"{type(model).__name__} report") + " (partial: the forward pass failed)",
        model=summary,
        layers=rows,
        sections=sections,
        probes=[ProbeInfo(name=n, thumbnail=None) for n in batch.names[: options.max_probes]],
        options=options,
        provenance=provenance or default_provenance(),
        synthetic_input=batch.synthetic,
        notes=list(batch.notes) + [f"Only the {len(rows)} module calls that completed before the failure are shown."],
        failure=failure,
    )
    for row in report.layers:
        row.section_id = next((s.id for s in sections if s.name == row.name and s.call_index == row.call_index), "")
    attach_graph(report, result.graph, options)
    return report


def rows_from_capture(model: nn.Module, capture: CaptureResult, batch_size: int) -> list[LayerRow]:
    """Table rows for the module calls our own capture saw, for when torchinfo cannot run
    (a failed forward pass, an output type torchinfo does not know)."""
    from .architecture import count_parameters, shared_parameters

    modules = dict(model.named_modules())
    shared = shared_parameters(model)
    total = count_parameters(model)[0]
    rows = []
    for layer in capture.layers:
        module = modules.get(layer.name)
        own = sum(p.numel() for p in module.parameters()) if module is not None and layer.call_index == 1 else 0
        rows.append(
            LayerRow(
                name=layer.name,
                type=layer.type,
                depth=layer.name.count(".") + 1,
                input_shape=[],
                output_shape=[batch_size, *layer.output_shape],
                kernel_size=_kernel(module),
                params=own,
                param_percent=100.0 * own / total if total else 0.0,
                mult_adds=0,
                trainable="",
                is_leaf=True,
                call_index=layer.call_index,
                row_id=row_id(layer.name) if layer.call_index == 1 else f"{row_id(layer.name)}-call{layer.call_index}",
                shared_with=shared.get(layer.name, []),
            )
        )
    return rows


def _kernel(module: nn.Module | None) -> list[int] | None:
    size = getattr(module, "kernel_size", None)
    if size is None:
        return None
    return [int(size)] * 2 if isinstance(size, int) else [int(v) for v in size]


def attach_graph(report: Report, graph: Any, options: ReportOptions) -> None:
    """Draw the executed graph (collapsed and full views) into the report, if there is one."""
    if graph is None or not options.graph:
        return
    try:
        from .graph import build_graph_views
    except ImportError:
        return
    report.graph_svg, report.graph_full_svg = build_graph_views(graph, link_sections={s.id for s in report.sections})


def attach_receptive_fields(rows: list[LayerRow], graph: Any) -> None:
    """Receptive field and effective stride of each conv/pool row, from the executed graph, and
    FLOPs (two per mult-add) on every row."""
    for row in rows:
        row.flops = 2 * row.mult_adds if row.mult_adds else None
    if graph is None:
        return
    try:
        from .graph import receptive_fields

        fields = receptive_fields(graph)
    except Exception:  # an odd graph must not cost the report; the columns stay empty
        return
    for row in rows:
        key = row.name if row.call_index == 1 else f"{row.name} (call {row.call_index})"
        if key in fields:
            rf, stride = fields[key]
            row.receptive_field, row.effective_stride = int(round(rf)), int(round(stride)) if stride >= 1 else stride


def _attribution(
    batch: ProbeBatch, index: int, heat: np.ndarray, target: int, options: ReportOptions, method: str, layer: str, alt: Callable[[str, str], str]
) -> Attribution:
    """One probe's heat map over its thumbnail, with the peak in the map's own grid as (x, y)."""
    names = options.class_names
    label = names[target] if names and target < len(names) else str(target)
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return Attribution(
        probe=batch.names[index],
        target_class=int(target),
        target_label=label,
        method=method,
        layer=layer,
        figure=figures.heat_overlay(batch.display[index], heat, alt=alt(label, batch.names[index])),
        peak_xy=(int(peak[-1]), int(peak[-2])) if heat.ndim >= 2 else None,
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


def saliency_attributions(
    model: nn.Module, batch: ProbeBatch, options: ReportOptions, predictions: list[list[Prediction]]
) -> tuple[list[Attribution], list[str]]:
    """Gradient saliency of each shown probe's target class (one extra forward + backward:
    the gradient must reach the input, so it cannot share the capture pass)."""
    from .attribution import saliency_maps

    limit = min(len(predictions), options.max_probes, len(batch.display))
    shown = [i for i in range(limit) if batch.display[i].size and predictions[i]]
    if not shown:
        return [], []
    targets = [options.target_class if options.target_class is not None else predictions[i][0].class_index for i in shown]
    inputs = tuple(t[shown] for t in _to_model(batch.inputs, model))
    try:
        maps = saliency_maps(model, inputs, targets, batch_size=options.batch_size)
    except OptionError as exc:  # Captum missing: the report goes on without saliency, and says so
        return [], [exc.one_line()]
    def alt(label: str, probe: str) -> str:
        return f"gradient saliency for class {label} on {probe}"

    out = [_attribution(batch, i, sal, target, options, "Saliency", "input", alt) for i, target, sal in zip(shown, targets, maps)]
    return out, []


def default_provenance() -> Provenance:
    return Provenance(
        cnnreport_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        command_line=" ".join(sys.argv) if sys.argv and sys.argv[0].endswith("cnnreport") else "",
    )


def generate_report(
    model: nn.Module,
    probes: Any = None,
    output: str | None = "report.html",
    *,
    json: str | None = None,
    markdown: str | None = None,
    options: ReportOptions | None = None,
    **kwargs: Any,
) -> Report:
    """Build the report and write it to ``output`` (HTML), and optionally ``json``/``markdown``.

    Files are written atomically: an existing report is replaced only by a complete one.
    Returns the :class:`Report`, whose ``to_dict()`` and ``write_json()`` give the JSON view.
    """
    report = build_report(model, probes, options, **kwargs)
    if output:
        report.write_html(output)
    if json:
        report.write_json(json)
    if markdown:
        report.write_markdown(markdown)
    return report


__all__ = ["build_report", "generate_report", "select_layers", "CnnReportError"]
