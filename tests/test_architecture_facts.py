"""Issue 9's architecture facts in the table: receptive fields, FLOPs, honest shared counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnreport import build_report


def _rows(report):
    return {row.name: row for row in report.layers if row.call_index == 1}


def test_receptive_fields_of_a_known_stack():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),  # r 3, j 1
        nn.Conv2d(2, 2, 3, padding=1),  # r 5, j 1
        nn.MaxPool2d(2),  # r 6, j 2
        nn.Conv2d(2, 2, 3, padding=1),  # r 6 + 2*2 = 10, j 2
        nn.Conv2d(2, 2, 3, padding=1, dilation=1, stride=2),  # r 14, j 4
    )
    rows = _rows(build_report(model, torch.rand(1, 1, 32, 32), progress=False))
    assert [(rows[n].receptive_field, rows[n].effective_stride) for n in "01234"] == [(3, 1), (5, 1), (6, 2), (10, 2), (14, 4)]


def test_three_3x3_convs_see_7_pixels_and_flops_are_twice_mult_adds():
    model = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(3)])
    report = build_report(model, torch.rand(2, 2, 16, 16), progress=False)
    rows = _rows(report)
    assert rows["2"].receptive_field == 7
    assert all(r.flops == 2 * r.mult_adds for r in report.layers if r.mult_adds)
    html = report.to_html()
    assert "RF / stride" in html and "FLOPs" in html


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 3, 1, bias=False)
        self.head = nn.Conv2d(3, 3, 1, bias=False)
        self.head.weight = self.embed.weight  # tied weights

    def forward(self, x):
        return self.head(torch.relu(self.embed(x)))


def test_tied_weights_are_counted_once_and_marked():
    model = Tied()
    report = build_report(model, torch.rand(1, 3, 4, 4), progress=False)
    assert report.model.total_params == 9 == sum(p.numel() for p in model.parameters())
    rows = _rows(report)
    assert rows["head"].shared_with == ["embed"] and rows["embed"].shared_with == ["head"]
    # torchinfo counts the shared 3x3 weight once per holder: 2 x 9. The page keeps its figure
    # and says why the totals differ.
    assert report.model.torchinfo_total_params == 18
    assert [n for n in report.notes if "torchinfo" in n] == [
        (
            "torchinfo counts 18 parameters; the model holds 9: torchinfo counts a parameter shared by "
            "several modules once per module, the totals here count each tensor once."
        )
    ]


def test_lazy_modules_are_counted_after_the_probe_forward_initialises_them():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    probes = torch.rand(2, 3, 6, 6)
    rng = torch.random.get_rng_state()
    report = build_report(model, probes, progress=False)
    assert report.model.total_params == 3 * 4 * 9 + 4 + 4 * 16 * 2 + 2
    assert report.model.total_params == sum(p.numel() for p in model.parameters())
    assert len(report.sections) == 1
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_weight_statistics_equal_a_direct_computation():
    from cnnreport.analysis.statistics import weight_stats

    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3) * 0.1 + 0.02
    w[0] = 0.0
    got = weight_stats(w)
    flat = w.double().flatten()
    assert got.norm == pytest.approx(flat.norm().item(), rel=1e-5)
    assert got.mean == pytest.approx(flat.mean().item(), rel=1e-5)
    assert got.std == pytest.approx(flat.std(correction=0).item(), rel=1e-4)
    assert (got.min, got.max) == (pytest.approx(flat.min().item()), pytest.approx(flat.max().item()))
    near = (flat.abs() <= 1e-3 * flat.abs().max()).double().mean().item()
    assert near >= 72 / w.numel() and got.frac_near_zero == pytest.approx(near)
    bad = w.clone()
    bad[1, 0, 0, 0] = float("nan")
    assert weight_stats(bad).nan_count == 1
