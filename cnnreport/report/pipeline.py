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
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..analysis.alerts import health_alerts, summarise_input
from ..analysis.architecture import Architecture, inspect_model
from ..analysis.spectral import layer_spectra, spectral_alerts
from ..capture.activations import CaptureResult
from ..capture.passes import PassResult, capture_pass, single_threaded_torch
from ..capture.predictions import check_class_names, resolve_class_names
from ..datamodel import Alert, Attribution, LayerRow, LayerSection, LayerSpectrum, ProbeInfo, Provenance, ReportOptions, section_id
from ..errors import CnnReportError, OptionError
from ..figures import images as figures
from ..io.examples import ExampleImages
from ..io.probes import (
    SUPPORTED_SUFFIXES,
    ProbeBatch,
    expected_input_ndim,
    image_channels,
    load_probes,
    synthetic_probes,
)
from ..io.provenance import default_provenance, fill_provenance, state_dict_fingerprint
from ..model.compiled import compiled_inner, compiled_note, compiled_parts
from ..model.modules import CONV_TYPES, is_convolution, module_type_name, to_model
from ..model.state import model_left_as_it_was, training_flags
from ..render.outputs import plan_outputs
from ..support.gcpause import paused_gc
from ..support.progress import Progress
from . import budget
from .document import Report
from .examples import as_example_images, automatic_example_batch, distributed_world, example_set, gather_partials, reduce_examples
from .examples_view import draw_examples, examples_reserve
from .partial import fallback_architecture, partial_report
from .sections import (
    build_section,
    gradcam_attributions,
    graph_views,
    linked_rows,
    nonfinite_attribution_notes,
    saliency_attributions,
    weight_section,
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
    # The root module is a layer like any other: a model that *is* one Conv2d gets its section
    # (path "", shown as "(model)"), and its type counts among the model's types.
    named = list(model.named_modules())
    names = [n for n, _ in named]
    for pattern in [*options.layers, *options.exclude_layers]:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise OptionError(
                f"layer pattern {pattern!r} matches no module; modules are named like: "
                + (", ".join(n for n in names[:7] if n) or "(the model has no submodules: its one layer is the model itself, matched by '*')")
                + (" ..." if len(names) > 7 else "")
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
    def spatial(shape: Sequence[Any]) -> bool:
        return len(shape) >= 3 and all(isinstance(v, int) for v in shape) and math.prod(shape[2:]) > 1

    maps = [r for r in rows if r.name and r.name in names and r.call_index == 1 and spatial(r.output_shape)]
    if options.cam_layer:
        if options.cam_layer not in names:
            raise OptionError(
                f"--cam-layer {options.cam_layer!r} is not a module of the model; convolutions are: "
                + ", ".join([n for n, m in names.items() if isinstance(m, CONV_TYPES)][-6:])
            )
        _check_cam_layer(options.cam_layer, names[options.cam_layer], rows, [r.name for r in maps])
        return options.cam_layer
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


def _check_cam_layer(name: str, module: nn.Module, rows: Sequence[LayerRow], with_maps: list[str]) -> None:
    """Refuse a ``--cam-layer`` that cannot give a Grad-CAM map, from torchinfo's record of
    what each module returned (before the capture pass, so it costs no forward pass): one
    that never runs, returns no tensor, or returns no spatial map (a Linear layer's
    ``(N, features)``, a pooled ``(N, C, 1, 1)``), where the map would be nothing or one flat
    value. Without torchinfo's rows the pass itself finds out, and the page says so."""
    if not rows:
        return
    own = [r for r in rows if r.name == name]
    where = f"--cam-layer {name!r} ({type(module).__name__})"
    maps = f"layers with one: {', '.join(with_maps[-6:])}" if with_maps else "the model has no layer with one"
    if not own:
        raise OptionError(f"{where} never runs in the forward pass, so Grad-CAM has nothing to explain; {maps}")
    shape = own[0].output_shape
    if not (isinstance(shape, (list, tuple)) and shape and all(isinstance(v, int) for v in shape)):
        raise OptionError(f"{where} does not return one tensor ({_shape_words(shape)}): Grad-CAM needs its feature map (N, C, H, W); {maps}")
    if len(shape) < 3 or math.prod(shape[2:]) <= 1:
        got = "×".join(str(v) for v in shape)
        why = "a map of one position, which Grad-CAM would paint one flat value" if len(shape) >= 3 else "no spatial map"
        raise OptionError(f"{where} outputs {got}: {why}; Grad-CAM needs a feature map (N, C, H, W) or (N, C, L); {maps}")


def _shape_words(shape: Any) -> str:
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(v, (list, tuple)) for v in shape):
        return f"{len(shape)} tensors"
    return f"output {shape!r:.40}" if shape else "no tensor output"


def _attribution_conflicts(options: ReportOptions, model: nn.Module) -> None:
    """Refuse attribution options that the other options make meaningless."""
    if not options.attributions:
        given = [flag for flag, on in (("--cam-layer", options.cam_layer), ("--target-class", options.target_class is not None), ("--saliency", options.saliency)) if on]
        if given:
            raise OptionError(f"{' and '.join(given)} {'has' if len(given) == 1 else 'have'} no effect with --no-attributions (attributions=False), which turns Grad-CAM and saliency off; leave one out")
    if isinstance(model, torch.jit.ScriptModule) and options.cam_layer:
        raise OptionError(f"--cam-layer {options.cam_layer!r}: a TorchScript model's layers run outside Python, where Grad-CAM's hook cannot reach; load the Python class with its weights instead")


# --------------------------------------------------------------------------------------------
# The capture pass


def _probe_nonfinite(batch: ProbeBatch) -> int:
    """NaN and Inf values in the probes as the model gets them (the NaN alert's first question)."""
    return sum(int((~torch.isfinite(t)).sum()) for t in batch.inputs if isinstance(t, torch.Tensor) and t.is_floating_point())


def _gradcam_notes(options: ReportOptions, cam_layer: str | None, result: PassResult, drawn: bool, model: nn.Module) -> list[str]:
    """Why there is no Grad-CAM, when one was asked for (``--cam-layer``, ``--target-class``) or
    the model is a classifier that would have had one; silent for models without class scores
    that were given no attribution option."""
    if not options.attributions or drawn or isinstance(model, torch.jit.ScriptModule):
        return []
    asked = options.cam_layer is not None or options.target_class is not None
    which = f"--cam-layer {options.cam_layer!r}" if options.cam_layer else (f"layer {cam_layer!r}" if cam_layer else "")
    if result.class_count is None:
        if not asked:
            return []
        return [f"No Grad-CAM: it explains a class score, and the model's output is not class scores (an (N, classes) tensor); {which or '--target-class'} has no effect."]
    if cam_layer is None:
        return ["No Grad-CAM: the model has no layer with a spatial feature map (N, C, H, W) to explain; choose one with --cam-layer."]
    if result.gradcam_missing or not result.capture.gradcam:
        return [f"No Grad-CAM of {which}: the class scores do not depend on its output, or it returned no tensor with a spatial map during the pass."]
    return []


def _batch_notes(sizes: list[int], first: int) -> list[str]:
    """A line for the page when the automatic batches were made smaller than ``first``."""
    if all(size == first for size in sizes[:-1]):
        return []
    return [
        f"Probes went through the model in batches of {', '.join(str(s) for s in sizes)}: smaller after the "
        f"first, so that the forward pass and the page's tiles stay within twice the largest activation "
        f"of all probes together (--batch-size sets one size for all)."
    ]


def _section_notes(model: nn.Module, options: ReportOptions, chosen: list[str], capture: CaptureResult) -> list[str]:
    """Lines saying why the page has no section, or fewer than were chosen: the real reason
    each time (no convolution, every one excluded, a chosen layer that never ran or returned
    no tensor), never a guess."""
    excluded = ", ".join(repr(p) for p in options.exclude_layers)
    if not chosen:
        if options.layers or options.layer_types:
            how = " and ".join(
                part for part in (
                    f"--layers {', '.join(repr(p) for p in options.layers)}" if options.layers else "",
                    f"--layer-types {', '.join(options.layer_types)}" if options.layer_types else "",
                ) if part
            )
            return [f"--exclude-layers {excluded} excluded every layer that {how} chose: no activation sections."]
        convs = [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]
        if not convs:
            return ["The model has no convolution layer: no activation sections (choose layers with --layers or --layer-types)."]
        every = "the model's only convolution" if len(convs) == 1 else f"all {len(convs)} of the model's convolutions"
        return [f"--exclude-layers {excluded} excluded {every}: no activation sections."]
    captured = {layer.name for layer in capture.detailed()}
    missing = [name for name in chosen if name not in captured]
    if not missing:
        return []
    def label(name: str) -> str:
        return name or "(model)"
    reasons = [f"{label(n)} ({capture.skipped.get(n, 'never called by the forward pass')})" for n in missing[:8]]
    more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
    lead = "none of the chosen layers has" if len(missing) == len(chosen) else f"{len(missing)} of the {len(chosen)} chosen layers have"
    return [f"No activation section where {lead} activations to show: {'; '.join(reasons)}{more}."]


def _output_notes(result: PassResult, options: ReportOptions) -> list[str]:
    """A line saying why there are no predictions (and no Grad-CAM), when the output gave none."""
    if not result.unscored_output or result.predictions:
        return []
    cam = " or Grad-CAM" if options.attributions else ""
    return [f"No predictions{cam}: the model's forward {result.unscored_output}, not an (N, classes) tensor of class scores."]


# --------------------------------------------------------------------------------------------
# The public entry points


def refuse_meaningless_options(opts: ReportOptions, probes: Any, input_size: Sequence[int] | None) -> None:
    """An input size with probes is an error, not silently dropped (attribution options: see
    :func:`_attribution_conflicts`)."""
    if opts.cam_layer is not None and not str(opts.cam_layer).strip():
        raise OptionError("--cam-layer '' names no layer: give a module path such as layer4, or leave it out for the default")
    if input_size and probes is not None:
        raise OptionError("input_size sets a synthetic input, but probes are given and would be used instead: drop one of them")


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
    on_failure: str = "raise",
    examples: Any = None,
    **overrides: Any,
) -> Report:
    """Inspect ``model`` on ``probes`` and return the :class:`Report` the page shows.

    ``probes``: a float tensor ``(N, C, H, W)``, a folder, an image path or a list of them, a
    :class:`~cnnreport.io.probes.ProbeBatch`, a tuple of tensors for a model with several inputs,
    or None with ``input_size`` for a synthetic input. Keyword overrides set
    :class:`ReportOptions` fields (``title=``, ``layers=[...]``, ``max_channels=`` ...);
    ``notes`` are lines the page shows in the overview (the CLI passes what loading did).
    The model is left exactly as it was: weights, buffers, ``.grad``, attributes, flags, hooks
    and RNG state, bit for bit, whatever its own forward writes (each forward pass starts from
    the state it was given). A ``torch.compile``'d model is reported by the module inside it,
    run eagerly, and the page says so; the compiled wrapper is not called.

    A forward pass that raises: ``on_failure="raise"`` (the default) raises its
    :class:`~cnnreport.errors.ForwardError`, naming the module or op that failed;
    ``on_failure="partial"`` returns the partial report of every module call that completed
    before it, whose ``failure`` says where it broke (the error is raised all the same when not
    even that report can be built).

    ``examples``: a folder of images (or an :class:`~cnnreport.io.examples.ExampleImages` with
    its own preprocessing), hundreds to tens of thousands, streamed through the model in
    batches after the probes: for each section's layer, the images that excite each channel
    most, cropped to its receptive field, and the channels' statistics over the set
    (:attr:`Report.examples`). Under an initialised ``torch.distributed`` process group of N
    processes each reduces every N-th example and rank 0 gathers them and builds the report;
    the other ranks return None.
    """
    if on_failure not in ("raise", "partial"):
        raise OptionError(f"on_failure must be 'raise' or 'partial', not {on_failure!r}")
    if not isinstance(model, nn.Module):
        raise OptionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # A torch.compile wrapper is reported by the module inside it; the wrapper is never called.
    model, wrappers = compiled_inner(model)
    flags = training_flags(model)  # as given: every pass below runs the model in eval mode
    compile_note = compiled_note(wrappers, compiled_parts(model))
    notes = [*notes, compile_note] if compile_note else list(notes)
    opts = make_options(options, **overrides)
    if class_names is not None:
        opts = dataclasses.replace(opts, class_names=class_names)  # type: ignore[arg-type]
    opts = dataclasses.replace(opts, class_names=check_class_names(opts.class_names))
    _attribution_conflicts(opts, model)
    refuse_meaningless_options(opts, probes, input_size)
    batch = resolve_probes(model, probes, opts, input_size)
    detailed = select_layers(model, opts)
    example = tuple(t[:1] for t in to_model(batch.inputs, model))
    if opts.batch_size is not None and opts.batch_size < 1:
        raise OptionError(f"batch_size must be at least 1 probe, got {opts.batch_size} (leave it out for the automatic size)")
    if examples is not None and isinstance(model, torch.jit.ScriptModule):
        raise OptionError(
            "examples need hooks on the model's layers, and a TorchScript model's layers run outside Python, where no hook reaches",
            hint="load the Python class with its weights (MODEL file.py:Class --weights checkpoint)",
        )
    example_images = _example_images(examples, batch, opts)
    if example_images is not None and opts.example_batch_size is None:  # the report states the size it used
        opts = dataclasses.replace(opts, example_batch_size=automatic_example_batch(model))
    rank, world = distributed_world() if example_images is not None else (0, 1)
    run = _run_model(model, batch, opts, detailed, example, provenance, example_images, rank, world)
    run = dataclasses.replace(run, training_flags=flags)
    if run.result.error is not None:
        return _partial_or_raise(model, batch, run, provenance, on_failure)
    if example_images is not None:
        merged = gather_partials(run.example_partials or {}, rank=rank, world=world)
        if merged is None:  # another rank builds the report
            return None  # type: ignore[return-value]
        run = dataclasses.replace(run, example_partials=merged)
    # From here on no user code runs, and the figures make tens of thousands of small objects:
    # the cyclic collector's walks over the whole process would cost ~0.07 s (gcpause.py).
    with paused_gc():
        return _assemble(model, batch, example, detailed, run, provenance, notes, example_images, examples)


