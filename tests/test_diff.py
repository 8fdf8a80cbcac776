"""Diff reports: what changed between two models on the same probes (cnnreport.diff)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import textwrap
from html.parser import HTMLParser

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cnnreport.analysis.diff import (
    WeightChange,
    compare_alerts,
    compare_architecture,
    cosine_change,
)
from cnnreport.cli.diff import diff as diff_command
from cnnreport.datamodel import Alert, AlertKind, Severity
from cnnreport.io.provenance import PROVENANCE_SCRIPT_ID, model_fingerprint
from cnnreport.render.diff_views import diff_json, render_diff_html, render_diff_markdown
from cnnreport.report.diff import diff_reports
from cnnreport.report.pipeline import build_report


class Net(nn.Module):
    """Two convolutions and a head; ``width`` and ``act`` let tests change the architecture."""

    def __init__(self, width: int = 4, act: type[nn.Module] = nn.ReLU, extra: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act = act()
        self.conv2 = nn.Conv2d(width, 6, 3, padding=1)
        if extra:
            self.extra = nn.Conv2d(6, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.act(self.conv1(x)))
        if hasattr(self, "extra"):
            x = self.extra(x)
        return self.head(x.mean((2, 3)))


def net(seed: int = 0, **kwargs) -> Net:
    torch.manual_seed(seed)
    return Net(**kwargs).eval()


PROBES = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
QUICK = dict(progress=False)


def quick_diff(old: nn.Module, new: nn.Module, **kwargs):
    from cnnreport.datamodel import ReportOptions

    return diff_reports(old, new, PROBES, options=ReportOptions(progress=False), **kwargs)


# -- comparisons -------------------------------------------------------------------------------


def test_identical_models_show_no_change():
    d = quick_diff(net(0), net(0))
    assert d.architecture == [] and d.unchanged_layers == 4  # conv1, act, conv2, head
    assert d.identical_weights
    assert all(w.relative == 0.0 for w in d.weight_changes)
    assert [a.change for a in d.activation_changes] == [0.0, 0.0]
    assert d.predictions_changed == 0 and len(d.predictions) == 4
    assert d.galleries == []  # nothing changed, nothing to draw
    assert d.param_delta == 0


def test_relative_weight_change_is_the_norm_ratio_over_weight_and_bias():
    old = net(0)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.conv2.weight[0] += 0.3
        new.conv2.bias += 0.1
    d = quick_diff(old, new)
    top = d.weight_changes[0]
    assert top.name == "conv2" and top.type == "Conv2d"
    w_old = torch.cat([old.conv2.weight.flatten(), old.conv2.bias]).double()
    w_new = torch.cat([new.conv2.weight.flatten(), new.conv2.bias]).double()
    assert top.relative == pytest.approx(float((w_new - w_old).detach().norm() / w_old.detach().norm()), rel=1e-9)
    assert top.bar == 1.0
    assert [w.relative for w in d.weight_changes[1:]] == [0.0, 0.0]
    assert [w.name for w in d.weight_changes] == ["conv2", "conv1", "head"]  # ties by name


def test_change_from_all_zero_weights_sorts_first():
    old = net(0)
    with torch.no_grad():
        old.head.weight.zero_()
        old.head.bias.zero_()
    new = net(0)
    with torch.no_grad():
        new.conv1.weight.mul_(2)
        new.conv1.bias.mul_(2)
    d = quick_diff(old, new)
    assert d.weight_changes[0].name == "head" and d.weight_changes[0].relative is None
    assert d.weight_changes[1].name == "conv1" and d.weight_changes[1].relative == pytest.approx(1.0, rel=1e-6)


def test_architecture_changes_are_aligned_by_module_name():
    old, new = net(0), net(0, width=8, act=nn.GELU, extra=True)
    changes, unchanged = compare_architecture(old, new)
    by_name = {c.name: c for c in changes}
    assert set(by_name) == {"conv1", "act", "conv2", "extra"}
    assert by_name["conv1"].status == "shape changed"
    assert "weight 4×3×3×3 → 8×3×3×3" in by_name["conv1"].detail and "bias 4 → 8" in by_name["conv1"].detail
    assert by_name["conv1"].param_delta == (8 - 4) * (27 + 1)
    assert by_name["act"].status == "type changed" and by_name["act"].detail == "ReLU → GELU"
    assert by_name["extra"].status == "added" and by_name["extra"].new_params == 42
    assert unchanged == 1  # head
    # extra sits after conv2, where the new model defines it
    assert [c.name for c in changes] == ["conv1", "act", "conv2", "extra"]
    removed, _ = compare_architecture(new, old)
    assert {c.name: c.status for c in removed}["extra"] == "removed"


def test_diff_of_two_architectures_counts_parameters_and_skips_mismatched_weights():
    old, new = net(0), net(0, width=8, extra=True)
    d = quick_diff(old, new)
    assert d.param_delta == sum(p.numel() for p in new.parameters()) - sum(p.numel() for p in old.parameters())
    assert [w.name for w in d.weight_changes] == ["head"]  # conv1/conv2 changed shape: no ratio
    # conv2 keeps its 6 channels: compared channel by channel; conv1's count changed (4 -> 8),
    # so only its per-probe mean and std can be; extra exists in the new model only.
    assert [(a.name, a.basis) for a in d.activation_changes] == [("conv2", "channel means"), ("conv1", "per-probe mean and std")]
    # conv2's change is 1 - cosine of the two models' channel means, here in float64 plain torch.
    def conv2_means(model: Net) -> torch.Tensor:
        model = copy.deepcopy(model).double()
        with torch.no_grad():
            return model.conv2(model.act(model.conv1(PROBES.double()))).mean((0, 2, 3))

    a, b = conv2_means(old), conv2_means(new)
    expected = 1.0 - float(a @ b) / float(a.norm() * b.norm())
    assert d.activation_changes[0].change == pytest.approx(expected, rel=1e-6)


def test_cosine_change():
    assert cosine_change([1, 0], [0, 1]) == pytest.approx(1.0)
    assert cosine_change([1, 2], [-1, -2]) == pytest.approx(2.0)
    assert cosine_change([1, 2], [2, 4]) == pytest.approx(0.0, abs=1e-12)
    assert cosine_change([0, 0], [0, 0]) == 0.0
    assert cosine_change([0, 0], [1, 0]) == 1.0
    assert cosine_change([float("nan"), 1], [0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_activation_change_follows_a_changed_layer():
    old = net(0)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.conv2.weight.neg_()
        new.conv2.bias.neg_()  # conv2's output flips sign: its channel means point the other way
    d = quick_diff(old, new)
    by_name = {a.name: a for a in d.activation_changes}
    assert by_name["conv1"].change == pytest.approx(0.0, abs=1e-9)
    assert by_name["conv2"].change == pytest.approx(2.0, abs=1e-6)
    assert by_name["conv2"].basis == "channel means"
    assert d.activation_changes[0].name == "conv2" and d.activation_changes[0].bar == 1.0


def test_prediction_changes_per_probe():
    old = net(0)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))  # everything becomes class 2
    d = quick_diff(old, new, class_names=["cat", "dog", "<bird>"])
    old_top = old(PROBES).argmax(1).tolist()
    assert [p.new.class_index for p in d.predictions] == [2, 2, 2, 2]
    assert [p.changed for p in d.predictions] == [c != 2 for c in old_top]
    assert d.predictions[0].new.label == "<bird>" and d.predictions[0].new.probability > 0.99
    assert d.predictions_changed == sum(c != 2 for c in old_top)


def test_alerts_that_appeared_and_disappeared():
    model = net(0)
    base = build_report(model, PROBES, progress=False, attributions=False, graph=False)
    a = Alert(kind=AlertKind.DEAD_CHANNELS, severity=Severity.WARNING, layer="conv1", message="2 of 4 channels constant")
    b = Alert(kind=AlertKind.DEAD_FILTERS, severity=Severity.WARNING, layer="conv2", message="1 dead filter")
    c = Alert(kind=AlertKind.NON_FINITE, severity=Severity.ERROR, layer="head", message="NaN in weights")
    old = dataclasses.replace(base, alerts=[a, b])
    new = dataclasses.replace(base, alerts=[b, c])
    appeared, disappeared, kept = compare_alerts(old, new)
    assert appeared == [c] and disappeared == [a] and kept == 1


def test_filter_galleries_for_the_most_changed_convolutions():
    old = net(0)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.conv1.weight.add_(0.5)
        new.conv2.weight.add_(0.01)
        new.head.weight.add_(5.0)  # most changed, but not a convolution: no gallery
    d = quick_diff(old, new, max_galleries=1)
    assert [g.name for g in d.galleries] == ["conv1"]
    g = d.galleries[0]
    for gallery in (g.old, g.new, g.delta):
        image = Image.open(io.BytesIO(gallery.figure.png))
        assert image.format == "PNG" and image.size == (gallery.figure.width, gallery.figure.height)
    assert g.delta.vmax == pytest.approx(0.5, rel=1e-5)  # the difference is 0.5 everywhere


def test_diff_leaves_both_models_as_they_were():
    old, new = net(0), net(1)
    new.train()
    before = (model_fingerprint(old), model_fingerprint(new))
    quick_diff(old, new)
    assert (model_fingerprint(old), model_fingerprint(new)) == before
    assert not old.training and new.training
    assert not old._forward_hooks and not old.conv1._forward_hooks and not new.conv2._forward_hooks


# -- views -------------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.scripts = 0
        self.meta: list[dict] = []
        self.imgs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "script":
            self.scripts += 1
        if tag == "meta":
            self.meta.append(a)
        if tag == "img":
            self.imgs.append(a)


def odd_named(seed: int) -> Net:
    """A model with a module name that is also markup."""
    model = net(seed)
    model.add_module("x<script>alert(1)</script>", nn.Identity())
    return model


def test_html_view_is_self_contained_escaped_and_carries_both_provenances():
    old, new = odd_named(0), odd_named(0)
    with torch.no_grad():
        new.conv1.weight.add_(0.2)
    d = quick_diff(old, new, title="v1 </script> v2")
    html = render_diff_html(d)
    page = _Page()
    page.feed(html)
    assert page.scripts == 2  # the provenance block and the page script; nothing injected
    assert "<script>alert(1)" not in html
    assert not re.search(r"https?:", html)
    csp = [m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]
    for section in ("summary", "alerts", "predictions", "architecture", "weights", "activations", "filters", "about"):
        assert section in page.ids
    sources = [img["src"] for img in page.imgs if "src" in img]  # the lightbox's img has none yet
    assert len(sources) >= 3 and all(src.startswith("data:image/png;base64,") for src in sources)
    block = html.split(f'id="{PROVENANCE_SCRIPT_ID}">', 1)[1].split("</script>", 1)[0]
    data = json.loads(block)
    assert data["kind"] == "diff" and data["title"] == "v1 </script> v2"
    assert data["old"]["provenance"]["model_fingerprint"] == model_fingerprint(old)
    assert data["new"]["provenance"]["model_fingerprint"] == model_fingerprint(new)


def test_json_view_has_schema_version_and_the_numbers():
    old = net(0)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.conv2.weight.mul_(1.5)
    data = json.loads(diff_json(quick_diff(old, new)))
    assert data["schema_version"] == 1 and data["kind"] == "diff"
    assert data["weight_changes"][0]["name"] == "conv2"
    assert data["weight_changes"][0]["relative"] > 0.3
    assert data["param_delta"] == 0 and data["identical_weights"] is False
    assert "png" not in json.dumps(data["galleries"])  # figures are left out of JSON
    assert len(data["predictions"]) == 4


def test_markdown_view_lists_the_biggest_changes_and_escapes_names():
    old, new = odd_named(0), odd_named(0)
    forced = (int(old(PROBES[:1]).argmax()) + 1) % 3  # a class probe 0 did not have
    with torch.no_grad():
        new.conv2.weight.add_(0.3)
        new.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(forced), 3).float() * 50)
    d = quick_diff(old, new, old_label="main|v1", new_label="pr @someone")
    md = render_diff_markdown(d)
    # "@" escaped and followed by a WORD JOINER, so GitHub notifies nobody (test_markdown.py).
    assert md.startswith("## Net: main|v1 → pr @someone".replace("|", "\\|").replace("@", "\\@\u2060"))
    assert "### Biggest weight changes" in md
    assert re.search(r"\| `conv2` \| Conv2d \| \d+\.\d\d% \| █", md)
    assert "### Predictions that changed" in md
    assert "&lt;" not in md and "&#" not in md  # not HTML-escaped: GitHub would show entities
    assert "\\@\u2060someone" in md and "@someone |" not in md  # no accidental mention
    assert len(md) < 65_000


def test_markdown_stays_under_the_comment_limit_for_huge_diffs():
    d = quick_diff(net(0), net(1))
    many = [WeightChange(name=f"block{i}.conv_with_a_rather_long_module_path_name_{i}", type="Conv2d", relative=1.0 / (i + 1), abs_change=1.0, old_norm=1.0, new_norm=1.0, params=9, bar=1.0 / (i + 1)) for i in range(3000)]
    md = render_diff_markdown(dataclasses.replace(d, weight_changes=many))
    assert len(md) <= 65_000
    assert "more modules in the HTML report" in md


def test_views_are_deterministic():
    def render():
        old, new = net(0), net(0)
        with torch.no_grad():
            new.conv1.weight.add_(0.1)
        d = quick_diff(old, new)
        return render_diff_html(d), diff_json(d), render_diff_markdown(d)

    assert render() == render()


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    """A model file, two checkpoints and a probe folder, as a user has them."""
    (tmp_path / "model.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(3, 4, 3, padding=1)
                    self.head = nn.Linear(4, 2)

                def forward(self, x):
                    return self.head(torch.relu(self.conv(x)).mean((2, 3)))
            """
        )
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_model", tmp_path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.Net()
    torch.save(model.state_dict(), tmp_path / "main.pt")
    with torch.no_grad():
        model.conv.weight.mul_(1.2)
        model.conv.bias.mul_(1.2)
    torch.save(model.state_dict(), tmp_path / "pr.pt")
    probes = tmp_path / "probes"
    probes.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 100, 200)).save(probes / f"p{i}.png")
    return tmp_path


