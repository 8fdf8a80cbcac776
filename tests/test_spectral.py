"""Layer quality without data (``--spectral``): each layer's weight-spectrum exponent alpha.

The numbers are WeightWatcher's: the real ``weightwatcher`` package analyses the same models
and the alphas must agree within 0.01 on every layer (and the two must pick the same layers).
The maximum-likelihood formula is checked on literal arrays worked out by hand, the fit on a
sample drawn from a Pareto law of known exponent, the pooled eigenvalues on kernels whose
eigenvalues are written out, and the report's views (JSON, page, Markdown, alerts, CLI) on
tiny models; without ``spectral`` nothing is computed.
"""

from __future__ import annotations

import json
import logging
import math
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import cnnreport
from cnnreport.analysis.spectral import (
    fit_power_law,
    layer_spectra,
    pooled_eigenvalues,
    power_law_alpha,
)
from cnnreport.render.views import render_markdown, report_json

QUIET = dict(progress=False, max_channels=2, max_probes=2, tile_size=8, attributions=False, graph=False)


# -- the maximum-likelihood exponent, by hand ----------------------------------------------------


def test_the_mle_exponent_of_a_literal_array_is_the_closed_form():
    x = torch.tensor([8.0, 1.0, 4.0, 2.0], dtype=torch.float64)  # unsorted on purpose
    # xmin 1: sum log(x / 1) = 0 + ln 2 + ln 4 + ln 8 = 6 ln 2; alpha = 1 + 4 / (6 ln 2)
    assert power_law_alpha(x, 1.0) == pytest.approx(1.9617966939259756, rel=1e-14)
    # xmin 2: the tail is 2, 4, 8; sum log(x / 2) = 0 + ln 2 + ln 4 = 3 ln 2; alpha = 1 + 1 / ln 2
    assert power_law_alpha(x, 2.0) == pytest.approx(2.4426950408889634, rel=1e-14)


def test_the_fit_finds_the_exponent_of_a_pareto_sample():
    # x = xmin * U^(-1 / (alpha - 1)) is Pareto with density ~ x^-alpha above xmin: alpha = 3.
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(6000, generator=gen, dtype=torch.float64)
    sample = 0.5 * u.pow(-1.0 / (3.0 - 1.0))
    fit = fit_power_law(sample[torch.randperm(6000, generator=gen)])
    assert fit.count == 6000
    # The whole-sample MLE's spread is (alpha - 1) / sqrt(n) = 0.026; a KS-chosen tail is shorter.
    assert abs(fit.alpha - 3.0) < 0.12
    assert fit.xmin >= 0.5
    assert fit.tail == int((sample >= fit.xmin).sum())


def _ww_fit_loop(values: list[float]) -> tuple[float, float]:
    """WeightWatcher's fit written out as a plain float64 loop (its WWFit, both branches)."""
    x = sorted(v for v in values if v > 1e-5)
    count = len(x)
    logs = [math.log(v) for v in x]
    small = count < 20
    best = None
    for i in range(count - 1):
        n = count - i
        s = sum(logs[i:]) - n * logs[i]
        if small and (n < 8 or s <= 1e-12):
            continue
        alpha = 1 + (n - 1) / s if small else 1 + n / s
        d = max(abs(1 - (x[i + k] / x[i]) ** (1 - alpha) - k / n) for k in range(n))
        score = d - 0.868 / math.sqrt(n) if small else d
        if best is None or score < best[0]:
            best = (score, alpha, x[i])
    if best is None:  # small sample, no tail of 8: the whole sample
        s = sum(logs) - count * logs[0]
        return 1 + (count - 1) / s, x[0]
    return best[1], best[2]


