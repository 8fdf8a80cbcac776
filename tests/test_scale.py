"""Scale: the HTML budget, batching, channel selection, many probes, big probes, deep models, and
a capture that keeps no float activation once its hook has returned.

Functional only: nothing here measures time (``benchmarks/bench_report.py`` does).
"""

from __future__ import annotations

import dataclasses
import gc
import io
import weakref
from html import escape as html_escape

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnreport.capture.activations import ActivationCapture, CaptureResult
from cnnreport.datamodel import ReportOptions
from cnnreport.model.state import preserved_model_state
from cnnreport.report import budget
from cnnreport.report.pipeline import build_report, select_layers

QUIET = dict(progress=False, graph=False)


def small_cnn(seed: int = 0, channels: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * channels, 10),
    ).eval()


def noise(n: int, size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def decode(png: bytes) -> np.ndarray:
    """The figure's pixels as the viewer sees them, RGB (palette indices are renumbered per PNG)."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


# --------------------------------------------------------------------------------------------
# --max-html-mb


def test_budget_respected_and_said(tmp_path):
    model, probes = small_cnn(), noise(8, 64)
    full = build_report(model, probes, **QUIET)
    full_html = full.to_html()
    budget_mb = 0.5 * len(full_html.encode()) / budget.MB
    small = build_report(model, probes, max_html_mb=budget_mb, **QUIET)
    html = small.to_html()
    assert len(html.encode()) <= budget_mb * budget.MB
    note = [n for n in small.notes if "--max-html-mb" in n]
    assert len(note) == 1, small.notes
    # the page shows it as escaped text, as the stdlib escapes it
    assert html_escape(note[0]).replace("&#x27;", "&#39;").replace("&quot;", "&#34;") in html
    # Fewer channels or smaller tiles, still one mosaic per probe and layer.
    assert [len(s.mosaics) for s in small.sections] == [len(s.mosaics) for s in full.sections]
    full_px = sum(m.figure.width * m.figure.height for s in full.sections for m in s.mosaics)
    small_px = sum(m.figure.width * m.figure.height for s in small.sections for m in s.mosaics)
    assert small_px < full_px
    # Statistics are untouched by the budget.
    assert [s.stats for s in small.sections] == [s.stats for s in full.sections]


def test_budget_not_needed_changes_nothing():
    model, probes = small_cnn(), noise(2, 32)
    a = build_report(model, probes, **QUIET)
    b = build_report(model, probes, max_html_mb=50, **QUIET)
    assert not [n for n in b.notes if "--max-html-mb" in n]
    assert [m.figure.png for s in a.sections for m in s.mosaics] == [m.figure.png for s in b.sections for m in s.mosaics]


def test_budget_keeps_most_active_channels_first():
    """A reduced mosaic shows the first channels of the full one, in the same order."""
    model, probes = small_cnn(), noise(4, 64)
    full = build_report(model, probes, **QUIET)
    small = build_report(model, probes, max_html_mb=0.3 * len(full.to_html().encode()) / budget.MB, **QUIET)
    for fs, ss in zip(full.sections, small.sections):
        for fm, sm in zip(fs.mosaics, ss.mosaics):
            labels = [t.label for t in sm.tiles]
            assert labels == [t.label for t in fm.tiles][: len(labels)]


def test_shrink_tiles_is_an_area_average():
    tiles = np.zeros((2, 64, 64), dtype=np.uint8)
    tiles[0, :, :32] = 200  # left half bright
    tiles[1] = 100
    small = budget.shrink_tiles(tiles, 16)
    assert small.shape == (2, 16, 16) and small.dtype == np.uint8
    assert (small[0, :, :8] == 200).all() and (small[0, :, 8:] == 0).all()
    assert (small[1] == 100).all()
    assert budget.shrink_tiles(tiles, 64) is tiles


def test_ladder_only_goes_down():
    steps = budget.ladder(16, 64, 8)
    cost = [lv.channels * lv.tile_size**2 * lv.probes for lv in steps]
    assert all(b < a for a, b in zip([16 * 64**2 * 8] + cost, cost))
    assert steps[-1].channels == 1 and steps[-1].probes == 1


# --------------------------------------------------------------------------------------------
# Batching


def test_batching_gives_the_same_statistics_and_mosaics():
    model, probes = small_cnn(), noise(8, 32)
    one = build_report(model, probes, batch_size=8, **QUIET)
    many = build_report(model, probes, batch_size=2, **QUIET)
    assert [s.name for s in one.sections] == [s.name for s in many.sections]
    for a, b in zip(one.sections, many.sections):
        for field in ("mean", "std", "min", "max", "frac_zero"):
            assert getattr(b.stats, field) == pytest.approx(getattr(a.stats, field), rel=1e-5, abs=1e-6), (a.name, field)
        assert a.stats.numel == b.stats.numel == 8 * int(np.prod(a.output_shape))
        assert len(a.per_probe_stats) == len(b.per_probe_stats) == 8
        for pa, pb in zip(a.per_probe_stats, b.per_probe_stats):
            assert dataclasses.astuple(pb) == pytest.approx(dataclasses.astuple(pa), rel=1e-5, abs=1e-6)
        assert a.channels is not None and b.channels is not None
        assert np.allclose(a.channels.means, b.channels.means, rtol=1e-5, atol=1e-6)
        assert len(a.mosaics) == len(b.mosaics) == 8
        for ma, mb in zip(a.mosaics, b.mosaics):
            assert [t.label for t in ma.tiles] == [t.label for t in mb.tiles]
            # The same tiles (batched convolutions may round differently in the last bits, which
            # the 128 levels do not show).
            np.testing.assert_array_equal(decode(ma.figure.png), decode(mb.figure.png))
    assert [p.predictions[0].class_index for p in one.probes] == [p.predictions[0].class_index for p in many.probes]


def test_automatic_batches_shrink_only_where_tiles_need_the_room():
    from cnnreport.support.batching import next_batch_size

    mb = 1024 * 1024
    # A 100-layer plain stack (32 x 224 x 224 floats a probe) after a first batch of 4 of 8
    # probes: the tiles will hold 29.5 MB, so a batch of 4 (3.5 activations alive) would break
    # twice the largest activation of all 8 probes; 3 fits.
    stack = dict(probes=8, done=4, shown=8, largest_per_probe=32 * 224 * 224 * 4)
    assert next_batch_size(4, tile_bytes=int(14.75 * mb), **stack) == 3
    # ResNet-50 (3.2 MB a probe, 5 MB of tiles in all): 4 fits; with 200 probes the room is large.
    assert next_batch_size(4, probes=8, done=4, shown=8, largest_per_probe=64 * 112 * 112 * 4, tile_bytes=int(2.55 * mb)) == 4
    assert next_batch_size(4, tile_bytes=int(14.75 * mb), **{**stack, "probes": 200, "shown": 16}) == 4
    # Small activations are never split, whatever the tiles; nor is the first batch.
    assert next_batch_size(4, probes=8, done=4, shown=8, largest_per_probe=4096, tile_bytes=10 * mb) == 4
    assert next_batch_size(4, tile_bytes=int(14.75 * mb), **{**stack, "done": 0}) == 4
    # Never below one probe.
    assert next_batch_size(4, tile_bytes=500 * mb, **stack) == 1


def test_automatic_batches_give_the_same_report_and_say_so(monkeypatch):
    from cnnreport.support import batching

    monkeypatch.setattr(batching, "TAPER_FLOOR_BYTES", 0)  # a small model, split as a large one would be
    monkeypatch.setattr(batching, "PEAK_ACTIVATIONS", 1.2)
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
    for _ in range(11):
        layers += [nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
    model = nn.Sequential(*layers).eval()
    probes = noise(9, 16)
    auto = build_report(model, probes, **QUIET)
    fixed = build_report(model, probes, batch_size=4, **QUIET)
    (note,) = [n for n in auto.notes if "Probes went through the model in batches of 4, " in n]
    assert "--batch-size" in note and not [n for n in fixed.notes if "batches of" in n]
    assert auto.options.batch_size == 4
    for a, b in zip(auto.sections, fixed.sections):
        assert a.stats.numel == b.stats.numel == 9 * int(np.prod(a.output_shape))
        assert a.stats.mean == pytest.approx(b.stats.mean, rel=1e-5, abs=1e-6)
        assert a.stats.max == pytest.approx(b.stats.max, rel=1e-5, abs=1e-6)
        assert len(a.per_probe_stats) == 9


def test_partial_report_counts_the_probes_its_statistics_cover():

    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.f = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x):
            y = self.c1(x)
            if bool((x[:, 0, 0, 0] > 5).any()):
                raise ValueError("bad probe")
            return self.f(self.c2(y).mean((2, 3)))

    probes = torch.rand(10, 3, 16, 16)
    probes[6, 0, 0, 0] = 10  # in the second batch of 4
    report = build_report(Picky().eval(), probes, on_failure="partial", **QUIET)
    assert report.probe_count == 4 and report.to_dict()["probe_count"] == 4
    probes[1, 0, 0, 0] = 10  # now in the first batch: its 4 probes are what the layers before hold
    assert build_report(Picky().eval(), probes, on_failure="partial", **QUIET).probe_count == 4


def test_batch_size_below_one_is_refused_and_unresolved_options_still_render():
    from cnnreport.errors import OptionError

    model, probes = small_cnn(channels=8), noise(3, 16)
    with pytest.raises(OptionError, match="batch_size must be at least 1"):
        build_report(model, probes, batch_size=0, **QUIET)
    report = build_report(model, probes, progress=False)
    html = dataclasses.replace(report, options=ReportOptions()).to_html()  # batch_size None
    assert "(3 of the 3 probes: the first number of each shape)" in html


def test_two_hundred_small_probes_in_batches():
    model, probes = small_cnn(channels=8), noise(200, 16)
    report = build_report(model, probes, batch_size=16, max_probes=200, **QUIET)
    first = report.sections[0]
    assert first.stats.numel == 200 * 8 * 16 * 16
    assert len(first.per_probe_stats) == 200
    assert len(first.mosaics) == 200
    ref = model[0](probes).detach()
    assert first.stats.mean == pytest.approx(float(ref.double().mean()), rel=1e-5)
    assert first.stats.max == pytest.approx(float(ref.max()), rel=1e-6)


def _kept_bytes(probe_count: int) -> tuple[int, list[int], int]:
    """What the capture keeps for ``probe_count`` probes (max_probes 4): tile and histogram
    bytes over all layers, tile counts per layer, the largest per-layer sample."""
    from cnnreport.capture.passes import capture_pass
    from cnnreport.io.probes import load_probes
    from cnnreport.support.progress import Progress

    model = small_cnn(channels=8)
    options = ReportOptions(max_probes=4, batch_size=8, attributions=False, **QUIET)
    batch = load_probes(noise(probe_count, 32))
    result = capture_pass(model, batch, options, select_layers(model, options), None, Progress(probe_count, enabled=False))
    layers = result.capture.detailed()
    tiles = sum(t.tiles.nbytes for layer in layers for t in layer.tiles)
    samples = [sum(s.size for s in layer.samples) for layer in layers]
    return tiles + 4 * sum(samples), [len(layer.tiles) for layer in layers], max(samples)


def test_what_the_capture_keeps_does_not_grow_with_the_probes_beyond_what_is_shown():
    from cnnreport.capture.activations import HISTOGRAM_SAMPLES_PER_LAYER

    few_bytes, few_tiles, few_sample = _kept_bytes(20)
    many_bytes, many_tiles, many_sample = _kept_bytes(200)
    # Tiles only for the 4 probes the page shows; the histogram sample is capped per layer.
    assert few_tiles == many_tiles and set(many_tiles) == {4}
    assert many_sample <= HISTOGRAM_SAMPLES_PER_LAYER
    assert many_bytes <= 1.05 * few_bytes


def test_report_of_many_probes_shows_max_probes_and_counts_them_all():
    model, probes = small_cnn(channels=8), noise(40, 16)
    report = build_report(model, probes, max_probes=3, batch_size=8, **QUIET)
    first = report.sections[0]
    assert len(first.mosaics) == 3 and len(report.probes) == 3
    assert len(first.per_probe_stats) == 40 and first.stats.numel == 40 * 8 * 16 * 16
    # The histogram still counts a sample of every probe.
    ref = model[0](probes).detach()
    assert sum(first.histogram.counts) >= 40 * 100
    assert first.histogram.edges[0] >= float(ref.min()) - 1e-6 and first.histogram.edges[-1] <= float(ref.max()) + 1e-6
    # The page counts every probe and says how many it shows.
    assert report.probe_count == 40 and report.to_dict()["probe_count"] == 40
    html = report.to_html()
    assert "40 probes (3 shown)" in html and 'class="count">3 of 40<' in html
    graphed = build_report(model, probes, max_probes=3, batch_size=8, progress=False)
    assert "(8 of the 40 probes: the first number of each shape)" in graphed.to_html()
    from cnnreport.render.views import render_markdown

    assert "| Probes | 40 |" in render_markdown(report)


def test_activation_histogram_spans_the_layers_true_range():
    # A strided sample rarely holds the extremes: the axis still reads the layer's min and max.
    model, probes = small_cnn(channels=8), noise(6, 64)
    report = build_report(model, probes, batch_size=4, **QUIET)
    for section in report.sections:
        edges = section.histogram.edges
        assert edges[0] == pytest.approx(section.stats.min) and edges[-1] == pytest.approx(section.stats.max)
        assert sum(section.histogram.counts) > 0


def test_long_capture_hands_freed_heap_back_every_few_batches(monkeypatch):
    from cnnreport.support import heap

    calls = []
    monkeypatch.setattr(heap, "release_free_heap", lambda: calls.append(1) or True)
    model, probes = small_cnn(channels=8), noise(2 * heap.BATCHES_PER_RELEASE + 1, 8)
    build_report(model, probes, batch_size=1, **QUIET)  # 17 batches: released after 8 and 16
    assert len(calls) == 2
    calls.clear()
    build_report(model, probes[:4], batch_size=4, **QUIET)  # a few probes: never
    assert calls == []


def test_heap_release_runs_where_the_c_library_has_it():
    import platform

    from cnnreport.support import heap

    released = heap.release_free_heap()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert released


# --------------------------------------------------------------------------------------------
# Channel selection


def test_mosaic_shows_the_most_active_channels_in_order():
    conv = nn.Conv2d(1, 8, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.1, 5.0, 0.3, 7.0, 2.0, 0.0, 6.0, 1.0]))
    model = nn.Sequential(conv, nn.Flatten()).eval()
    report = build_report(model, torch.ones(2, 1, 8, 8), max_channels=3, attributions=False, **QUIET)
    (section,) = report.sections
    for mosaic in section.mosaics:
        assert [t.label for t in mosaic.tiles] == ["3", "6", "1"]
    assert section.channels.means == pytest.approx([0.1, 5.0, 0.3, 7.0, 2.0, 0.0, 6.0, 1.0])


def test_channel_selection_is_per_probe():
    """Each probe's mosaic picks its own most active channels."""
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2)[:, :, None, None])
    model = nn.Sequential(conv).eval()
    probes = torch.zeros(2, 2, 4, 4)
    probes[0, 0] = 1.0  # probe 0 lights channel 0
    probes[1, 1] = 1.0  # probe 1 lights channel 1
    report = build_report(model, probes, max_channels=1, attributions=False, **QUIET)
    assert [m.tiles[0].label for m in report.sections[0].mosaics] == ["0", "1"]


