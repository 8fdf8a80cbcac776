"""What the examples keep for the page stays small without changing what it draws: crops kept
at the strip's largest size (area-averaged as the strip would), one array per example and box,
the winners read one at a time, and the page's bytes for a level measured a layer at a time,
to the byte. Expected pixels are worked out by hand; expected bytes are the page's own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import cnnreport
from cnnreport.datamodel import ChannelExamples, ExampleHit, ExampleSet, LayerExamples
from cnnreport.figures.examples import fit_crop, shrunk_crop
from cnnreport.report.budget import example_bytes
from cnnreport.report.examples import example_set
from cnnreport.report.examples_view import _streamed_bytes, draw_examples, drawn_examples, example_levels, examples_reserve

# -- shrunk_crop ------------------------------------------------------------------------------


def test_a_large_crop_is_area_averaged_to_the_side_asked():
    # 4 rows x 2 columns, shrunk to fit a 2 px square: 2 x 1, each pixel the mean of a 2 x 2 block.
    crop = np.array([[10, 20], [30, 40], [100, 110], [120, 130]], dtype=np.uint8)
    out = shrunk_crop(crop, 2)
    assert out.shape == (2, 1) and out.dtype == np.uint8
    assert out[:, 0].tolist() == [25, 115]  # (10+20+30+40)/4, (100+110+120+130)/4
    rgb = np.stack([crop, crop + 1, 255 - crop], axis=2)
    assert shrunk_crop(rgb, 2)[:, 0].tolist() == [[25, 26, 230], [115, 116, 140]]
    assert shrunk_crop(crop[:, :, None], 2).shape == (2, 1)  # H x W x 1 is grey


def test_a_crop_within_the_side_is_kept_as_a_copy():
    image = np.arange(60, dtype=np.uint8).reshape(6, 10)
    view = image[1:4, 2:7]
    out = shrunk_crop(view, 5)
    assert out.tolist() == view.tolist() and out.flags["C_CONTIGUOUS"]
    image[:] = 0  # the kept crop does not hold (or follow) the whole image
    assert int(out[0, 0]) == 12
    with pytest.raises(ValueError, match="0x3 pixels"):
        shrunk_crop(np.zeros((3, 0), dtype=np.uint8), 4)


@pytest.mark.parametrize("shape", [(214, 213, 3), (224, 224, 3), (100, 7, 3), (7, 100), (49, 48), (48, 48, 3), (3, 5, 3), (1, 1)])
def test_the_strip_draws_the_same_square_from_the_kept_crop(shape):
    crop = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    kept = shrunk_crop(crop, 48)
    assert max(kept.shape[:2]) == min(48, max(shape[:2]))
    np.testing.assert_array_equal(fit_crop(kept, 48), fit_crop(crop, 48))


# -- example_set's crops ----------------------------------------------------------------------


def _deep_model() -> torch.nn.Module:
    """Four stride-2 3x3 convolutions: the last one's field (31 px, stride 16) covers a 16 px input."""
    torch.manual_seed(0)
    layers = []
    channels = 3
    for _ in range(4):
        layers += [torch.nn.Conv2d(channels, 4, 3, stride=2, padding=1), torch.nn.ReLU()]
        channels = 4
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()


def test_crops_are_kept_small_and_shared_per_example_and_box(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"e{i:02d}.png")
    import cnnreport.report.examples as producer

    reads: list[list[int]] = []
    real = producer.display_images
    monkeypatch.setattr(producer, "display_images", lambda ex, idx: reads.append(list(idx)) or real(ex, idx))
    report = cnnreport.build_report(
        _deep_model(), torch.rand(2, 3, 16, 16), examples=folder, example_channels=4, example_top_k=4, example_crop_px=8,
        progress=False, example_workers=0, attributions=False,
    )
    assert report.options.example_batch_size == 4  # the automatic size on the CPU, as used
    # Every winner read once, alone, in index order.
    assert all(len(r) == 1 for r in reads)
    read = [r[0] for r in reads]
    assert read == sorted(set(read))
    hits = {(lx.section_id, c.channel): c.hits for lx in report.examples.layers for c in lx.channels}
    assert set(read) == {h.index for hs in hits.values() for h in hs}
    # Rebuild the crops the page drew from, against the files themselves.
    from cnnreport.capture.examples import ExampleReducer
    from cnnreport.io.examples import ExampleImages

    examples = ExampleImages(folder, image_size=(16, 16), channels=3)
    model = _deep_model()
    names = [s.name for s in report.sections]
    reducer = ExampleReducer(names, k=4)
    with torch.no_grad(), reducer.attached(model):
        for i in range(12):
            reducer.next_batch([i])
            model(examples[i][0][None])
    _, crops = example_set(reducer.partials, {}, examples, report.sections, report.layers, report.options, str(folder))
    arrays_of: dict[tuple[int, tuple[int, int, int, int]], set[int]] = {}
    for key, arrays in crops.items():
        for hit, arr in zip(hits[key], arrays):
            assert max(arr.shape[:2]) <= 8
            source = np.asarray(Image.open(folder / hit.example).convert("RGB"))
            top, left, height, width = hit.box
            np.testing.assert_array_equal(fit_crop(arr, 8), fit_crop(source[top : top + height, left : left + width], 8))
            arrays_of.setdefault((hit.index, hit.box), set()).add(id(arr))
    # One array per (example, box), shared by every hit that repeats it: the deepest layer's
    # crops are the whole input, so its channels' hits on one example share one.
    uses = {place: sum(1 for key in crops for h in hits[key] if (h.index, h.box) == place) for place in arrays_of}
    assert max(uses.values()) >= 2
    assert all(len(ids) == 1 for ids in arrays_of.values())
    assert len({i for ids in arrays_of.values() for i in ids}) == len(arrays_of)