def _example_images(examples: Any, batch: ProbeBatch, opts: ReportOptions) -> Any:
    """``examples`` as a set read like the probes (their size and channels), checked; None
    without examples."""
    if examples is None:
        return None
    if batch.synthetic or len(batch.inputs) != 1 or batch.inputs[0].dim() != 4:
        raise OptionError("examples need image probes of shape (N, C, H, W) to take their size from (one input, not synthetic)")
    if opts.example_top_k < 1:
        raise OptionError(f"example_top_k must be at least 1, got {opts.example_top_k}")
    wanted = opts.example_channels
    counted = isinstance(wanted, int) and not isinstance(wanted, bool)
    listed = isinstance(wanted, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in wanted)
    if not (counted or listed) or (counted and wanted < 0) or (listed and (not wanted or min(wanted) < 0)):
        raise OptionError(f"example_channels must be a count (16) or a list of channel indices ([3, 9, 12]), got {wanted!r}")
    if opts.example_crop_px < 8:
        raise OptionError(f"example_crop_px must be at least 8 pixels, got {opts.example_crop_px}")
    shape = batch.inputs[0].shape
    return as_example_images(examples, image_size=(int(shape[2]), int(shape[3])), channels=int(shape[1]))


@dataclass
class _ModelRun:
    """What the passes over the user's model gave; everything after them runs no user code."""

    options: ReportOptions  # with the batch size started with and one class name per class
    arch: Architecture | None  # None: torchinfo could not summarise the model (see arch_error)
    arch_error: BaseException | None
    cam_layer: str | None
    result: PassResult
    name_notes: list[str]
    frozen_state: dict[str, Any] | None
    saliency: list[Attribution]
    saliency_notes: list[str]
    #: Each module's ``training`` flag as the model was given, before any pass.
    training_flags: dict[str, bool] | None = None
    #: With ``examples=``: this process's reduction of its shard, by layer, and the layers
    #: whose output could not be reduced (with why).
    example_partials: dict[str, Any] | None = None
    example_skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def _run_model(
    model: nn.Module,
    batch: ProbeBatch,
    opts: ReportOptions,
    detailed: list[str],
    example: tuple[torch.Tensor, ...],
    provenance: Provenance | None,
    example_images: Any = None,
    rank: int = 0,
    world: int = 1,
) -> _ModelRun:
    """torchinfo's summary, the capture pass and saliency's backward: every run of the user's
    model, each from the state it was given. A failed forward pass ends the runs; its error is in
    the result."""
    # Every forward pass below (torchinfo's, the capture's, saliency's) starts from this one copy
    # of the model's state and puts it back after, so a model whose forward writes to itself
    # is reported, and left, as it was given; the fingerprint hashes the state before them.
    with model_left_as_it_was(model) as snapshot:
        frozen_state = snapshot.frozen_state_dict()
        arch: Architecture | None = None
        arch_error: BaseException | None = None
        try:
            arch = inspect_model(model, example)
        except Exception as exc:  # a failing forward is diagnosed by the capture pass; an unknown output type gets our own table below
            arch_error = exc
        cam_layer = default_cam_layer(model, opts, arch.rows if arch is not None else ()) if opts.attributions else None
        progress = Progress(total=len(batch), enabled=opts.progress, label="forward")
        automatic = opts.batch_size is None
        if automatic:  # the report states the size it started with
            opts = dataclasses.replace(opts, batch_size=opts.first_batch)
        result = capture_pass(model, batch, opts, detailed, cam_layer, progress, taper=automatic)
        progress.close()
        # The model's class count is known now: the names become one per class, and every name
        # that did not fit is said on the page.
        shown_names, name_notes = resolve_class_names(opts.class_names, result.class_count)
        opts = dataclasses.replace(opts, class_names=shown_names)
        if result.error is not None:  # nothing more runs: the caller reports what did
            return _ModelRun(opts, arch, arch_error, cam_layer, result, name_notes, frozen_state, [], [])
        # Saliency's backward runs the user's model again: before the collector is paused.
        saliency, saliency_notes = [], []
        if opts.attributions and opts.saliency:
            saliency, saliency_notes = saliency_attributions(model, batch, opts, result.predictions)
            if result.class_count is None:
                saliency_notes.append("No saliency maps: --saliency explains a class score, and the model's output is not class scores (an (N, classes) tensor).")
        # The example set last: the probes' pass has shown the model runs (or said where not).
        partials, skipped = (None, {})
        if example_images is not None:
            partials, skipped = reduce_examples(model, example_images, detailed, opts, rank=rank, world=world)
    return _ModelRun(opts, arch, arch_error, cam_layer, result, name_notes, frozen_state, saliency, saliency_notes, example_partials=partials, example_skipped=skipped)


