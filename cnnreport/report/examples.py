"""Dataset examples (``examples=`` / ``--examples DIR``): the example set streamed through the
model once, reduced per section layer and channel, then turned into the report's
:class:`~cnnreport.datamodel.ExampleSet` and the crops the page draws.

``reduce_examples`` runs the model over this process's shard of the set (all of it in one
process; every ``world``-th example under ``torchrun``) and gives one mergeable partial per
layer (:mod:`cnnreport.capture.examples`); ``gather_partials`` merges every process's partials
on rank 0 in rank order (``torch.distributed``, any backend); ``example_set`` picks the channels
shown, finds each hit's receptive field around its strongest position, and reads back only the
winning images for their crops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture.examples import POSITIVE_EDGES, ExamplePartial, ExampleReducer, merge
from ..datamodel import ChannelExamples, ExampleHit, ExampleSet, Histogram, LayerExamples, LayerRow, LayerSection, ReportOptions
from ..errors import CnnReportError, ForwardError, OptionError, ProbeError
from ..figures.examples import shrunk_crop
from ..io.examples import ExampleImages, display_images, example_loader, shard
from ..model.modules import to_model
from ..model.state import preserved_model_state
from ..support.batching import DEFAULT_BATCH
from ..support.progress import Progress

__all__ = ["as_example_images", "automatic_example_batch", "distributed_world", "example_set", "gather_partials", "reduce_examples"]

#: The automatic examples' batch on an accelerator, where larger batches keep it busy.
ACCELERATOR_EXAMPLE_BATCH = 32


def automatic_example_batch(model: nn.Module) -> int:
    """The examples' batch when none is asked for: the probes' automatic batch on the CPU
    (a model without tensors counts as one there), :data:`ACCELERATOR_EXAMPLE_BATCH` where
    the model's first tensor lives elsewhere."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return DEFAULT_BATCH if first is None or first.device.type == "cpu" else ACCELERATOR_EXAMPLE_BATCH


def as_example_images(examples: Any, *, image_size: Sequence[int], channels: int | None) -> ExampleImages:
    """``examples`` (a folder, or an :class:`ExampleImages` with its own preprocessing) as a
    set whose images reach the model at the probes' size and channel count where it leaves
    them out. A folder is read with no normalisation: pass ``ExampleImages(folder, mean=...,
    std=...)`` (the CLI passes ``--mean``/``--std``) when the probes are normalised."""
    if isinstance(examples, ExampleImages):
        return examples.with_defaults(image_size=image_size, channels=channels)
    if isinstance(examples, (str, os.PathLike)):
        return ExampleImages(examples, image_size=image_size, channels=channels)
    raise OptionError(f"examples must be a folder or an ExampleImages set, not {type(examples).__name__}")


def distributed_world() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_examples(
    model: nn.Module,
    examples: ExampleImages,
    layers: Sequence[str],
    options: ReportOptions,
    *,
    rank: int = 0,
    world: int = 1,
) -> tuple[dict[str, ExamplePartial], dict[str, str]]:
    """This process's shard of ``examples`` through ``model`` (eval mode, no gradients, the
    model left as it was), reduced at each of ``layers`` (their first call): the partials by
    layer, and the layers whose output could not be reduced, with why."""
    indices = shard(len(examples), rank, world)
    reducer = ExampleReducer(list(layers), k=options.example_top_k)
    batch_size = options.example_batch_size if options.example_batch_size is not None else automatic_example_batch(model)
    loader = example_loader(examples, indices, batch_size, options.example_workers)
    progress = Progress(total=len(indices), enabled=options.progress and rank == 0, label="examples")
    try:
        # No gradients: nothing here runs a backward pass, and a model whose own tensors require
        # them would otherwise keep each batch's graph alive until the next.
        with preserved_model_state(model), reducer.attached(model), torch.no_grad():
            for inputs, batch_indices, failures in loader:
                if failures:
                    raise ProbeError(failures[0], hint="remove or replace that file in the examples folder")
                reducer.next_batch(batch_indices)
                try:
                    model(*to_model((inputs,), model))
                except CnnReportError:
                    raise
                except Exception as exc:  # the probes' pass ran: name the examples that broke it
                    first, last = int(batch_indices[0]), int(batch_indices[-1])
                    raise ForwardError(
                        f"the forward pass over examples {examples.relative(first)} .. {examples.relative(last)} failed: {type(exc).__name__}: {exc}",
                        hint="the probes ran; check those files, or the model's handling of a larger batch (--example-batch-size)",
                    ) from exc
                progress.advance(len(batch_indices))
    finally:
        progress.close()
    return reducer.partials, dict(reducer.skipped)