# -- the page's bytes, a layer at a time ------------------------------------------------------


def _set_of(layers: int, channels: int = 5, hits: int = 3):
    out, crops = [], {}
    rng = np.random.default_rng(7)
    for li in range(layers):
        chans = []
        for c in range(channels):
            hs = [ExampleHit(example=f"x{k}.png", index=k, value=float(9 - k), position=(k, c), box=(0, 0, 30, 20)) for k in range(hits)]
            chans.append(ChannelExamples(channel=c, mean=0.5 + c, zero_fraction=0.1, max_mean=2.0, hits=hs, max_histogram=None))
            crops[(f"s{li}", c)] = [rng.integers(0, 256, (30, 20, 3), dtype=np.uint8) for _ in range(hits)]
        out.append(LayerExamples(section_id=f"s{li}", name=f"layer{li}", call_index=1, channels=chans, means=[0.5] * channels, zero_fractions=[0.1] * channels, dead=[], receptive_field=5, stride=1))
    return ExampleSet(source="data", count=50, layers=out), crops


@pytest.fixture(scope="module")
def base_report():
    torch.manual_seed(1)
    model = torch.nn.Sequential(*[torch.nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(4)], torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.rand(1, 3, 8, 8))
    return cnnreport.build_report(model.eval(), torch.rand(2, 3, 8, 8), progress=False, max_channels=2, max_probes=2, tile_size=8, graph=False, attributions=False)


