"""From a model and probes to the rendered page, read back with a real HTML parser."""

from __future__ import annotations

import json

import pytest
import reference_models as rm
import torch
from conftest import (
    ReportPage,
    assert_self_contained,
    decode_data_png,
    quick_options,
    report_figures,
)
from torch import nn

from cnnreport import build_report, generate_report
from cnnreport.render.views import fmt_large, render_html

EVIL = "<script>alert(1)</script>"


def check_page(report, html: str) -> ReportPage:
    """Every structural promise of the page, checked against the Report it came from."""
    page = ReportPage(html)
    assert_self_contained(html)
    # The architecture table: one row per layer, in order, and the totals.
    assert len(page.arch_body_rows) == len(report.layers)
    for cells, row in zip(page.arch_body_rows, report.layers):
        assert cells[0].startswith(row.name), (cells[0], row.name)
        assert cells[1] == row.type
    foot = page.arch_foot_cells
    assert foot[0] == "Total"
    assert f"{report.model.total_params:,}" in foot  # a cell of its own
    assert any(cell.split()[0] == f"{report.model.trainable_params:,}" for cell in foot[2:])
    assert fmt_large(report.model.mult_adds) in foot
    # One section per captured layer call, with the ids the table links to.
    assert page.layer_sections == [s.id for s in report.sections]
    assert len(set(page.ids)) == len(page.ids), "duplicate HTML ids"
    # Every image is an inline PNG of the size its Figure says; shown at its own aspect ratio.
    figs = report_figures(report)
    assert page.images
    for img in page.images:
        image = decode_data_png(img["src"])
        fig = figs.get(img["src"])
        assert fig is not None, f"an image that is no Figure of the report: {img.get('alt')}"
        assert image.size == (fig.width, fig.height), img.get("alt")
        w, h = int(img["width"]), int(img["height"])
        if "strip" not in img.get("alt", "") and "mean activation of each" not in img.get("alt", ""):
            assert abs(h - w * fig.height / fig.width) <= 1, (img.get("alt"), (w, h), image.size)
        assert img.get("alt"), "every image has alt text"
    mosaics = sum(len(s.mosaics) for s in report.sections)
    filters = sum(1 for s in report.sections if s.filters)
    thumbs = sum(1 for p in report.probes if p.thumbnail)
    srcs = [img["src"] for img in page.images]
    assert sum(1 for s in report.sections for m in s.mosaics if m.figure.data_uri() in srcs) == mosaics
    assert sum(1 for s in report.sections if s.filters and s.filters.figure.data_uri() in srcs) == filters
    assert sum(1 for p in report.probes if p.thumbnail and p.thumbnail.data_uri() in srcs) == thumbs
    assert page.title == report.title
    return page


@pytest.mark.parametrize("arch", sorted(rm.ARCHITECTURES))
def test_reference_architectures_end_to_end(arch, photo_probes):
    model = rm.seeded(rm.ARCHITECTURES[arch]())
    report = build_report(model, photo_probes[:2], quick_options(title=f"{arch} test"))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [s.name for s in report.sections] == [n for n in _execution_order(model, photo_probes[:1]) if n in convs]
    for section in report.sections:
        assert len(section.mosaics) == 2
        channels = section.output_shape[0]
        assert all(len(m.tiles) == min(4, channels) for m in section.mosaics)
    assert all(len(p.predictions) == 3 for p in report.probes)
    page = check_page(report, render_html(report))
    assert len(report.attributions) == 2  # one Grad-CAM per probe: every architecture here has a conv to explain
    assert "Grad-CAM" in page.text


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order


def test_demo_model_end_to_end_and_deterministic(demo_model, tmp_path):
    from cnnreport.io.demo import CLASS_NAMES, demo_probe_paths

    paths = [str(p) for p in demo_probe_paths()]
    out = tmp_path / "demo.html"
    report = generate_report(
        demo_model, paths, output=str(out), json=str(tmp_path / "demo.json"), class_names=CLASS_NAMES, progress=False
    )
    html = out.read_text(encoding="utf-8")
    page = check_page(report, html)
    assert len(page.layer_sections) == 3
    assert [p.name for p in report.probes] == [f"digit_{i}.png" for i in range(10)]
    # A trained model (~95% held-out accuracy): nearly every digit probe is read as its digit.
    right = sum(p.predictions[0].label == p.name[6] for p in report.probes)
    assert right >= 9, [(p.name, p.predictions[0].label) for p in report.probes]
    data = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert data["model"]["total_params"] == sum(p.numel() for p in demo_model.parameters())
    assert data["model"]["input_shape"] == [1, 32, 32]
    assert len(data["layers"]) == len(report.layers) and len(data["sections"]) == 3
    assert "base64" not in json.dumps(data)
    again = build_report(demo_model, paths, class_names=CLASS_NAMES, progress=False)
    assert render_html(again) == html, "the same model and probes must give byte-identical pages"


class Evil(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module(EVIL, nn.Conv2d(3, 4, 3, padding=1))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(getattr(self, EVIL)(x).mean((2, 3)))


def test_markup_in_names_is_escaped(probes):
    report = build_report(rm.seeded(Evil()), probes, quick_options(title="<b>bold</b> & co", class_names=["<i>cat</i>", "dog", "x"]))
    assert report.sections[0].name == EVIL
    html = render_html(report)
    assert EVIL not in html and "<b>bold</b>" not in html and "<i>cat</i>" not in html
    page = ReportPage(html)
    assert EVIL in page.text  # shown as text
    assert "<b>bold</b> & co" in page.title
    assert "<i>cat</i>" in page.text
    assert all("alert(1)" not in text or "\\u003c" in text or "&lt;" in text for text in page.script_texts)
    assert page.script_count == len(page.script_texts)
    baseline = ReportPage(render_html(build_report(rm.seeded(rm.ConvInplaceRelu(3, 4)), probes, quick_options())))
    assert page.script_count == baseline.script_count  # no extra <script> element came in
    assert any(EVIL in cells[0] for cells in page.arch_body_rows)


def test_layers_option_and_call_labels_in_the_page(probes):
    model = rm.seeded(rm.SharedConv())
    report = build_report(model, probes, quick_options(layers=["shared"]))
    page = check_page(report, render_html(report))
    assert page.layer_sections == ["sec-shared", "sec-shared-call2"]
    assert "shared (call 2)" in page.text
    assert sum("call 2" in cells[0] for cells in page.arch_body_rows) == 1


def test_tuple_output_model_renders(probes):
    report = build_report(rm.seeded(rm.TupleOutput()), probes, quick_options())
    check_page(report, render_html(report))
    seg = build_report(rm.seeded(rm.SegmentationOutput()), probes, quick_options())
    page = check_page(seg, render_html(seg))
    assert len(page.layer_sections) == 2
