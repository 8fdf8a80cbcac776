"""``build_report``: the stages in order, from (model, probes, options) to a :class:`Report`.

load probes -> one capture pass over the probe batches (activations, predictions, Grad-CAM and
the executed graph share it) -> torchinfo table -> sections, figures, alerts -> ``Report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from . import budget, figures, heap, stats
from .architecture import Architecture, inspect_model
from .batching import next_batch_size
from .capture import (
    CONV_TYPES,
    ActivationCapture,
    CaptureResult,
    is_convolution,
    model_left_as_it_was,
    module_type_name,
    preserved_model_state,
    run_forward,
    to_model,
)
from .compiled import compiled_inner, compiled_note, compiled_parts
from .errors import CnnReportError, ForwardError, OptionError
from .gcpause import collect_young, paused_gc
from .partial import fallback_architecture, partial_report
from .probes import (
    ProbeBatch,
    expected_input_ndim,
    image_channels,
    load_probes,
    synthetic_probes,
)
from .progress import Progress
from .provenance import default_provenance, fill_provenance, state_dict_fingerprint
from .report import (
    LayerRow,
    Prediction,
    ProbeInfo,
    Provenance,
    Report,
    ReportOptions,
    section_id,
)
from .sections import (
    attach_receptive_fields,
    build_section,
    gradcam_attributions,
    graph_views,
    saliency_attributions,
    weight_section,
)
from .tracing import CallRecorder

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


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch ops on one thread each for the block (the pool's threads are the parallelism).

    torch's thread count is a per-thread setting over a process default that threads without
    their own read, and ``set_num_threads`` sets both. So two reports may not overlap here:
    the second would save the first's 1 and put it back for good. They take turns (only the
    figures' pool is serialised, not the forward passes), and each restores what it saw.
    """
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@dataclass
class PassResult:
    capture: CaptureResult
    predictions: list[list[Prediction]]
    graph: Any = None
    failure: dict[str, Any] | None = None
    error: ForwardError | None = None
    batch_sizes: list[int] = dataclasses.field(default_factory=list)


def capture_pass(
    model: nn.Module,
    batch: ProbeBatch,
    options: ReportOptions,
    detailed: list[str],
    cam_layer: str | None,
    progress: Progress,
    *,
    taper: bool = False,
) -> PassResult:
    """Forward every probe batch once with the capture hooks (and the graph recorder on the
    first batch); Grad-CAM backpropagates from the output to the CAM layer only.

    Batches of ``options.batch_size`` (default :data:`~cnnreport.batching.DEFAULT_BATCH`);
    with ``taper``, batches after the first may be smaller (:func:`~cnnreport.batching.next_batch_size`)."""
    want_cam = options.attributions and cam_layer is not None
    capture = ActivationCapture(
        model,
        set(detailed),
        max_channels=options.max_channels,
        tile_size=options.tile_size,
        cam_layer=cam_layer if want_cam else None,
        max_probes=options.max_probes,
        total_probes=len(batch),
    )
    predictions: list[list[Prediction]] = []
    recorder = None
    graph = None
    failure = None
    error = None
    first_size = options.first_batch
    total = len(batch)
    batch_sizes: list[int] = []
    with preserved_model_state(model) as snapshot, capture, paused_gc() as collector_was_on:
        first_probe = 0
        index = -1
        while first_probe < total:
            index += 1
            if index > 0:
                # Each batch sees the model as it was given, not as the last batch's forward
                # left it (observers, counters, in-place writes): the report does not depend on
                # the batch size.
                snapshot.restore(between_passes=True)
            size = first_size
            if taper and index > 0:
                size = next_batch_size(
                    first_size,
                    probes=total,
                    done=first_probe,
                    shown=min(total, options.max_probes),
                    largest_per_probe=capture.largest_per_probe,
                    tile_bytes=capture.tile_bytes,
                )
            inputs = to_model(tuple(t[first_probe : first_probe + size] for t in batch.inputs), model)
            capture.start_batch(first_probe)
            first_probe += inputs[0].shape[0]
            batch_sizes.append(inputs[0].shape[0])
            # The recorder runs on the first batch even without a graph on the page: it is what
            # names the module or op where a failing forward pass broke.
            record = index == 0
            try:
                recorder = CallRecorder(model) if record else None
                with (recorder if recorder is not None else contextlib.nullcontext()), torch.set_grad_enabled(want_cam):
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
            collect_young(collector_was_on)
            heap.after_batch(index)
    return PassResult(capture=capture.result(), predictions=predictions, graph=graph, failure=failure, error=error, batch_sizes=batch_sizes)


def _batch_notes(sizes: list[int], first: int) -> list[str]:
    """A line for the page when the automatic batches were made smaller than ``first``."""
    if all(size == first for size in sizes[:-1]):
        return []
    return [
        f"Probes went through the model in batches of {', '.join(str(s) for s in sizes)}: smaller after the "
        f"first, so that the forward pass and the page's tiles stay within twice the largest activation "
        f"of all probes together (--batch-size sets one size for all)."
    ]


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