def test_a_level_measured_layer_by_layer_is_the_page_to_the_byte(base_report):
    ids = [s.id for s in base_report.sections]
    examples, crops = _set_of(len(ids))
    examples = dataclasses.replace(examples, layers=[dataclasses.replace(lx, section_id=i) for lx, i in zip(examples.layers, ids)])
    crops = {(ids[int(k[0][1:])], k[1]): v for k, v in crops.items()}
    for level in example_levels(48, 5):
        drawn = dataclasses.replace(base_report, examples=drawn_examples(examples, crops, level))
        total, strips, _ = _streamed_bytes(examples, crops, level, base_report.sections, base_report.probe_count)
        assert total == example_bytes(drawn), level
        assert strips == sum(4 * -(-len(c.strip.png) // 3) for lx in drawn.examples.layers for c in lx.channels if c.strip is not None)
    # A section not on the page writes nothing, as the page.
    fewer = dataclasses.replace(base_report, sections=base_report.sections[1:])
    level = example_levels(48, 5)[0]
    total, _, _ = _streamed_bytes(examples, crops, level, fewer.sections, fewer.probe_count)
    assert total == example_bytes(dataclasses.replace(fewer, examples=drawn_examples(examples, crops, level)))


def test_counting_stops_past_the_limit_and_the_reserve_is_capped(base_report):
    examples, crops = _set_of(6)
    level = example_levels(48, 5)[0]
    from cnnreport.render.views import examples_markup

    def page_bytes(ex):
        return len(examples_markup(ex).encode("utf-8"))

    full, _, _ = _streamed_bytes(examples, crops, level, None, 0)
    # The count after the first layer: the page with that layer's channels drawn, the others' left out.
    first_drawn = drawn_examples(dataclasses.replace(examples, layers=examples.layers[:1]), crops, level).layers
    after_first = page_bytes(dataclasses.replace(examples, layers=first_drawn + [dataclasses.replace(lx, channels=[]) for lx in examples.layers[1:]]))
    assert _streamed_bytes(examples, crops, level, None, 0, stop_above=after_first - 1)[0] == after_first < full
    assert _streamed_bytes(examples, crops, level, None, 0, stop_above=full)[0] == full
    # The reserve: the examples in full where they are under 40% of the budget, else 40% of it.
    exact = page_bytes(drawn_examples(examples, crops, level))
    assert full == exact
    options = dataclasses.replace(base_report.options, example_crop_px=48)
    assert examples_reserve(examples, crops, options, 8.0) == exact
    tight_mb = exact / 0.4 / 0.97 / (1 << 20) / 2
    assert examples_reserve(examples, crops, options, tight_mb) == int(0.4 * tight_mb * (1 << 20) * 0.97)


def test_a_budget_the_full_drawing_misses_gets_the_same_page_as_drawing_it_whole(base_report, monkeypatch):
    ids = [s.id for s in base_report.sections]
    examples, crops = _set_of(len(ids), channels=5, hits=3)
    examples = dataclasses.replace(examples, layers=[dataclasses.replace(lx, section_id=i) for lx, i in zip(examples.layers, ids)])
    crops = {(ids[int(k[0][1:])], k[1]): v for k, v in crops.items()}
    report = dataclasses.replace(base_report, examples=examples)
    full = draw_examples(report, crops, None)
    from cnnreport.render.views import render_html

    rest, whole = len(render_html(base_report).encode()), len(render_html(full).encode())
    max_mb = (rest + 0.5 * (whole - rest)) / (1 << 20) / 0.97
    # Record every drawing made: the full level is never drawn for all layers at once.
    import cnnreport.report.examples_view as view

    drawings: list[tuple[int, object]] = []
    real = view.drawn_examples
    monkeypatch.setattr(view, "drawn_examples", lambda ex, cr, lv: drawings.append((len(ex.layers), lv)) or real(ex, cr, lv))
    fitted = draw_examples(report, crops, max_mb)
    full_level = example_levels(48, 5)[0]
    assert all(n == 1 for n, lv in drawings if lv == full_level)
    assert len(render_html(fitted).encode()) <= max_mb * (1 << 20)
    note = fitted.examples.notes[-1]
    assert f"the examples in full: {example_bytes(full) / (1 << 20):.2f} MB" in note


def test_the_examples_pass_runs_without_gradients(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"e{i}.png")

    seen: list[tuple[int, bool]] = []  # outside the model: the report puts its own state back

    class Records(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            seen.append((int(x.shape[0]), torch.is_grad_enabled()))
            return self.conv(x).mean(dim=(2, 3))

    cnnreport.build_report(Records().eval(), torch.rand(2, 3, 16, 16), examples=folder, example_batch_size=4, progress=False, example_workers=0, attributions=False)
    # The examples' batches come last: 4, 4 and 2 examples, none with gradients on.
    assert seen[-3:] == [(4, False), (4, False), (2, False)]


def test_a_full_drawing_that_fits_is_drawn_once_and_is_the_unbudgeted_page(base_report, monkeypatch):
    ids = [s.id for s in base_report.sections]
    examples, crops = _set_of(len(ids), channels=2, hits=2)
    # The last layer is on no section of the page: drawn all the same, as the whole drawing was.
    examples = dataclasses.replace(examples, layers=[dataclasses.replace(lx, section_id=i) for lx, i in zip(examples.layers, ids[:-1] + ["elsewhere"])])
    crops = {((ids[:-1] + ["elsewhere"])[int(k[0][1:])], k[1]): v for k, v in crops.items()}
    report = dataclasses.replace(base_report, examples=examples)
    unbudgeted = draw_examples(report, crops, None)
    import cnnreport.report.examples_view as view

    drawings: list[int] = []
    real = view.drawn_examples
    monkeypatch.setattr(view, "drawn_examples", lambda ex, cr, lv: drawings.append(len(ex.layers)) or real(ex, cr, lv))
    fitted = draw_examples(report, crops, 8.0)
    assert drawings == [1] * len(ids)  # each layer once, alone; none drawn again whole
    assert fitted.examples.notes == unbudgeted.examples.notes
    strips = lambda r: [(lx.section_id, c.channel, c.strip.png) for lx in r.examples.layers for c in lx.channels]  # noqa: E731
    assert strips(fitted) == strips(unbudgeted) and len(strips(fitted)) == 2 * len(ids)
    assert example_bytes(fitted) == example_bytes(unbudgeted)