def gather_partials(partials: dict[str, ExamplePartial], *, rank: int, world: int) -> dict[str, ExamplePartial] | None:
    """Every process's partials merged on rank 0, in rank order (so the float sums add up the
    same way run after run); None on the other ranks. One process: ``partials`` as they are."""
    if world == 1:
        return partials
    dist = torch.distributed
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(partials, gathered, dst=0)
    if rank != 0:
        return None
    assert gathered is not None
    merged: dict[str, ExamplePartial] = {}
    for shard_partials in gathered:
        for name, partial in shard_partials.items():
            merged[name] = merge(merged[name], partial) if name in merged else partial
    return merged


def _chosen_channels(partial: ExamplePartial, options: ReportOptions, layer: str) -> list[int]:
    """The channels shown: the ``example_channels`` most active over the set by mean (NaN
    means last, ties to the lower index; a channel constant over the set is not active and
    never takes a place), or the listed ones."""
    wanted = options.example_channels
    count = partial.channels
    if isinstance(wanted, int):
        means = partial.means()
        key = np.where(np.isnan(means), -np.inf, means)
        dead = set(int(c) for c in partial.dead_channels())
        order = [int(c) for c in np.lexsort((np.arange(count), -key)) if int(c) not in dead]
        return order[: max(0, wanted)]
    bad = [c for c in wanted if not 0 <= int(c) < count]
    if bad:
        raise OptionError(f"example channel(s) {', '.join(map(str, bad))} out of range for {layer or '(model)'}, which has {count} channel(s)")
    return [int(c) for c in dict.fromkeys(wanted)]


