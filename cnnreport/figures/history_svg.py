"""The history page's charts as inline SVG: a heat map of one number per (layer, checkpoint).

SVG rather than PNG: a few hundred cells, each with its exact value as a tooltip (``<title>``),
crisp at any zoom, and a few KB. Colours are viridis; a missing value is grey.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .graph_svg import _esc
from .images import lut

CELL_W, CELL_H, HEAD_H, LEGEND_H = 58, 14, 34, 30
CHAR_W = 6.7  # an 11 px monospace character, for the label column and the legend
LABEL_MAX = 40
MISSING = "#9a9a9a"
ZERO = "#000000"


def heatmap_svg(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str,
    log: bool = False,
    fmt: str = "{:.3g}",
) -> str:
    """Rows (layers) by columns (checkpoints); ``values[r][c]``, None where there is none. The
    colour scale spans the finite values (log10 of the positive ones with ``log``); the legend
    says its ends. Every label and tooltip is escaped."""
    finite = [v for row in values for v in row if v is not None and math.isfinite(v) and (v > 0 or not log)]
    if finite:
        lo, hi = (math.log10(min(finite)), math.log10(max(finite))) if log else (min(finite), max(finite))
    else:
        lo = hi = 0.0
    colours = lut("viridis")
    ends = (10**lo, 10**hi) if log else (lo, hi)
    legend = f"{title}: dark {_shown(ends[0], fmt)} … bright {_shown(ends[1], fmt)} ({'log scale' if log else 'linear scale'}); grey: none{'; black: exactly 0' if log else ''}"
    label_w = int(12 + CHAR_W * max([len(_shorten(r)) for r in rows] + [4]))
    width = int(max(label_w + CELL_W * max(len(columns), 1) + 8, label_w + 7.4 * len(legend) + 8))  # the legend in a wider face
    height = HEAD_H + CELL_H * len(rows) + LEGEND_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
    ]
    for c, label in enumerate(columns):
        x = label_w + c * CELL_W + CELL_W / 2
        parts.append(f'<text class="col" x="{x:.1f}" y="{HEAD_H - 6}" text-anchor="middle">{_esc(label)}</text>')
    for r, label in enumerate(rows):
        y = HEAD_H + r * CELL_H
        parts.append(f'<text class="row" x="{label_w - 6}" y="{y + CELL_H - 3}" text-anchor="end">{_esc(_shorten(label))}<title>{_esc(label)}</title></text>')
        for c, value in enumerate(values[r]):
            fill, shown = _fill(value, lo, hi, log, colours), _shown(value, fmt)
            parts.append(
                f'<rect x="{label_w + c * CELL_W}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" fill="{fill}">'
                f"<title>{_esc(label)} at {_esc(columns[c])}: {_esc(shown)}</title></rect>"
            )
    legend_y = HEAD_H + CELL_H * len(rows) + 18
    parts.append(f'<text class="legend" x="{label_w}" y="{legend_y}">{_esc(legend)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fill(value: float | None, lo: float, hi: float, log: bool, colours: np.ndarray) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if log and value <= 0:
        return ZERO  # exactly no change: below any log scale
    position = math.log10(value) if log else value
    t = 0.5 if hi == lo else (position - lo) / (hi - lo)
    return _hex(colours[min(254, max(0, int(round(t * 254))))])


def _hex(rgb: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def _shown(value: float | None, fmt: str) -> str:
    if value is None:
        return "none"
    if not math.isfinite(value):
        return "inf" if value > 0 else "NaN"
    return fmt.format(value)


def _shorten(label: str, limit: int = LABEL_MAX) -> str:
    return label if len(label) <= limit else "…" + label[-(limit - 1) :]


__all__ = ["heatmap_svg"]
