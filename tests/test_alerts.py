"""Health alerts: each broken model raises exactly the expected kind on the expected layer, a
healthy trained model (the demo) raises no warning, and ``--fail-on`` gates on them.

Every model is tiny and built here with deliberate damage; reports come from
``cnnreport.build_report`` so the alerts are what the page and the JSON view show.
"""

from __future__ import annotations

import html.parser
import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import quick_options
from reference_models import seeded, tiny_mobilenet, tiny_resnet
from torch import nn

import cnnreport
from cnnreport.analysis import statistics as stats
from cnnreport.datamodel import AlertKind, Severity


def report_of(model: nn.Module, probes: torch.Tensor, **overrides):
    return cnnreport.build_report(model, probes, quick_options(graph=False, **overrides))


def findings(report, at_least: Severity = Severity.INFO) -> set[tuple[str, str]]:
    """(kind, layer) of every alert of ``at_least`` this severity."""
    return {(a.kind.value, a.layer) for a in report.alerts if a.severity.rank >= at_least.rank}


class Small(nn.Module):
    """conv1 -> act1 -> conv2 -> act2 -> pool -> fc; bias-free convs so scales stay honest."""

    def __init__(self, act: type[nn.Module] = nn.ReLU, bn: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(8) if bn else nn.Identity()
        self.act1 = act()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.act2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def small(**kwargs) -> Small:
    model = seeded(Small(**kwargs), seed=3)
    if isinstance(model.bn1, nn.BatchNorm2d):
        model.bn1.num_batches_tracked.fill_(100)  # a trained model's BatchNorm
    return model


def test_healthy_small_model_raises_nothing(probes):
    report = report_of(small(bn=True, bias=True), probes)
    assert report.alerts == []


@pytest.mark.parametrize("make", [lambda: tiny_resnet(), lambda: tiny_mobilenet()], ids=["resnet", "mobilenet"])
def test_reference_architectures_raise_no_warning(make, probes):
    # Skip connections, in-place ReLUs, depthwise convolutions, BatchNorm after conv: normal
    # layers that a naive scale check mistakes for exploding or vanishing activations.
    model = seeded(make())
    report = report_of(model, probes)
    assert findings(report, Severity.WARNING) == set()


def test_demo_model_raises_no_warning(demo_model):
    from cnnreport.io.demo import demo_probe_paths

    report = cnnreport.build_report(demo_model, [str(p) for p in demo_probe_paths()], quick_options(graph=False))
    assert findings(report, Severity.WARNING) == set(), report.alerts


def test_dead_channels_from_zeroed_filters_and_negative_bias(probes):
    model = small(bias=True)
    with torch.no_grad():
        model.conv1.weight[:4] = 0.0
        model.conv1.bias[:4] = -1.0  # constant -1 before the ReLU: 0 after it, for every input
    report = report_of(model, probes)
    # The zeroed filters are also dead filters (and what removing them saves, in all); nothing
    # else is wrong, and the ReLU after the layer inherits its dead channels without a second alert.
    assert findings(report) == {("dead_channels", "conv1"), ("dead_filters", "conv1"), ("prunable", "")}
    dead = next(a for a in report.alerts if a.kind is AlertKind.DEAD_CHANNELS)
    assert dead.severity is Severity.WARNING
    assert dead.value == pytest.approx(0.5)
    assert "4 of 8 channels (50%)" in dead.message and "0, 1, 2, 3" in dead.message
    section = next(s for s in report.sections if s.name == "conv1")
    assert dead.section_id == section.id
    assert section.channels is not None and section.channels.dead == [0, 1, 2, 3]


def test_dead_relu_channels_are_found_on_the_relu(probes):
    # Live filters, but a bias so negative that the ReLU never fires: the convolution's output
    # varies (not dead), the ReLU's is constant 0 (dead).
    model = small(bias=True)
    with torch.no_grad():
        model.conv1.bias[:3] = -50.0
    report = report_of(model, probes, layer_types=["Conv2d", "ReLU"])
    assert findings(report) == {("dead_channels", "act1")}
    assert "3 of 8 channels" in report.alerts[0].message


def test_mostly_zero_relu_is_not_dead(probes):
    # A ReLU that outputs zero most of the time but not always is normal sparsity.
    model = small(bias=True)
    with torch.no_grad():
        model.conv1.bias[:] = -1.5
    report = report_of(model, probes, layer_types=["Conv2d", "ReLU"])
    relu = next(s for s in report.sections if s.name == "act1")
    assert relu.stats.frac_zero > 0.7
    assert ("dead_channels", "act1") not in findings(report)


def test_nan_weights_name_the_layer_and_the_first_non_finite_activation(probes):
    model = small()
    with torch.no_grad():
        model.conv2.weight[2, 1, 0, 0] = float("nan")
    report = report_of(model, probes)
    assert findings(report) == {("non_finite", "conv2")}
    alert = report.alerts[0]
    assert alert.severity is Severity.ERROR
    assert "weight has 1 NaN of 576 values" in alert.message
    assert "first non-finite activation" in alert.message


def test_inf_in_a_buffer_is_an_error_on_its_layer(probes):
    model = small(bn=True)
    with torch.no_grad():
        model.bn1.running_var[0] = float("inf")
    report = report_of(model, probes)
    errors = [a for a in report.alerts if a.severity is Severity.ERROR]
    assert [(a.kind, a.layer) for a in errors] == [(AlertKind.NON_FINITE, "bn1")]
    assert "running_var has 1 Inf of 8 values" in errors[0].message


def test_non_finite_probes_are_traced_to_the_first_layer(probes):
    bad = probes.clone()
    bad[1, 0, 2, 2] = float("nan")
    report = report_of(small(), bad)
    assert findings(report) == {("non_finite", "conv1")}
    alert = report.alerts[0]
    assert "first layer whose output is non-finite" in alert.message
    assert "1 of 3 probes" in alert.message and "check the probes" in alert.message


def test_errors_come_first_then_execution_order(probes):
    model = small(bias=True)
    with torch.no_grad():
        model.conv1.weight[:4] = 0.0  # dead filters/channels in conv1 (warnings, earlier layer)
        model.conv1.bias[:4] = -1.0
        model.fc.weight[0, 0] = float("inf")  # an error in the last layer
    report = report_of(model, probes)
    kinds = [(a.severity.value, a.kind.value, a.layer) for a in report.alerts]
    assert kinds[0] == ("error", "non_finite", "fc")
    assert kinds[1:] == [("warning", "dead_channels", "conv1"), ("warning", "dead_filters", "conv1"), ("info", "prunable", "")]


def test_collapsed_batchnorm_variance(probes):
    model = small(bn=True)
    with torch.no_grad():
        model.bn1.running_var[:3] = 1e-9
    report = report_of(model, probes)
    assert findings(report) == {("batchnorm", "bn1")}
    alert = report.alerts[0]
    assert alert.severity is Severity.WARNING
    assert "running variance below 1e-05 in 3 of 8 channels" in alert.message


def test_batchnorm_gamma_near_zero(probes):
    model = small(bn=True)
    with torch.no_grad():
        model.bn1.weight[5] = 1e-5
    report = report_of(model, probes)
    assert findings(report) == {("batchnorm", "bn1")}
    assert "|gamma| below 0.001 in 1 of 8 channels" in report.alerts[0].message


def test_batchnorm_stats_never_updated_after_training(probes):
    model = small(bn=True)
    with torch.no_grad():
        model.bn1.running_mean.zero_()
        model.bn1.running_var.fill_(1.0)
        model.bn1.num_batches_tracked.zero_()  # gamma and beta trained, statistics never updated
    report = report_of(model, probes)
    assert findings(report) == {("batchnorm", "bn1")}
    assert "never updated (num_batches_tracked is 0)" in report.alerts[0].message


def test_untrained_model_with_fresh_batchnorm_is_not_an_anomaly(probes):
    # A freshly built model has 0/1 running statistics and gamma 1 everywhere: nothing says it
    # was trained, so the defaults are not a finding.
    model = Small(bn=True).eval()
    assert findings(report_of(model, probes), Severity.WARNING) == set()


def test_saturated_sigmoid(probes):
    model = small(act=nn.Sigmoid, bias=True)
    with torch.no_grad():
        model.conv1.bias.copy_(torch.tensor([30.0, -30.0] * 4))  # pinned at 1 and at 0
    report = report_of(model, probes)
    assert findings(report) == {("saturation", "act1")}
    alert = report.alerts[0]
    assert alert.value is not None and alert.value >= 0.9
    assert "pinned at 0 or 1" in alert.message


def test_relu6_zeros_are_not_saturation(probes):
    model = small(act=nn.ReLU6, bias=True)
    with torch.no_grad():
        model.conv1.bias.fill_(-30.0)  # every value 0: ReLU's normal zero, not its limit 6
    report = report_of(model, probes, layer_types=["Conv2d"])
    assert "saturation" not in {kind for kind, _ in findings(report)}
    with torch.no_grad():
        model.conv1.bias.fill_(30.0)  # every value 6: pinned at the upper limit
    report = report_of(model, probes, layer_types=["Conv2d"])
    assert ("saturation", "act1") in findings(report)


def test_exploding_and_vanishing_activations(probes):
    model = small()
    with torch.no_grad():
        model.conv2.weight.mul_(1e5)
    # Values that large are also beyond float16's range.
    assert findings(report_of(model, probes)) == {("exploding_activations", "conv2"), ("fp16_overflow", "conv2")}
    model = small()
    with torch.no_grad():
        model.conv2.weight.mul_(1e-5)
    report = report_of(model, probes)
    # Values that small are also below float16's normal range, from conv2 on.
    assert findings(report) == {("vanishing_activations", "conv2"), ("fp16_underflow", "conv2")}
    assert "median over probes" in report.alerts[0].message


def test_duplicate_filters(probes):
    model = small()
    with torch.no_grad():
        model.conv2.weight[3] = 2.0 * model.conv2.weight[6]  # same direction, other scale
        model.conv2.weight[5] = -model.conv2.weight[1]  # opposite: not a duplicate
    report = report_of(model, probes)
    assert findings(report) == {("duplicate_filters", "conv2"), ("prunable", "")}
    assert "most similar: 3 and 6" in report.alerts[0].message
    assert "2 of 8 filters involved" in report.alerts[0].message


def test_duplicate_pairs_are_capped_and_vectorised():
    filters = torch.randn(700, 27, generator=torch.Generator().manual_seed(0))
    filters[600] = filters[10]  # beyond the cap: not compared
    filters[20] = filters[10] * 3
    pairs, compared = stats.duplicate_filter_pairs(filters, 0.99, cap=512)
    assert compared == 512
    assert [(i, j) for i, j, _ in pairs] == [(10, 20)]


@pytest.mark.parametrize("width", [27, 600, 4608])
def test_duplicate_pairs_match_brute_force_on_short_and_long_filters(width):
    """Long filters are first compared on a subset of coordinates; that prefilter may never
    lose a pair the full cosine finds (planted near-duplicates, opposites, a zero filter)."""
    g = torch.Generator().manual_seed(width)
    filters = torch.randn(200, width, generator=g)
    for a, b in [(3, 150), (10, 11), (40, 199), (60, 61)]:
        filters[b] = 2.5 * filters[a] + 0.05 * filters[a].norm() / width**0.5 * torch.randn(width, generator=g)
    filters[70] = -filters[71]
    filters[90] = 0.0
    filters[91] = filters[92] * (1 - 1e-3)  # cosine exactly 1: on the threshold's right side
    pairs, compared = stats.duplicate_filter_pairs(filters, 0.99)
    unit = filters / filters.norm(dim=1, keepdim=True).clamp(min=1e-6)
    cos = unit @ unit.T
    brute = {(i, j) for i in range(200) for j in range(i + 1, 200) if cos[i, j] > 0.99 and i != 90 and j != 90}
    assert compared == 200
    assert {(i, j) for i, j, _ in pairs} == brute == {(3, 150), (10, 11), (40, 199), (60, 61), (91, 92)}
    for i, j, c in pairs:
        assert c == pytest.approx(float(cos[i, j]), abs=1e-5)


def test_transposed_convolution_filters_are_output_filters():
    conv = nn.ConvTranspose2d(4, 6, 3, groups=2)
    with torch.no_grad():
        conv.weight.normal_()
        conv.weight[:, 1] = 0.0  # output channel 1 of each group: outputs 1 and 4
    matrix = stats.filter_matrix(conv)
    assert matrix is not None and matrix.shape == (6, 2 * 9)
    assert stats.dead_filter_indices(matrix, 1e-6) == [1, 4]


def test_model_without_convolutions_gets_an_info():
    model = seeded(nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2)))
    report = cnnreport.build_report(model, torch.randn(4, 3, 2, 2), quick_options(graph=False))
    assert [(a.kind, a.severity) for a in report.alerts] == [(AlertKind.NO_CONVOLUTION, Severity.INFO)]