def _box(position: tuple[int, ...], grid: tuple[int, ...], image: tuple[int, int], field: int | float | None, stride: int | float | None) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` in input pixels: a square around where output
    ``position`` of a ``grid`` map falls on an ``image``-sized input, clipped to the image.

    The centre is the position's share of the map stretched over the input. Padding shifts a
    unit's true centre from that by up to half the effective stride (a stride-2 convolution
    with padding 1 centres output row y on input row 2y, the stretch on 2y + 1), so the side is
    the receptive field plus the stride: the square holds the whole field. No spatial grid or
    no known field: the whole image."""
    height, width = image
    if len(grid) != 2 or len(position) != 2 or field is None or not math.isfinite(field):
        return (0, 0, height, width)
    side = field + (stride if stride is not None and math.isfinite(stride) and stride > 1 else 0)
    if side >= max(height, width):
        return (0, 0, height, width)
    centre_y = (position[0] + 0.5) * height / grid[0]
    centre_x = (position[1] + 0.5) * width / grid[1]
    top, left = math.floor(centre_y - side / 2 + 0.5), math.floor(centre_x - side / 2 + 0.5)
    bottom, right = min(height, top + math.ceil(side)), min(width, left + math.ceil(side))
    top, left = max(0, top), max(0, left)
    return (top, left, max(1, bottom - top), max(1, right - left))


def _fields_of_sections(rows: Sequence[LayerRow]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Each section's receptive field and effective stride from the architecture rows; a
    section whose row has none (a ReLU, a BatchNorm: per-position layers) takes those of the
    last row before it, in execution order, that has them. Also which row each was taken from."""
    fields: dict[str, Any] = {}
    strides: dict[str, Any] = {}
    taken: dict[str, str] = {}
    last: LayerRow | None = None
    for row in rows:
        if row.receptive_field is not None:
            last = row
        if not row.section_id:
            continue
        if row.receptive_field is not None:
            fields[row.section_id], strides[row.section_id] = row.receptive_field, row.effective_stride
        elif last is not None and row.is_leaf:
            fields[row.section_id], strides[row.section_id] = last.receptive_field, last.effective_stride
            taken[row.section_id] = last.name
    return fields, strides, taken


def _max_histogram(partial: ExamplePartial, channel: int) -> Histogram:
    """The per-example maxima's fixed bins as a :class:`Histogram` over ``[-inf, 0, 0, 1e-4,
    ..., 1e4, inf]``: below zero, exactly zero, then the positive bins (examples with no
    maximum, all NaN, left out)."""
    edges = [-math.inf, 0.0, 0.0, *(float(e) for e in POSITIVE_EDGES), math.inf]
    counts = [int(v) for v in partial.histogram[channel, 1:]]
    return Histogram(edges=edges, counts=counts)


def example_set(
    partials: Mapping[str, ExamplePartial],
    skipped: Mapping[str, str],
    examples: ExampleImages,
    sections: Sequence[LayerSection],
    rows: Sequence[LayerRow],
    options: ReportOptions,
    source: str,
) -> tuple[ExampleSet, dict[tuple[str, int], list[np.ndarray]]]:
    """The report's :class:`ExampleSet` (figures not drawn yet) and the crops the page draws,
    keyed by ``(section id, channel)``, one per hit in hit order. Sections of a later call of
    a module have no examples (the reduction reads each module's first call)."""
    fields, strides, field_from = _fields_of_sections(rows)
    size = examples.image_size or (0, 0)
    layers: list[LayerExamples] = []
    wanted: dict[tuple[str, int], list[tuple[int, tuple[int, int, int, int]]]] = {}
    for section in sections:
        if section.call_index != 1:
            continue
        partial = partials.get(section.name)
        if partial is None:
            continue
        grid = tuple(partial.spatial_shape or ())
        field = fields.get(section.id)
        notes = []
        if field is None and len(grid) == 2:
            notes.append("no receptive field is known for this layer (no executed graph, or no convolution or pooling before it): each crop is the whole example")
        elif section.id in field_from:
            notes.append(f"receptive field and stride of {field_from[section.id]}, the last convolution or pooling before it (a per-position layer does not widen them)")
        dead = [int(c) for c in partial.dead_channels()]
        dead_set = set(dead)
        means, zeros, max_means = partial.means(), partial.zero_fractions(), partial.mean_maxima()
        channels = []
        for c in _chosen_channels(partial, options, section.name):
            hits = []
            # A constant channel has no strongest example: every one ties at the same value.
            for index, value, position in [] if c in dead_set else partial.top_yx(c):
                where = (int(position[0]), int(position[1])) if len(position) == 2 else None
                box = _box(tuple(position), grid, (int(size[0]), int(size[1])), field, strides.get(section.id))
                hits.append(ExampleHit(example=examples.relative(index), index=index, value=value, position=where, box=box))
                wanted.setdefault((section.id, c), []).append((index, box))
            channels.append(
                ChannelExamples(
                    channel=c,
                    mean=float(means[c]),
                    zero_fraction=float(zeros[c]),
                    max_mean=float(max_means[c]),
                    hits=hits,
                    max_histogram=_max_histogram(partial, c),
                )
            )
        layers.append(
            LayerExamples(
                section_id=section.id,
                name=section.name,
                call_index=1,
                channels=channels,
                means=[float(v) for v in means],
                zero_fractions=[float(v) for v in zeros],
                dead=dead,
                receptive_field=field,
                stride=strides.get(section.id),
                notes=notes,
            )
        )
    notes = list(examples.notes)
    for name, why in skipped.items():
        notes.append(f"{name or '(model)'}: no examples ({why})")
    later = [s.label for s in sections if s.call_index != 1 and s.name in partials]
    if later:
        notes.append(f"examples come from each module's first call: {', '.join(later[:6])}{' ...' if len(later) > 6 else ''} show none")
    count = next((p.examples for p in partials.values()), 0)
    return ExampleSet(source=source, count=count, layers=layers, notes=notes), _crops(examples, wanted, options.example_crop_px)


def _crops(
    examples: ExampleImages, wanted: Mapping[tuple[str, int], Sequence[tuple[int, tuple[int, int, int, int]]]], crop_px: int
) -> dict[tuple[str, int], list[np.ndarray]]:
    """Each hit's crop, by (section id, channel) in hit order, at most ``crop_px`` a side.

    Only the winners are read again, un-normalised, one at a time: all of them at once were
    one input-sized image each (a set of 2,000 can have as many winners). A crop is kept at
    the strip's largest size, and one array serves every hit of the same example and box (a
    deep layer's receptive field is the whole input): ResNet-50's 6,784 hits over 200 photos
    kept 124 MB of crops at the input's resolution."""
    hits_of: dict[int, list[tuple[tuple[str, int], int, tuple[int, int, int, int]]]] = {}
    for key, hits in wanted.items():
        for slot, (index, box) in enumerate(hits):
            hits_of.setdefault(index, []).append((key, slot, box))
    crops: dict[tuple[str, int], list[Any]] = {key: [None] * len(hits) for key, hits in wanted.items()}
    side = max(1, int(crop_px))
    for index in sorted(hits_of):
        image = display_images(examples, [index])[index]
        cut: dict[tuple[int, int, int, int], np.ndarray] = {}
        for key, slot, box in hits_of[index]:
            if box not in cut:
                top, left, height, width = box
                cut[box] = shrunk_crop(image[top : top + height, left : left + width], side)
            crops[key][slot] = cut[box]
    return crops
