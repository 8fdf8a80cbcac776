"""numpy -> PNG figures (cnnreport.figures): sizes, pixels, palettes, determinism."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from cnnreport.capture.activations import ProbeTiles
from cnnreport.figures import images as figures


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def palette_rgb(image: Image.Image) -> np.ndarray:
    return np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)


def colours(image: Image.Image) -> np.ndarray:
    """What the viewer sees: each pixel's RGB colour (a palette PNG holds only the entries it
    uses, renumbered, so its indices are not the colour map's)."""
    return np.asarray(image.convert("RGB"))


def cmap_colours(indices: np.ndarray | int, cmap: str) -> np.ndarray:
    """The colours of colour-map indices 0..254 (255: the background grey), from matplotlib."""
    table = np.vstack([(np.asarray(colormaps[cmap](np.linspace(0.0, 1.0, 255)))[:, :3] * 255).round(), [[128, 128, 128]]]).astype(np.uint8)
    return table[np.asarray(indices)]


@pytest.mark.parametrize("k, h, w", [(16, 8, 8), (5, 6, 10), (1, 4, 4), (4, 2, 2), (3, 1, 1), (3, 2, 40), (2, 1, 30), (2, 1, 3)])
def test_mosaic_size_and_pixels_match_the_tile_grid(k, h, w):
    rng = np.random.default_rng(k)
    tiles = rng.integers(0, 255, size=(k, h, w), dtype=np.uint8)
    probe = ProbeTiles(channels=list(range(100, 100 + k)), tiles=tiles, vmin=-1.0, vmax=2.0)
    mosaic = figures.activation_mosaic(probe, layer="conv", probe="cat.png")
    shown_h = h
    if h < figures.MIN_STRIP_HEIGHT and (h * 4 <= w or (h == 1 and w > 1)):  # strips only
        shown_h = h * int(np.ceil(figures.MIN_STRIP_HEIGHT / h))
    cols, rows = figures.grid_shape(k, shown_h, w)
    assert (mosaic.columns, mosaic.rows) == (cols, rows)
    assert cols * rows >= k > (rows - 1) * cols
    gap = figures.GAP
    expected = (cols * w + (cols + 1) * gap, rows * shown_h + (rows + 1) * gap)
    image = decode(mosaic.figure.png)
    assert image.size == expected == (mosaic.figure.width, mosaic.figure.height)
    assert image.mode == "P"
    pixels = colours(image)
    assert [t.label for t in mosaic.tiles] == [str(c) for c in probe.channels]
    for i, tile in enumerate(mosaic.tiles):
        assert (tile.width, tile.height) == (w, shown_h)
        block = pixels[tile.y : tile.y + shown_h, tile.x : tile.x + w]
        np.testing.assert_array_equal(block[:: shown_h // h], cmap_colours(tiles[i], "viridis"))
    # Gaps are the background grey.
    assert (pixels[0, :] == [128, 128, 128]).all()
    assert mosaic.vmin == -1.0 and mosaic.vmax == 2.0 and mosaic.probe == "cat.png"
    # The palette holds the entries used, in the colour map's order: no more than 256 - unused.
    assert len(palette_rgb(image)) == len(np.unique(tiles)) + 1


@pytest.mark.parametrize("name", ["viridis", "RdBu_r", "inferno"])
def test_shipped_colour_tables_are_matplotlibs_maps(name):
    # The figures carry their own copies of the colour maps (no matplotlib import in a report);
    # each entry i is matplotlib's colour at i/254, rounded to 8 bits, and the 256th is grey.
    pal = np.frombuffer(figures.palette(name), dtype=np.uint8).reshape(256, 3)
    expected = (np.asarray(colormaps[name](np.linspace(0.0, 1.0, 255)))[:, :3] * 255).round()
    np.testing.assert_array_equal(pal[:255], expected)
    assert pal[255].tolist() == [128, 128, 128]


def test_an_unknown_colour_map_is_refused_by_name():
    with pytest.raises(ValueError, match="no colour table 'jet'"):
        figures.palette("jet")


def test_a_report_never_imports_matplotlib(tmp_path):
    # matplotlib's import costs a fresh process 0.2-0.6 s; the page needs only its colour tables.
    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "import cnnreport\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))\n"
        "model(torch.rand(1, 3, 8, 8))\n"
        "cnnreport.build_report(model, torch.rand(2, 3, 8, 8)).write(html=sys.argv[1])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "r.html").stat().st_size > 10_000


def idat_scanlines(png: bytes) -> bytes:
    """The PNG's inflated image data (filter bytes and filtered rows), read chunk by chunk."""
    pos, data = 8, b""
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        if png[pos + 4 : pos + 8] == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(data)


def test_paeth_filter_on_hand_worked_rows():
    # PNG 1.2, 6.6: predictor = the neighbour (left a, up b, up-left c) nearest to a + b - c,
    # ties to a, then b; outside the image the neighbours are 0; the difference wraps mod 256.
    rows = np.array([[10, 20, 30], [40, 45, 100]], dtype=np.uint8)
    # row 0: a each time; row 1: x0 picks b (10), x1 and x2 pick a (40, 45)
    assert figures.paeth_filtered(rows, 1).tolist() == [[4, 10, 10, 10], [4, 30, 5, 55]]
    # up-left wins when a + b - c lands on it: a=50, b=60, c=55; 50 - 55 wraps to 251
    assert figures.paeth_filtered(np.array([[55, 60], [50, 57]], dtype=np.uint8), 1).tolist() == [[4, 55, 5], [4, 251, 2]]
    assert figures.paeth_filtered(np.array([[200, 5]], dtype=np.uint8), 1).tolist() == [[4, 200, 61]]  # 5 - 200 mod 256
    # RGB: the left neighbour is the same channel of the pixel before (3 bytes back)
    rgb = np.array([[1, 2, 3, 11, 12, 13]], dtype=np.uint8)
    assert figures.paeth_filtered(rgb, 3).tolist() == [[4, 1, 2, 3, 10, 10, 10]]


def reference_paeth(rows: np.ndarray, bpp: int) -> list[list[int]]:
    """The filter as the PNG specification writes it, one byte at a time."""
    out = []
    for y, row in enumerate(rows.tolist()):
        above = rows[y - 1].tolist() if y else [0] * len(row)
        line = [4]
        for x, value in enumerate(row):
            a = row[x - bpp] if x >= bpp else 0
            b = above[x]
            c = above[x - bpp] if x >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line.append((value - pred) % 256)
        out.append(line)
    return out


@pytest.mark.parametrize("shape", [(7, 5), (1, 9), (6, 4, 3), (3, 1, 3)])
def test_pngs_decode_to_their_pixels_and_carry_paeth_scanlines(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    png = figures.encode_png(pixels)
    np.testing.assert_array_equal(np.asarray(decode(png)), pixels)  # Pillow's decoder agrees
    bpp = 3 if len(shape) == 3 else 1
    rows = pixels.reshape(shape[0], -1)
    expected = bytes(v for line in reference_paeth(rows, bpp) for v in line)
    assert idat_scanlines(png) == expected


def test_palette_png_holds_only_the_colours_it_uses_in_their_order():
    indices = np.array([[0, 254, 255], [3, 3, 128]], dtype=np.uint8)
    image = decode(figures.indexed_png(indices, "viridis"))
    assert image.mode == "P"
    # five entries used (0, 3, 128, 254, 255) become 0..4, the palette those five colours
    np.testing.assert_array_equal(np.asarray(image), [[0, 3, 4], [1, 1, 2]])
    np.testing.assert_array_equal(palette_rgb(image), cmap_colours([0, 3, 128, 254, 255], "viridis"))
    np.testing.assert_array_equal(colours(image), cmap_colours(indices, "viridis"))


def test_a_palette_index_beyond_the_palette_is_refused():
    with pytest.raises(ValueError, match="index 2 is beyond its palette of 2 colours"):
        figures.encode_png(np.array([[0, 2]], dtype=np.uint8), palette_bytes=bytes(6))


def test_a_transparent_entry_keeps_its_transparency_after_renumbering():
    indices = np.array([[7, 200, 7], [200, 200, 9]], dtype=np.uint8)
    image = decode(figures.encode_png(indices, palette_bytes=figures.palette("inferno"), transparent_index=200))
    assert np.asarray(image).tolist() == [[0, 2, 0], [2, 2, 1]]
    assert image.info.get("transparency") == 2
    rgba = np.asarray(image.convert("RGBA"))
    assert rgba[..., 3].tolist() == [[255, 0, 255], [0, 0, 255]]
    unused = decode(figures.encode_png(indices, palette_bytes=figures.palette("inferno"), transparent_index=100))
    assert "transparency" not in unused.info  # index 100 is not drawn: nothing is transparent


def test_figures_are_deterministic_and_carry_no_time_chunk():
    tiles = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6)
    a = figures.activation_mosaic(ProbeTiles([0, 1, 2, 3], tiles, 0, 1), layer="l", probe="p")
    b = figures.activation_mosaic(ProbeTiles([0, 1, 2, 3], tiles.copy(), 0, 1), layer="l", probe="p")
    assert a.figure.png == b.figure.png
    assert b"tIME" not in a.figure.png


def test_rgb_first_layer_filters_are_colour_images():
    w = np.zeros((5, 3, 3, 3), dtype=np.float32)
    w[0, 0, 1, 1] = 2.0  # strong positive red at the centre of filter 0
    w[1, 2, 0, 0] = -2.0  # strong negative blue at the corner of filter 1
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(w, layer="conv1")
    assert (shown, total, cmap, vmax) == (5, 5, "rgb", 2.0)
    image = decode(fig.png)
    assert image.mode == "RGB"
    cols, rows = figures.grid_shape(5, 3, 3)
    gap = figures.GAP
    assert image.size == (cols * 3 + (cols + 1) * gap, rows * 3 + (rows + 1) * gap) == (fig.width, fig.height)
    px = np.asarray(image)
    f0 = px[gap : gap + 3, gap : gap + 3]
    assert f0[1, 1].tolist() == [255, 128, 128]  # +vmax red, zero green/blue at mid-grey
    assert f0[0, 0].tolist() == [128, 128, 128]  # zero weights are mid-grey
    f1 = px[gap : gap + 3, 2 * gap + 3 : 2 * gap + 6]
    assert f1[0, 0].tolist() == [128, 128, 0]  # -vmax blue
    assert "RGB" in note


def test_weight_palette_is_diverging_and_centred_on_zero():
    values = np.array([-3.0, -1.5, 0.0, 1.5, 3.0])
    idx = figures._quantise_symmetric(values, 3.0)
    assert idx.tolist() == [0, 64, 127, 190, 254]  # 127 is the middle of 0..254
    pal = np.frombuffer(figures.palette(figures.WEIGHT_CMAP), dtype=np.uint8).reshape(256, 3)
    centre = (np.array(colormaps[figures.WEIGHT_CMAP](0.5)[:3]) * 255).round()
    np.testing.assert_array_equal(pal[127], centre)
    # RdBu_r: blue at the negative end, red at the positive end, near-white in the middle.
    assert pal[0][2] > pal[0][0] and pal[254][0] > pal[254][2]
    assert pal[127].min() > 200


def test_grey_layer_filters_use_the_diverging_map_with_zero_in_the_middle():
    w = np.zeros((6, 4, 3, 3), dtype=np.float32)
    w[0, 0, 0, 0] = 1.0
    w[0, 1, 0, 0] = -1.0
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(w, layer="conv2", max_inputs=2)
    assert cmap == figures.WEIGHT_CMAP and vmax == 1.0 and shown == 6
    image = decode(fig.png)
    assert image.mode == "P"
    px = colours(image)
    gap = figures.GAP
    # A row per filter, a column per shown input channel: 6 rows x 2 columns of 3x3 tiles.
    assert image.size == (2 * 3 + 3 * gap, 6 * 3 + 7 * gap)
    assert px[gap, gap].tolist() == cmap_colours(254, "RdBu_r").tolist()
    assert px[gap, 2 * gap + 3].tolist() == cmap_colours(0, "RdBu_r").tolist()
    assert px[gap + 1, gap + 1].tolist() == cmap_colours(127, "RdBu_r").tolist()  # a zero weight is the map's middle
    assert "2 of 4 input channels" in note and "centred on zero" in note


def test_depthwise_filters():
    w = np.random.default_rng(0).normal(size=(9, 1, 3, 3)).astype(np.float32)
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(w, layer="dw", groups=9)
    assert "depthwise" in note and "9 groups" in note
    assert (shown, total) == (9, 9)
    image = decode(fig.png)
    assert image.size == (3 * 3 + 4, 3 * 3 + 4)  # a square 3x3 grid of 3x3 tiles
    assert vmax == pytest.approx(float(np.abs(w).max()))


def test_grouped_filters():
    w = np.random.default_rng(1).normal(size=(8, 2, 3, 3)).astype(np.float32)
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(w, layer="g", groups=4)
    assert "4 groups" in note and "depthwise" not in note
    assert decode(fig.png).size == (2 * 3 + 3, 8 * 3 + 9)


def test_1x1_kernels_draw_as_a_matrix():
    w = np.random.default_rng(2).normal(size=(70, 5, 1, 1)).astype(np.float32)
    fig, note, shown, total, vmax, cmap = figures.filter_gallery(w, layer="pw")
    image = decode(fig.png)
    assert image.size == (5, 64)
    assert (shown, total) == (64, 70)
    np.testing.assert_array_equal(colours(image), cmap_colours(figures._quantise_symmetric(w[:64, :, 0, 0], vmax), "RdBu_r"))
    assert vmax == pytest.approx(float(np.abs(w[:64]).max()))


def test_max_filters_limits_and_1d_and_3d_kernels():
    w = np.ones((40, 3, 3, 3), dtype=np.float32)
    assert figures.filter_gallery(w, layer="c", max_filters=10)[2:4] == (10, 40)
    fig1d, note, *_ = figures.filter_gallery(np.ones((4, 2, 5), dtype=np.float32), layer="c1d")
    assert decode(fig1d.png).size == (2 * 5 + 3, 4 * figures.MIN_STRIP_HEIGHT + 5)  # 1-D kernels as strips
    fig1d3, *_ = figures.filter_gallery(np.ones((4, 2, 3), dtype=np.float32), layer="c1d")
    assert decode(fig1d3.png).size == (2 * 3 + 3, 4 * figures.MIN_STRIP_HEIGHT + 5)
    fig3d, note3d, *_ = figures.filter_gallery(np.ones((4, 2, 3, 3, 3), dtype=np.float32), layer="c3d")
    assert "depth slice" in note3d


def test_histogram_and_channel_strip_sizes():
    fig = figures.histogram_figure([0, 5, 10, 0], alt="h", width=160, height=48)
    image = decode(fig.png)
    assert image.size == (160, 48) == (fig.width, fig.height)
    alpha = np.asarray(image.convert("RGBA"))[..., 3]  # the background is the transparent entry
    assert (alpha[:, :40] == 0).all()  # empty first bin
    assert (alpha[1:, 80:120] == 255).all()  # the tallest bar, 1 px below the top
    assert (alpha[:24, 40:80] == 0).all() and (alpha[25:, 40:80] == 255).all()
    strip = figures.channel_strip(np.array([0.0, 1.0, 2.0]), alt="s", dead=[1])
    simg = decode(strip.png)
    assert simg.size == (strip.width, strip.height) == (24, 10)
    spx = colours(simg)
    assert spx[0, 0].tolist() == cmap_colours(0, "viridis").tolist()
    assert spx[0, 8].tolist() == [128, 128, 128]  # the dead channel: background grey
    assert spx[0, 16].tolist() == cmap_colours(254, "viridis").tolist()


def test_thumbnail_and_heat_overlay_sizes():
    image = np.random.default_rng(0).integers(0, 255, (60, 200, 3), dtype=np.uint8)
    thumb = figures.thumbnail(image, alt="t", max_size=100)
    assert decode(thumb.png).size == (thumb.width, thumb.height) == (100, 30)
    small = figures.thumbnail(image[:20, :20], alt="t")
    assert (small.width, small.height) == (20, 20)
    heat = figures.heat_overlay(image, np.linspace(0, 1, 12).reshape(3, 4), alt="h", max_size=100)
    assert decode(heat.png).size == (heat.width, heat.height) == (100, 30)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 33), (1, 300), (20, 30, 3), (1, 9, 3)])
