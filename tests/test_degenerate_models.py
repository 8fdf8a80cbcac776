"""Degenerate models and options get a report that agrees with itself: the root module is a layer
like any other (a model that *is* one Conv2d gets its section), and every note about a missing
section or missing predictions states the real reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ReportPage, quick_options
from torch import nn

from cnnreport import build_report
from cnnreport.errors import OptionError


def probes(n: int = 2, size: int = 10) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def overview_card(html: str, title: str) -> str:
    start = html.index(f"<dt>{title}</dt>")
    return ReportPage(html[start : html.index("</div>", start)]).text.removeprefix(title).strip()


def test_a_model_that_is_one_conv2d_gets_its_section():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 3)
    report = build_report(model, probes(), quick_options())
    html = report.to_html()
    data = report.to_dict()
    assert [(s["name"], s["type"], s["output_shape"]) for s in data["sections"]] == [("", "Conv2d", [5, 8, 8])]
    (section,) = report.sections
    assert section.label == "(model)"
    # Its mean is the convolution's, computed here in float64.
    with torch.no_grad():
        out = torch.nn.functional.conv2d(probes().double(), model.weight.double(), model.bias.double())
    assert section.stats.mean == pytest.approx(float(out.mean()), rel=1e-5)
    assert section.filters is not None and section.filters.total_filters == 5
    page = ReportPage(html)
    assert page.layer_sections == [section.id]
    assert len(page.ids) == len(set(page.ids))  # the empty module path still gives a unique id
    # The architecture table's root row links to the section, and the link resolves.
    (root_row,) = [row for row in data["layers"] if row["depth"] == 0]
    assert root_row["name"] == "(model)" and root_row["section_id"] == section.id
    assert f'href="#{section.id}"' in html
    assert overview_card(html, "Convolutions") == "1"
    assert not any("no convolution" in note for note in report.notes)
    assert not any(a.kind.value == "no_convolution" for a in report.alerts)
    assert "(model)" in ReportPage(html[html.index(f'<section id="{section.id}"') :]).text


def test_layer_types_find_the_root_module():
    report = build_report(nn.Conv2d(3, 4, 3), probes(), quick_options(layer_types=["Conv2d"]))
    assert [s.name for s in report.sections] == [""]
    with pytest.raises(OptionError) as info:
        build_report(nn.Conv2d(3, 4, 3), probes(), quick_options(layer_types=["ReLU"]))
    assert "its types are: Conv2d" in str(info.value)


def test_a_glob_that_matches_nothing_on_a_bare_layer_says_what_would():
    with pytest.raises(OptionError) as info:
        build_report(nn.Conv2d(3, 4, 3), probes(), quick_options(layers=["conv*"]))
    assert "the model has no submodules" in str(info.value) and "'*'" in str(info.value)


def test_excluding_every_layer_says_so_not_that_there_is_no_convolution():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    report = build_report(model, probes(), quick_options(exclude_layers=["*"]))
    assert report.sections == []
    assert "--exclude-layers '*' excluded all 2 of the model's convolutions: no activation sections." in report.notes
    assert not any("no convolution" in note for note in report.notes)
    chosen = build_report(model, probes(), quick_options(layer_types=["ReLU"], exclude_layers=["1"]))
    assert "--exclude-layers '1' excluded every layer that --layer-types ReLU chose: no activation sections." in chosen.notes
    bare = build_report(nn.Conv2d(3, 4, 3), probes(), quick_options(exclude_layers=["*"]))
    assert "--exclude-layers '*' excluded the model's only convolution: no activation sections." in bare.notes


def test_a_model_without_convolutions_still_says_that():
    model = nn.Sequential(nn.Flatten(), nn.Linear(300, 3))
    report = build_report(model, probes(), quick_options())
    assert "The model has no convolution layer: no activation sections (choose layers with --layers or --layer-types)." in report.notes


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.spare = nn.Conv2d(3, 4, 3)  # never called
        self.probe_hook = Nothing()

    def forward(self, x):
        self.probe_hook(x)
        return self.conv(x).mean((2, 3))


class Nothing(nn.Module):
    def forward(self, x):
        return None


def test_chosen_layers_without_activations_are_named_with_the_reason():
    report = build_report(Unused(), probes(), quick_options(layers=["spare", "probe_hook", "conv"]))
    assert [s.name for s in report.sections] == ["conv"]
    assert (
        "No activation section where 2 of the 3 chosen layers have activations to show: "
        "spare (never called by the forward pass); probe_hook (returned None)." in report.notes
    )


class ReturnsNone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)
        return None


class ReturnsScalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).sum()


@pytest.mark.parametrize(
    "model, said",
    [(ReturnsNone(), "returned None"), (ReturnsScalar(), "returned a scalar (a 0-dimensional tensor)")],
    ids=["none", "scalar"],
)
def test_an_output_without_scores_is_explained(model, said):
    report = build_report(model, probes(), quick_options())
    html = report.to_html()
    assert f"No predictions or Grad-CAM: the model's forward {said}, not an (N, classes) tensor of class scores." in report.notes
    assert overview_card(html, "Output") == "–"
    assert said in ReportPage(html).text
    assert [s.name for s in report.sections] == ["conv"]  # the layers are still reported
    assert all(p.predictions == [] for p in report.probes)


def test_a_classifier_gets_no_output_note():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    report = build_report(model, probes(), quick_options())
    assert not any(note.startswith("No predictions") for note in report.notes)
    assert [len(p.predictions) for p in report.probes] == [3, 3]


def test_cli_bare_conv2d_with_layer_types(tmp_path):
    probes_file = tmp_path / "p.pt"
    torch.save(probes(), probes_file)
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    args = [sys.executable, "-m", "cnnreport.cli", "generate", "torch.nn:Conv2d", "--model-arg", "in_channels=3",
            "--model-arg", "out_channels=4", "--model-arg", "kernel_size=3", "--probes", str(probes_file), "-o", str(out),
            "--json", str(js), "-q", "--layer-types", "Conv2d"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(js.read_text(encoding="utf-8"))
    assert [(s["name"], s["type"]) for s in data["sections"]] == [("", "Conv2d")]
    assert ReportPage(out.read_text(encoding="utf-8")).layer_sections == [data["sections"][0]["id"]]
    excluded = subprocess.run([*args[:-2], "--exclude-layers", "*"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert excluded.returncode == 0, excluded.stderr
    notes = json.loads(js.read_text(encoding="utf-8"))["notes"]
    assert "--exclude-layers '*' excluded the model's only convolution: no activation sections." in notes


def test_findings_about_the_root_layer_name_it_and_link_to_its_section():
    model = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        model.weight[1] = float("nan")
    report = build_report(model, probes(), quick_options())
    (section,) = report.sections
    (alert,) = [a for a in report.alerts if a.kind.value == "non_finite"]
    assert (alert.layer, alert.section_id) == ("(model)", section.id)
    assert alert.message.startswith("weight has 27 NaN of 108 values")


def test_a_torchscript_model_that_is_one_conv2d_shows_its_filters():
    scripted = torch.jit.script(nn.Conv2d(3, 4, 3))
    report = build_report(scripted, probes(), quick_options())
    assert [(s.name, s.label, s.filters.total_filters) for s in report.sections] == [("", "(model)", 4)]


def test_a_one_column_output_is_explained():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    report = build_report(model, probes(), quick_options())
    assert (
        "No predictions or Grad-CAM: the model's forward returned a tensor of shape 2x1 (one value per probe, "
        "not a score per class), not an (N, classes) tensor of class scores." in report.notes
    )
