"""``--max-html-mb``: keep the page under a size budget by showing fewer channels or smaller tiles.

The activation mosaics are most of a report's bytes (ResNet-50, 8 probes: 424 mosaics, ~90% of
the page). The capture keeps each probe's top channels as uint8 tiles **sorted by activation**,
so a smaller mosaic is cheap to rebuild without running the model again: keep the first ``k``
channels, and/or area-average the tiles down to a smaller size. The page's size is estimated as
the base64 size of every figure plus the markup around them (a fixed part, and a part per
section, table row and labelled tile); :func:`apply_budget` steps down a ladder of
(channels, tile size) until the estimate fits, and returns notes that say what it did, for the
report to show. When even one channel at the smallest tile does not fit, mosaics are dropped
(after the last probe first), then filter galleries, and the notes say so too.

Pure: works on the built :class:`~cnnreport.report.Report` and the
:class:`~cnnreport.capture.CaptureResult` it came from; no model, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from ..capture.activations import CaptureResult, LayerCapture, ProbeTiles, area_downsample
from ..datamodel import Figure, LayerSection, Mosaic
from ..figures import images as figures
from ..render.views import examples_markup
from .document import Report

MB = 1024 * 1024

#: Markup of the page that is not figures, in bytes: measured on rendered reports (a ResNet-50
#: with 53 sections, the digits demo, a 100-layer stack) and rounded up, so the estimate errs on
#: the side of a smaller page. CSS and JS inlined, header, overview, footer.
FIXED_BYTES = 48_000
PER_SECTION_BYTES = 3_500  # statistics table, captions, notes, navigation entry
PER_PROBE_ROW_BYTES = 420  # one per-probe row in each section's statistics table
PER_MOSAIC_BYTES = 300  # <figure>, alt text, caption
PER_TILE_BYTES = 75  # the hover label of each tile (measured 68 on a ResNet-50 page)
PER_LAYER_ROW_BYTES = 900  # one architecture-table row
#: The estimate aims this far below the budget, for what the constants above miss (on the
#: pages above it came within 2% of the real size, and above it).
SAFETY = 0.97

#: Tile sizes (longest side, pixels) and channel counts the ladder may step down to.
TILE_LADDER = (64, 48, 32, 24, 16, 12, 8)
CHANNEL_LADDER = (16, 12, 9, 6, 4, 2, 1)


def b64_size(n: int) -> int:
    """Bytes of ``n`` bytes once base64-encoded."""
    return 4 * math.ceil(n / 3)


def _figures_of(report: Report) -> Iterator[Figure]:
    for probe in report.probes:
        if probe.thumbnail is not None:
            yield probe.thumbnail
    for attribution in report.attributions:
        yield attribution.figure
    for section in report.sections:
        yield from _section_figures(section, mosaics=True)


def _section_figures(section: LayerSection, *, mosaics: bool) -> Iterator[Figure]:
    if mosaics:
        for m in section.mosaics:
            yield m.figure
    if section.channels is not None and section.channels.figure is not None:
        yield section.channels.figure
    if section.histogram is not None and section.histogram.figure is not None:
        yield section.histogram.figure
    if section.weight_histogram is not None and section.weight_histogram.figure is not None:
        yield section.weight_histogram.figure
    if section.filters is not None:
        yield section.filters.figure


def _mosaic_bytes(mosaics: Iterable[Mosaic]) -> int:
    return sum(b64_size(len(m.figure.png)) + PER_MOSAIC_BYTES + PER_TILE_BYTES * len(m.tiles) for m in mosaics)


def markup_bytes(report: Report) -> int:
    """The estimated bytes of everything on the page but the activation mosaics."""
    total = FIXED_BYTES + len(report.graph_svg) + len(report.graph_full_svg) + sum(len(v) for v in report.graph_group_svgs.values())
    total += PER_LAYER_ROW_BYTES * len(report.layers)
    for section in report.sections:
        total += PER_SECTION_BYTES + PER_PROBE_ROW_BYTES * len(section.per_probe_stats)
        total += sum(b64_size(len(f.png)) for f in _section_figures(section, mosaics=False))
    for probe in report.probes:
        if probe.thumbnail is not None:
            total += b64_size(len(probe.thumbnail.png)) + 300
    for attribution in report.attributions:
        total += b64_size(len(attribution.figure.png)) + 300
    total += sum(len(note) + 20 for note in report.notes)
    return total + example_bytes(report)


def example_bytes(report: Report) -> int:
    """The page's bytes for the dataset examples (strips and histograms inline, their style
    sheet, nav entry, overview and a block per section they show in): rendered by the page's
    own macros and measured, not estimated; 0 without examples."""
    if report.examples is None:
        return 0
    return len(examples_markup(report.examples, report.sections, report.probe_count).encode("utf-8"))


def estimate_html_bytes(report: Report) -> int:
    """The page's estimated size: base64 of every figure plus the markup around them."""
    return markup_bytes(report) + sum(_mosaic_bytes(s.mosaics) for s in report.sections)