# --------------------------------------------------------------------------------------------
# Big probes and deep models


def test_one_large_probe_gives_small_tiles():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1)).eval()
    report = build_report(model, noise(1, 1024), tile_size=64, **QUIET)
    assert [s.output_shape for s in report.sections] == [[4, 1024, 1024], [4, 512, 512]]
    for section in report.sections:
        (mosaic,) = section.mosaics
        assert all(t.width <= 64 and t.height <= 64 for t in mosaic.tiles)
        assert decode(mosaic.figure.png).shape == (mosaic.figure.height, mosaic.figure.width, 3)
    assert "<html" in report.to_html()


def test_hundred_layer_plain_stack():
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1)]
    for _ in range(99):
        layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)]
    model = nn.Sequential(*layers).eval()
    report = build_report(model, noise(2, 16), **QUIET)
    assert len(report.sections) == 100
    assert all(len(s.mosaics) == 2 for s in report.sections)
    html = report.to_html()
    assert html.count('class="layer"') == 100


# --------------------------------------------------------------------------------------------
# Memory: nothing float outlives its hook


class _Keeper:
    """Forward hooks on every leaf that keep only a weak reference to each output."""

    def __init__(self, model: nn.Module) -> None:
        self.refs: list[tuple[str, weakref.ref]] = []
        self.handles = [
            m.register_forward_hook(self._hook(name)) for name, m in model.named_modules() if not any(True for _ in m.children())
        ]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                self.refs.append((name, weakref.ref(output)))

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("attributions", [False, True])
def test_no_activation_survives_the_report(attributions):
    model, probes = small_cnn(), noise(4, 32)
    keeper = _Keeper(model)
    try:
        report = build_report(model, probes, batch_size=2, attributions=attributions, **QUIET)
    finally:
        keeper.remove()
    gc.collect()
    assert len(keeper.refs) >= 2 * 8  # every leaf, both batches
    alive = [name for name, ref in keeper.refs if ref() is not None]
    assert alive == [], f"activations still referenced after build_report: {alive}"
    assert report.sections