def test_encode_png_round_trips_grey_palette_and_rgb_pixels(shape):
    """Our own PNG writer: Pillow (an independent decoder) reads back every pixel, and the
    filter's wrap-around (a byte below its predictor) survives."""
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if len(shape) == 2:
        image = decode(figures.encode_png(pixels, palette_bytes=figures.palette("viridis")))
        assert image.mode == "P"
        np.testing.assert_array_equal(colours(image), cmap_colours(pixels, "viridis"))
        grey = decode(figures.encode_png(pixels))
        assert grey.mode == "L"
        np.testing.assert_array_equal(np.asarray(grey), pixels)
    else:
        image = decode(figures.encode_png(pixels))
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert figures.encode_png(pixels) == figures.encode_png(pixels.copy())


def test_histogram_background_is_transparent_and_bad_inputs_are_refused():
    image = decode(figures.histogram_figure([3, 0, 7, 1], alt="h").png)
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert (alpha[0] == 0).any() and (alpha == 255).any()  # transparent background, opaque bars
    with pytest.raises(ValueError, match="channels"):
        figures.encode_png(np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="palette"):
        figures.encode_png(np.zeros((2, 2, 3), dtype=np.uint8), palette_bytes=figures.palette("viridis"))


def test_filter_gallery_of_a_huge_layer_reads_only_what_it_draws():
    import torch

    weight = torch.randn(2048, 1024, 3, 3)
    weight[40:] = float("nan")  # never drawn: must not matter
    figure, note, shown, total, vmax, _ = figures.filter_gallery(weight, layer="big", max_filters=32, max_inputs=8)
    assert (shown, total) == (32, 2048)
    assert vmax == pytest.approx(float(weight[:32].abs().max()))  # the scale of every shown filter
    assert "32 of 2048 filters (rows) x 8 of 1024 input channels" in note
    assert decode(figure.png).size == (figure.width, figure.height)


