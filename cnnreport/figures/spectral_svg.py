"""Each layer's weight-spectrum exponent alpha as an inline SVG bar chart (``--spectral``).

One bar per layer, in definition order, on a linear alpha axis from 0; the band of
``[low, high]`` (2-6 by default: well trained) is shaded, bars below it and above it get their
own classes, and a bar taller than the axis is cut at its top with a mark. Colours are CSS
classes (``sp-*``), so the page's palette restyles the chart for dark mode and print. Every
name is escaped; the same spectra give the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from typing import Sequence

from ..datamodel import ROOT_LABEL, LayerSpectrum

# Characters XML 1.0 forbids even when escaped; a module name may contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

HEIGHT = 180  # the plot area, in px
LEFT = 34  # room for the axis labels
TOP = 8
BOTTOM = 22  # room for the axis caption
MIN_BAR = 3
MAX_BAR = 14
MIN_WIDTH = 320
MAX_WIDTH = 980
#: The axis goes up to at least this and at most ``AXIS_CAP``; taller bars are cut at the top.
AXIS_FLOOR = 8.0
AXIS_CAP = 20.0


def _esc(text: object) -> str:
    return html.escape(_XML_INVALID.sub("\ufffd", str(text)), quote=True)


def _n(value: float) -> str:
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def axis_top(alphas: Sequence[float], high: float) -> float:
    """The alpha at the top of the axis: the largest alpha (and the band's top) rounded up to
    an even number, within ``[AXIS_FLOOR, AXIS_CAP]``."""
    top = max([AXIS_FLOOR, high + 1.0, *alphas])
    return min(AXIS_CAP, 2.0 * math.ceil(top / 2.0))


def alpha_chart(spectra: Sequence[LayerSpectrum], *, low: float = 2.0, high: float = 6.0) -> str:
    """The chart as one ``<svg>`` element; an empty string when no layer has an alpha."""
    fitted = [s for s in spectra if s.alpha is not None and math.isfinite(s.alpha)]
    if not fitted:
        return ""
    count = len(spectra)
    bar = max(MIN_BAR, min(MAX_BAR, (MAX_WIDTH - LEFT - 8) // max(1, count) - 1))
    step = bar + 1
    width = max(MIN_WIDTH, LEFT + 8 + step * count)
    top_alpha = axis_top([float(s.alpha) for s in fitted], high)

    def y(alpha: float) -> float:
        return TOP + HEIGHT * (1.0 - min(max(alpha, 0.0), top_alpha) / top_alpha)

    total_h = TOP + HEIGHT + BOTTOM
    title = f"alpha of {len(fitted)} of {count} layers' weight spectra"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sp-svg" role="img" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        # The band a well-trained layer's alpha falls in.
        f'<rect class="sp-band" x="{LEFT}" y="{_n(y(min(high, top_alpha)))}" width="{width - LEFT}" '
        f'height="{_n(y(low) - y(min(high, top_alpha)))}"><title>{_esc(f"{low:g} to {high:g}: well trained")}</title></rect>',
    ]
    for tick in range(0, int(top_alpha) + 1, 2):
        ty = y(float(tick))
        parts.append(f'<line class="sp-grid" x1="{LEFT}" y1="{_n(ty)}" x2="{width}" y2="{_n(ty)}"/>')
        parts.append(f'<text class="sp-tick" x="{LEFT - 4}" y="{_n(ty + 3.5)}" text-anchor="end">{tick}</text>')
    for i, s in enumerate(spectra):
        x = LEFT + 4 + i * step
        name = s.name or ROOT_LABEL
        if s.alpha is None or not math.isfinite(s.alpha):
            tip = f"{name} ({s.type}): no alpha: {s.note}" if s.note else f"{name} ({s.type}): no alpha"
            parts.append(f'<rect class="sp-none" x="{x}" y="{_n(y(0.0) - 2)}" width="{bar}" height="2"><title>{_esc(tip)}</title></rect>')
            continue
        alpha = float(s.alpha)
        kind = "sp-low" if alpha < low else ("sp-high" if alpha > high else "sp-ok")
        reading = "possibly over-fitted" if alpha < low else ("untrained or random" if alpha > high else "well trained")
        tip = f"{name} ({s.type}): alpha {alpha:.2f}, {reading}"
        bar_top = y(alpha)
        parts.append(
            f'<rect class="sp-bar {kind}" x="{x}" y="{_n(bar_top)}" width="{bar}" height="{_n(y(0.0) - bar_top)}"><title>{_esc(tip)}</title></rect>'
        )
        if alpha > top_alpha:  # cut at the top of the axis: a notch says so
            parts.append(f'<path class="sp-cut" d="M{x} {_n(TOP + 3)}h{bar}l-{_n(bar / 2)} -3z"/>')
    base = y(0.0)
    parts.append(f'<line class="sp-axis" x1="{LEFT}" y1="{_n(base)}" x2="{width}" y2="{_n(base)}"/>')
    cut = f"; bars above {top_alpha:g} cut" if any(float(s.alpha) > top_alpha for s in fitted) else ""
    parts.append(f'<text class="sp-caption" x="{LEFT}" y="{_n(base + 16)}">layers in definition order ({count}){cut}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["alpha_chart", "axis_top"]