@pytest.mark.parametrize("count", [5, 12, 19, 20, 47, 300])
def test_the_fit_is_weightwatchers_loop_on_either_side_of_the_small_sample_cutoff(count):
    gen = torch.Generator().manual_seed(count)
    values = (torch.rand(count, generator=gen, dtype=torch.float64) * 3).exp() * 1e-3
    fit = fit_power_law(values)
    alpha, xmin = _ww_fit_loop(values.tolist())
    assert (fit.alpha, fit.xmin) == (pytest.approx(alpha, rel=1e-9), xmin)


def test_nothing_to_fit_is_none():
    assert fit_power_law(torch.tensor([1.0, 1e-6, 0.0], dtype=torch.float64)) is None  # one value above 1e-5
    assert fit_power_law(torch.full((9,), 0.25, dtype=torch.float64)) is None  # a small sample without spread


# -- the pooled eigenvalues ------------------------------------------------------------------------


def test_a_convolutions_kernel_positions_are_pooled_and_halved():
    # weight (out 2, in 2, 1, 2): kernel position 0 is [[3, 0], [0, 4]], position 1 is [[1, 1], [1, 1]].
    w = torch.zeros(2, 2, 1, 2, dtype=torch.bfloat16)
    w[:, :, 0, 0] = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    w[:, :, 0, 1] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    # W^T W: diag(9, 16) and [[2, 2], [2, 2]] (eigenvalues 0 and 4); times 1/2 for a convolution.
    evals = pooled_eigenvalues(w, conv=True)
    assert evals.dtype == torch.float64
    assert evals.tolist() == pytest.approx([0.0, 2.0, 4.5, 8.0], abs=1e-12)


def test_a_linear_layers_eigenvalues_are_its_squared_singular_values_unscaled():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float16)  # 3 out x 2 in
    assert pooled_eigenvalues(w, conv=False).tolist() == pytest.approx([1.0, 4.0], abs=1e-12)