@pytest.mark.parametrize("k, h, w", [(16, 8, 8), (5, 6, 10), (3, 1, 30), (7, 2, 2)])
def test_a_layers_mosaics_laid_out_together_equal_the_tile_grid_of_each_probe(k, h, w):
    rng = np.random.default_rng(k * h)
    probes = [ProbeTiles(list(rng.permutation(50)[:k]), rng.integers(0, 255, size=(k, h, w), dtype=np.uint8), -1.0, float(i)) for i in range(3)]
    mosaics = figures.activation_mosaics(probes, layer="conv", probes=["a", "b", "c"])
    assert [m.probe for m in mosaics] == ["a", "b", "c"]
    for tiles, mosaic in zip(probes, mosaics):
        canvas, cols, rows, corners = figures.tile_grid(figures._stretch_strips(tiles.tiles))
        np.testing.assert_array_equal(colours(decode(mosaic.figure.png)), cmap_colours(canvas, "viridis"))
        assert (mosaic.columns, mosaic.rows) == (cols, rows)
        assert [(t.x, t.y) for t in mosaic.tiles] == corners
        assert [t.label for t in mosaic.tiles] == [str(c) for c in tiles.channels]
        assert mosaic.vmax == tiles.vmax


def test_nothing_to_draw_gives_no_mosaic_and_no_invalid_png():
    empty = ProbeTiles([], np.zeros((0, 6, 6), dtype=np.uint8), 0.0, 1.0)
    full = ProbeTiles([3], np.full((1, 6, 6), 7, dtype=np.uint8), 0.0, 1.0)
    mosaics = figures.activation_mosaics([empty, full], layer="l", probes=["a", "b"])
    assert [m.probe for m in mosaics] == ["b"]
    with pytest.raises(ValueError, match="pixels"):
        figures.encode_png(np.zeros((0, 5), dtype=np.uint8))