def _partial_or_raise(model: nn.Module, batch: ProbeBatch, run: _ModelRun, provenance: Provenance | None, on_failure: str) -> Report:
    """The failed pass's error, raised; or, when asked for, the partial report of what ran."""
    error = run.result.error
    assert error is not None
    if on_failure != "partial":
        raise error
    try:
        given = provenance or default_provenance()
        fingerprint = state_dict_fingerprint(run.frozen_state) if run.frozen_state is not None else given.model_fingerprint
        return partial_report(model, batch, run.options, run.result, dataclasses.replace(given, model_fingerprint=fingerprint))
    except Exception as exc:  # never let the partial report hide the user's real error
        error.hint = f"no partial report: {type(exc).__name__}: {exc}"
    raise error


def _assemble(
    model: nn.Module,
    batch: ProbeBatch,
    example: tuple[torch.Tensor, ...],
    detailed: list[str],
    run: _ModelRun,
    provenance: Provenance | None,
    notes: list[str],
    example_images: Any = None,
    example_source: Any = None,
) -> Report:
    """The report, built once from the passes' results, then fitted to the page's size budget."""
    opts, result = run.options, run.result
    arch = run.arch if run.arch is not None else fallback_architecture(model, example, result.capture, run.arch_error)
    sections, alerts, provenance, (graph_svg, graph_full_svg, graph_group_svgs) = _draw(model, batch, opts, result, run.frozen_state, provenance, run.training_flags)
    attributions = gradcam_attributions(result.capture, batch, opts)
    cam_notes = nonfinite_attribution_notes(attributions, result.capture.gradcam)
    notes = notes + list(batch.notes) + list(arch.notes) + _batch_notes(result.batch_sizes, opts.batch_size)
    notes += run.name_notes + _gradcam_notes(opts, run.cam_layer, result, bool(attributions), model)
    unranked = sum(1 for p in result.predictions if not p) if result.class_count is not None else 0
    if unranked:
        notes.append(f"No predictions for {unranked} of {len(result.predictions)} probe(s): the model's class scores are NaN or Inf, so no class can be named top.")
    notes += run.saliency_notes
    rows = linked_rows(arch.rows, sections, result.graph)
    if isinstance(model, torch.jit.ScriptModule):
        # Weights stay readable inside TorchScript: every convolution still shows its filters.
        sections = [weight_section(name, module, opts) for name, module in model.named_modules() if is_convolution(module)]
        notes.append(
            "TorchScript model: its layers run outside Python, where no hook reaches, so the report "
            "shows its table, totals, predictions and filters but no activations or Grad-CAM; for "
            "those, load the Python class with its weights (MODEL file.py:Class --weights checkpoint)."
        )
    else:
        notes += _section_notes(model, opts, detailed, result.capture)
    notes += _output_notes(result, opts) + cam_notes
    spectra = _spectra(model, opts)
    if spectra is not None:
        alerts = alerts + spectral_alerts(spectra, opts, {s.id for s in sections})
    report = Report(
        title=opts.title or f"{module_type_name(model)} report",
        model=arch.summary,
        layers=rows,
        sections=sections,
        probes=_probe_infos(batch, result, opts),
        options=opts,
        provenance=provenance,
        attributions=attributions + run.saliency,
        alerts=alerts,
        synthetic_input=batch.synthetic,
        notes=notes,
        graph_svg=graph_svg,
        graph_full_svg=graph_full_svg,
        graph_group_svgs=graph_group_svgs,
        probe_count=len(batch),
        spectral=spectra,
    )
    if example_images is None or run.example_partials is None:
        return budget.fit_to_budget(report, result.capture, opts.max_html_mb)
    # The examples keep their share of the page (at most 40%) while the rest is fitted, then
    # are drawn at the largest crops and most channels that fit what is left.
    source = example_source.folder if isinstance(example_source, ExampleImages) else os.fspath(example_source)
    examples, crops = example_set(run.example_partials, run.example_skipped, example_images, sections, rows, opts, source)
    reserve = examples_reserve(examples, crops, opts, opts.max_html_mb)
    report = budget.fit_to_budget(report, result.capture, opts.max_html_mb, reserve_bytes=reserve)
    return draw_examples(dataclasses.replace(report, examples=examples), crops, opts.max_html_mb)