def test_thresholds_come_from_the_options(probes):
    model = small(bias=True)
    with torch.no_grad():
        model.conv1.weight[:1] = 0.0
        model.conv1.bias[:1] = -1.0
    # 1 of 8 dead: info at the default 25%, a warning when the threshold is 10%.
    default = report_of(model, probes)
    strict = report_of(model, probes, dead_channel_fraction=0.1)
    sev = lambda r: next(a.severity for a in r.alerts if a.kind is AlertKind.DEAD_CHANNELS)  # noqa: E731
    assert sev(default) is Severity.INFO and sev(strict) is Severity.WARNING


def test_alerts_in_json_and_html(probes, tmp_path):
    model = small()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    report = report_of(model, probes)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["alerts"][0]["kind"] == "non_finite" and data["alerts"][0]["severity"] == "error"
    assert data["alerts"][0]["layer"] == "conv2"

    class Alerts(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside, self.text, self.links = 0, [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "section" and attrs.get("id") == "alerts":
                self.inside = 1
            elif self.inside and tag == "section":
                self.inside += 1
            if self.inside and tag == "a":
                self.links.append(attrs.get("href"))

        def handle_endtag(self, tag):
            if self.inside and tag == "section":
                self.inside -= 1

        def handle_data(self, data):
            if self.inside:
                self.text.append(data)

    parser = Alerts()
    parser.feed(report.to_html())
    text = " ".join(" ".join(parser.text).split())
    assert "first non-finite activation" in text
    assert "1 error" in text
    section = next(s for s in report.sections if s.name == "conv2")
    assert f"#{section.id}" in parser.links


# ----------------------------------------------------------------------------------------------
# --fail-on


MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)
            with torch.no_grad():
                {damage}

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
    """
)


@pytest.mark.parametrize(
    ("damage", "fail_on", "code"),
    [
        ("pass", "warning", 0),
        ("self.conv.weight[:2] = 0.0; self.conv.bias[:2] = -1.0", "warning", 4),  # dead channels: warning
        ("self.conv.weight[:2] = 0.0; self.conv.bias[:2] = -1.0", "error", 0),
        ("self.conv.weight[0, 0, 0, 0] = float('nan')", "error", 4),
    ],
    ids=["healthy", "warning-gated", "warning-not-gated-by-error", "error-gated"],
)
def test_fail_on_exit_codes(tmp_path, damage, fail_on, code):
    from cnnreport.cli.main import main

    (tmp_path / "net.py").write_text(MODEL_FILE.format(damage=damage))
    probes = tmp_path / "x.npy"
    np.save(probes, np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32))
    out = tmp_path / "report.html"
    args = ["generate", f"{tmp_path / 'net.py'}:Net", "--probes", str(probes), "-o", str(out), "--no-graph", "-q", "--fail-on", fail_on]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert out.exists()  # the report is written whether or not the gate fails
    if code == 4:
        assert f"--fail-on {fail_on}" in result.output


def test_bin_counts_equal_numpy_histogram_also_on_edges():
    """The page's histograms count with one bincount; np.histogram is the reference, also for
    values lying exactly on bin edges and for tiny and huge scales."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        bins = int(rng.integers(1, 80))
        values = rng.normal(size=int(rng.integers(1, 3000))) * 10 ** rng.uniform(-8, 8)
        if trial % 3 == 0:
            values = np.round(values * 4) / 4
        lo, hi = float(values.min()), float(values.max())
        hi = hi if hi > lo else lo + 1.0
        values = np.concatenate([values, np.linspace(lo, hi, bins + 1)])
        expected, expected_edges = np.histogram(values, bins=bins, range=(lo, hi))
        counts, edges = stats.bin_counts(values, lo, hi, bins)
        np.testing.assert_array_equal(counts, expected)
        np.testing.assert_array_equal(edges, expected_edges)


def test_filter_checks_share_norms_and_still_clean_nan_rows():
    filters = torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
    filters[2] = 0.0
    filters[3, :] = 0.0
    filters[3, 5] = float("nan")  # zero apart from a NaN: counted as a zero filter
    filters[4] = 3 * filters[0]
    norms = stats.filter_norms(filters)
    assert stats.dead_filter_indices(filters, 1e-6, norms=norms) == stats.dead_filter_indices(filters, 1e-6) == [2, 3]
    pairs, compared = stats.duplicate_filter_pairs(filters, 0.99, norms=norms)
    assert [(i, j) for i, j, _ in pairs] == [(0, 4)] and compared == 6


def _one_dead_of_four() -> nn.Module:
    """conv (4 channels, channel 2 constant -1 for every input) -> ReLU -> pool -> fc."""
    model = seeded(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)), seed=5)
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = -1.0
    return model