def _graph_of(recorder: Any) -> Any:
    try:
        return recorder.graph()
    except Exception:  # a graph we cannot build must not cost the user the whole report
        return None


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
    channels = None if is_tensor else image_channels(model)
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
    The model is left exactly as it was: weights, buffers, ``.grad``, attributes, flags, hooks
    and RNG state, bit for bit, whatever its own forward writes (each forward pass starts from
    the state it was given). A ``torch.compile``'d model is reported by the module inside it,
    run eagerly, and the page says so; the compiled wrapper is not called.
    """
    if not isinstance(model, nn.Module):
        raise OptionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # A torch.compile wrapper is reported by the module inside it; the wrapper is never called.
    model, wrappers = compiled_inner(model)
    compile_note = compiled_note(wrappers, compiled_parts(model))
    notes = [*notes, compile_note] if compile_note else list(notes)
    opts = make_options(options, **overrides)
    if class_names is not None:
        opts = dataclasses.replace(opts, class_names=list(class_names))
    batch = resolve_probes(model, probes, opts, input_size)
    detailed = select_layers(model, opts)
    example = tuple(t[:1] for t in to_model(batch.inputs, model))
    automatic = opts.batch_size is None
    if not automatic and opts.batch_size < 1:
        raise OptionError(f"batch_size must be at least 1 probe, got {opts.batch_size} (leave it out for the automatic size)")
    # Every forward pass below (torchinfo's, the capture's, saliency's) starts from this one copy
    # of the model's state and puts it back after, so a model whose forward writes to itself
    # is reported, and left, as it was given; the fingerprint hashes the state before them.
    with model_left_as_it_was(model) as snapshot:
        frozen_state = snapshot.frozen_state_dict()
        arch: Architecture | None = None
        try:
            arch = inspect_model(model, example)
        except Exception as exc:  # a failing forward is diagnosed by the capture pass; an unknown output type gets our own table below
            arch_error: BaseException = exc
        cam_layer = default_cam_layer(model, opts, arch.rows if arch is not None else ()) if opts.attributions else None
        progress = Progress(total=len(batch), enabled=opts.progress, label="forward")
        if automatic:  # the report states the size it started with
            opts = dataclasses.replace(opts, batch_size=opts.first_batch)
        result = capture_pass(model, batch, opts, detailed, cam_layer, progress, taper=automatic)
        progress.close()
        if result.error is not None:
            try:
                given = provenance or default_provenance()
                fingerprint = state_dict_fingerprint(frozen_state) if frozen_state is not None else given.model_fingerprint
                result.error.report = partial_report(model, batch, opts, result, dataclasses.replace(given, model_fingerprint=fingerprint))
            except Exception as exc:  # never let the partial report hide the user's real error
                result.error.hint = f"no partial report: {type(exc).__name__}: {exc}"
            raise result.error
        # Saliency's backward runs the user's model again: before the collector is paused.
        saliency, saliency_notes = [], []
        if opts.attributions and opts.saliency:
            saliency, saliency_notes = saliency_attributions(model, batch, opts, result.predictions)
    # From here on no user code runs, and the figures make tens of thousands of small objects:
    # the cyclic collector's walks over the whole process would cost ~0.07 s (gcpause.py).
    with paused_gc():
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
        # Each thread's torch ops run on one core: with torch's own thread team per call, the
        # threads oversubscribed the cores and every op waited at its team's barrier.
        with single_threaded_torch(), ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            alerts_job = pool.submit(stats.health_alerts, model, result.capture, None, opts, synthetic_input=batch.synthetic)
            # A copy with the fingerprint and probes of *this* model: a Provenance the caller passes
            # twice must not carry the first model's fingerprint into the second report.
            given = dataclasses.replace(provenance, model_fingerprint="", probe_files=[]) if provenance else default_provenance()
            provenance_job = pool.submit(_filled_provenance, given, model, frozen_state, batch, opts.timestamp)
            section_ids = {section_id(layer.name, layer.call_index) for layer in detailed_layers}
            graph_job = pool.submit(graph_views, result.graph, section_ids, opts)
            figures_progress = Progress(total=len(jobs), enabled=opts.progress and bool(jobs), label="figures")
            sections = []
            for section in pool.map(lambda job: build_section(job[0], job[1], batch.names, opts, with_filters=job[2]), jobs):
                sections.append(section)
                figures_progress.advance(1)
            figures_progress.close()
            alerts, provenance, drawn_graph = alerts_job.result(), provenance_job.result(), graph_job.result()
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
        notes = list(notes) + list(batch.notes) + list(arch.notes) + _batch_notes(result.batch_sizes, opts.batch_size)
        attributions += saliency
        notes += saliency_notes
        if isinstance(model, torch.jit.ScriptModule):
            # Weights stay readable inside TorchScript: every convolution still shows its filters.
            sections = [weight_section(name, module, opts) for name, module in model.named_modules() if name and is_convolution(module)]
            notes.append(
                "TorchScript model: its layers run outside Python, where no hook reaches, so the report "
                "shows its table, totals, predictions and filters but no activations or Grad-CAM; for "
                "those, load the Python class with its weights (MODEL file.py:Class --weights checkpoint)."
            )
        elif not detailed:
            notes.append("The model has no convolution layer: no activation sections (choose layers with --layers or --layer-types).")
        report = Report(
            title=opts.title or f"{module_type_name(model)} report",
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
            probe_count=len(batch),
        )
        report.graph_svg, report.graph_full_svg, report.graph_group_svgs = drawn_graph
        attach_receptive_fields(report.layers, result.graph)
        report.notes += budget.apply_budget(report, result.capture, opts.max_html_mb)
        return report


def _filled_provenance(given: Provenance, model: nn.Module, frozen_state: dict[str, Any] | None, batch: ProbeBatch, timestamp: bool) -> Provenance:
    """``given`` with the hashes; the fingerprint of the state before the first forward pass
    (the snapshot's copies), or of the model now when its lazy modules had no values then."""
    if frozen_state is not None:
        given.model_fingerprint = state_dict_fingerprint(frozen_state)
    return fill_provenance(given, model, probes=batch, timestamp=timestamp)


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
