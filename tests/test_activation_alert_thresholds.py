"""The activation checks (dead channels, exploding/vanishing scale, saturation) on captures
written out by hand: each alert's kind, severity, layer, value and message at a threshold and
just either side of it, and the cases each check leaves to another."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from literal_captures import call, context, plain, ranges
from torch import nn

from cnnreport.analysis.alerts import check_activation_scale, check_dead_channels, check_saturation

ABOVE_QUARTER = float(np.nextafter(0.25, 1.0))
BELOW_QUARTER = float(np.nextafter(0.25, 0.0))


def dead_message(new: int, channels: int, pct: str, listed: str) -> str:
    return f"{new} of {channels} channels ({pct}) are constant over every probe and position: {listed}"


# --------------------------------------------------------------------------------------------
# Dead channels


def one_dead_of_four(name: str = "relu", order: int = 0, **kw):
    # Channel 0 constant at 0; the others vary. 4 positions per channel per probe, 2 probes.
    return call(name, order, type="ReLU", **ranges((0.0, 0.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)), **kw)


@pytest.mark.parametrize(
    ("fraction", "severity"),
    [(0.25, "warning"), (ABOVE_QUARTER, "info"), (BELOW_QUARTER, "warning"), (None, "warning")],
    ids=["at", "just-above", "just-below", "default-25%"],
)
def test_dead_channel_severity_is_a_warning_at_or_above_the_fraction(fraction, severity):
    options = {} if fraction is None else {"dead_channel_fraction": fraction}
    found = check_dead_channels(context([one_dead_of_four(order=3)], **options))
    assert plain(found) == [("dead_channels", severity, "relu", dead_message(1, 4, "25%", "0"), 0.25, 3.0)]


def test_dead_channels_list_eight_then_count_the_rest():
    ten_of_twelve = call("a", 0, shape=(12, 1, 1), **ranges(*([(0.5, 0.5)] * 10 + [(0.0, 1.0)] * 2)))
    eight_of_nine = call("b", 1, shape=(9, 1, 1), **ranges(*([(0.5, 0.5)] * 8 + [(0.0, 1.0)])))
    found = plain(check_dead_channels(context([ten_of_twelve])))
    assert found == [("dead_channels", "warning", "a", dead_message(10, 12, "83%", "0, 1, 2, 3, 4, 5, 6, 7 … (+2)"), 10 / 12, 0.0)]
    found = plain(check_dead_channels(context([eight_of_nine])))
    assert found == [("dead_channels", "warning", "b", dead_message(8, 9, "89%", "0, 1, 2, 3, 4, 5, 6, 7"), 8 / 9, 1.0)]


def test_a_small_dead_share_keeps_two_digits():
    # 1 of 200 channels: 0.5%, not a rounded 0% or 1%.
    layer = call("wide", 0, shape=(200, 1, 1), **ranges((2.0, 2.0), *([(0.0, 1.0)] * 199)))
    assert plain(check_dead_channels(context([layer]))) == [("dead_channels", "info", "wide", dead_message(1, 200, "0.5%", "0"), 0.005, 0.0)]


def test_a_channel_dead_in_the_layer_before_is_not_reported_again():
    conv = call("conv", 0, **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    same = call("relu", 1, type="ReLU", **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 1.0)))
    found = plain(check_dead_channels(context([conv, same])))
    assert found == [("dead_channels", "warning", "conv", dead_message(1, 4, "25%", "0"), 0.25, 0.0)]
    # A layer without channel ranges in between changes nothing: its successor is compared with conv.
    blind = call("pool", 1, type="MaxPool2d")
    found = plain(check_dead_channels(context([conv, blind, call("relu", 2, type="ReLU", **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 1.0)))])))
    assert [f[2] for f in found] == ["conv"]


def test_more_dead_channels_or_another_width_than_the_layer_before_are_new():
    conv = call("conv", 0, **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    more = call("relu", 1, type="ReLU", **ranges((1.0, 1.0), (2.0, 2.0), (0.0, 3.0), (0.0, 1.0)))
    found = plain(check_dead_channels(context([conv, more])))
    assert found[1] == ("dead_channels", "warning", "relu", dead_message(2, 4, "50%", "0, 1"), 0.5, 1.0)
    wider = call("up", 1, shape=(8, 1, 1), **ranges((1.0, 1.0), *([(0.0, 1.0)] * 7)))
    found = plain(check_dead_channels(context([conv, wider])))
    assert found[1] == ("dead_channels", "info", "up", dead_message(1, 8, "12%", "0"), 0.125, 1.0)
    # A layer with no dead channel in between: the next one's channel 0 is new again.
    live = call("mid", 1, **ranges((0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    again = call("relu", 2, type="ReLU", **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 1.0)))
    assert [f[2] for f in plain(check_dead_channels(context([conv, live, again])))] == ["conv", "relu"]


def test_after_a_layer_whose_every_channel_is_constant_nothing_more_is_reported():
    collapsed = call("a", 0, shape=(2, 2, 2), **ranges((0.0, 0.0), (3.0, 3.0)))
    later = call("b", 1, **ranges((0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (5.0, 5.0)))
    found = plain(check_dead_channels(context([collapsed, later])))
    assert found == [("dead_channels", "warning", "a", dead_message(2, 2, "100%", "0, 1"), 1.0, 0.0)]
    # One channel short of all of them: not a collapse, the later layer's channel 3 is new.
    partial = call("a", 0, shape=(3, 2, 2), **ranges((0.0, 0.0), (3.0, 3.0), (0.0, 1.0)))
    found = plain(check_dead_channels(context([partial, later])))
    assert [(f[2], f[3]) for f in found] == [("a", dead_message(2, 3, "67%", "0, 1")), ("b", dead_message(1, 4, "25%", "3"))]


def test_a_one_channel_layer_that_is_constant_is_a_collapse_too():
    single = call("a", 0, shape=(1, 2, 2), **ranges((0.5, 0.5)))
    later = call("b", 1, **ranges((0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (5.0, 5.0)))
    assert [(f[2], f[3]) for f in plain(check_dead_channels(context([single, later])))] == [("a", dead_message(1, 1, "100%", "0"))]


def test_a_layer_whose_ranges_cannot_tell_is_passed_over():
    # One probe, one position per channel: a single value is trivially constant, so nothing is said.
    one_value = call("one", 0, probes=1, shape=(4, 1, 1), **ranges((1.0, 1.0), (2.0, 2.0), (0.0, 0.0), (3.0, 3.0)))
    later = call("b", 1, shape=(8, 1, 1), **ranges((1.0, 1.0), *([(0.0, 1.0)] * 7)))
    assert [(f[2], f[3]) for f in plain(check_dead_channels(context([one_value, later])))] == [("b", dead_message(1, 8, "12%", "0"))]


def batchnorm_then_relu(gamma: float, threshold: float = 0.5):
    model = nn.Module().eval()
    model.bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([1.0, gamma, 1.0, 1.0]))
    # The BatchNorm's channel 1 still varies a little; the ReLU after it is constant there.
    bn = call("bn", 0, type="BatchNorm2d", **ranges((-1.0, 1.0), (0.1, 0.2), (-2.0, 2.0), (-1.0, 3.0)))
    relu = call("relu", 1, type="ReLU", **ranges((0.0, 1.0), (0.0, 0.0), (0.0, 2.0), (0.0, 3.0)))
    return check_dead_channels(context([bn, relu], model, bn_min_gamma=threshold))


def test_channels_a_batchnorm_switched_off_are_not_dead_channels_after_it():
    assert plain(batchnorm_then_relu(gamma=0.25)) == []
    assert plain(batchnorm_then_relu(gamma=-0.25)) == []  # |gamma| counts
    assert plain(batchnorm_then_relu(gamma=0.5)) == [("dead_channels", "warning", "relu", dead_message(1, 4, "25%", "1"), 0.25, 1.0)]
    assert plain(batchnorm_then_relu(gamma=0.25, threshold=0.25)) == [("dead_channels", "warning", "relu", dead_message(1, 4, "25%", "1"), 0.25, 1.0)]


def test_small_weights_of_a_layer_other_than_batchnorm_explain_nothing():
    model = nn.Module().eval()
    model.conv = nn.Conv2d(1, 4, 1, bias=False)
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([1.0, 0.25, 1.0, 1.0]).reshape(4, 1, 1, 1))
    conv = call("conv", 0, **ranges((-1.0, 1.0), (0.1, 0.2), (-2.0, 2.0), (-1.0, 3.0)))
    relu = call("relu", 1, type="ReLU", **ranges((0.0, 1.0), (0.0, 0.0), (0.0, 2.0), (0.0, 3.0)))
    found = plain(check_dead_channels(context([conv, relu], model, bn_min_gamma=0.5)))
    assert found == [("dead_channels", "warning", "relu", dead_message(1, 4, "25%", "1"), 0.25, 1.0)]
    # A BatchNorm without affine weights switches nothing off.
    model.conv = nn.BatchNorm2d(4, affine=False).eval()
    found = plain(check_dead_channels(context([conv, relu], model, bn_min_gamma=0.5)))
    assert found == [("dead_channels", "warning", "relu", dead_message(1, 4, "25%", "1"), 0.25, 1.0)]


def saturated_sigmoid(high: int, low: int = 0):
    # 5 channels of 4 positions, 2 probes: 40 values; channel 0 constant at 1.
    return call("sig", 0, type="Sigmoid", shape=(5, 2, 2), limits=(0.0, 1.0), saturated_high=high, saturated_low=low, **ranges((1.0, 1.0), *([(0.0, 1.0)] * 4)))


def test_a_saturated_layer_is_left_to_the_saturation_check():
    assert plain(check_dead_channels(context([saturated_sigmoid(36)]))) == []  # 90%: saturated
    assert plain(check_dead_channels(context([saturated_sigmoid(30, low=6)]))) == []
    found = plain(check_dead_channels(context([saturated_sigmoid(35)])))
    assert found == [("dead_channels", "info", "sig", dead_message(1, 5, "20%", "0"), 0.2, 0.0)]
    found = plain(check_dead_channels(context([saturated_sigmoid(36)], saturation_fraction=float(np.nextafter(0.9, 1.0)))))
    assert found == [("dead_channels", "info", "sig", dead_message(1, 5, "20%", "0"), 0.2, 0.0)]


def test_a_layer_is_reported_once_at_its_first_call_with_dead_channels():
    first = call("conv", 0, detailed=True, **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    second = call("conv", 1, call_index=2, detailed=True, shape=(8, 1, 1), **ranges((1.0, 1.0), *([(0.0, 1.0)] * 7)))
    found = check_dead_channels(context([first, second]))
    assert [(a.layer, a.section_id, order) for a, order in found] == [("conv", "sec-conv", 0.0)]
    live = call("conv", 0, detailed=True, **ranges((0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    found = check_dead_channels(context([live, second]))
    assert [(a.layer, a.section_id, a.message, order) for a, order in found] == [("conv (call 2)", "sec-conv-call2", dead_message(1, 8, "12%", "0"), 1.0)]


def test_a_container_call_is_not_checked_only_its_children():
    model = nn.Module().eval()
    model.block = nn.Sequential(nn.ReLU())
    outer = call("block", 0, type="Sequential", **ranges((1.0, 1.0), (0.0, 2.0), (0.0, 3.0), (-1.0, 1.0)))
    inner = call("block.0", 1, type="ReLU", shape=(8, 1, 1), **ranges((1.0, 1.0), *([(0.0, 1.0)] * 7)))
    assert [a.layer for a, _ in check_dead_channels(context([outer, inner], model))] == ["block.0"]


# --------------------------------------------------------------------------------------------
# Exploding and vanishing activations


def scaled(name: str = "conv", order: int = 0, *, outs=(2000.0, 3000.0, 8000.0), ins=(1.0, 2.0, 4.0), **kw):
    # Per probe ratios 2000, 1500, 2000: median 2000; median input 2, median output 3000.
    return call(name, order, probes=3, input_rms=list(ins), output_rms=list(outs), **kw)


EXPLODING = "output RMS is 2e+03x its input's (2 -> 3e+03, median over probes)"
VANISHING = "output RMS is 0.0005x its input's (2e+03 -> 2, median over probes)"
SHRINKING = {"ins": (1000.0, 2000.0, 4000.0), "outs": (0.5, 3.0, 2.0)}  # ratios 0.0005, 0.0015, 0.0005


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(None, [EXPLODING]), (2000.0, []), (float(np.nextafter(2000.0, 0.0)), [EXPLODING]), (1999.0, [EXPLODING])],
    ids=["default", "at", "just-below", "below"],
)
def test_exploding_is_a_median_ratio_strictly_above_the_threshold(ratio, expected):
    options = {} if ratio is None else {"explode_ratio": ratio}
    found = plain(check_activation_scale(context([scaled(order=2)], **options)))
    assert found == [("exploding_activations", "warning", "conv", m, 2000.0, 2.0) for m in expected]


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [(None, [VANISHING]), (0.0005, []), (float(np.nextafter(0.0005, 1.0)), [VANISHING])],
    ids=["default", "at", "just-above"],
)
def test_vanishing_is_a_median_ratio_strictly_below_the_threshold(ratio, expected):
    options = {} if ratio is None else {"vanish_ratio": ratio}
    found = plain(check_activation_scale(context([scaled(order=1, **SHRINKING)], **options)))
    assert found == [("vanishing_activations", "warning", "conv", m, 0.0005, 1.0) for m in expected]


def test_a_ratio_inside_the_band_or_unknown_says_nothing():
    assert check_activation_scale(context([scaled(outs=(500.0, 1000.0, 2000.0))])) == []  # median 500
    assert check_activation_scale(context([call("conv", 0, probes=3, output_rms=[1.0, 2.0, 3.0])])) == []  # no input RMS


def test_layers_whose_scale_is_set_by_design_or_non_finite_are_left_out():
    assert check_activation_scale(context([scaled(type="Sigmoid")])) == []
    assert check_activation_scale(context([scaled(type="BatchNorm2d", **SHRINKING)])) == []
    assert [a.kind.value for a, _ in check_activation_scale(context([scaled(type="ReLU")]))] == ["exploding_activations"]
    assert check_activation_scale(context([scaled(probe_nan=[0, 1, 0])])) == []
    assert check_activation_scale(context([scaled(probe_inf=[0, 0, 2])])) == []
    # Each left out alone: the layers after them are still checked.
    unknown = call("blind", 0, probes=3, output_rms=[1.0, 2.0, 3.0])
    for skipped in (scaled("sig", 0, type="Sigmoid"), scaled("bad", 0, probe_nan=[1, 0, 0]), unknown):
        assert [(a.layer, order) for a, order in check_activation_scale(context([skipped, scaled("conv", 1)]))] == [("conv", 1.0)]


def with_bias(bias: list[float]) -> nn.Module:
    model = nn.Module().eval()
    model.conv = nn.Conv2d(1, len(bias), 1)
    with torch.no_grad():
        model.conv.bias.copy_(torch.tensor(bias))
    return model


def test_an_output_about_the_bias_alone_is_not_exploding():
    # Median output 3000; within 2x of the bias's RMS is the bias's doing.
    kinds = lambda model: [a.kind.value for a, _ in check_activation_scale(context([scaled()], model))]  # noqa: E731
    assert kinds(with_bias([1500.0])) == []  # exactly 2x
    assert kinds(with_bias([1499.0])) == ["exploding_activations"]
    assert kinds(with_bias([1500.0, -1500.0, 1500.0, -1500.0])) == []  # RMS over the channels: 1500
    assert kinds(with_bias([1000.0, -1000.0, 1000.0, 1000.0])) == ["exploding_activations"]  # RMS 1000: 3x
    assert kinds(with_bias([0.0])) == ["exploding_activations"]
    # Two probes with an all-zero input: their ratio is left out, their output RMS (0) is not;
    # a zero bias dominates nothing.
    zero_inputs = scaled(ins=(0.0, 0.0, 1.0), outs=(0.0, 0.0, 5000.0))
    assert [a.kind.value for a, _ in check_activation_scale(context([zero_inputs], with_bias([0.0])))] == ["exploding_activations"]
    no_bias = nn.Module().eval()
    no_bias.conv = nn.Conv2d(1, 1, 1, bias=False)
    assert kinds(no_bias) == ["exploding_activations"]
    # The bias has no say in a vanishing layer.
    found = check_activation_scale(context([scaled(**SHRINKING)], with_bias([1500.0])))
    assert [a.kind.value for a, _ in found] == ["vanishing_activations"]


def test_each_kind_is_reported_once_per_layer_at_its_first_call():
    calls = [
        scaled("conv", 0, detailed=True),
        scaled("conv", 1, call_index=2, detailed=True),
        scaled("conv", 2, call_index=3, detailed=True, **SHRINKING),
        scaled("conv", 3, call_index=4, detailed=True, **SHRINKING),
    ]
    found = check_activation_scale(context(calls))
    assert [(a.kind.value, a.layer, a.section_id, order) for a, order in found] == [
        ("exploding_activations", "conv", "sec-conv", 0.0),
        ("vanishing_activations", "conv (call 3)", "sec-conv-call3", 2.0),
    ]


def test_a_container_is_not_checked_for_scale():
    model = nn.Module().eval()
    model.block = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    found = check_activation_scale(context([scaled("block", 0, type="Sequential"), scaled("block.0", 1)], model))
    assert [(a.layer, order) for a, order in found] == [("block.0", 1.0)]


# --------------------------------------------------------------------------------------------
# Saturation


def bounded(type: str, limits, low: int, high: int, name: str = "act", order: int = 0, **kw):
    # 5 channels of 4 positions, 2 probes: 40 values.
    return call(name, order, type=type, shape=(5, 2, 2), limits=limits, saturated_low=low, saturated_high=high, **kw)


@pytest.mark.parametrize(
    ("low", "high", "fraction", "expected"),
    [
        (14, 22, None, "90% of values are pinned at 0 or 1 (35% low, 55% high): gradients through them vanish"),
        (14, 21, None, None),
        (14, 22, float(np.nextafter(0.9, 1.0)), None),
        (14, 21, 0.875, "88% of values are pinned at 0 or 1 (35% low, 52% high): gradients through them vanish"),
        (36, 0, None, "90% of values are pinned at 0 or 1 (90% low, 0% high): gradients through them vanish"),
    ],
    ids=["at-default", "just-below", "threshold-just-above", "at-option", "all-low"],
)
def test_saturation_is_reported_at_or_above_the_fraction(low, high, fraction, expected):
    options = {} if fraction is None else {"saturation_fraction": fraction}
    found = plain(check_saturation(context([bounded("Sigmoid", (0.0, 1.0), low, high, order=4)], **options)))
    assert found == ([] if expected is None else [("saturation", "warning", "act", expected, (low + high) / 40, 4.0)])


def test_relu6_and_hardtanh_from_zero_count_only_their_upper_limit():
    found = plain(check_saturation(context([bounded("ReLU6", (0.0, 6.0), 4, 36)])))
    assert found == [("saturation", "warning", "act", "90% of values are pinned at 6: gradients through them vanish", 0.9, 0.0)]
    assert check_saturation(context([bounded("ReLU6", (0.0, 6.0), 40, 0)])) == []
    assert check_saturation(context([bounded("ReLU6", (0.0, 6.0), 5, 35)])) == []
    found = plain(check_saturation(context([bounded("Hardtanh", (0.0, 2.5), 10, 38)])))
    assert found == [("saturation", "warning", "act", "95% of values are pinned at 2.5: gradients through them vanish", 0.95, 0.0)]
    # A Hardtanh from -1 counts both limits.
    found = plain(check_saturation(context([bounded("Hardtanh", (-1.0, 1.0), 18, 18)])))
    assert found == [("saturation", "warning", "act", "90% of values are pinned at -1 or 1 (45% low, 45% high): gradients through them vanish", 0.9, 0.0)]


def test_saturation_needs_limits_values_probes_and_finite_output():
    assert check_saturation(context([bounded("Sigmoid", None, 0, 40)])) == []
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, numel_per_probe=0)])) == []
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, probes=0)])) == []
    # Even with a threshold of 0, which reports every bounded layer that has values.
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, numel_per_probe=0)], saturation_fraction=0.0)) == []
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, probes=0)], saturation_fraction=0.0)) == []
    assert [a.message for a, _ in check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 0)], saturation_fraction=0.0))] == [
        "0% of values are pinned at 0 or 1 (0% low, 0% high): gradients through them vanish"
    ]
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, probe_nan=[1, 0])])) == []
    assert check_saturation(context([bounded("Sigmoid", (0.0, 1.0), 0, 40, probe_inf=[0, 1])])) == []


def test_saturation_is_reported_once_per_layer():
    calls = [bounded("Sigmoid", (0.0, 1.0), 0, 40, order=0), bounded("Sigmoid", (0.0, 1.0), 0, 40, order=1, call_index=2)]
    assert [(a.layer, order) for a, order in check_saturation(context(calls))] == [("act", 0.0)]
    calls[0] = bounded("Sigmoid", (0.0, 1.0), 0, 0, order=0)
    assert [(a.layer, order) for a, order in check_saturation(context(calls))] == [("act (call 2)", 1.0)]
