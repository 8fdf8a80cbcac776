"""Reports of what ran when not everything could: a forward pass that raised part-way, or a
model whose output torchinfo cannot summarise. Tables come from cnnreport's own capture."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..analysis.architecture import Architecture, count_parameters, shared_parameters
from ..capture.activations import CaptureResult
from ..capture.passes import PassResult
from ..datamodel import (
    ROOT_LABEL,
    ForwardFailure,
    LayerRow,
    ModelSummary,
    ProbeInfo,
    Provenance,
    ReportOptions,
    row_id,
)
from ..io.probes import ProbeBatch
from ..io.provenance import default_provenance
from ..model.compiled import compiled_parts
from ..model.modules import is_convolution, module_type_name
from .document import Report
from .sections import build_section, graph_views


def summary_without_torchinfo(model: nn.Module, input_shape: list[int]) -> ModelSummary:
    """Key numbers from the model itself (no mult-adds: only torchinfo counts those)."""
    total, trainable, param_bytes = count_parameters(model)
    return ModelSummary(
        class_name=module_type_name(model),
        input_shape=input_shape,
        output_shape=[],
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        mult_adds=0,
        param_bytes=param_bytes,
        was_training=model.training,
        num_conv_layers=sum(1 for m in model.modules() if is_convolution(m)),
    )


def fallback_architecture(model: nn.Module, example: tuple[torch.Tensor, ...], capture: CaptureResult, error: BaseException) -> Architecture:
    """Our own table from the capture, for a model torchinfo cannot summarise (it rejects some
    output types, such as dataclasses), with a note saying why."""

    reason = " ".join(str(error.__cause__ or error).split())[:160]
    summary = summary_without_torchinfo(model, list(example[0].shape[1:]))

    wrapped = [name for name in compiled_parts(model) if name != "(model)"]
    if wrapped:  # torchinfo walks modules and cannot look inside a torch.compile wrapper
        shown = ", ".join(wrapped[:3]) + (" ..." if len(wrapped) > 3 else "")
        reason = f"it cannot look inside the torch.compile'd submodule(s) {shown}"
    note = f"torchinfo could not summarise this model ({reason}); the table lists the module calls cnnreport captured, without mult-adds."
    return Architecture(rows=rows_from_capture(model, capture, 1), summary=summary, notes=[note])


def _probes_covered(batch_sizes: list[int], total: int) -> int:
    """Probes a partial report's statistics cover: those of the batches before the failing one
    (the layers that ran before the failure also hold some of the failing batch's probes), or
    the failing first batch's, when it was the first."""
    if not batch_sizes:
        return total
    return sum(batch_sizes[:-1]) or batch_sizes[0]


def partial_report(
    model: nn.Module,
    batch: ProbeBatch,
    options: ReportOptions,
    result: PassResult,
    provenance: Provenance | None,
) -> Report:
    """What the page can show of a forward pass that raised: the failure first, then a table,
    sections and graph of every module call that completed before it."""

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
        summary=error.one_line() if error is not None else "",
    )
    modules = dict(model.named_modules())
    rows = rows_from_capture(model, result.capture, len(batch))
    sections = [
        build_section(layer, modules.get(layer.name), batch.names, options, with_filters=layer.call_index == 1)
        for layer in result.capture.detailed()
    ]
    summary = summary_without_torchinfo(model, list(batch.inputs[0].shape[1:]))
    rows = [
        dataclasses.replace(row, section_id=next((s.id for s in sections if (s.name or ROOT_LABEL) == row.name and s.call_index == row.call_index), ""))
        for row in rows
    ]
    graph_svg, graph_full_svg, graph_group_svgs = graph_views(result.graph, {s.id for s in sections}, options)
    return Report(
        title=(options.title or f"{type(model).__name__} report") + " (partial: the forward pass failed)",
        model=summary,
        layers=rows,
        sections=sections,
        probes=[ProbeInfo(name=n, thumbnail=None) for n in batch.names[: options.max_probes]],
        options=options,
        provenance=provenance or default_provenance(),
        synthetic_input=batch.synthetic,
        notes=list(batch.notes) + [f"Only the {len(rows)} module calls that completed before the failure are shown."],
        graph_svg=graph_svg,
        graph_full_svg=graph_full_svg,
        graph_group_svgs=graph_group_svgs,
        failure=failure,
        probe_count=_probes_covered(result.batch_sizes, len(batch)),
    )


def rows_from_capture(model: nn.Module, capture: CaptureResult, batch_size: int) -> list[LayerRow]:
    """Table rows for the module calls our own capture saw, for when torchinfo cannot run
    (a failed forward pass, an output type torchinfo does not know)."""

    modules = dict(model.named_modules())
    shared = shared_parameters(model)
    total = count_parameters(model)[0]
    rows = []
    for layer in capture.layers:
        module = modules.get(layer.name)
        own = sum(p.numel() for p in module.parameters()) if module is not None and layer.call_index == 1 else 0
        rows.append(
            LayerRow(
                name=layer.name or ROOT_LABEL,  # the root module (path ""), as torchinfo's row names it
                type=layer.type,
                depth=layer.name.count(".") + 1 if layer.name else 0,
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
