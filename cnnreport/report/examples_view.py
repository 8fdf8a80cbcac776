"""The dataset examples on the page: their strips and histograms, drawn as large as the page's
size budget allows.

The producer (:mod:`cnnreport.report.examples`) fills a report's :class:`ExampleSet` but its
figures, and hands over each shown channel's crops (one per hit, in hit order, uint8, at
most the largest strip's crop size a side). :func:`draw_examples` draws them at the first level of a ladder that
fits the room the rest of the page leaves: smaller crops (48 -> 32 -> 24 px), then fewer
channels per layer (16 -> 8 -> 4 -> 2), then no strips (the hits still listed), then no
histograms either; a note on the set says what was reduced and why. Each level is measured
by rendering the examples' markup with the page's own macros (:func:`budget.example_bytes`),
so the estimate is the page's bytes, not a guess. A level that may not fit is drawn and
measured one layer at a time (:func:`_streamed_bytes`): a deep model's examples in full are
tens of MB of figures, which would otherwise all be alive at once only to learn they are over.

In the pipeline, the rest of the page is fitted first, leaving :func:`examples_reserve` free::

    reserve = examples_reserve(examples, crops, report.options, max_html_mb)
    report = fit_to_budget(report, capture, max_html_mb, reserve_bytes=reserve)  # examples not attached yet
    report = draw_examples(dataclasses.replace(report, examples=examples), crops, max_html_mb)

Pure: no model, no I/O; returns new values, never assigns into a report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..datamodel import ChannelExamples, ExampleSet, LayerExamples, LayerSection, ReportOptions
from ..figures.examples import example_strip, max_histogram
from ..render.views import examples_markup
from .budget import MB, budget_bytes, estimate_html_bytes, example_bytes
from .document import Report

#: Crop sides (pixels) and channels per layer the ladder may step down to.
CROP_LADDER = (48, 32, 24)
CHANNEL_LADDER = (16, 8, 4, 2)
#: The most of the budget the examples may keep for themselves while the rest is fitted.
RESERVE_SHARE = 0.4

Crops = Mapping[tuple[str, int], Sequence[np.ndarray]]


@dataclass(frozen=True)
class ExampleLevel:
    """How the examples are drawn: crop side (None: no strips), channels per layer, histograms."""

    crop_px: int | None
    channels: int
    histograms: bool = True


def example_levels(crop_px: int, channels: int) -> list[ExampleLevel]:
    """From the full drawing down to a list of hits alone: smaller crops, then fewer channels
    (at the smallest crop), then no strips (every channel's hits listed, then fewer channels),
    then no histograms either."""
    sizes = [crop_px] + [p for p in CROP_LADDER if p < crop_px]
    fewer = [c for c in CHANNEL_LADDER if c < channels]
    levels = [ExampleLevel(p, channels) for p in sizes]
    levels += [ExampleLevel(sizes[-1], c) for c in fewer]
    levels += [ExampleLevel(None, c) for c in [channels, *fewer]]
    levels.append(ExampleLevel(None, min([channels, *fewer]), histograms=False))
    return levels


def _draw_channel(lx: LayerExamples, ch: ChannelExamples, crops: Crops, level: ExampleLevel) -> ChannelExamples:
    strip = None
    shown = list(crops.get((lx.section_id, ch.channel), ()))
    if level.crop_px is not None and shown and len(shown) == len(ch.hits):
        names = ", ".join(f"{h.example} ({h.value:.3g})" for h in ch.hits)
        alt = f"{lx.label}, channel {ch.channel}: the {len(ch.hits)} examples that excite it most, strongest first: {names}"
        strip = example_strip(shown, level.crop_px, alt=alt)
    hist = ch.max_histogram
    if hist is not None:
        figure = max_histogram(hist, alt=f"{lx.label}, channel {ch.channel}: its largest value per example") if level.histograms else None
        hist = dataclasses.replace(hist, figure=figure)
    return dataclasses.replace(ch, strip=strip, max_histogram=hist)


def drawn_examples(examples: ExampleSet, crops: Crops, level: ExampleLevel) -> ExampleSet:
    """``examples`` with each layer's first ``level.channels`` channels kept and drawn at ``level``."""
    layers = [dataclasses.replace(lx, channels=[_draw_channel(lx, ch, crops, level) for ch in lx.channels[: level.channels]]) for lx in examples.layers]
    return dataclasses.replace(examples, layers=layers)


def _full_level(examples: ExampleSet, options: ReportOptions) -> ExampleLevel:
    return ExampleLevel(max(1, int(options.example_crop_px)), max((len(lx.channels) for lx in examples.layers), default=0))


def _streamed_bytes(
    examples: ExampleSet,
    crops: Crops,
    level: ExampleLevel,
    sections: Sequence[LayerSection] | None,
    probe_count: int,
    *,
    stop_above: int | None = None,
    keep_within: int | None = None,
) -> tuple[int, int, list[LayerExamples] | None]:
    """``level``'s page bytes for ``examples``, its strips' share of them, and (with
    ``keep_within``) the drawn layers when the whole is within it: drawn and measured one layer
    at a time, so only one layer's figures are alive at once, or those of a drawing that fits.

    Exact: the examples' markup is what every layer shares (style sheet, nav entry, an
    overview naming the layers) plus a block per layer, so it is the markup with every layer's
    channels left out, plus, layer by layer, what that layer's drawn channels add to it alone.
    ``stop_above``: stop counting once the total is past it (the total is then a lower bound)."""
    def measured(ex: ExampleSet) -> int:
        return len(examples_markup(ex, sections, probe_count).encode("utf-8"))

    shown = None if sections is None else {s.id for s in sections}
    bare = [dataclasses.replace(lx, channels=[]) for lx in examples.layers]
    total, strips = measured(dataclasses.replace(examples, layers=bare)), 0
    kept: list[LayerExamples] | None = [] if keep_within is not None else None
    for lx, without in zip(examples.layers, bare):
        if shown is not None and lx.section_id not in shown:
            if kept is not None:  # not on the page, so it writes nothing; drawn as the whole would be
                kept.append(drawn_examples(dataclasses.replace(examples, layers=[lx]), crops, level).layers[0])
            continue
        drawn = drawn_examples(dataclasses.replace(examples, layers=[lx]), crops, level)
        total += measured(drawn) - measured(dataclasses.replace(examples, layers=[without]))
        strips += sum(4 * -(-len(c.strip.png) // 3) for c in drawn.layers[0].channels if c.strip is not None)
        if kept is not None:
            kept = kept + list(drawn.layers) if keep_within is not None and total <= keep_within else None
        if stop_above is not None and total > stop_above:
            break
    return total, strips, kept


def examples_reserve(examples: ExampleSet | None, crops: Crops, options: ReportOptions, max_html_mb: float | None) -> int:
    """Bytes to keep free for the examples while the rest of the page is fitted
    (``fit_to_budget(..., reserve_bytes=)``): their page bytes drawn in full, at most
    :data:`RESERVE_SHARE` of the budget. 0 without examples or without a budget."""
    if examples is None or max_html_mb is None or max_html_mb <= 0:
        return 0
    cap = int(RESERVE_SHARE * budget_bytes(max_html_mb))
    size, _, _ = _streamed_bytes(examples, crops, _full_level(examples, options), None, 0, stop_above=cap)
    return min(size, cap)


def draw_examples(report: Report, crops: Crops, max_html_mb: float | None) -> Report:
    """A new report with the examples' strips and histograms drawn at the largest level that
    fits the room the rest of the page leaves in ``max_html_mb`` (drawn in full without a
    budget), and a note on the example set saying what was reduced; ``report`` itself when it
    has no examples."""
    examples = report.examples
    if examples is None:
        return report
    full = _full_level(examples, report.options)
    if max_html_mb is None or max_html_mb <= 0:
        return dataclasses.replace(report, examples=drawn_examples(examples, crops, full))
    room = budget_bytes(max_html_mb) - estimate_html_bytes(dataclasses.replace(report, examples=None))
    levels = example_levels(full.crop_px or 1, full.channels)
    # The full drawing measured a layer at a time, its layers kept only while they fit.
    full_bytes, full_strips, kept = _streamed_bytes(examples, crops, full, report.sections, report.probe_count, keep_within=room)
    if kept is not None and full_bytes <= room:
        return dataclasses.replace(report, examples=dataclasses.replace(examples, layers=kept))
    fits = False
    chosen = report
    fixed_bytes, drawn_channels = full_bytes - full_strips, _channels(examples, full)
    strip_bytes: float | None = full_strips / max(_pixels(examples, full), 1)  # per crop pixel, of the last measured level
    i = 1
    while i < len(levels):
        level = levels[i]
        # Skip the strip levels the last drawing's bytes per pixel say cannot fit.
        if strip_bytes is not None and level.crop_px is not None and i < len(levels) - 1:
            # The rest (rows, hit lists, histograms) scales with the channels kept.
            predicted = fixed_bytes * _channels(examples, level) / max(drawn_channels, 1) + strip_bytes * _pixels(examples, level)
            if predicted > room:
                i += 1
                continue
        drawn = drawn_examples(examples, crops, level)
        candidate = dataclasses.replace(report, examples=drawn)
        size = example_bytes(candidate)
        chosen = candidate
        fits = size <= room
        if fits:
            break
        if level.crop_px is not None:
            strips = sum(4 * -(-len(c.strip.png) // 3) for lx in drawn.layers for c in lx.channels if c.strip is not None)
            fixed_bytes = size - strips
            drawn_channels = _channels(examples, level)
            strip_bytes = strips / max(_pixels(examples, level), 1)
        i += 1
    level = levels[min(i, len(levels) - 1)]
    note = _note(level, full, max_html_mb, full_bytes or 0, room, fits)
    if note is None:
        return chosen
    return dataclasses.replace(chosen, examples=dataclasses.replace(chosen.examples, notes=[*examples.notes, note]))


def _channels(examples: ExampleSet, level: ExampleLevel) -> int:
    return sum(min(level.channels, len(lx.channels)) for lx in examples.layers)


def _pixels(examples: ExampleSet, level: ExampleLevel) -> int:
    """Crop pixels a level draws: what its strips' bytes scale with."""
    if level.crop_px is None:
        return 0
    crops = sum(len(ch.hits) for lx in examples.layers for ch in lx.channels[: level.channels])
    return crops * level.crop_px * level.crop_px


def _note(level: ExampleLevel, full: ExampleLevel, max_html_mb: float, full_bytes: int, room: int, fits: bool) -> str | None:
    if level == full:
        return None
    parts = []
    if level.crop_px is None:
        parts.append("example crops left out (the examples that excite each channel most are still listed)")
    elif level.crop_px < (full.crop_px or 0):
        parts.append(f"example crops drawn at {level.crop_px} px instead of {full.crop_px}")
    if level.channels < full.channels:
        parts.append(f"{level.channels} of {full.channels} channels per layer")
    if not level.histograms:
        parts.append("no histograms of the per-example maximum")
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    note = f"{text[0].upper()}{text[1:]}, to keep the page within {max_html_mb:g} MB (the examples in full: {full_bytes / MB:.2f} MB, {max(room, 0) / MB:.2f} MB left for them)."
    if not fits:
        note += " The page is still over: choose fewer layers or channels for the examples."
    return note
