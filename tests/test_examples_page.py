"""The dataset examples on the page (issue 18): strips and histograms drawn within the page's
size budget, the block in each layer section, the overview line, the JSON and Markdown views."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ReportPage, decode_data_png
from PIL import Image
from torch import nn

import cnnreport
from cnnreport.datamodel import ChannelExamples, ExampleHit, ExampleSet, Histogram, LayerExamples
from cnnreport.figures.examples import STRIP_GAP, example_strip, max_histogram, strip_width
from cnnreport.render.views import render_html, render_markdown, report_json
from cnnreport.report.budget import MB, estimate_html_bytes, example_bytes, fit_to_budget
from cnnreport.report.examples_view import draw_examples, example_levels, examples_reserve

REPO = Path(__file__).resolve().parents[1]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


@pytest.fixture(scope="module")
def base_report():
    torch.manual_seed(1)
    probes = torch.rand(2, 3, 16, 16)
    return cnnreport.build_report(tiny_model(), probes, progress=False, max_channels=4, max_probes=2, tile_size=16, graph=False, attributions=False)


def crop(seed: int, h: int, w: int, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)


def make_examples(report, channels: int = 3, hits: int = 4, names=None, dead_on_probes_alive: int | None = None, layers=None):
    """A hand-made example set over the report's sections, with crops of varied sizes."""
    names = names or [f"img_{i:03d}.png" for i in range(hits)]
    out, crops = [], {}
    for li, section in enumerate(layers or report.sections):
        n = section.output_shape[0]
        chans = []
        for c in range(min(channels, n)):
            hs = [ExampleHit(example=names[k % len(names)], index=k, value=float(10 - k - 0.5 * c), position=(k, c), box=(0, 0, 8 + k, 6 + c)) for k in range(hits)]
            edges = list(np.logspace(-3, 3, 25))
            counts = [0] * 24
            counts[12 + c % 3] = hits
            counts[14] += 1
            chans.append(ChannelExamples(channel=c, mean=0.25 + c, zero_fraction=0.1 * c, max_mean=5.0 + c, hits=hs, max_histogram=Histogram(edges=edges, counts=counts)))
            crops[(section.id, c)] = [crop(100 * li + 10 * c + k, 8 + 3 * k, 6 + 2 * c, grey=(k % 2 == 1)) for k in range(hits)]
        means = [0.5] * n
        zeros = [0.2] * n
        out.append(LayerExamples(section_id=section.id, name=section.name, call_index=section.call_index, channels=chans, means=means, zero_fractions=zeros, dead=[n - 1], receptive_field=5, stride=1))
    return ExampleSet(source="data/<val>", count=123, layers=out), crops


# -- figures ---------------------------------------------------------------------------------


def test_strip_size_and_alt():
    crops = [crop(1, 30, 10), crop(2, 5, 5, grey=True), crop(3, 100, 200)]
    fig = example_strip(crops, 24, alt="channel 3: three crops")
    assert (fig.width, fig.height) == (3 * 24 + 2 * STRIP_GAP, 24) == (strip_width(3, 24), 24)
    image = Image.open(io.BytesIO(fig.png))
    assert image.size == (fig.width, fig.height) and image.mode == "RGB"
    assert fig.alt == "channel 3: three crops"
    assert example_strip(crops, 24).png == fig.png  # deterministic bytes
    assert "example crops" in example_strip(crops, 24).alt
    grey = example_strip([crop(4, 9, 9, grey=True)], 48)
    assert Image.open(io.BytesIO(grey.png)).mode == "L" and grey.width == 48


def test_max_histogram_draws_the_occupied_bins_only():
    edges = list(np.logspace(-2, 2, 41))
    counts = [0] * 40
    counts[20], counts[23] = 3, 1
    fig = max_histogram(Histogram(edges=edges, counts=counts))
    assert (fig.width, fig.height) == (120, 32) and len(fig.png) < 400
    assert fig.caption == f"bins {edges[20]:.3g} … {edges[24]:.3g}"
    # The fixed bins start with "below zero": said in words, not as -inf.
    below = max_histogram(Histogram(edges=[-np.inf, 0.0, 0.0, 1.0], counts=[2, 0, 1]))
    assert below.caption == "bins below 0 … 1"
    assert max_histogram(Histogram(edges=edges, counts=[0] * 40)) is None


