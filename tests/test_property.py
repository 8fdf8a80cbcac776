"""Issue 3, hostile input: random small conv stacks either give a consistent report or fail
with cnnreport's own one-line error, never an internal exception."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnreport import CnnReportError, build_report


@st.composite
def conv_stacks(draw):
    depth = draw(st.integers(1, 4))
    channels = draw(st.integers(1, 4))
    first = channels
    layers = []
    for _ in range(depth):
        groups = draw(st.sampled_from([1, channels]))
        out = draw(st.integers(1, 3)) * groups
        layers.append(
            nn.Conv2d(
                channels,
                out,
                kernel_size=draw(st.integers(1, 5)),
                stride=draw(st.integers(1, 3)),
                padding=draw(st.integers(0, 2)),
                dilation=draw(st.integers(1, 2)),
                groups=groups,
                bias=draw(st.booleans()),
            )
        )
        if draw(st.booleans()):
            layers.append(nn.ReLU(inplace=draw(st.booleans())))
        channels = out
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    batch = draw(st.integers(1, 3))
    return nn.Sequential(*layers), first, size, batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_stacks(), st.integers(0, 2**16))
def test_random_conv_stacks_report_or_fail_clearly(stack, seed):
    model, channels, (h, w), batch = stack
    torch.manual_seed(seed)
    probes = torch.randn(batch, channels, h, w)
    try:
        report = build_report(model, probes, progress=False)
    except CnnReportError as exc:
        line = exc.one_line()
        assert line and "\n" not in line
        return
    assert report.model.total_params == sum(p.numel() for p in model.parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(report.sections) == len(convs)
    html = report.to_html()
    assert html.count('class="layer"') == len(convs)
