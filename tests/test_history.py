"""The history of a training run: a report per checkpoint, reused while current, and the index
page over them (rows, weight changes, activation trends, alerts, filters, predictions)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.datasets import load_digits

from cnnreport.analysis.history import weight_changes
from cnnreport.cli import main

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.conv2(x)).mean((2, 3)))
'''


def test_weight_change_is_the_relative_norm_of_the_difference() -> None:
    # ||(3,4) - (0,0)|| ... worked by hand: first (3,4) |.|=5; then (3,4)+(0,5)=(3,9): moved 5 -> 1.0;
    # then (3,9) again: 0 from the previous, still 1.0 from the first.
    states = [
        {"a.weight": torch.tensor([3.0, 4.0]), "a.bias": torch.tensor([1.0]), "bn.running_mean": torch.zeros(2)},
        {"a.weight": torch.tensor([3.0, 9.0]), "a.bias": torch.tensor([7.0]), "bn.running_mean": torch.ones(2)},
        {"a.weight": torch.tensor([3.0, 9.0], dtype=torch.float16), "a.bias": torch.tensor([7.0]), "bn.running_mean": torch.ones(2)},
    ]
    (change,) = weight_changes(states)
    assert change.layer == "a"
    assert change.from_previous == [None, 1.0, 0.0]
    assert change.from_first == [None, 1.0, 1.0]


def test_a_missing_or_reshaped_layer_has_no_change_and_a_zero_reference_is_infinite() -> None:
    states = [{"z.weight": torch.zeros(2), "k.weight": torch.ones(2)}, {"z.weight": torch.ones(2)}, {"z.weight": torch.ones(2), "k.weight": torch.ones(3)}]
    changes = {c.layer: c for c in weight_changes(states)}
    assert changes["z"].from_previous == [None, float("inf"), 0.0]
    assert changes["k"].from_previous == [None, None, None] and changes["k"].from_first == [None, None, None]


def _train(folder: Path, epochs: int = 4) -> tuple[Path, Path]:
    """Train Net on scikit-learn's digits with a decaying rate, conv2 frozen; a checkpoint per epoch."""
    (folder / "net.py").write_text(NET)
    namespace: dict = {}
    exec(compile(NET, "net.py", "exec"), namespace)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = namespace["Net"]()
    model.conv2.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.4, momentum=0.9)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.3)
    runs = folder / "runs"
    runs.mkdir()
    torch.save(model.state_dict(), runs / "epoch_0.pt")
    for epoch in range(1, epochs + 1):
        model.train()
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()
        schedule.step()
        torch.save(model.state_dict(), runs / f"epoch_{epoch}.pt")
    probes = folder / "probes.npy"
    np.save(probes, x[:6].numpy())
    return runs, probes


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.titles: list[str] = []
        self._cell: list[str] | None = None
        self._in: list[str] = []
        self._section = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id", "")
        if self._section == "snapshots" and tag == "tr":
            self.rows.append([])
        if self._section == "snapshots" and tag == "td":
            self._cell = []
        if self._section == "snapshots" and tag == "a":
            self.links.append(a["href"])
        self._in.append(tag)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        if self._in:
            self._in.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in and self._in[-1] == "title" and self._section == "weights":
            self.titles.append(data)


def _history(runs: Path, probes: Path, *extra: str):
    return CliRunner().invoke(main, ["history", str(runs.parent / "net.py") + ":Net", str(runs / "*.pt"), "--probes", str(probes), "-o", str(runs / "index.html"), *extra])


