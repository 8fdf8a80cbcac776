"""Alerts that read well at scale: a dead channel reported once, where it dies, however many
concatenations carry it on; many alerts of one kind folded, worst first; and the pattern behind
dead channels nearly everywhere (weights never trained or never loaded)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from cnnreport import build_report
from cnnreport.analysis.channel_flow import repeated_dead_channels
from cnnreport.capture.executed_graph import ExecutedGraph, GraphNode


def _set_conv(conv: nn.Conv2d, dead: list[int], seed: int) -> None:
    """A 1x1 convolution over non-negative inputs whose ``dead`` channels are negative (and
    varying) everywhere, the others positive: a ReLU after it zeroes exactly ``dead``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        magnitude = 0.1 + 0.9 * torch.rand(conv.weight.shape, generator=g)
        sign = torch.ones(conv.out_channels, 1, 1, 1)
        sign[dead] = -1
        conv.weight.copy_(magnitude * sign)
        conv.bias.copy_(0.1 * sign.flatten())


class Unit(nn.Module):
    """A DenseNet unit: pre-activation BatchNorm, ReLU, convolution, the input concatenated in."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, growth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], 1)


class DenseLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.units = nn.Sequential(Unit(4, 2), Unit(6, 2), Unit(8, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.units(self.stem(x))).flatten(1))


def dense_like() -> nn.Module:
    model = DenseLike().eval()
    _set_conv(model.stem, dead=[1], seed=0)  # stem channel 1 is negative everywhere
    for i, unit in enumerate(model.units):
        _set_conv(unit.conv, dead=[], seed=i + 1)  # each unit adds positive channels only
    return model


def probes() -> torch.Tensor:
    return torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(7))  # non-negative


def dead_alerts(report) -> list:
    return [a for a in report.alerts if a.kind.value == "dead_channels"]


def test_a_channel_zeroed_again_after_each_concatenation_is_reported_once_where_it_dies() -> None:
    # Stem channel 1 reaches every unit's ReLU through the concatenations; each ReLU zeroes it.
    report = build_report(dense_like(), probes(), progress=False, attributions=False, layer_types=["Conv2d", "BatchNorm2d", "ReLU"])
    alerts = dead_alerts(report)
    assert [(a.layer, a.message) for a in alerts] == [
        ("units.0.relu", "1 of 4 channels (25%) are constant over every probe and position: 1"),
    ]
    assert alerts[0].value == 0.25


def test_a_new_death_beside_a_carried_one_is_reported_with_the_carried_count() -> None:
    model = dense_like()
    _set_conv(model.units[0].conv, dead=[0], seed=1)  # unit 0 adds a channel that unit 1's ReLU zeroes: index 4 there
    report = build_report(model, probes(), progress=False, attributions=False, layer_types=["Conv2d", "BatchNorm2d", "ReLU"])
    assert [(a.layer, a.message) for a in dead_alerts(report)] == [
        ("units.0.relu", "1 of 4 channels (25%) are constant over every probe and position: 1"),
        (
            "units.1.relu",
            "1 of 6 channels (17%) are constant over every probe and position: 4; 1 more were found dead in an earlier layer and reach this one",
        ),
    ]


def _node(node_id: str, kind: str, name: str, type_: str, out: list[int], ins: list[list[int]] | None = None) -> GraphNode:
    return GraphNode(id=node_id, kind=kind, name=name, type=type_, output_shapes=[out], input_shapes=ins or [])


def test_channel_origins_follow_concatenation_offsets_and_stop_at_a_convolution() -> None:
    # a (3 ch) and b (2 ch) concatenated as [b, a]: a's channel 0 is channel 2 of the cat.
    graph = ExecutedGraph(
        nodes=[
            _node("input", "input", "input", "Input", [1, 3, 4, 4]),
            _node("a", "module", "a", "ReLU", [1, 3, 4, 4]),
            _node("b", "module", "b", "Conv2d", [1, 2, 4, 4]),
            _node("op:cat", "op", "cat", "cat", [1, 5, 4, 4], [[1, 2, 4, 4], [1, 3, 4, 4]]),
            _node("bn", "module", "bn", "BatchNorm2d", [1, 5, 4, 4]),
            _node("relu", "module", "relu", "ReLU", [1, 5, 4, 4]),
            _node("mix", "module", "mix", "Conv2d", [1, 5, 4, 4]),
            _node("relu2", "module", "relu2", "ReLU", [1, 5, 4, 4]),
        ],
        edges=[("input", "a"), ("a", "b"), ("b", "op:cat"), ("a", "op:cat"), ("op:cat", "bn"), ("bn", "relu"), ("relu", "mix"), ("mix", "relu2")],
    )
    dead = {("a", 1): {0}, ("relu", 1): {1, 2}, ("relu2", 1): {2}}
    repeated = repeated_dead_channels(graph, dead, [("a", 1), ("relu", 1), ("relu2", 1)])
    # relu's channel 2 is a's channel 0 (already dead); its channel 1 is b's, new; the conv mixes.
    assert repeated == {("a", 1): set(), ("relu", 1): {2}, ("relu2", 1): set()}


def test_a_concatenation_of_one_tensor_with_itself_claims_nothing() -> None:
    graph = ExecutedGraph(
        nodes=[
            _node("input", "input", "input", "Input", [1, 2, 4, 4]),
            _node("a", "module", "a", "ReLU", [1, 2, 4, 4]),
            _node("op:cat", "op", "cat", "cat", [1, 4, 4, 4], [[1, 2, 4, 4], [1, 2, 4, 4]]),
            _node("relu", "module", "relu", "ReLU", [1, 4, 4, 4]),
        ],
        edges=[("input", "a"), ("a", "op:cat"), ("op:cat", "relu")],  # one producer for two inputs
    )
    assert repeated_dead_channels(graph, {("a", 1): {0}, ("relu", 1): {0, 2}}, [("a", 1), ("relu", 1)]) == {("a", 1): set(), ("relu", 1): set()}
    assert repeated_dead_channels(None, {("a", 1): {0}}, [("a", 1)]) == {}


class PlainStack(nn.Module):
    """Five conv-BatchNorm-ReLU layers of 8 channels; layer k's ReLU zeroes k + 1 channels."""

    def __init__(self, batchnorm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(5):
            conv = nn.Conv2d(3 if k == 0 else 8, 8, 1)
            _set_conv(conv, dead=list(range(k + 1)), seed=10 + k)
            layers += [conv, nn.BatchNorm2d(8) if batchnorm else nn.Identity(), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class _Alerts(HTMLParser):
    """The page's alert list: group lines, visible alerts, and those folded in a <details>."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[str] = []
        self.shown: list[str] = []
        self.folded: list[str] = []
        self._depth_details = 0
        self._li: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag == "details":
            self._depth_details += 1
        if tag == "li" and (cls.startswith("alert ") or cls == "alert-group"):
            self._li, self._text = cls, []

    def handle_endtag(self, tag):
        if tag == "details":
            self._depth_details -= 1
        if tag == "li" and self._li is not None:
            text = " ".join("".join(self._text).split())
            (self.groups if self._li == "alert-group" else self.folded if self._depth_details else self.shown).append(text)
            self._li = None

    def handle_data(self, data):
        if self._li is not None:
            self._text.append(data)


def test_many_alerts_of_one_kind_read_as_one_line_worst_first_the_rest_folded(tmp_path) -> None:
    report = build_report(PlainStack(), probes(), progress=False, attributions=False, layer_types=["ReLU"])
    dead = dead_alerts(report)
    # Every one stays in the data: layer k (ReLU at index 3k+2) has k+1 of 8 dead.
    assert {a.layer: a.value for a in dead} == {f"body.{3 * k + 2}": (k + 1) / 8 for k in range(5)}
    paths = report.write(html=str(tmp_path / "r.html"), json=str(tmp_path / "r.json"), markdown=str(tmp_path / "r.md"))
    assert len(paths) == 3
    assert sum(a["kind"] == "dead_channels" for a in json.loads((tmp_path / "r.json").read_text())["alerts"]) == 5
    html = (tmp_path / "r.html").read_text()
    start = html.index('<section id="alerts"')
    page = _Alerts()
    page.feed(html[start : html.index("</section>", start)])  # the alerts card, not each section's own list
    assert page.groups == ["dead channels on 5 layers (4 warnings, 1 info); the worst first:"]
    dead_shown = [t for t in page.shown if t.split()[1:3] == ["dead", "channels"]]
    assert [t.split(" are constant")[0] for t in dead_shown] == [
        "warning dead channels body.14 5 of 8 channels (62%)",
        "warning dead channels body.11 4 of 8 channels (50%)",
        "warning dead channels body.8 3 of 8 channels (38%)",
    ]
    assert [t.split(" are constant")[0] for t in page.folded] == [
        "warning dead channels body.5 2 of 8 channels (25%)",
        "info dead channels body.2 1 of 8 channels (12%)",
    ]
    markdown = (tmp_path / "r.md").read_text()
    rows = [line for line in markdown.splitlines() if "are constant over every probe" in line]
    assert [row.split("|")[2].strip() for row in rows] == ["`body.14`", "`body.11`", "`body.8`"]
    assert "dead channels on 5 layers, the worst listed" in markdown


def test_dead_channels_nearly_everywhere_with_batchnorm_never_updated_reads_as_untrained() -> None:
    report = build_report(PlainStack(), probes(), progress=False, attributions=False, layer_types=["ReLU"])
    untrained = [a for a in report.alerts if a.kind.value == "untrained"]
    assert [(a.severity.value, a.layer, a.value) for a in untrained] == [("warning", "", 1.0)]
    assert untrained[0].message.startswith(
        "dead channels in 5 of 5 measured activation layers (100%) and all 5 BatchNorm layers still at their initial statistics"
    )
    assert "the weights look untrained or were not loaded" in untrained[0].message


@pytest.mark.parametrize("case", ["trained batchnorm", "no batchnorm", "few dead layers"])
def test_no_untrained_finding_where_the_pattern_does_not_hold(case: str) -> None:
    model = PlainStack(batchnorm=case != "no batchnorm")
    if case == "trained batchnorm":
        bn = model.body[1]
        bn.num_batches_tracked.fill_(100)  # statistics updated once: the model was trained
    if case == "few dead layers":
        for k in range(3):  # two of five ReLUs keep dead channels: 40% < 50%
            _set_conv(model.body[3 * k], dead=[], seed=20 + k)
    report = build_report(model, probes(), progress=False, attributions=False, layer_types=["ReLU"])
    assert [a for a in report.alerts if a.kind.value == "untrained"] == []
    if case == "few dead layers":
        assert len(dead_alerts(report)) == 2  # the dead channels themselves are still reported