def _spectra(model: nn.Module, opts: ReportOptions) -> list[LayerSpectrum] | None:
    """With ``opts.spectral``, every convolution and linear layer's weight spectrum, in
    definition order; None (and no work) without it."""
    return layer_spectra(model) if opts.spectral else None


def _draw(
    model: nn.Module,
    batch: ProbeBatch,
    opts: ReportOptions,
    result: PassResult,
    frozen_state: dict[str, Any] | None,
    provenance: Provenance | None,
    flags: dict[str, bool] | None = None,
) -> tuple[list[LayerSection], list[Alert], Provenance, tuple[str, str, dict[str, str]]]:
    """The layer sections, with the health checks, the provenance and the graph drawn beside them."""
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
        alerts_job = pool.submit(
            health_alerts,
            model,
            result.capture,
            None,
            opts,
            synthetic_input=batch.synthetic,
            # Only asked where some layer's output is non-finite: a pass over every probe.
            probe_nonfinite=_probe_nonfinite(batch) if any(sum(c.probe_nan) or sum(c.probe_inf) for c in result.capture.layers) else 0,
            output_nonfinite=result.output_nonfinite,
            graph=result.graph,
            training_flags=flags,
            probe_summary=summarise_input(batch.inputs) if not batch.synthetic else None,
        )
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
        return sections, alerts_job.result(), provenance_job.result(), graph_job.result()


