"""numpy arrays to PNG bytes: mosaics, filter galleries, histograms, thumbnails, heat maps.

No matplotlib figure is ever made (a figure per layer costs ~100x the whole capture): arrays are
laid out with numpy and written as palette PNGs, whose palette *is* the colour map, so an
activation mosaic costs one byte per pixel before compression. :func:`encode_png` writes the
PNG itself (no time chunk, so the same array always gives the same bytes); Pillow still resizes
the photographs.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from ..capture.activations import ProbeTiles
from ..datamodel import Figure, FilterGallery, Mosaic, Tile
from .colour_tables import COLOUR_TABLES

ACTIVATION_CMAP = "viridis"
WEIGHT_CMAP = "RdBu_r"  # diverging, centred on zero: the sign of a weight stays visible
HEAT_CMAP = "inferno"
BACKGROUND_INDEX = 255  # palette entry of the gaps between tiles
GAP = 1
MIN_STRIP_HEIGHT = 6


def palette(cmap: str) -> bytes:
    """A 256-entry palette: 255 colours of the colour map, then the background grey.

    One of :data:`~cnnreport.figures.colour_tables.COLOUR_TABLES` (``viridis``, ``RdBu_r``,
    ``inferno``)."""
    try:
        return COLOUR_TABLES[cmap] + b"\x80\x80\x80"
    except KeyError:
        raise ValueError(f"no colour table {cmap!r}: the figures draw with {sorted(COLOUR_TABLES)}") from None


def lut(cmap: str) -> np.ndarray:
    """The colour map as a (256, 3) uint8 array, for RGB images (heat-map overlays)."""
    return np.frombuffer(palette(cmap), dtype=np.uint8).reshape(256, 3)


#: How the PNGs are deflated: the Paeth filter (each byte minus whichever of its left, upper
#: and upper-left neighbours best predicts it), then zlib's run-length strategy at level 1. On
#: ResNet-50's 424 mosaics Paeth wrote 2.84 MB where the "up" filter wrote 3.33 MB, in about
#: the same time (its filter costs more numpy work, its smaller output less zlib work), and
#: run-length matching beat level 6 or 9 with every filter tried; on the page's RGB thumbnails
#: and Grad-CAM overlays, 0.40 MB against 0.43 MB for "up" at level 1.
PNG_DEFLATE = (1, zlib.Z_RLE)
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type: grey, RGB (palette images: 3)
_PAETH = 4  # PNG's filter type byte


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def paeth_filtered(rows: np.ndarray, bytes_per_pixel: int) -> np.ndarray:
    """The PNG scanlines of ``(h, row_bytes)`` uint8 ``rows`` under the Paeth filter: a filter
    byte (4) before each row, then each byte minus its Paeth predictor modulo 256 (PNG 1.2,
    section 6.6; outside the image the neighbours are 0).

    The predictor is computed from the image's own bytes, not from decoded ones, so one
    vectorised pass does every row: ``a`` left, ``b`` up, ``c`` up-left, and the predictor is
    whichever of them is nearest to ``a + b - c``, ties to ``a`` then ``b``."""
    height, width = rows.shape
    padded = np.zeros((height + 1, width + bytes_per_pixel), dtype=np.int16)
    padded[1:, bytes_per_pixel:] = rows
    left, up, up_left = padded[1:, :-bytes_per_pixel], padded[:-1, bytes_per_pixel:], padded[:-1, :-bytes_per_pixel]
    # |p - a| = |b - c|, |p - b| = |a - c|, |p - c| = |(b - c) + (a - c)|, with p = a + b - c
    dist_left = up - up_left
    dist_up = left - up_left
    dist_up_left = np.abs(dist_left + dist_up)
    np.abs(dist_left, out=dist_left)
    np.abs(dist_up, out=dist_up)
    predictor = np.where((dist_left <= dist_up) & (dist_left <= dist_up_left), left, np.where(dist_up <= dist_up_left, up, up_left))
    out = np.empty((height, width + 1), dtype=np.uint8)
    out[:, 0] = _PAETH
    np.subtract(rows, predictor.astype(np.uint8), out=out[:, 1:])  # uint8 wraps modulo 256, as PNG wants
    return out


def _used_entries_only(indices: np.ndarray, palette_bytes: bytes, transparent_index: int | None) -> tuple[np.ndarray, bytes, int | None]:
    """A palette image renumbered to the entries it uses, in their order, and the palette cut
    to those entries: the same colours, and a PLTE chunk of a 16-channel mosaic, which uses the
    128 levels and the background, of 387 bytes instead of 768 (on a ResNet-50 page of 530
    palette PNGs, 0.32 MB less)."""
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    entries = len(palette_bytes) // 3
    if used[-1] >= entries:
        raise ValueError(f"a palette PNG's index {int(used[-1])} is beyond its palette of {entries} colours")
    renumber = np.zeros(256, dtype=np.uint8)
    renumber[used] = np.arange(len(used), dtype=np.uint8)
    colours = np.frombuffer(palette_bytes, dtype=np.uint8).reshape(entries, 3)[used]
    transparent = int(renumber[transparent_index]) if transparent_index is not None and transparent_index in used else None
    return renumber[indices], colours.tobytes(), transparent


def encode_png(pixels: np.ndarray, *, palette_bytes: bytes | None = None, transparent_index: int | None = None) -> bytes:
    """An 8-bit PNG of ``(h, w)`` (grey, or palette indices when ``palette_bytes`` is given) or
    ``(h, w, 3)`` RGB uint8 pixels.

    Written here rather than by Pillow because Pillow can choose neither the row filter nor
    zlib's strategy (see :data:`PNG_DEFLATE`), and the figures are most of a report's bytes
    and much of its time. zlib releases the GIL, so the section threads encode in parallel.
    Same pixels, same bytes.
    """
    data = np.ascontiguousarray(pixels, dtype=np.uint8)
    if data.ndim == 2:
        data = data[:, :, None]
    height, width, channels = data.shape
    if height == 0 or width == 0:
        raise ValueError(f"cannot write a PNG of {width}x{height} pixels: PNG images have at least one")
    if channels not in _PNG_COLOUR_TYPE:
        raise ValueError(f"cannot write a PNG of {channels} channels")
    if palette_bytes is not None and channels != 1:
        raise ValueError("a palette PNG takes one index per pixel")
    if palette_bytes is not None:
        data, palette_bytes, transparent_index = _used_entries_only(data, palette_bytes, transparent_index)
    raw = paeth_filtered(data.reshape(height, width * channels), channels)
    colour_type = 3 if palette_bytes is not None else _PNG_COLOUR_TYPE[channels]
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if palette_bytes is not None:
        chunks.append(_png_chunk(b"PLTE", palette_bytes))
        if transparent_index is not None:
            chunks.append(_png_chunk(b"tRNS", b"\xff" * transparent_index + b"\x00"))
    level, strategy = PNG_DEFLATE
    deflate = zlib.compressobj(level, zlib.DEFLATED, 15, 8, strategy)
    chunks.append(_png_chunk(b"IDAT", deflate.compress(raw.tobytes()) + deflate.flush()))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def indexed_png(indices: np.ndarray, cmap: str) -> bytes:
    """Save a uint8 index array (0..254 on the colour map, 255 background) as a palette PNG."""
    return encode_png(indices, palette_bytes=palette(cmap))


def grid_shape(count: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """Columns and rows for ``count`` tiles, near-square on screen."""
    if count <= 0:
        return 0, 0
    if tile_h * 4 <= tile_w:  # long strips read best stacked
        return 1, count
    cols = math.ceil(math.sqrt(count))
    return cols, math.ceil(count / cols)


def tile_grid(tiles: np.ndarray, columns: int | None = None, gap: int = GAP) -> tuple[np.ndarray, int, int, list[tuple[int, int]]]:
    """Lay out ``(k, h, w)`` or ``(k, h, w, 3)`` tiles in a grid separated by ``gap`` pixels.

    Returns the canvas, the column and row counts, and each tile's top-left corner.
    """
    k, h, w = tiles.shape[:3]
    cols, rows = grid_shape(k, h, w)
    if columns:
        cols, rows = columns, math.ceil(k / columns)
    height, width = rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap
    canvas = np.full((height, width) + tiles.shape[3:], BACKGROUND_INDEX if tiles.ndim == 3 else 128, dtype=np.uint8)
    corners = []
    for i in range(k):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        canvas[y : y + h, x : x + w] = tiles[i]
        corners.append((x, y))
    return canvas, cols, rows, corners


def _stretch_strips(tiles: np.ndarray) -> np.ndarray:
    """Repeat the rows of *strip* tiles (1-D signals, 1-D kernels) to a visible height.

    Only strips: a small square tile (a 3x3 kernel, a 2x2 activation) keeps its aspect ratio.
    """
    h, w = tiles.shape[1:3]
    is_strip = h < MIN_STRIP_HEIGHT and (w >= 4 * h or (h == 1 and w > 1))
    if not is_strip:
        return tiles
    return np.repeat(tiles, math.ceil(MIN_STRIP_HEIGHT / tiles.shape[1]), axis=1)


def activation_mosaic(probe_tiles: ProbeTiles, *, layer: str, probe: str) -> Mosaic:
    """One probe's most active channels of one layer as a labelled palette-PNG mosaic."""
    mosaics = activation_mosaics([probe_tiles], layer=layer, probes=[probe])
    if not mosaics:
        raise ValueError(f"{layer}: no channel to draw for {probe}")
    return mosaics[0]