def test_levels_step_down_in_order():
    levels = example_levels(48, 16)
    assert [(lv.crop_px, lv.channels) for lv in levels[:6]] == [(48, 16), (32, 16), (24, 16), (24, 8), (24, 4), (24, 2)]
    assert levels[6].crop_px is None and levels[6].channels == 16 and not levels[-1].histograms


# -- the page ----------------------------------------------------------------------------------


def with_examples(report, max_html_mb=None, **kwargs):
    ex, crops = make_examples(report, **kwargs)
    return draw_examples(dataclasses.replace(report, examples=ex), crops, max_html_mb), crops


def test_no_examples_leaves_the_page_alone(base_report):
    assert base_report.examples is None
    assert draw_examples(base_report, {}, 8.0) is base_report
    html = render_html(base_report)
    assert "examples" not in html and "ex-table" not in html
    assert example_bytes(base_report) == 0
    assert examples_reserve(None, {}, base_report.options, 8.0) == 0


def test_a_block_per_section_with_the_numbers(base_report):
    report, _ = with_examples(base_report, names=["<b>bold</b>.png", "a&b.jpg", "plain.png", "x.png"])
    html = render_html(report)
    page = ReportPage(html)
    blocks = [i for i in page.ids if i.endswith("-examples")]
    assert blocks == [f"{s.id}-examples" for s in base_report.sections]
    assert "examples" in page.ids  # the overview line
    assert '<a href="#examples">Dataset examples' in html  # the nav entry
    # Names are text, not markup.
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;.png" in html and "a&amp;b.jpg" in html
    assert "<b>bold</b>.png" in page.text and "data/<val>" in page.text
    assert "123 examples from data/<val>" in page.text
    assert "Over 123 examples" in page.text
    # Strips: one image per shown channel, the size of its crops, alt naming the examples.
    strips = [im for im in page.images if "the 4 examples that excite it most" in im["alt"]]
    assert len(strips) == 3 * len(base_report.sections)
    for im in strips:
        assert decode_data_png(im["src"]).size == (4 * 48 + 3 * STRIP_GAP, 48) == (int(im["width"]), int(im["height"]))
        assert "strongest first: <b>bold</b>.png (" in im["alt"]
    hists = [im for im in page.images if "its largest value per example" in im["alt"]]
    assert len(hists) == 3 * len(base_report.sections)
    # The statistics beside the probes' own.
    section = base_report.sections[0]
    block = html[html.index(f'id="{section.id}-examples"') :]
    block = block[: block.index("</details>")]
    from cnnreport.render.views import fmt_float, fmt_pct

    assert f"the {base_report.probe_count} probes</th><td class=\"n\">{fmt_float(section.stats.mean)}</td>" in block
    assert f"the 123 examples</th><td class=\"n\">{fmt_float(0.5)}</td><td class=\"n\">{fmt_pct(20.0)}</td>" in block
    assert "1 of 8</td>" in block and "Constant over all 123 examples: 7." in block
    assert "at (2, 1)" in block  # a hit's position


def test_dead_on_probes_alive_on_the_set_is_shown(base_report):
    section = base_report.sections[0]
    dead = [0, 2]
    fake = dataclasses.replace(section, channels=dataclasses.replace(section.channels, dead=dead))
    report = dataclasses.replace(base_report, sections=[fake, *base_report.sections[1:]])
    report, _ = with_examples(report)
    html = render_html(report)
    block = html[html.index(f'id="{section.id}-examples"') :]
    block = block[: block.index("</details>")]
    text = ReportPage(block).text
    assert "2 channels are constant on the probes but vary over the examples" in text and ": 0, 2." in text
    assert block.count("dead on probes only") == 2  # channels 0 and 2 are among those shown
    # The other section's probes have no constant channel: its block flags none.
    assert not base_report.sections[1].channels.dead
    other = html[html.index(f'id="{base_report.sections[1].id}-examples"') :]
    assert "dead on probes only" not in other[: other.index("</details>")]


