"""Non-finite values are shown as what they are: NaN is ``null`` in the JSON and "NaN" on the
page, never 0; colour scales come from the finite values, with the count of the others beside
them; no RuntimeWarning escapes; and the NaN alert says where the values came from.

Expected figures are derived here with plain float64 torch / numpy, not with the code's own
reductions.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from conftest import ReportPage, decode_data_png, quick_options
from torch import nn

from cnnreport import build_report
from cnnreport.render.views import render_markdown

BROKEN_NET_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class BrokenNet(nn.Module):
        \"\"\"conv1: filter 0 NaN, filter 1 Inf, bias 2 -Inf; so conv2 sees NaN everywhere.\"\"\"

        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.rand(p.shape, generator=g) - 0.5)
                self.conv1.weight[0] = float("nan")
                self.conv1.weight[1] = float("inf")
                self.conv1.bias[2] = float("-inf")

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = self.conv2(x)
            return self.fc(x.mean((2, 3)))
    """
)


def broken_net() -> nn.Module:
    namespace: dict = {}
    exec(BROKEN_NET_SOURCE, namespace)  # the same class the CLI test loads from a file
    return namespace["BrokenNet"]()


def positive_probes(n: int = 2, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) + 0.1


def build_quietly(model, probes, **options):
    """Build and render with every RuntimeWarning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        report = build_report(model, probes, quick_options(**options))
        html = report.to_html()
        md = render_markdown(report)
        data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    return report, html, md, data


def section_text(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}"')
    return ReportPage(html[start : html.index("</section>", start) + len("</section>")]).text


@pytest.fixture(scope="module")
def broken():
    model = broken_net()
    x = positive_probes()
    report, html, md, data = build_quietly(model, x)
    return model, x, report, html, md, data


def test_a_layer_of_nan_is_null_in_the_json_and_nan_on_the_page(broken):
    model, x, report, html, md, data = broken
    conv2 = next(s for s in data["sections"] if s["name"] == "conv2")
    assert conv2["stats"]["mean"] is None and conv2["stats"]["min"] is None and conv2["stats"]["max"] is None
    assert conv2["stats"]["nan_count"] == 2 * 4 * 8 * 8
    assert conv2["channels"]["means"] == [None, None, None, None]
    assert conv2["channels"]["nonfinite"] == [0, 1, 2, 3]
    assert [(m["vmin"], m["vmax"]) for m in conv2["mosaics"]] == [(None, None), (None, None)]
    assert [m["nonfinite"] for m in conv2["mosaics"]] == [4 * 8 * 8, 4 * 8 * 8]  # the 4 channels shown
    text = section_text(html, conv2["id"])
    assert "mean NaN" in text and "min NaN" in text and "max NaN" in text
    assert "mean 0 " not in text and "0 … 0" not in text
    assert "no finite mean" in text and "no finite value" in text
    assert "256 NaN/Inf (grey)" in text


def test_nan_tiles_are_drawn_grey_not_as_the_bottom_of_the_scale(broken):
    model, x, report, html, md, data = broken
    section = next(s for s in report.sections if s.name == "conv2")
    for mosaic in section.mosaics:
        src = re.search(r'src="([^"]+)"[^>]*alt="' + re.escape(mosaic.figure.alt), html).group(1)
        rgb = np.asarray(decode_data_png(src).convert("RGB")).reshape(-1, 3)
        assert {tuple(p) for p in rgb} == {(128, 128, 128)}  # tiles and gaps: all grey


def test_channel_means_are_over_the_finite_values(broken):
    model, x, report, html, md, data = broken
    conv1 = next(s for s in data["sections"] if s["name"] == "conv1")
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x.double(), model.conv1.weight.double(), model.conv1.bias.double(), padding=1)
        # Where Inf meets the zero padding, whether it makes NaN depends on the kernel: the
        # counts come from the model's own float32 convolution.
        out32 = model.conv1(x)
    # Channels 0 (NaN weights), 1 (Inf weights) and 2 (-Inf bias) have no finite value;
    # channel 3 is finite.
    assert not torch.isfinite(out[:, :3]).any() and torch.isfinite(out[:, 3]).all()
    assert conv1["channels"]["means"][:3] == [None, None, None]
    assert conv1["channels"]["means"][3] == pytest.approx(float(out[:, 3].mean()), rel=1e-5)
    assert conv1["stats"]["mean"] == pytest.approx(float(out[:, 3].mean()), rel=1e-5)
    assert conv1["stats"]["nan_count"] == int(torch.isnan(out32).sum())
    assert conv1["stats"]["inf_count"] == int(torch.isinf(out32).sum())
    finite = out[:, 3]
    assert conv1["stats"]["min"] == pytest.approx(float(finite.min()), rel=1e-5)
    # The mosaics' scale is the finite channel's range, per probe, with the others counted.
    for i, mosaic in enumerate(conv1["mosaics"]):
        assert mosaic["vmin"] == pytest.approx(float(out[i, 3].min()), rel=1e-5)
        assert mosaic["vmax"] == pytest.approx(float(out[i, 3].max()), rel=1e-5)
        assert mosaic["nonfinite"] == 3 * 8 * 8  # the three non-finite channels, all shown
    text = section_text(html, conv1["id"])
    assert "3 holding NaN/Inf" in text
    assert "192 NaN/Inf (grey)" in text


def test_filter_scale_comes_from_the_finite_weights(broken):
    model, x, report, html, md, data = broken
    w = model.conv1.weight.detach().numpy().astype(np.float64)
    finite = w[np.isfinite(w)]
    expected = float(np.abs(finite).max())
    conv1 = next(s for s in data["sections"] if s["name"] == "conv1")
    gallery = conv1["filters"]
    assert gallery["vmax"] == pytest.approx(expected, rel=1e-6)
    assert gallery["nonfinite"] == int((~np.isfinite(w)).sum()) == 54
    assert "54 NaN/Inf weights drawn black" in gallery["note"]
    assert f"±{expected:.3g}" in gallery["note"]
    # Drawn on that scale, the finite filters are not mid-grey: filter 3's pixels spread out.
    section = next(s for s in report.sections if s.name == "conv1")
    src = re.search(r'src="([^"]+)"[^>]*alt="' + re.escape(section.filters.figure.alt), html).group(1)
    image = np.asarray(decode_data_png(src).convert("RGB")).astype(int)
    # RGB filters are 3x3 tiles laid out 2x2 with a 1 px gap: filter 3 sits at rows 5-7, cols 5-7.
    assert image[1:4, 1:4].tolist() == [[[0, 0, 0]] * 3] * 3  # filter 0, all NaN: black
    filter3 = image[5:8, 5:8]
    assert filter3.max() - filter3.min() > 100
    ws = conv1["weight_stats"]
    assert (ws["nan_count"], ws["inf_count"]) == (27, 27)
    assert ws["max"] == pytest.approx(float(finite.max()), rel=1e-6)


def test_nan_predictions_read_nan_not_nan_percent(broken):
    model, x, report, html, md, data = broken
    # Every score is NaN: no class is named top (the ranking would be arbitrary), and a note says why.
    assert [probe["predictions"] for probe in data["probes"]] == [[], []]
    assert "No predictions for 2 of 2 probe(s): the model's class scores are NaN or Inf, so no class can be named top." in data["notes"]
    page = ReportPage(html)
    assert "nan%" not in html.lower() and "nan%" not in md.lower()
    assert "NaN" in page.text


def test_a_nan_probability_reads_nan_not_nan_percent():
    from cnnreport.render.views import fmt_pct

    assert fmt_pct(float("nan")) == "NaN"
    assert fmt_pct(50.0) == "50.0%"  # it formats a value already in percent


def test_the_alert_names_the_weights_and_does_not_blame_the_probes(broken):
    model, x, report, html, md, data = broken
    non_finite = [a for a in data["alerts"] if a["kind"] == "non_finite"]
    assert [a["layer"] for a in non_finite] == ["conv1"]
    message = non_finite[0]["message"]
    assert "weight has 27 NaN and 27 Inf of 108 values" in message and "bias has 1 Inf of 4 values" in message
    assert "first non-finite activation" in message
    assert "probe" not in message


class MadeByForwardCode(nn.Module):
    """Finite weights and probes; the forward's own log of a negative makes the NaN."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = self.a(x)
        x = torch.log(x - 100.0)
        return self.b(x).mean((2, 3))