def test_history_of_a_trained_model_shows_it_learn_settle_and_a_frozen_layer_stay(tmp_path) -> None:
    runs, probes = _train(tmp_path)
    done = _history(runs, probes)
    assert done.exit_code == 0, done.output
    assert "5 checkpoints, 5 reports built, 0 reused" in done.output
    for epoch in range(5):
        record = json.loads((runs / f"epoch_{epoch}.snapshot.json").read_text())
        assert record == {"format": "cnnreport-snapshot/1", "step": epoch, "epoch": None, "metrics": {}, "checkpoint": f"epoch_{epoch}.pt",
                          "report_html": f"epoch_{epoch}.html", "report_json": f"epoch_{epoch}.json"}
        report = json.loads((runs / f"epoch_{epoch}.json").read_text())
        assert report["provenance"]["checkpoint_path"].endswith(f"epoch_{epoch}.pt")
    page = _Page()
    page.feed((runs / "index.html").read_text())
    body = [r for r in page.rows if r]
    assert [r[0] for r in body] == [f"step {e}" for e in range(5)]
    assert page.links == [f"epoch_{e}.html" for e in range(5)]
    assert all((runs / link).is_file() for link in page.links)
    # The tooltips carry each cell's value: conv2 (frozen) never moves; conv1 moves most early.
    previous = {}
    for title in page.titles:
        m = re.fullmatch(r"(\S+) at (\d+): (.+)", title)
        if m and "from the previous" not in title:
            previous.setdefault(m.group(1), []).append(m.group(3))
    assert previous["conv2"][:5] == ["none", "0.00%", "0.00%", "0.00%", "0.00%"]
    conv1 = [float(v.rstrip("%")) for v in previous["conv1"][1:5]]
    assert conv1 == sorted(conv1, reverse=True) and conv1[0] > 3 * conv1[-1]  # large steps first, then settling


def test_a_current_report_is_reused_and_a_new_checkpoint_costs_one(tmp_path) -> None:
    runs, probes = _train(tmp_path, epochs=2)
    assert _history(runs, probes).exit_code == 0
    html_before = (runs / "epoch_1.html").read_bytes()
    again = _history(runs, probes)
    assert "3 checkpoints, 0 reports built, 3 reused" in again.output
    assert (runs / "epoch_1.html").read_bytes() == html_before
    torch.save(torch.load(runs / "epoch_2.pt"), runs / "epoch_3.pt")
    assert "4 checkpoints, 1 reports built, 3 reused" in _history(runs, probes).output
    # Other options make every report stale.
    assert "4 checkpoints, 4 reports built, 0 reused" in _history(runs, probes, "--max-channels", "4").output
    # Other tensors under the same name: that report is rebuilt.
    state = torch.load(runs / "epoch_0.pt")
    state["head.bias"] += 1
    torch.save(state, runs / "epoch_0.pt")
    assert "4 checkpoints, 1 reports built, 3 reused" in _history(runs, probes, "--max-channels", "4").output


def test_filters_across_checkpoints_share_one_scale_and_predictions_are_tabled(tmp_path) -> None:
    from cnnreport.history.index import build_index, read_entries

    runs, probes = _train(tmp_path, epochs=2)
    assert _history(runs, probes, "--evolve-layers", "conv*").exit_code == 0
    index = build_index(read_entries(runs, runs / "index.html"), evolve_layers=["conv*"])
    assert [e.layer for e in index.evolutions] == ["conv1", "conv2"]
    expected = max(float(torch.load(runs / f"epoch_{e}.pt")["conv1.weight"][:16].abs().max()) for e in range(3))
    assert index.evolutions[0].scale == pytest.approx(expected, rel=1e-6)
    assert all(f is not None and f.width > 0 for f in index.evolutions[0].figures)
    assert index.probes == [f"probes.npy[{i}]" for i in range(6)]
    top1 = json.loads((runs / "epoch_2.json").read_text())["probes"][0]["predictions"][0]
    assert index.predictions[0][2] == f"{top1['label']} ({100 * top1['probability']:.0f}%)"


def test_history_refuses_what_cannot_work(tmp_path) -> None:
    runs, probes = _train(tmp_path, epochs=1)
    missing = CliRunner().invoke(main, ["history", str(tmp_path / "net.py") + ":Net", str(runs / "nothing*.pt"), "--probes", str(probes)])
    assert missing.exit_code == 2 and "no checkpoint matches" in missing.output
    bad_layer = _history(runs, probes, "--evolve-layers", "nope*")
    assert bad_layer.exit_code == 2 and "--evolve-layers nope*: no convolution matches" in bad_layer.output