def test_json_view_is_valid_and_carries_the_hits(base_report):
    jsonschema = pytest.importorskip("jsonschema")
    report, _ = with_examples(base_report)
    data = json.loads(report_json(report))
    schema = json.loads((REPO / "docs" / "schema" / "report.schema.json").read_text(encoding="utf-8"))
    errors = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(data))
    assert errors == []
    ch = data["examples"]["layers"][0]["channels"][1]
    assert ch["hits"][0] == {"example": "img_000.png", "index": 0, "value": 9.5, "position": [0, 1], "box": [0, 0, 8, 7]}
    assert ch["strip"]["width"] == 4 * 48 + 3 * STRIP_GAP and ch["max_histogram"]["figure"]["height"] == 32


def test_markdown_line(base_report):
    report, _ = with_examples(base_report, names=["<b>x</b>.png"])
    md = render_markdown(report)
    assert "### Dataset examples" in md
    assert "123 examples from" in md
    section = base_report.sections[0]
    rows = [line for line in md.splitlines() if line.startswith(f"| `{section.label}` | 3 |")]
    assert rows == [f"| `{section.label}` | 3 | 0.5 | 20.0% | 1 of 8 | `<b>x</b>.png` (10, channel 0) |"]  # a code span: the name stays text
    assert "data/\\<val\\>" not in md and "`data/<val>`" in md


# -- the budget --------------------------------------------------------------------------------


def test_estimate_matches_the_page(base_report):
    """The examples' bytes as the budget counts them are the page's growth, to the byte or near."""
    report, _ = with_examples(base_report)
    grown = len(render_html(report).encode()) - len(render_html(base_report).encode())
    counted = example_bytes(report)
    assert abs(counted - grown) <= 0.005 * grown, (counted, grown)
    assert estimate_html_bytes(report) - estimate_html_bytes(base_report) == counted


def test_budget_steps_down_and_says_so(base_report):
    # Many layers x 16 channels x 8 crops: the same sections repeated under new ids.
    many = []
    for k in range(6):
        for s in base_report.sections:
            many.append(dataclasses.replace(s, id=f"{s.id}-r{k}", name=f"{s.name}.r{k}"))
    big = dataclasses.replace(base_report, sections=many)
    ex, crops = make_examples(big, channels=16, hits=8)
    crops = {k: [np.asarray(Image.fromarray(crop(hash(k) % 1000 + i, 64, 64)).resize((64, 64))) for i in range(8)] for k in crops}
    full = draw_examples(dataclasses.replace(big, examples=ex), crops, None)
    full_size = len(render_html(full).encode())
    rest = len(render_html(big).encode())
    max_mb = (rest + 0.3 * (full_size - rest)) / MB / 0.97
    fitted = draw_examples(dataclasses.replace(big, examples=ex), crops, max_mb)
    notes = fitted.examples.notes
    assert len(notes) == 1 and f"within {max_mb:g} MB" in notes[0], notes
    assert "instead of 48" in notes[0] or "channels per layer" in notes[0] or "left out" in notes[0]
    size = len(render_html(fitted).encode())
    assert size <= max_mb * MB, (size, max_mb * MB)
    # Smaller budgets step further down, to no strips at all, the hits still listed.
    tiny = draw_examples(dataclasses.replace(big, examples=ex), crops, (rest + 30_000) / MB / 0.97)
    assert all(c.strip is None for lx in tiny.examples.layers for c in lx.channels)
    assert tiny.examples.layers[0].channels and tiny.examples.layers[0].channels[0].hits
    assert "left out" in tiny.examples.notes[0]


def test_reserve_and_fit_to_budget(base_report):
    ex, crops = make_examples(base_report, channels=4, hits=8)
    reserve = examples_reserve(ex, crops, base_report.options, 8.0)
    full = draw_examples(dataclasses.replace(base_report, examples=ex), crops, None)
    assert abs(reserve - example_bytes(full)) < 0.02 * reserve  # the probes' side is a few hundred bytes a layer
    assert examples_reserve(ex, crops, base_report.options, 0.01) == int(0.4 * 0.01 * MB * 0.97)
    # A reserve larger than what the rest leaves makes fit_to_budget reduce; 0 changes nothing.
    assert fit_to_budget(base_report, None, 8.0, reserve_bytes=0) is base_report