def test_nan_made_by_the_model_code_is_placed_between_two_layers():
    torch.manual_seed(0)
    report, html, md, data = build_quietly(MadeByForwardCode(), positive_probes())
    (alert,) = [a for a in data["alerts"] if a["kind"] == "non_finite"]
    assert alert["layer"] == "b"
    assert "the probes are finite" in alert["message"]
    assert "the model's own forward code made them between a, whose output is finite, and this layer" in alert["message"]
    assert "check the probes" not in alert["message"]


def test_nan_in_the_probes_is_traced_to_the_probes():
    torch.manual_seed(0)
    x = positive_probes()
    x[0, 1, 2:4, 2:5] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    report, html, md, data = build_quietly(MadeByForwardCode(), x)
    (alert,) = [a for a in data["alerts"] if a["kind"] == "non_finite"]
    assert alert["layer"] == "a"
    assert "the probes hold 7 NaN/Inf values, check the probes" in alert["message"]


class OverflowsItself(nn.Module):
    """Finite weights, finite input: the second convolution overflows float32 to Inf."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3, bias=False)
        with torch.no_grad():
            self.b.weight.fill_(1e37)

    def forward(self, x):
        return self.b(self.a(x).abs() + 1.0).mean((2, 3))


def test_a_layer_that_makes_inf_itself_is_named_with_finite_weights():
    torch.manual_seed(0)
    report, html, md, data = build_quietly(OverflowsItself(), positive_probes())
    (alert,) = [a for a in data["alerts"] if a["kind"] == "non_finite"]
    assert alert["layer"] == "b"
    assert "its input is finite and its weights are finite: the layer's computation itself made them" in alert["message"]
    assert "probe" not in alert["message"].split("probes);")[1]  # after the "(2 of 2 probes)" count


class NanAfterTheLastLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.a(x).mean((2, 3)) * float("nan")


def test_nan_made_after_the_last_layer_is_an_alert_on_the_output():
    torch.manual_seed(0)
    report, html, md, data = build_quietly(NanAfterTheLastLayer(), positive_probes())
    (alert,) = [a for a in data["alerts"] if a["kind"] == "non_finite"]
    assert alert["severity"] == "error"
    assert alert["message"] == "the model's output holds 8 NaN/Inf values, made by its own forward code after its last layer, a, whose output is finite"


def test_cli_on_the_broken_model_warns_nothing_and_writes_nulls(tmp_path):
    model_file = tmp_path / "broken.py"
    model_file.write_text(BROKEN_NET_SOURCE, encoding="utf-8")
    probes = tmp_path / "probes.pt"
    torch.save(positive_probes(), probes)
    out, js = tmp_path / "r.html", tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "generate", f"{model_file}:BrokenNet", "--probes", str(probes),
         "-o", str(out), "--json", str(js), "-q", "--max-channels", "4"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    data = json.loads(js.read_text(encoding="utf-8"))
    conv2 = next(s for s in data["sections"] if s["name"] == "conv2")
    assert conv2["channels"]["means"] == [None, None, None, None]
    assert "mean NaN" in section_text(out.read_text(encoding="utf-8"), conv2["id"])


def test_grad_cam_of_a_nan_layer_is_said_and_has_no_peak(broken):
    model, x, report, html, md, data = broken
    cams = [a for a in data["attributions"] if a["method"] == "Grad-CAM"]
    assert [(a["layer"], a["peak_xy"]) for a in cams] == [("conv2", None), ("conv2", None)]
    assert (
        "Grad-CAM of conv2: the maps of 2 of 2 probes (probe 0, probe 1) hold NaN/Inf, as the layer's activations "
        "or their gradients do; those pixels are drawn without heat, and a map with no finite value has no peak."
    ) in data["notes"]


def test_a_1x1_matrix_gallery_scales_on_the_finite_weights_and_greys_the_rest():
    from cnnreport.figures.images import draw_filters

    w = torch.linspace(-0.4, 0.3, 6 * 5).reshape(6, 5, 1, 1)
    w[2, 1] = float("inf")
    w[4, 3] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        gallery = draw_filters(w, layer="pw")
    finite = w.numpy()[np.isfinite(w.numpy())]
    assert gallery.vmax == pytest.approx(float(np.abs(finite).max()))  # 0.4, not 3.4e38
    assert gallery.nonfinite == 2 and "2 NaN/Inf weights drawn grey" in gallery.note
    image = np.asarray(decode_data_png(gallery.figure.data_uri()).convert("RGB"))
    assert tuple(image[2, 1]) == tuple(image[4, 3]) == (128, 128, 128)
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 10  # the finite weights keep their colours


def test_a_gallery_of_nothing_but_nan_says_it_has_no_scale():
    from cnnreport.figures.images import draw_filters

    gallery = draw_filters(torch.full((2, 4, 3, 3), float("nan")), layer="c")
    assert gallery.vmax == 0.0 and gallery.nonfinite == 72
    assert "every weight drawn (72) is NaN/Inf, drawn grey: no finite scale" in gallery.note


def test_channel_strip_spans_the_finite_means_without_warnings():
    from cnnreport.figures.images import channel_strip

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        strip = channel_strip(np.array([1.0, np.inf, np.nan, 3.0, 2.0]), alt="s", nonfinite=[1])
    row = np.asarray(decode_data_png(strip.data_uri()).convert("RGB"))[0]
    cell = row.shape[0] // 5
    colours = [tuple(row[i * cell]) for i in range(5)]
    assert colours[1] == colours[2] == (128, 128, 128)
    viridis_low, viridis_high = (68, 1, 84), (253, 231, 37)  # the colour map's two ends
    assert colours[0] == viridis_low and colours[3] == viridis_high and colours[4] not in (viridis_low, viridis_high)


def test_smaller_tiles_keep_non_finite_pixels_marked():
    from cnnreport.report.budget import shrink_tiles

    tiles = np.full((1, 8, 8), 100, dtype=np.uint8)
    tiles[0, :2, :2] = 255  # non-finite
    small = shrink_tiles(tiles, 4)
    assert small.shape == (1, 4, 4)
    assert small[0, 0, 0] == 255 and (small[0][small[0] != 255] == 100).all()
    assert int((small == 255).sum()) == 1


def test_diff_cosine_change_counts_only_values_finite_on_both_sides():
    from cnnreport.analysis.diff import cosine_change

    nan = float("nan")
    assert cosine_change([1.0, 2.0], [1.0, 2.0]) == 0.0
    # (1, 3) against (1, 3) once the NaN entry is left out: unchanged, not 1 - cos with a 0 in it.
    assert cosine_change([1.0, nan, 3.0], [1.0, 5.0, 3.0]) == 0.0
    # (1, 0) vs (0, 1): orthogonal, by hand.
    assert cosine_change([1.0, 0.0, float("inf")], [0.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert math.isnan(cosine_change([nan, nan], [1.0, 2.0]))


def test_a_layer_that_becomes_nan_shows_an_unknown_change_not_a_number():
    import json as jsonlib

    from cnnreport import diff_reports

    torch.manual_seed(0)
    old = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    new = copy.deepcopy(old)
    with torch.no_grad():
        new[0].weight.fill_(float("nan"))
    diff = diff_reports(old, new, torch.rand(2, 3, 12, 12))
    changes = {a.name: a for a in diff.activation_changes}
    assert math.isnan(changes["0"].change) and math.isnan(changes["2"].change)
    assert "unknown" in changes["0"].basis
    assert diff.activation_changes[0].name in ("0", "2")  # unknown changes first
    from cnnreport.render.diff_views import diff_json, render_diff_html

    data = jsonlib.loads(diff_json(diff))
    assert {a["name"]: a["change"] for a in data["activation_changes"]}["0"] is None
    assert ">NaN</td>" in render_diff_html(diff)


def test_a_negative_running_variance_is_named_as_the_cause_of_the_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_var[2] = -1.0  # sqrt(-1 + eps) is NaN for channel 2 alone
    from cnnreport import build_report

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        report = build_report(model, torch.rand(2, 3, 10, 10), progress=False)
    (alert,) = [a for a in report.alerts if a.kind.value == "non_finite"]
    assert alert.layer == "1"
    assert "its running_var is negative for channel(s) 2" in alert.message
    assert "check the probes" not in alert.message