def _arrays(value, path="capture"):
    """Every ndarray and tensor reachable from a capture result's dataclasses and lists."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        yield path, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _arrays(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _arrays(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _arrays(item, f"{path}[{k!r}]")


def test_capture_keeps_only_uint8_tiles_and_small_vectors():
    """After the pass, the capture holds no tensor and no float array of activation size:
    tiles are uint8, float arrays are per-channel vectors or the fixed histogram sample."""
    from cnnreport.capture.activations import HISTOGRAM_SAMPLES_PER_PROBE

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=4, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    ).eval()
    probes = noise(3, 128)
    per_probe = 8 * 128 * 128  # the biggest activation of one probe: 131072 floats
    names = select_layers(model, ReportOptions())
    capture = ActivationCapture(model, set(names), max_channels=4, tile_size=32, cam_layer="4")
    with preserved_model_state(model), capture, torch.enable_grad():
        capture.start_batch()
        out = model(probes)
        assert capture.gradcam_backward(out, out.argmax(1).tolist())
    del out
    result = capture.result()
    assert isinstance(result, CaptureResult)
    found = list(_arrays(result))
    assert found
    for path, arr in found:
        assert isinstance(arr, np.ndarray), f"{path} is a {type(arr).__name__}"
        if arr.dtype == np.uint8:
            assert arr.shape[-1] <= 32 and arr.shape[-2] <= 32, path
        elif path.startswith("capture.gradcam"):
            assert arr.shape == (32, 32), path  # one map per probe at the CAM layer, never per layer
        else:
            assert arr.size <= max(HISTOGRAM_SAMPLES_PER_PROBE, 8) < per_probe, (path, arr.shape, arr.dtype)
    total_bytes = sum(arr.nbytes for _, arr in found)
    assert total_bytes < 3 * per_probe * 4  # less than the float activations of one layer