def _dead_severity(report, kind: AlertKind = AlertKind.DEAD_CHANNELS) -> list[tuple[str, Severity, float]]:
    return [(a.layer, a.severity, a.value) for a in report.alerts if a.kind is kind]


def test_dead_channel_severity_boundary_is_at_or_above_the_fraction(probes):
    # 1 of 4 channels dead: exactly 0.25 of the layer.
    model = _one_dead_of_four()
    at = report_of(model, probes, dead_channel_fraction=0.25)
    beyond = report_of(model, probes, dead_channel_fraction=float(np.nextafter(0.25, 1.0)))
    below = report_of(model, probes, dead_channel_fraction=float(np.nextafter(0.25, 0.0)))
    default = report_of(model, probes)  # the documented default is 25%
    assert _dead_severity(at) == [("0", Severity.WARNING, 0.25)]
    assert _dead_severity(beyond) == [("0", Severity.INFO, 0.25)]
    assert _dead_severity(below) == [("0", Severity.WARNING, 0.25)]
    assert _dead_severity(default) == [("0", Severity.WARNING, 0.25)]
    # The zeroed filter is 1 of 4 dead filters: the same fraction, the same boundary.
    dead_filters = AlertKind.DEAD_FILTERS
    assert _dead_severity(at, dead_filters) == [("0", Severity.WARNING, 0.25)]
    assert _dead_severity(beyond, dead_filters) == [("0", Severity.INFO, 0.25)]
    assert _dead_severity(default, dead_filters) == [("0", Severity.WARNING, 0.25)]