def _probe_infos(batch: ProbeBatch, result: PassResult, opts: ReportOptions) -> list[ProbeInfo]:
    """The probes the page lists: thumbnail, top predictions, file and hash."""
    infos = []
    for i, name in enumerate(batch.names[: opts.max_probes]):
        thumb = figures.thumbnail(batch.display[i], alt=f"probe {name}") if i < len(batch.display) and batch.display[i].size else None
        infos.append(
            ProbeInfo(
                name=name,
                thumbnail=thumb,
                predictions=result.predictions[i] if i < len(result.predictions) else [],
                source=batch.sources[i] if i < len(batch.sources) else "",
                sha256=batch.sha256[i] if i < len(batch.sha256) else "",
            )
        )
    return infos


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

    Before any work, every output path is checked: one that is an input (a probe file, the
    checkpoint named in ``provenance``, the source of a loaded Python module such as the model's
    own), another output, or cannot be written raises :class:`~cnnreport.errors.OutputError`.
    The files are then written as one set: all are replaced by complete new ones, or none is.
    Returns the :class:`Report`, whose ``to_dict()`` and ``write_json()`` give the JSON view;
    in a sharded run (``examples=`` in a ``torch.distributed`` group) rank 0 writes and returns
    it, and the other ranks write nothing and return None.
    """

    provenance = kwargs.get("provenance")
    inputs = [("the probe", p) for p in _probe_paths(probes)]
    examples = kwargs.get("examples")
    if examples is not None:
        inputs.append(("the examples folder", os.fspath(examples.folder if isinstance(examples, ExampleImages) else examples)))
    if provenance is not None and getattr(provenance, "checkpoint_path", ""):
        inputs.append(("the checkpoint", provenance.checkpoint_path))
    planned = [("output", output), ("json", json), ("markdown", markdown)]
    plan_outputs(planned, inputs, folder_suffixes=SUPPORTED_SUFFIXES)
    report = build_report(model, probes, options, **kwargs)
    if report is None:  # another rank of a sharded run writes
        return None  # type: ignore[return-value]
    report.write(html=output, json=json, markdown=markdown)
    return report


def _probe_paths(probes: Any) -> list[str]:
    """The paths among what the API was given as probes (a path, a list of paths, a ProbeBatch)."""
    if isinstance(probes, (str, os.PathLike)):
        return [os.fspath(probes)]
    if isinstance(probes, ProbeBatch):
        return [s for s in probes.sources if s]
    if isinstance(probes, (list, tuple)):
        return [os.fspath(p) for p in probes if isinstance(p, (str, os.PathLike))]
    return []


__all__ = ["build_report", "generate_report", "select_layers", "CnnReportError"]