# --------------------------------------------------------------------------------------------
# Smaller mosaics from the capture's uint8 tiles


def shrink_tiles(tiles: np.ndarray, tile_size: int) -> np.ndarray:
    """Area-average ``(k, h, w)`` uint8 tiles to at most ``tile_size`` on the longer side."""
    k, h, w = tiles.shape
    if max(h, w) <= tile_size:
        return tiles
    scale = max(h, w) / tile_size
    out_hw = (max(1, round(h / scale)), max(1, round(w / scale)))
    t = torch.from_numpy(np.ascontiguousarray(tiles)).float()[None]
    marked = t == 255  # non-finite pixels (see capture.top_channel_tiles): stay marked, not averaged
    if bool(marked.any()):
        t = torch.where(marked, torch.nan, t)
        pooled = area_downsample(t, out_hw, finite=False)[0]  # a window with a marked pixel is NaN
        return torch.nan_to_num(pooled, nan=255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    pooled = area_downsample(t, out_hw)[0]
    return pooled.round().clamp(0, 254).to(torch.uint8).numpy()


def reduced_tiles(probe_tiles: ProbeTiles, channels: int, tile_size: int) -> ProbeTiles:
    """The first ``channels`` (the most active) of a probe's tiles, at most ``tile_size`` px."""
    k = min(channels, len(probe_tiles.channels))
    return ProbeTiles(
        channels=list(probe_tiles.channels[:k]),
        tiles=shrink_tiles(probe_tiles.tiles[:k], tile_size),
        vmin=probe_tiles.vmin,
        vmax=probe_tiles.vmax,
        nonfinite=list(probe_tiles.nonfinite[:k]),
    )


def _rebuild(section: LayerSection, layer: LayerCapture, channels: int, tile_size: int, probes: int) -> list[Mosaic]:
    names = [m.probe for m in section.mosaics]
    kept = [reduced_tiles(t, channels, tile_size) for t in layer.tiles[:probes]]
    return figures.activation_mosaics(kept, layer=section.label, probes=names[:probes])


@dataclass(frozen=True)
class Level:
    channels: int
    tile_size: int
    probes: int  # mosaics kept per section


def ladder(max_channels: int, tile_size: int, probes: int) -> list[Level]:
    """Steps from the full page down to one small tile per section, each cheaper than the last:
    smaller tiles first down to 32 px, then fewer channels, then alternately both; then fewer
    probes' mosaics."""
    tiles = [t for t in TILE_LADDER if t < tile_size]
    chans = [c for c in CHANNEL_LADDER if c < max_channels]
    steps: list[tuple[int, int]] = []
    c, t = max_channels, tile_size
    while tiles and tiles[0] >= 32:
        t = tiles.pop(0)
        steps.append((c, t))
    while tiles or chans:
        if chans:
            c = chans.pop(0)
            steps.append((c, t))
        if tiles:
            t = tiles.pop(0)
            steps.append((c, t))
    levels = [Level(c, t, probes) for c, t in steps]
    p = probes
    while p > 1:
        p = max(1, p // 2)
        levels.append(Level(c, t, p))
    return levels


def _pixels(layer: LayerCapture, level: Level) -> int:
    """Pixels a level would draw for one layer: the cost model for guessing the next step."""
    total = 0
    for tiles in layer.tiles[: level.probes]:
        k = min(level.channels, len(tiles.channels))
        h, w = tiles.tiles.shape[1:3]
        scale = max(h, w) / level.tile_size
        if scale > 1:
            h, w = max(1, round(h / scale)), max(1, round(w / scale))
        total += k * h * w
    return total


def _predict(pairs: list[tuple[int, LayerCapture]], level: Level, per_pixel: float) -> float:
    """Estimated mosaic bytes at ``level``: image bytes scale with pixels, markup with tiles."""
    total = 0.0
    for _, layer in pairs:
        total += per_pixel * _pixels(layer, level)
        for tiles in layer.tiles[: level.probes]:
            total += PER_MOSAIC_BYTES + PER_TILE_BYTES * min(level.channels, len(tiles.channels))
    return total


def budget_bytes(max_html_mb: float) -> int:
    """The bytes the estimate aims at for ``--max-html-mb`` (:data:`SAFETY` below it)."""
    return int(max_html_mb * MB * SAFETY)


def fit_to_budget(report: Report, capture: CaptureResult, max_html_mb: float | None, reserve_bytes: int = 0) -> Report:
    """``report`` if its page's estimated size fits ``max_html_mb`` (or no budget is set), else a
    new report with smaller mosaics (then none, then no filter galleries) and notes saying what
    was reduced. Sections are matched to the capture's layers by name and call index.

    ``reserve_bytes`` is kept free for what is added later (the dataset examples: see
    :func:`~cnnreport.report.examples_view.examples_reserve`): the report is fitted into the
    budget less that. Whatever the report already holds, examples included, counts."""
    if max_html_mb is None or max_html_mb <= 0:
        return report
    budget = budget_bytes(max_html_mb) - max(0, int(reserve_bytes))
    before = estimate_html_bytes(report)
    if before <= budget:
        return report
    layers = {(layer.name, layer.call_index): layer for layer in capture.layers if layer.detailed}
    paired = [i for i, s in enumerate(report.sections) if s.mosaics and (s.name, s.call_index) in layers]
    notes: list[str] = []
    if paired:
        report, notes = _smaller_mosaics(report, [(i, layers[(report.sections[i].name, report.sections[i].call_index)]) for i in paired], budget, max_html_mb, before)
        after = estimate_html_bytes(report)
    else:
        after = before
    if after > budget:
        report, dropped = _drop_rest(report, budget, max_html_mb, after)
        notes += dropped
    return dataclasses.replace(report, notes=report.notes + notes)


def _smaller_mosaics(report: Report, pairs: list[tuple[int, LayerCapture]], budget: int, max_html_mb: float, before: int) -> tuple[Report, list[str]]:
    """Redraw the paired sections' mosaics one ladder step at a time until they fit the room
    left by everything else; the report at the first level that fits (or the last tried)."""
    sections = report.sections
    paired = {i for i, _ in pairs}
    channels = max(len(m.tiles) for i, _ in pairs for m in sections[i].mosaics)
    tile_size = max(max(t.height, t.width) for i, _ in pairs for m in sections[i].mosaics for t in m.tiles)
    probes = max(len(sections[i].mosaics) for i, _ in pairs)
    fixed = markup_bytes(report) + sum(_mosaic_bytes(s.mosaics) for i, s in enumerate(sections) if i not in paired)
    image_bytes = sum(b64_size(len(m.figure.png)) for i, _ in pairs for m in sections[i].mosaics)
    image_pixels = sum(_pixels(layer, Level(channels, tile_size, probes)) for _, layer in pairs)
    room = budget - fixed
    chosen: Level | None = None
    steps = ladder(channels, tile_size, probes)
    i = 0
    while i < len(steps) and room > 0:
        # Skip the levels that the last build's bytes per pixel say cannot fit.
        per_pixel = image_bytes / max(image_pixels, 1)
        while i < len(steps) - 1 and _predict(pairs, steps[i], per_pixel) > room:
            i += 1
        level = steps[i]
        rebuilt = {k: _rebuild(sections[k], layer, level.channels, level.tile_size, level.probes) for k, layer in pairs}
        image_bytes = sum(b64_size(len(m.figure.png)) for ms in rebuilt.values() for m in ms)
        image_pixels = sum(_pixels(layer, level) for _, layer in pairs)
        sections = [dataclasses.replace(s, mosaics=rebuilt[k]) if k in rebuilt else s for k, s in enumerate(sections)]
        chosen = level
        if sum(_mosaic_bytes(ms) for ms in rebuilt.values()) <= room:
            break
        i += 1
    if chosen is None:
        return report, []
    parts = []
    if chosen.channels < channels:
        parts.append(f"{chosen.channels} instead of {channels} channels per mosaic")
    if chosen.tile_size < tile_size:
        parts.append(f"tiles of at most {chosen.tile_size} px instead of {tile_size} px")
    if chosen.probes < probes:
        parts.append(f"mosaics for the first {chosen.probes} of {probes} probes only")
    note = (
        f"To keep the page under --max-html-mb {max_html_mb:g} (estimated {before / MB:.1f} MB in full), "
        f"layer sections show {', '.join(parts)}."
    )
    return dataclasses.replace(report, sections=sections), [note]


def _drop_rest(report: Report, budget: int, max_html_mb: float, estimate: int) -> tuple[Report, list[str]]:
    """Last resorts, in order: no activation mosaics, then no filter galleries."""
    notes = []
    if any(s.mosaics for s in report.sections):
        report = dataclasses.replace(report, sections=[dataclasses.replace(s, mosaics=[]) for s in report.sections])
        notes.append(f"To keep the page under --max-html-mb {max_html_mb:g}, activation mosaics are left out.")
        if estimate_html_bytes(report) <= budget:
            return report, notes
    if any(s.filters is not None for s in report.sections):
        report = dataclasses.replace(report, sections=[dataclasses.replace(s, filters=None) for s in report.sections])
        notes.append(f"To keep the page under --max-html-mb {max_html_mb:g}, filter galleries are left out.")
    if estimate_html_bytes(report) > budget:
        notes.append(
            f"The page is still over --max-html-mb {max_html_mb:g} (estimated {estimate_html_bytes(report) / MB:.1f} MB): "
            "its tables and statistics alone are larger; choose fewer layers with --layers."
        )
    return report, notes
