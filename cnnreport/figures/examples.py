"""Dataset examples as figures: a channel's strongest crops side by side, and a small histogram
of its per-example maximum.

Pure and deterministic, like the rest of :mod:`cnnreport.figures`: uint8 crops in, PNG bytes
out (written by :func:`~cnnreport.figures.images.encode_png`); Pillow only resizes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from ..datamodel import Figure, Histogram
from .images import ACTIVATION_CMAP, encode_png, palette

#: Pixels between two crops of a strip (no margin outside the first and last).
STRIP_GAP = 2
#: The grey that pads a crop to its square and fills the gaps.
PAD_GREY = 128
#: The per-example maximum's histogram, in pixels.
MAX_HISTOGRAM_SIZE = (120, 32)


def _fitted_size(h: int, w: int, crop_px: int) -> tuple[int, int]:
    """``(height, width)`` of an ``h`` x ``w`` crop scaled to fit a ``crop_px`` square, aspect kept."""
    scale = crop_px / max(h, w)
    return max(1, min(crop_px, round(h * scale))), max(1, min(crop_px, round(w * scale)))


def shrunk_crop(crop: np.ndarray, crop_px: int) -> np.ndarray:
    """``crop`` as uint8 (grey H×W or RGB H×W×3), area-averaged down to fit a ``crop_px``
    square (aspect kept) where it is larger; a copy of it otherwise.

    What the producer keeps of a hit's crop until the strips are drawn: ``fit_crop`` of the
    result at ``crop_px`` is the same square as of the crop itself, at a few kilobytes where
    a receptive field near the input's size would keep the whole crop."""
    arr = np.ascontiguousarray(np.asarray(crop, dtype=np.uint8))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3:
        arr = arr[:, :, :3]
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"an example crop of {w}x{h} pixels has nothing to draw")
    if max(h, w) <= crop_px:
        return arr.copy()
    out_h, out_w = _fitted_size(h, w, crop_px)
    return np.asarray(Image.fromarray(arr).resize((out_w, out_h), Image.Resampling.BOX))


def fit_crop(crop: np.ndarray, crop_px: int) -> np.ndarray:
    """``crop`` resized to fit a ``crop_px`` square, aspect kept, centred on grey padding.

    Larger crops are area-averaged down; smaller ones (a receptive field of a few pixels) are
    enlarged with nearest-neighbour, so their pixels stay crisp. Grey in, grey out."""
    arr = shrunk_crop(crop, crop_px)
    h, w = arr.shape[:2]
    if max(h, w) < crop_px:
        out_h, out_w = _fitted_size(h, w, crop_px)
        if (out_h, out_w) != (h, w):
            arr = np.asarray(Image.fromarray(arr).resize((out_w, out_h), Image.Resampling.NEAREST))
    square = np.full((crop_px, crop_px) + arr.shape[2:], PAD_GREY, dtype=np.uint8)
    top, left = (crop_px - arr.shape[0]) // 2, (crop_px - arr.shape[1]) // 2
    square[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return square


def strip_width(count: int, crop_px: int) -> int:
    """A strip's width in pixels: ``count`` squares and the gaps between them."""
    return count * crop_px + max(count - 1, 0) * STRIP_GAP


def example_strip(crops: Sequence[np.ndarray], crop_px: int, *, alt: str = "") -> Figure:
    """The crops of a channel's hits side by side, each fitted to a ``crop_px`` square, in order.

    A grey PNG when every crop is grey, RGB otherwise (grey crops then repeat their channel).
    ``alt`` defaults to saying what the strip is."""
    if not crops:
        raise ValueError("an example strip needs at least one crop")
    squares = [fit_crop(c, crop_px) for c in crops]
    rgb = any(s.ndim == 3 for s in squares)
    if rgb:
        squares = [s if s.ndim == 3 else np.repeat(s[:, :, None], 3, axis=2) for s in squares]
    width = strip_width(len(squares), crop_px)
    canvas = np.full((crop_px, width) + ((3,) if rgb else ()), PAD_GREY, dtype=np.uint8)
    for i, square in enumerate(squares):
        x = i * (crop_px + STRIP_GAP)
        canvas[:, x : x + crop_px] = square
    text = alt or f"the {len(squares)} example crops that excite this channel most, strongest first"
    return Figure(png=encode_png(canvas), width=width, height=crop_px, alt=text)


def occupied_bins(histogram: Histogram) -> tuple[int, int]:
    """The first and one past the last bin holding a count (``(0, 0)``: none does)."""
    nonzero = [i for i, c in enumerate(histogram.counts) if c]
    return (nonzero[0], nonzero[-1] + 1) if nonzero else (0, 0)


def max_histogram(histogram: Histogram, *, alt: str = "") -> Figure | None:
    """A small bar chart of the per-example maximum over its occupied bins only (the fixed
    log-spaced bins leave most empty); the range drawn is the figure's caption. None when no
    bin holds a count."""
    lo, hi = occupied_bins(histogram)
    if hi <= lo:
        return None
    width, height = MAX_HISTOGRAM_SIZE
    counts = histogram.counts[lo:hi]
    first, last = histogram.edges[lo], histogram.edges[hi]
    text = alt or f"per-example maximum over {sum(counts)} examples, in bins from {'below 0' if first == -math.inf else _g(first)} to {_g(last)}"
    canvas = _bars(counts, width, height)
    # Two palette entries (the bars' colour, a transparent background): a few hundred bytes,
    # where the 256-colour palette of the section histograms would be a kilobyte per channel.
    png = encode_png(canvas, palette_bytes=HISTOGRAM_PALETTE, transparent_index=1)
    # The caption is the drawn bins' range, said to be bins: the fixed edges bracket the data
    # (a largest value of 3.0 lies in the bin up to 3.16), and the first bin may be "below 0".
    low = "below 0" if first == -math.inf else _g(first)
    return Figure(png=png, width=canvas.shape[1], height=height, alt=text, caption=f"bins {low} … {_g(last)}")


#: Bar colour (the section histograms' viridis entry 90), then the background.
HISTOGRAM_PALETTE = palette(ACTIVATION_CMAP)[90 * 3 : 91 * 3] + bytes([255, 255, 255])


def _bars(counts: Sequence[int], width: int, height: int) -> np.ndarray:
    """Bar columns as palette indices (0: bar, 1: background), one block of columns per bin,
    drawn as :func:`~cnnreport.figures.images.histogram_figure` draws them; a non-empty bin
    shows at least one pixel."""
    values = np.asarray(counts, dtype=np.float64)
    bar_w = max(1, width // len(values))
    peak = values.max() if values.max() > 0 else 1.0
    bars = np.rint(values / peak * (height - 1)).astype(np.intp)
    bars[(values > 0) & (bars < 1)] = 1
    column_bars = np.repeat(bars, bar_w)
    rows = np.arange(height)[:, None]
    return np.where(rows >= height - column_bars[None, :], np.uint8(0), np.uint8(1))

def _g(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)