class _Scaled(nn.Module):
    """conv1 (random) -> conv2 (1x1, bias-free, ``factor`` times the identity) -> pool -> fc.

    ``factor`` is a power of two, so conv2's output is exactly ``factor`` times its input and
    so is its RMS: the output/input ratio is exactly ``factor``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)).mean((2, 3)))


def _scaled(factor: float) -> _Scaled:
    model = seeded(_Scaled(), seed=2)
    with torch.no_grad():
        model.conv2.weight.copy_(factor * torch.eye(2).reshape(2, 2, 1, 1))
    return model


def _scale_findings(report) -> list[tuple[str, str, float]]:
    kinds = (AlertKind.EXPLODING, AlertKind.VANISHING)
    return [(a.kind.value, a.layer, a.value) for a in report.alerts if a.kind in kinds]


def test_exploding_boundary_is_strictly_above_the_ratio(probes):
    model = _scaled(1024.0)
    at = report_of(model, probes, explode_ratio=1024.0)
    beyond = report_of(model, probes, explode_ratio=float(np.nextafter(1024.0, 0.0)))
    default = report_of(model, probes)  # 1024 > the default 1000
    assert _scale_findings(at) == []
    assert _scale_findings(beyond) == [("exploding_activations", "conv2", 1024.0)]
    assert _scale_findings(default) == [("exploding_activations", "conv2", 1024.0)]
    assert _scale_findings(report_of(model, probes, explode_ratio=1025.0)) == []


def test_vanishing_boundary_is_strictly_below_the_ratio(probes):
    model = _scaled(1.0 / 1024.0)
    at = report_of(model, probes, vanish_ratio=1.0 / 1024.0)
    beyond = report_of(model, probes, vanish_ratio=float(np.nextafter(1.0 / 1024.0, 1.0)))
    default = report_of(model, probes)  # 1/1024 < the default 1/1000
    assert _scale_findings(at) == []
    assert _scale_findings(beyond) == [("vanishing_activations", "conv2", 1.0 / 1024.0)]
    assert _scale_findings(default) == [("vanishing_activations", "conv2", 1.0 / 1024.0)]
    assert _scale_findings(report_of(model, probes, vanish_ratio=1.0 / 1025.0)) == []