def test_diff_command_writes_html_markdown_and_json(project, monkeypatch):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(
        diff_command,
        ["--model", "model.py:Net", "--old", "main.pt", "--new", "pr.pt", "--probes", "probes", "-o", "d.html", "--markdown", "d.md", "--json", "d.json"],
    )
    assert result.exit_code == 0, result.output
    assert "largest weight change conv 20.00%" in result.output
    data = json.loads((project / "d.json").read_text())
    assert data["old"]["label"] == "main.pt" and data["new"]["label"] == "pr.pt"
    assert data["weight_changes"][0]["relative"] == pytest.approx(0.2, rel=1e-5)
    assert data["old"]["provenance"]["checkpoint_path"] == "main.pt"
    assert [f["name"] for f in data["new"]["provenance"]["probe_files"]] == ["p0.png", "p1.png"]
    assert "`main.pt` → `pr.pt`" in (project / "d.md").read_text()
    assert (project / "d.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "model.py:Net", "--old", "main.pt", "--probes", "probes"], "pass both --old CKPT and --new CKPT"),
        (["--model", "model.py:Net", "--old-model", "model.py:Net", "--old", "main.pt", "--new", "pr.pt"], "not both"),
        (["--old", "main.pt", "--new", "pr.pt", "--probes", "probes"], "no model"),
        (["--model", "model.py:Net", "--old", "main.pt", "--new", "pr.pt"], "no probes"),
    ],
)
def test_diff_command_usage_errors_are_one_line(project, monkeypatch, args, message):
    monkeypatch.chdir(project)
    result = CliRunner().invoke(diff_command, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
