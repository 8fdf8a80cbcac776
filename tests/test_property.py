"""Issue 3, hostile input: random small conv stacks either give a consistent report or fail
with cnnreport's own one-line error, never an internal exception."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnreport import build_report
from cnnreport.errors import ForwardError


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


def first_failing_layer(model: nn.Sequential, probes: torch.Tensor) -> tuple[int, tuple[int, ...]] | None:
    """Run the stack layer by layer in plain torch: the index of the first layer that cannot
    run (a kernel larger than its padded input) and the shape it was given, or None. The
    independent oracle for which examples must fail, and where."""
    x = probes.clone()
    with torch.no_grad():
        for index, layer in enumerate(copy.deepcopy(model).eval()):
            try:
                x = layer(x)
            except RuntimeError:
                return index, tuple(x.shape)
    return None


def test_random_conv_stacks_report_or_fail_clearly():
    """Every stack plain torch can run gives a consistent report; every one it cannot run
    fails with a one-line ForwardError naming the layer, and nothing else. Enough examples
    must be real reports for the property to mean something."""
    outcomes: list[str] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
    @given(conv_stacks(), st.integers(0, 2**16))
    def check(stack, seed):
        model, channels, (h, w), batch = stack
        torch.manual_seed(seed)
        probes = torch.randn(batch, channels, h, w)
        failing = first_failing_layer(model, probes)
        if failing is not None:
            with pytest.raises(ForwardError) as info:
                build_report(model, probes, progress=False)
            line = info.value.one_line()
            index, shape = failing
            assert line.startswith(f"the forward pass failed in {index} (Conv2d) given input {shape}"), (line, failing)
            assert "\n" not in line and "Traceback" not in line
            assert "kernel size can't be greater than actual input size" in line.lower(), line
            outcomes.append("error")
            return
        report = build_report(model, probes, progress=False)
        assert report.model.total_params == sum(p.numel() for p in model.parameters())
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(report.sections) == len(convs)
        html = report.to_html()
        assert html.count('class="layer"') == len(convs)
        outcomes.append("report")

    check()
    assert outcomes.count("report") >= 15, outcomes
    assert outcomes.count("error") >= 10, outcomes