def test_a_spectrum_too_large_for_the_gram_matrix_comes_from_singular_values():
    # sigma 1e4 and 1e-2: eigenvalues 1e8 and 1e-4, 12 orders apart; W^T W in float64 keeps
    # only about 16 digits of 1e8, so its small eigenvalue would be noise at 1e-8.
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    w = q @ torch.diag(torch.tensor([1e4, 1e-2, 1.0, 1.0], dtype=torch.float64)) @ q.T
    evals = pooled_eigenvalues(w, conv=False)
    assert evals[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert evals[-1].item() == pytest.approx(1e8, rel=1e-12)


# -- which layers, and why not ----------------------------------------------------------------------


def test_layers_outside_weightwatchers_size_limits_say_why():
    model = nn.ModuleDict(
        {
            "seven": nn.Linear(9, 7),  # 7 eigenvalues: below 8
            "eight": nn.Linear(8, 8),  # exactly 8: fitted
            "long": nn.Conv2d(16, 16, (1, 1000)),  # 16 x 1000 = 16,000 eigenvalues: above 15,000
            "bn": nn.BatchNorm2d(4),
        }
    )
    torch.manual_seed(0)
    found = {s.name: s for s in layer_spectra(model)}
    assert list(found) == ["seven", "eight", "long"]
    assert (found["seven"].alpha, found["seven"].note) == (None, "7 eigenvalues: fewer than 8 to fit")
    assert found["eight"].alpha is not None and found["eight"].eigenvalues == 8
    assert found["long"].alpha is None
    assert found["long"].note == "16,000 eigenvalues: more than 15,000, left out as WeightWatcher does"
    assert found["long"].matrices == 1000


def test_non_finite_and_uninitialised_weights_are_not_fitted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    with torch.no_grad():
        model[0].weight[1, 0, 0, 0] = float("nan")
    found = layer_spectra(model)
    assert [(s.name, s.alpha, s.note) for s in found] == [("0", None, "NaN or Inf weights: no spectrum")]


# -- the real WeightWatcher ------------------------------------------------------------------------


def _weightwatcher_alphas(model: nn.Module) -> dict[str, float]:
    ww = pytest.importorskip("weightwatcher", reason="weightwatcher is not installed (pip install -e '.[test]')")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    details = ww.WeightWatcher(model=model).analyze()
    return {str(name): float(alpha) for name, alpha in zip(details["longname"], details["alpha"])}


class Assorted(nn.Module):
    """Every shape case ww's slicing treats differently; weights only, never run."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3)  # out > in, 9 positions
        self.odd_narrow = nn.Conv2d(48, 16, 3)  # out < in, odd positions: ww swaps its sides
        self.even_narrow = nn.Conv2d(40, 12, 2)  # out < in, even positions
        self.pointwise = nn.Conv2d(64, 8, 1)  # 8 eigenvalues: ww's small-sample fit
        self.wide_kernel = nn.Conv2d(1, 3, 5)  # out + in < kh + kw: ww reads it the other way round
        self.skipped = nn.Conv2d(4000, 8, 2)  # ww counts 4000 x 4 = 16,000 eigenvalues: left out
        self.head = nn.Linear(96, 30)
        self.out = nn.Linear(30, 10)


def _agree(model: nn.Module) -> dict[str, tuple[float, float]]:
    expected = _weightwatcher_alphas(model)
    ours = {s.name: s.alpha for s in layer_spectra(model) if s.alpha is not None}
    assert sorted(ours) == sorted(expected)  # the same layers fitted
    return {name: (ours[name], expected[name]) for name in ours}


def test_alphas_match_weightwatcher_on_a_random_model_of_every_shape():
    torch.manual_seed(7)
    pairs = _agree(Assorted())
    assert "skipped" not in pairs and len(pairs) == 7
    for name, (ours, theirs) in pairs.items():
        assert abs(ours - theirs) < 0.01, (name, ours, theirs)


def test_alphas_match_weightwatcher_on_the_trained_demo():
    from cnnreport.io.demo import load_demo_model

    pairs = _agree(load_demo_model())
    assert sorted(pairs) == ["classifier", "features.0", "features.3", "features.7"]  # three convolutions and the head
    for name, (ours, theirs) in pairs.items():
        assert abs(ours - theirs) < 0.01, (name, ours, theirs)


# -- the report ------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.wide = nn.Conv2d(16, 32, 3, padding=1)
        self.tiny = nn.Conv2d(32, 2, 1)  # 2 eigenvalues: not fitted
        self.fc = nn.Linear(2, 10)

    def forward(self, x):
        x = self.tiny(torch.relu(self.wide(torch.relu(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def spectral_report():
    torch.manual_seed(0)
    model = Net().eval()
    return model, cnnreport.build_report(model, torch.rand(2, 3, 10, 12), spectral=True, **QUIET)


def test_without_spectral_nothing_is_computed_or_shown(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a spectrum was computed without spectral=True")

    monkeypatch.setattr("cnnreport.analysis.spectral.layer_spectrum", refuse)
    torch.manual_seed(0)
    report = cnnreport.build_report(Net().eval(), torch.rand(2, 3, 10, 12), **QUIET)
    assert report.spectral is None
    assert json.loads(report_json(report))["spectral"] is None
    assert 'id="spectral"' not in report.to_html()
    assert "Layer quality" not in render_markdown(report)
    assert [a.kind.value for a in report.alerts if a.kind.value == "spectral_alpha"] == []


def test_the_json_carries_alpha_per_layer_as_the_analysis_gives_it(spectral_report):
    model, report = spectral_report
    data = json.loads(report_json(report))["spectral"]
    assert [row["name"] for row in data] == ["conv", "wide", "tiny", "fc"]
    direct = {s.name: s.alpha for s in layer_spectra(model)}
    assert [row["alpha"] for row in data] == [direct["conv"], direct["wide"], None, None]
    assert data[2]["note"] == "2 eigenvalues: fewer than 8 to fit"


def test_a_layer_outside_the_band_gets_an_info_alert_linked_to_its_section(spectral_report):
    _, report = spectral_report
    alphas = {s.name: s.alpha for s in report.spectral}
    outside = [name for name in ("conv", "wide") if not 2.0 <= alphas[name] <= 6.0]
    found = [(a.layer, a.severity.value, a.section_id, a.value) for a in report.alerts if a.kind.value == "spectral_alpha"]
    assert found == [(name, "info", f"sec-{name}", alphas[name]) for name in outside]
    assert outside == ["wide"]  # seeded: the random 16 -> 32 convolution's alpha is above 6


def test_the_band_is_the_options(spectral_report):
    model, _ = spectral_report
    report = cnnreport.build_report(model, torch.rand(2, 3, 10, 12), spectral=True, spectral_alpha_low=1.0, spectral_alpha_high=50.0, **QUIET)
    assert [a for a in report.alerts if a.kind.value == "spectral_alpha"] == []


def test_a_spectrum_needs_the_minimum_eigenvalue_count_to_alert(spectral_report):
    model, report = spectral_report
    wide = next(s for s in report.spectral if s.name == "wide")
    assert wide.eigenvalues == 16 * 9  # min(16 in, 32 out) per kernel position, 3 x 3 positions

    def alerted(minimum):
        again = cnnreport.build_report(model, torch.rand(2, 3, 10, 12), spectral=True, spectral_min_eigenvalues=minimum, **QUIET)
        return [a.layer for a in again.alerts if a.kind.value == "spectral_alpha"]

    assert alerted(144) == ["wide"]  # at the count: read
    assert alerted(145) == []  # one short: too small a sample to alert on, though alpha is shown


def test_the_trained_demo_alerts_only_where_the_spectrum_is_large_enough():
    from cnnreport.io.demo import load_demo_model

    report = cnnreport.build_report(load_demo_model(), torch.rand(2, 1, 8, 8), spectral=True, **QUIET)
    counts = {s.name: s.eigenvalues for s in report.spectral}
    # 1 input channel x 9 positions; 16 x 9; 32 x 9; the 10-class classifier's 10 singular values.
    assert counts == {"features.0": 9, "features.3": 144, "features.7": 288, "classifier": 10}
    alerts = [a for a in report.alerts if a.kind.value == "spectral_alpha"]
    # features.0 (alpha 9.4 on 9 eigenvalues) and the classifier (1.6 on 10) are outside the band
    # but too small to read; features.7's alpha below 2 over a tail of 149 is a reading.
    assert [a.layer for a in alerts] == ["features.7"]
    seven = next(s for s in report.spectral if s.name == "features.7")
    assert alerts[0].message.startswith(f"alpha {seven.alpha:.2f} ± {(seven.alpha - 1) / seven.tail ** 0.5:.2f} (a tail of {seven.tail} of 288 eigenvalues), below 2")
    assert 1.7 < seven.alpha < 1.9 and seven.tail == 149


def test_the_page_draws_one_bar_per_fitted_layer_and_the_markdown_one_line(spectral_report):
    _, report = spectral_report
    html = report.to_html()
    section = html[html.index('<section id="spectral"') :]
    section = section[: section.index("</section>")]
    bars = re.findall(r'<rect class="sp-bar (sp-\w+)"', section)
    assert len(bars) == 2
    assert len(re.findall(r'<rect class="sp-none"', section)) == 2  # tiny and fc: no alpha
    assert 'href="#spectral"' in html
    lines = [line for line in render_markdown(report).splitlines() if line.startswith("| Layer quality")]
    assert len(lines) == 1
    assert "2 of 4 layers fitted" in lines[0]


def test_the_cli_flag_turns_it_on(tmp_path):
    from cnnreport.cli import main

    out = tmp_path / "demo.json"
    result = CliRunner().invoke(main, ["demo", "--spectral", "--quiet", "--no-graph", "--no-attributions", "-o", str(tmp_path / "demo.html"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["options"]["spectral"] is True
    assert [row["type"] for row in data["spectral"]] == ["Conv2d"] * 3 + ["Linear"]


def test_the_chart_colours_each_bar_by_the_band_and_escapes_names():
    from cnnreport.datamodel import LayerSpectrum
    from cnnreport.figures.spectral_svg import alpha_chart

    def layer(name, alpha, note=""):
        return LayerSpectrum(name=name, type="Conv2d", alpha=alpha, xmin=None, ks_distance=None, eigenvalues=9, tail=9, matrices=9, note=note)

    spectra = [layer("a<b&c", 1.5), layer("ok", 3.0), layer("high", 9.0), layer("none", None, "too few")]
    svg = alpha_chart(spectra, low=2.0, high=6.0)
    assert re.findall(r'<rect class="sp-bar (sp-\w+)"', svg) == ["sp-low", "sp-ok", "sp-high"]
    assert "a&lt;b&amp;c (Conv2d): alpha 1.50, possibly over-fitted" in svg and "a<b" not in svg
    # The axis tops at 10 (9 rounded up to even) over 180 px: alpha 3 is 54 px tall, 9 is 162.
    heights = [float(h) for h in re.findall(r'<rect class="sp-bar [\w-]+" x="\d+" y="[\d.]+" width="\d+" height="([\d.]+)"', svg)]
    assert heights == [27.0, 54.0, 162.0]
    assert "none (Conv2d): no alpha: too few" in svg
    assert alpha_chart(spectra, low=2.0, high=6.0) == svg  # same spectra, same bytes
    assert alpha_chart([layer("none", None)]) == ""


def _spectrum(name, alpha, eigenvalues=100, tail=25):
    from cnnreport.datamodel import LayerSpectrum

    return LayerSpectrum(name=name, type="Conv2d", alpha=alpha, xmin=0.1, ks_distance=0.05, eigenvalues=eigenvalues, tail=tail, matrices=9)


def test_spectral_alerts_on_literal_spectra_band_edges_links_and_figures():
    from cnnreport.analysis.spectral import spectral_alerts
    from cnnreport.datamodel import ReportOptions

    options = ReportOptions(spectral_alpha_low=2.0, spectral_alpha_high=6.0, spectral_min_eigenvalues=50)
    spectra = [
        _spectrum("at_low", 2.0),
        _spectrum("at_high", 6.0),
        _spectrum("low", 1.5),  # tail 25: standard error (1.5 - 1) / 5 = 0.10
        _spectrum("high", 7.0, tail=4),  # (7 - 1) / 2 = 3.00
        _spectrum("small", 9.0, eigenvalues=49),
        _spectrum("unfitted", None),
    ]
    alerts = spectral_alerts(spectra, options, section_ids={"sec-low"})
    assert [(a.layer, a.value, a.section_id, a.severity.value, a.kind.value) for a in alerts] == [
        ("low", 1.5, "sec-low", "info", "spectral_alpha"),
        ("high", 7.0, "", "info", "spectral_alpha"),
    ]
    assert alerts[0].message == "alpha 1.50 ± 0.10 (a tail of 25 of 100 eigenvalues), below 2: the layer may be over-fitted (its weight spectrum's tail is unusually heavy)"
    assert alerts[1].message == "alpha 7.00 ± 3.00 (a tail of 4 of 100 eigenvalues), above 6: the layer looks untrained or random (its weight spectrum has almost no heavy tail)"
    # A tail of one eigenvalue: the error is alpha - 1 itself.
    one = spectral_alerts([_spectrum("one", 1.5, tail=1)], options)[0]
    assert "alpha 1.50 ± 0.50 (a tail of 1 of 100" in one.message
    assert spectral_alerts([_spectrum("edge", 50.0, eigenvalues=50)], options)[0].layer == "edge"