def activation_mosaics(per_probe: Sequence[ProbeTiles], *, layer: str, probes: Sequence[str]) -> list[Mosaic]:
    """One mosaic per probe of a layer, laid out together: the probes of a layer share their
    tile size and count, so one numpy assignment places every tile of every probe (a Python
    loop per tile was a third of the figures' time on a ResNet-50), then each is encoded.
    Tiles and probe names pair up in order; the shorter list sets how many mosaics there are."""
    count = min(len(per_probe), len(probes))
    per_probe, probes = list(per_probe[:count]), list(probes[:count])
    out: list[Mosaic | None] = [None] * count
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, tiles in enumerate(per_probe):
        if tiles.tiles.size == 0:
            continue  # no channel to show (max_channels 0, or an empty map): no mosaic
        by_shape.setdefault(tuple(tiles.tiles.shape), []).append(i)
    for shape, indices in by_shape.items():
        stacked = np.stack([_stretch_strips(per_probe[i].tiles) for i in indices])  # (P, k, h, w)
        count, k, h, w = stacked.shape
        cols, rows = grid_shape(k, h, w)
        gap = GAP
        canvases = np.full((count, rows * (h + gap) + gap, cols * (w + gap) + gap), BACKGROUND_INDEX, dtype=np.uint8)
        padded = np.full((count, rows * cols, h, w), BACKGROUND_INDEX, dtype=np.uint8)
        padded[:, :k] = stacked
        # The canvas without its first gap row and column is a (rows, h+gap, cols, w+gap) grid.
        cells = canvases[:, gap:, gap:].reshape(count, rows, h + gap, cols, w + gap)
        cells[:, :, :h, :, :w] = padded.reshape(count, rows, cols, h, w).transpose(0, 1, 3, 2, 4)
        corners = [(GAP + (i % cols) * (w + GAP), GAP + (i // cols) * (h + GAP)) for i in range(k)]
        for slot, i in enumerate(indices):
            tiles = per_probe[i]
            canvas = canvases[slot]
            labelled = [
                Tile(label=str(ch), x=x, y=y, width=w, height=h, title=f"channel {ch}")
                for ch, (x, y) in zip(tiles.channels, corners)
            ]
            figure = Figure(
                png=indexed_png(canvas, ACTIVATION_CMAP),
                width=canvas.shape[1],
                height=canvas.shape[0],
                alt=f"{layer}: the {len(labelled)} most active channels for {probes[i]}",
            )
            out[i] = Mosaic(
                figure=figure,
                columns=cols,
                rows=rows,
                tiles=labelled,
                vmin=tiles.vmin,
                vmax=tiles.vmax,
                colormap=ACTIVATION_CMAP,
                probe=probes[i],
                nonfinite=tiles.nonfinite_count,
            )
    return [m for m in out if m is not None]


def _quantise_symmetric(values: np.ndarray, vmax: float) -> np.ndarray:
    """Map [-vmax, vmax] onto palette indices 0..254 with zero at the centre (127)."""
    scaled = np.clip(values / max(vmax, 1e-12), -1.0, 1.0)
    return np.round((scaled + 1.0) * 127.0).astype(np.uint8)


def filter_gallery(weight: np.ndarray | torch.Tensor, *, layer: str, groups: int = 1, max_filters: int = 32, max_inputs: int = 8) -> tuple[Figure, str, int, int, float, str]:
    """Draw a convolution's weights: RGB filters as colour images, others on a diverging map.

    Returns the figure, a note saying what is shown, the filters shown and in all, the colour
    scale's ``vmax`` and the colour map name ("rgb" for colour filters). See
    :func:`draw_filters`, which also counts the non-finite weights drawn.
    """
    g = draw_filters(weight, layer=layer, groups=groups, max_filters=max_filters, max_inputs=max_inputs)
    return g.figure, g.note, g.shown_filters, g.total_filters, g.vmax, g.colormap


#: RGB filters: the colour of a pixel with a NaN or Inf weight (mid-grey is zero there).
NONFINITE_RGB = (0, 0, 0)


def _largest_finite_magnitude(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 0.0


class _DrawnWeights(NamedTuple):
    """One way of drawing a convolution's weights: the image and what it shows."""

    canvas: np.ndarray
    png: bytes
    note: str
    colormap: str
    shown: int
    vmax: float
    nonfinite: int  # NaN/Inf weights among those drawn
    drawn: int  # weights drawn (the count nonfinite is out of)


def draw_filters(
    weight: np.ndarray | torch.Tensor, *, layer: str, groups: int = 1, max_filters: int = 32, max_inputs: int = 8, scale: float | None = None
) -> FilterGallery:
    """A convolution's filter gallery (see :func:`filter_gallery`).

    The colour scale is the largest *finite* |weight| drawn, or ``scale`` when given (one scale
    shared by several galleries, such as one layer's filters across checkpoints); NaN and Inf
    weights are drawn grey (black for RGB filters, where grey is zero), and the note says how
    many there are."""
    out_ch, in_per_group = weight.shape[:2]
    # Only the first filters are drawn (64 rows of a 1x1 matrix at most): cut before copying,
    # since a late ResNet layer holds millions of weights.
    drawn = weight[: max(max_filters, 64)]
    if isinstance(drawn, torch.Tensor):
        drawn = drawn.detach().float().cpu().numpy()
    w = np.asarray(drawn, dtype=np.float32)
    bad = ~np.isfinite(w)
    if bad.any():
        w = np.where(bad, np.float32(0), w)
    else:
        bad = None  # nothing to mark: the drawings skip the mask
    notes = []
    if w.ndim == 5:  # (out, in, d, h, w): the middle depth slice
        w = w[:, :, w.shape[2] // 2]
        bad = None if bad is None else bad[:, :, bad.shape[2] // 2]
        notes.append("3-D kernels: middle depth slice")
    elif w.ndim == 3:  # (out, in, k): a one-pixel-high strip per kernel
        w = w[:, :, None, :]
        bad = None if bad is None else bad[:, :, None, :]
    elif w.ndim != 4:
        raise ValueError(f"{layer}: cannot draw a weight of shape {tuple(weight.shape)}")
    shown = min(out_ch, max_filters)
    group_note = f", {groups} groups" if groups > 1 else ""
    if in_per_group == 3 and groups == 1:
        result = _draw_rgb_filters(w, bad, shown, out_ch, scale)
    elif w.shape[2] == 1 and w.shape[3] == 1 and in_per_group > 1:
        result = _draw_pointwise_matrix(w, bad, out_ch, in_per_group, group_note, scale)
    else:
        result = _draw_kernel_grid(w, bad, shown, out_ch, in_per_group, groups, max_inputs, group_note, scale)
    note = result.note
    if result.nonfinite:
        colour = "black" if result.colormap == "rgb" else "grey"
        if result.nonfinite == result.drawn:
            notes.append(f"every weight drawn ({result.nonfinite}) is NaN/Inf, drawn {colour}: no finite scale")
        else:
            notes.append(f"{result.nonfinite} NaN/Inf weight{'' if result.nonfinite == 1 else 's'} drawn {colour}, left out of the scale")
    if notes:
        note += "; " + "; ".join(notes)
    image_h, image_w = result.canvas.shape[:2]
    figure = Figure(png=result.png, width=image_w, height=image_h, alt=f"{layer}: weights, {note}")
    return FilterGallery(
        figure=figure, note=note, shown_filters=result.shown, total_filters=out_ch, vmax=result.vmax, colormap=result.colormap, nonfinite=result.nonfinite
    )


def _largest_magnitude(w: np.ndarray, scale: float | None = None) -> float:
    if scale is not None:
        return float(scale)
    return float(np.abs(w).max()) if w.size else 0.0  # non-finite weights are zeros in w


def _draw_rgb_filters(w: np.ndarray, bad: np.ndarray | None, shown: int, out_ch: int, scale: float | None) -> _DrawnWeights:
    """First-layer RGB filters as colour images: zero maps to mid-grey, so sign stays visible."""
    vmax = _largest_magnitude(w[:shown], scale)
    rgb = np.clip(0.5 + 0.5 * w[:shown] / max(vmax, 1e-12), 0, 1)
    tiles = (np.transpose(rgb, (0, 2, 3, 1)) * 255).round().astype(np.uint8)
    nonfinite = drawn = 0
    if bad is not None:
        bad = bad[:shown]
        nonfinite, drawn = int(bad.sum()), bad.size
        tiles[np.transpose(bad, (0, 2, 3, 1)).any(axis=3)] = NONFINITE_RGB
    canvas, *_ = tile_grid(tiles)
    note = f"{shown} of {out_ch} filters as RGB images (mid-grey is zero, scale ±{vmax:.3g})"
    return _DrawnWeights(canvas, encode_png(canvas), note, "rgb", shown, vmax, nonfinite, drawn)


def _draw_pointwise_matrix(w: np.ndarray, bad: np.ndarray | None, out_ch: int, in_per_group: int, group_note: str, scale: float | None) -> _DrawnWeights:
    """1x1 kernels: single pixels say nothing one by one; the (out x in) matrix does."""
    rows_shown, cols_shown = min(out_ch, 64), min(in_per_group, 64)
    matrix = w[:rows_shown, :cols_shown, 0, 0]
    vmax = _largest_magnitude(matrix, scale)
    canvas = _quantise_symmetric(matrix, vmax)
    nonfinite = drawn = 0
    if bad is not None:
        bad = bad[:rows_shown, :cols_shown, 0, 0]
        nonfinite, drawn = int(bad.sum()), bad.size
        canvas[bad] = BACKGROUND_INDEX
    note = (
        f"1x1 kernels as a matrix: rows are output channels 0-{rows_shown - 1} of {out_ch}, "
        f"columns input channels 0-{cols_shown - 1} of {in_per_group}{group_note}"
    )
    return _DrawnWeights(canvas, indexed_png(canvas, WEIGHT_CMAP), note, WEIGHT_CMAP, rows_shown, vmax, nonfinite, drawn)


def _draw_kernel_grid(
    w: np.ndarray, bad: np.ndarray | None, shown: int, out_ch: int, in_per_group: int, groups: int, max_inputs: int, group_note: str, scale: float | None
) -> _DrawnWeights:
    """Each kernel as a tile on one diverging scale: a row per filter, a column per input channel."""
    vmax = _largest_magnitude(w[:shown], scale)
    inputs = min(in_per_group, max_inputs)
    sub = w[:shown, :inputs]  # (shown, inputs, kh, kw)
    kh, kw = sub.shape[2:]
    tiles = _quantise_symmetric(sub.reshape(shown * inputs, kh, kw), vmax)
    nonfinite = drawn = 0
    if bad is not None:
        bad = bad[:shown, :inputs].reshape(shown * inputs, kh, kw)
        nonfinite, drawn = int(bad.sum()), bad.size
        tiles[bad] = BACKGROUND_INDEX
    tiles = _stretch_strips(tiles)
    # One input channel per filter (first grey layer, depthwise): a square grid reads best;
    # otherwise a row per filter, a column per input channel.
    canvas, *_ = tile_grid(tiles, columns=None if inputs == 1 else inputs)
    what = "depthwise filters" if in_per_group == 1 and groups > 1 else "filters"
    if inputs == 1:  # drawn as a square grid, one tile per filter
        layout_note = f"{shown} of {out_ch} {what}, one tile each (one input channel per filter)"
    else:
        layout_note = f"{shown} of {out_ch} {what} (rows) x {inputs} of {in_per_group} input channels (columns)"
    note = f"{layout_note}{group_note}; diverging colour map centred on zero, ±{vmax:.3g}"
    return _DrawnWeights(canvas, indexed_png(canvas, WEIGHT_CMAP), note, WEIGHT_CMAP, shown, vmax, nonfinite, drawn)


def histogram_figure(counts: Sequence[int], *, alt: str, width: int = 160, height: int = 48, log: bool = False) -> Figure:
    """Bars drawn straight into an array: one column block per bin, no plotting library."""
    values = np.asarray(counts, dtype=np.float64)
    if log:
        values = np.log1p(values)
    bins = max(len(values), 1)
    bar_w = max(1, width // bins)
    width = bar_w * bins
    peak = values.max() if values.size and values.max() > 0 else 1.0
    # Bar heights in pixels (rint rounds half to even, as round() did); a non-empty bin shows.
    bars = np.rint(values / peak * (height - 1)).astype(np.intp) if values.size else np.zeros(0, dtype=np.intp)
    bars[(values > 0) & (bars < 1)] = 1
    column_bars = np.repeat(bars, bar_w)
    rows = np.arange(height)[:, None]
    canvas = np.where(rows >= height - column_bars[None, :], np.uint8(90), np.uint8(BACKGROUND_INDEX))
    if canvas.shape[1] != width:  # no bins: an empty chart of one bar's width
        canvas = np.full((height, width), BACKGROUND_INDEX, dtype=np.uint8)
    pal = bytearray(palette(ACTIVATION_CMAP))
    pal[255 * 3 : 256 * 3] = bytes([255, 255, 255])  # white background for bar charts
    png = encode_png(canvas, palette_bytes=bytes(pal), transparent_index=BACKGROUND_INDEX)
    return Figure(png=png, width=width, height=height, alt=alt)


def channel_strip(means: np.ndarray, *, alt: str, dead: Sequence[int] = (), nonfinite: Sequence[int] = ()) -> Figure:
    """Per-channel mean activation as one row of colour cells: the colour scale spans the
    finite means; dead channels, ``nonfinite`` ones and those with a non-finite mean are grey."""
    values = np.asarray(means, dtype=np.float64)
    finite = np.isfinite(values)
    shown = values[finite]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    idx = np.round((np.where(finite, values, lo) - lo) / max(hi - lo, 1e-12) * 254).astype(np.uint8)
    idx[~finite] = BACKGROUND_INDEX
    idx[list(nonfinite)] = BACKGROUND_INDEX
    idx[list(dead)] = BACKGROUND_INDEX
    cell = max(1, min(8, 512 // max(len(values), 1)))
    row = np.repeat(idx[None, :], 10, axis=0)
    row = np.repeat(row, cell, axis=1)
    return Figure(png=indexed_png(row, ACTIVATION_CMAP), width=row.shape[1], height=row.shape[0], alt=alt)


def colour_bar(cmap: str, width: int = 128, height: int = 8) -> Figure:
    ramp = np.round(np.linspace(0, 254, width)).astype(np.uint8)
    canvas = np.repeat(ramp[None, :], height, axis=0)
    return Figure(png=indexed_png(canvas, cmap), width=width, height=height, alt=f"colour scale {cmap}, low to high")


def to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def thumbnail(image: np.ndarray, *, alt: str, max_size: int = 128) -> Figure:
    """A probe as the user sees it, area-averaged down to ``max_size`` pixels at most."""
    arr = np.ascontiguousarray(image.astype(np.uint8))
    pil = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
    if max(pil.size) > max_size:
        pil.thumbnail((max_size, max_size), Image.Resampling.BOX)
    return Figure(png=encode_png(np.asarray(pil)), width=pil.size[0], height=pil.size[1], alt=alt)


def heat_overlay(image: np.ndarray, heat: np.ndarray, *, alt: str, max_size: int = 128, alpha: float = 0.55) -> Figure:
    """A [0, 1] heat map, resized to the probe and blended over a grey version of it."""
    base = to_rgb(np.asarray(image, dtype=np.uint8))
    pil = Image.fromarray(np.ascontiguousarray(base), mode="RGB")
    if max(pil.size) > max_size:
        pil.thumbnail((max_size, max_size), Image.Resampling.BOX)
    grey = np.asarray(pil.convert("L"), dtype=np.float32)[:, :, None].repeat(3, axis=2)
    # NaN and Inf pixels get no heat (the page's note says so): Inf would overflow the scaling.
    heat_img = Image.fromarray(np.clip(np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0) * 255, 0, 255).astype(np.uint8), mode="L")
    heat_img = heat_img.resize(pil.size, Image.Resampling.BILINEAR)
    h = np.asarray(heat_img, dtype=np.uint8)
    colour = lut(HEAT_CMAP)[np.minimum(h, 254)].astype(np.float32)
    weight = alpha * (h.astype(np.float32) / 255.0)[:, :, None] + 0.15
    blended = np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
    return Figure(png=encode_png(blended), width=pil.size[0], height=pil.size[1], alt=alt)
