"""The weight checks (dead and duplicate filters, pruning, BatchNorm, the untrained pattern) and
the whole-model notes, on tiny models whose weights are set by hand and captures written out
as literal numbers: each alert's kind, severity, layer, figures and message at a threshold and
just either side of it; and the order the alerts come in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from literal_captures import call, context, plain, ranges
from torch import nn

from cnnreport.analysis.alerts import (
    check_batchnorm,
    check_dead_filters,
    check_duplicate_filters,
    check_no_convolution,
    check_prunable,
    check_synthetic_input,
    check_untrained,
    health_alerts,
)
from cnnreport.capture.activations import CaptureResult
from cnnreport.datamodel import ReportOptions


def root(**modules: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, module in modules.items():
        setattr(model, name, module)
    return model.eval()


def conv_with_filters(rows: list[list[float]], bias: bool = False) -> nn.Conv2d:
    """A (1, len(row)) convolution of one input channel whose filters are ``rows``."""
    conv = nn.Conv2d(1, len(rows), (1, len(rows[0])), bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(rows).reshape(len(rows), 1, 1, len(rows[0])))
        if bias:
            conv.bias.fill_(0.5)
    return conv


def one_dead_of_four() -> nn.Conv2d:
    """2 inputs, 3x3, with bias: 18 weights a filter; filter 1 all zero, the others distinct."""
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(4)))
        conv.weight[1] = 0.0
    return conv


# --------------------------------------------------------------------------------------------
# Dead filters


def dead_filter_finding(**options):
    # Two calls: 10x10 and 5x6 output positions, 130 in all: 18 x 130 = 2,340 mult-adds.
    calls = [call("conv", 2, shape=(4, 10, 10)), call("conv", 3, call_index=2, shape=(4, 5, 6))]
    found = check_dead_filters(context([call("stem", 0), call("x", 1), *calls], root(conv=one_dead_of_four()), **options))
    return [(a.kind.value, a.severity.value, a.layer, a.message, a.value, a.numbers, order) for a, order in found]


DEAD_ONE = "1 of 4 filters (25%) have weight norm below 1e-06: 1; removing them would save 19 parameters and 2,340 mult-adds per probe"
DEAD_NUMBERS = {"filters": 1.0, "params": 19.0, "mult_adds": 2340.0}


@pytest.mark.parametrize(
    ("fraction", "severity"),
    [(None, "warning"), (0.25, "warning"), (float(np.nextafter(0.25, 1.0)), "info"), (float(np.nextafter(0.25, 0.0)), "warning")],
    ids=["default", "at", "just-above", "just-below"],
)
def test_dead_filters_severity_and_saving(fraction, severity):
    options = {} if fraction is None else {"dead_channel_fraction": fraction}
    assert dead_filter_finding(**options) == [("dead_filters", severity, "conv", DEAD_ONE, 0.25, DEAD_NUMBERS, 2.0)]


def test_the_dead_filter_norm_is_a_strict_bound_from_the_options():
    conv = one_dead_of_four()
    with torch.no_grad():
        conv.weight[3] = 0.0
        conv.weight[3, 1, 2, 2] = 0.5  # norm exactly 0.5
    at = check_dead_filters(context([], root(conv=conv), dead_filter_norm=0.5))
    above = check_dead_filters(context([], root(conv=conv), dead_filter_norm=0.625))
    assert [a.message for a, _ in at] == ["1 of 4 filters (25%) have weight norm below 0.5: 1; removing them would save 19 parameters (it never ran: mult-adds unknown)"]
    assert [(a.message, a.value, a.numbers) for a, _ in above] == [
        (
            "2 of 4 filters (50%) have weight norm below 0.625: 1, 3; removing them would save 38 parameters (it never ran: mult-adds unknown)",
            0.5,
            {"filters": 2.0, "params": 38.0, "mult_adds": 0.0},
        )
    ]


def test_layers_that_never_ran_sort_after_every_call_in_definition_order():
    model = root(a=one_dead_of_four(), b=one_dead_of_four())
    found = check_dead_filters(context([call("stem", 0), call("relu", 1)], model))
    # Three modules (the root, a, b): a at 2 + 1/4, b at 2 + 2/4.
    assert [(a.layer, a.section_id, order) for a, order in found] == [("a", "", 2.25), ("b", "", 2.5)]


def test_a_transposed_convolution_is_applied_at_its_input_positions():
    for stride, positions, words in [(2, 16, "288"), (1, 64, "1,152"), ((2, 1), 32, "576")]:
        up = nn.ConvTranspose2d(2, 4, 3, stride=stride, bias=False)
        with torch.no_grad():
            up.weight.copy_(torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1)))
            up.weight[:, 3] = 0.0  # output filter 3: 2 x 3 x 3 weights
        found = check_dead_filters(context([call("up", 0, shape=(4, 8, 8))], root(up=up)))
        assert [a.numbers for a, _ in found] == [{"filters": 1.0, "params": 18.0, "mult_adds": 18.0 * positions}], stride
        assert found[0][0].message.endswith(f"save 18 parameters and {words} mult-adds per probe"), stride


def test_a_one_dimensional_convolution_counts_its_length():
    conv = nn.Conv1d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0]]]))
    found = check_dead_filters(context([call("c", 0, shape=(2, 10))], root(c=conv)))
    assert [(a.message, a.numbers) for a, _ in found] == [
        ("1 of 2 filters (50%) have weight norm below 1e-06: 0; removing them would save 3 parameters and 30 mult-adds per probe", {"filters": 1.0, "params": 3.0, "mult_adds": 30.0})
    ]
    # An unbatched call records its length as the batch: one position per sample.
    found = check_dead_filters(context([call("c", 0, shape=(10,))], root(c=conv)))
    assert [a.numbers["mult_adds"] for a, _ in found] == [3.0]


def test_a_convolution_without_dead_filters_does_not_end_the_check():
    model = root(ok=conv_with_filters([[1, 0, 0], [0, 1, 0]]), conv=one_dead_of_four())
    assert [a.layer for a, _ in check_dead_filters(context([], model))] == ["conv"]
    model = root(ok=conv_with_filters([[1, 0, 0], [0, 1, 0]]), dup=conv_with_filters(DUPLICATES))
    assert [a.layer for a, _ in check_duplicate_filters(context([], model))] == ["dup"]


class BiaslessFilters(nn.Module):
    """A layer of the user's own with a convolution-like weight (out, in, k) and no bias attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]], [[0.0] * 3, [0.0] * 3]]))


def test_a_layer_of_one_s_own_with_filters_and_no_bias_attribute():
    found = check_dead_filters(context([call("mine", 0, shape=(2, 5))], root(mine=BiaslessFilters())))
    assert [(a.message, a.numbers) for a, _ in found] == [
        ("1 of 2 filters (50%) have weight norm below 1e-06: 1; removing them would save 6 parameters and 30 mult-adds per probe", {"filters": 1.0, "params": 6.0, "mult_adds": 30.0})
    ]


def test_weights_with_nan_are_the_non_finite_check_s_not_dead_filters():
    conv = one_dead_of_four()
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
    assert check_dead_filters(context([], root(conv=conv))) == []


# --------------------------------------------------------------------------------------------
# Duplicate filters

C7, S7 = math.cos(math.radians(7)), math.sin(math.radians(7))
C14, S14 = math.cos(math.radians(14)), math.sin(math.radians(14))
# 0 ~ 1 ~ 2 (7 degrees apart: cosine 0.99255; 0 and 2 are 14 degrees apart, 0.9703), 3 ~ 4 (parallel).
DUPLICATES = [[1, 0, 0], [C7, S7, 0], [C14, S14, 0], [0, 0, 1], [0, 0, 2], [0, 1, -1], [1, -1, 1], [-1, 0, 1]]
DUP_MESSAGE = (
    "3 pair(s) of filters with cosine similarity above 0.99, 5 of 8 filters involved; most similar: 3 and 4 (1.0000); "
    "keeping one filter of each group of duplicates would remove 3 and save 9 parameters and 225 mult-adds per probe"
)


@pytest.mark.parametrize(
    ("fraction", "severity"),
    [(None, "warning"), (0.625, "warning"), (float(np.nextafter(0.625, 1.0)), "info")],
    ids=["default", "at", "just-above"],
)
def test_duplicate_filters_are_joined_into_groups_and_one_of_each_kept(fraction, severity):
    options = {} if fraction is None else {"dead_channel_fraction": fraction}
    ctx = context([call("conv", 1, shape=(8, 5, 5))], root(conv=conv_with_filters(DUPLICATES)), **options)
    found = [(a.kind.value, a.severity.value, a.layer, a.message, a.value, a.numbers, order) for a, order in check_duplicate_filters(ctx)]
    assert found == [("duplicate_filters", severity, "conv", DUP_MESSAGE, 0.625, {"filters": 3.0, "params": 9.0, "mult_adds": 225.0}, 1.0)]
    assert ctx.redundant_duplicates("conv") == [1, 2, 4]


def test_the_most_similar_pair_is_by_cosine_not_by_index():
    filters = [[1, 0, 0], [2, 0, 0], [0, 1, 0], [0, 1, 0.1]]  # (0, 1) parallel; (2, 3) at cosine 0.995
    (alert, _), = check_duplicate_filters(context([], root(conv=conv_with_filters(filters))))
    assert "2 pair(s) of filters with cosine similarity above 0.99, 4 of 4 filters involved; most similar: 0 and 1 (1.0000); " in alert.message


def test_the_cosine_threshold_comes_from_the_options():
    ctx = context([], root(conv=conv_with_filters(DUPLICATES)), duplicate_filter_cosine=0.995)
    assert [a.message for a, _ in check_duplicate_filters(ctx)] == [
        "1 pair(s) of filters with cosine similarity above 0.995, 2 of 8 filters involved; most similar: 3 and 4 (1.0000); "
        "keeping one filter of each group of duplicates would remove 1 and save 3 parameters (it never ran: mult-adds unknown)"
    ]
    assert check_duplicate_filters(context([], root(conv=conv_with_filters(DUPLICATES[:4])), duplicate_filter_cosine=0.995)) == []


def test_a_dead_filter_parallel_to_a_live_one_is_not_counted_twice():
    filters = [[1, 0, 0], [0.25, 0, 0], [0, 1, 0], [0, 0, 1]]  # filter 1: norm 0.25, dead below 0.5
    ctx = context([], root(conv=conv_with_filters(filters)), dead_filter_norm=0.5)
    assert [(a.message, a.numbers) for a, _ in check_duplicate_filters(ctx)] == [
        (
            "1 pair(s) of filters with cosine similarity above 0.99, 2 of 4 filters involved; most similar: 0 and 1 (1.0000); "
            "keeping one filter of each group of duplicates would remove 0 and save 0 parameters (it never ran: mult-adds unknown)",
            {"filters": 0.0, "params": 0.0, "mult_adds": 0.0},
        )
    ]
    assert [a.numbers for a, _ in check_prunable(ctx)] == [{"layers": 1.0, "filters": 1.0, "params": 3.0, "mult_adds": 0.0}]
    # A pair with a dead filter, then a pair of live ones: the live pair still counts.
    filters = [[1, 0, 0], [0.25, 0, 0], [0, 1, 0], [0, 2, 0]]
    ctx = context([], root(conv=conv_with_filters(filters)), dead_filter_norm=0.5)
    assert ctx.redundant_duplicates("conv") == [3]


def test_only_the_first_filters_up_to_the_cap_are_compared():
    rows = torch.randn(520, 16, generator=torch.Generator().manual_seed(0))
    rows[10] = 2 * rows[5]
    rows[515] = rows[6]  # beyond the first 512: never compared
    ctx = context([], root(conv=conv_with_filters(rows.tolist())))
    (alert, _), = check_duplicate_filters(ctx)
    assert alert.severity.value == "info"
    assert alert.value == 2 / 512
    assert alert.message.startswith("1 pair(s) of filters with cosine similarity above 0.99, 2 of 512 filters involved (first 512 of 520 compared); most similar: 5 and 10 (1.0000); ")


# --------------------------------------------------------------------------------------------
# What pruning would save, in all


def test_pruning_adds_up_the_dead_and_duplicate_filters_of_every_layer():
    healthy = conv_with_filters([[1, 0, 0], [0, 1, 0]])
    model = root(dup=conv_with_filters(DUPLICATES), dead=one_dead_of_four(), ok=healthy)
    layers = [call("dup", 0, shape=(8, 5, 5)), call("dead", 1, shape=(4, 10, 10)), call("ok", 2)]
    found = check_prunable(context(layers, model))
    # dup: 3 filters, 9 parameters, 225 mult-adds; dead: 1 filter, 19 and 1,800; the model has 24 + 76 + 6 parameters.
    assert plain(found) == [
        (
            "prunable",
            "info",
            "",
            "removing the 4 dead and duplicate filters of 2 layers would save 28 parameters (26% of the model's) and 2,025 mult-adds per probe, "
            "before the inputs the layers after them would lose",
            28.0,
            3.0,
        )
    ]
    assert found[0][0].numbers == {"layers": 2.0, "filters": 4.0, "params": 28.0, "mult_adds": 2025.0}
    assert found[0][0].section_id == ""


def test_pruning_sorts_after_every_call_even_when_the_model_itself_ran():
    found = check_prunable(context([call("", 0, type="Module"), call("dead", 1, shape=(4, 1, 1))], root(dead=one_dead_of_four())))
    assert [(a.layer, a.section_id, order) for a, order in found] == [("", "", 2.0)]


def test_pruning_of_weights_kept_as_buffers_gives_no_share_of_the_model():
    conv = one_dead_of_four()
    weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    del conv.weight, conv.bias
    conv.register_buffer("weight", weight)
    conv.register_buffer("bias", bias)
    found = check_prunable(context([call("dead", 0, shape=(4, 1, 1))], root(dead=conv)))
    assert [a.message for a, _ in found] == [
        "removing the 1 dead and duplicate filter of 1 layer would save 19 parameters and 18 mult-adds per probe, before the inputs the layers after them would lose"
    ]


def test_pruning_of_one_filter_of_one_layer_reads_in_the_singular():
    found = check_prunable(context([call("dead", 0, shape=(4, 1, 1))], root(dead=one_dead_of_four())))
    assert [a.message for a, _ in found] == [
        "removing the 1 dead and duplicate filter of 1 layer would save 19 parameters (25% of the model's) and 18 mult-adds per probe, "
        "before the inputs the layers after them would lose"
    ]
    assert check_prunable(context([], root(ok=conv_with_filters([[1, 0, 0], [0, 1, 0]])))) == []


# --------------------------------------------------------------------------------------------
# BatchNorm


def batchnorm(mean=None, var=None, weight=None, bias=None, tracked: int | None = None, **kw) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(4, **kw).eval()
    with torch.no_grad():
        for tensor, values in ((bn.running_mean, mean), (bn.running_var, var), (bn.weight, weight), (bn.bias, bias)):
            if values is not None:
                tensor.copy_(torch.tensor(values))
        if tracked is not None:
            bn.num_batches_tracked.fill_(tracked)
    return bn


MOVED = [0.5, 0.0, 0.0, 0.0]  # running mean off its initial 0: the statistics were updated
LOW_VAR = "running variance below 0.25 in 1 of 4 channels (min 0.125): those channels are divided by almost nothing"
ZERO_GAMMA = "every gamma is exactly 0 (a zero-initialised residual branch that never trained?): the layer outputs its bias only"
NEVER = "running mean/variance never updated (num_batches_tracked is 0) although the model was trained: eval mode normalises with 0/1"
STILL = "running mean/variance never updated (still the initial 0 and 1) although the model was trained: eval mode normalises with 0/1"


def bn_findings(options=None, **modules) -> list[tuple]:
    found = check_batchnorm(context([], root(**modules), **(options or {})))
    return [(a.severity.value, a.layer, a.message, a.value) for a, _ in found]


def test_a_collapsed_running_variance_is_counted_below_the_threshold():
    low = {"bn_min_variance": 0.25}
    assert bn_findings(low, bn=batchnorm(MOVED, [0.25, 0.125, 3.0, 2.0])) == [("warning", "bn", LOW_VAR, None)]
    assert bn_findings(low, bn=batchnorm(MOVED, [0.25, 0.5, 3.0, 2.0])) == []
    assert bn_findings(low, bn=batchnorm(MOVED, [-0.5, 0.125, 3.0, 2.0])) == [
        ("warning", "bn", "running variance below 0.25 in 2 of 4 channels (min -0.5): those channels are divided by almost nothing", None)
    ]
    assert bn_findings(bn=batchnorm(MOVED, [1e-6, 1.0, 1.0, 1.0])) == [
        ("warning", "bn", "running variance below 1e-05 in 1 of 4 channels (min 1e-06): those channels are divided by almost nothing", None)
    ]


def test_gammas_below_the_threshold_switch_channels_off():
    half = {"bn_min_gamma": 0.5}
    assert bn_findings(half, bn=batchnorm(MOVED, weight=[1.0, -0.25, 1.0, 1.0])) == [
        ("warning", "bn", "|gamma| below 0.5 in 1 of 4 channels: those channels are switched off", None)
    ]
    assert bn_findings(half, bn=batchnorm(MOVED, weight=[1.0, 0.5, 1.0, -0.5])) == []
    assert bn_findings(half, bn=batchnorm(MOVED, weight=[0.0, 0.25, 0.0, 0.0])) == [
        ("warning", "bn", "|gamma| below 0.5 in 4 of 4 channels: those channels are switched off", None)
    ]
    assert bn_findings(bn=batchnorm(MOVED, weight=[1.0, 0.0, 1.0, 1.0])) == [
        ("warning", "bn", "|gamma| below 0.001 in 1 of 4 channels: those channels are switched off", None)
    ]


def test_an_all_zero_gamma_alone_is_info_and_with_more_a_warning():
    assert bn_findings(bn=batchnorm(MOVED, weight=[0.0] * 4)) == [("info", "bn", ZERO_GAMMA, None)]
    assert bn_findings({"bn_min_variance": 0.25}, bn=batchnorm(MOVED, [0.25, 0.125, 3.0, 2.0], weight=[0.0] * 4)) == [("warning", "bn", f"{LOW_VAR}; {ZERO_GAMMA}", None)]


def test_statistics_never_updated_in_a_trained_model():
    assert bn_findings(bn=batchnorm(weight=[2.0, 1.0, 1.0, 1.0])) == [("warning", "bn", NEVER, None)]
    assert bn_findings(bn=batchnorm(bias=[0.0, 0.0, 0.0, 0.5])) == [("warning", "bn", NEVER, None)]
    assert bn_findings(bn=batchnorm(weight=[2.0, 1.0, 1.0, 1.0], tracked=5)) == [("warning", "bn", STILL, None)]
    # A fresh BatchNorm says nothing by itself; beside an updated one, the model was trained.
    assert bn_findings(bn=batchnorm()) == []
    assert bn_findings(a=batchnorm(), b=batchnorm(MOVED)) == [("warning", "a", NEVER, None)]
    assert bn_findings(a=batchnorm(), b=batchnorm(tracked=3)) == [("warning", "a", NEVER, None), ("warning", "b", STILL, None)]
    assert bn_findings(a=batchnorm(), b=batchnorm(var=[1.0, 1.0, 2.0, 1.0])) == [("warning", "a", NEVER, None)]
    assert bn_findings(a=batchnorm(), b=batchnorm()) == []


def test_a_batchnorm_without_affine_weights_or_running_statistics():
    assert bn_findings(bn=batchnorm(affine=False)) == []
    assert bn_findings(a=batchnorm(affine=False), b=batchnorm(MOVED)) == [("warning", "a", NEVER, None)]
    assert bn_findings(bn=nn.BatchNorm2d(4, track_running_stats=False)) == []
    # A BatchNorm without running statistics has none that could have moved: it says nothing
    # about training, and a fresh BatchNorm beside it is no finding.
    assert bn_findings(a=batchnorm(), b=nn.BatchNorm2d(4, track_running_stats=False)) == []
    with torch.no_grad():
        bn = nn.BatchNorm2d(4, track_running_stats=False)
        bn.weight[0] = 0.0
    assert bn_findings(bn=bn) == [("warning", "bn", "|gamma| below 0.001 in 1 of 4 channels: those channels are switched off", None)]


def test_a_batchnorm_with_nan_state_is_left_to_the_non_finite_check():
    assert bn_findings({"bn_min_variance": 0.25}, bn=batchnorm(MOVED, [float("nan"), 0.125, 3.0, 2.0])) == []
    assert bn_findings(bn=batchnorm(MOVED, weight=[float("nan"), 0.0, 1.0, 1.0])) == []


def test_batchnorm_findings_sort_at_the_layer_s_first_call():
    found = check_batchnorm(context([call("x", 0), call("bn", 1), call("bn", 2, call_index=2)], root(bn=batchnorm(weight=[2.0, 1.0, 1.0, 1.0]))))
    assert [(a.layer, order) for a, order in found] == [("bn", 1.0)]


# --------------------------------------------------------------------------------------------
# The untrained pattern


def relus(dead: list[bool], type: str = "ReLU", start: int = 0, prefix: str = "r"):
    return [call(f"{prefix}{i}", start + i, type=type, **ranges((0.0, 0.0) if d else (0.0, 1.0), (0.0, 2.0))) for i, d in enumerate(dead)]


UNTRAINED = (
    "dead channels in {} of {} measured {} ({}) and all {} BatchNorm layers still at their initial statistics "
    "(running mean 0, variance 1, never updated): the weights look untrained or were not loaded; check the checkpoint (--weights, --weights-key)"
)


def untrained(layers, options=None, **modules):
    modules = modules or {"bn": batchnorm()}
    return plain(check_untrained(context(layers, root(**modules), **(options or {}))))


def test_dead_channels_in_half_the_activations_with_fresh_batchnorm_read_as_untrained():
    expected = [("untrained", "warning", "", UNTRAINED.format(2, 4, "activation layers", "50%", 1), 0.5, -1.0)]
    assert untrained(relus([True, False, True, False])) == expected
    # Convolutions measured beside 4 or more activations are not counted; a call without ranges neither.
    convs = relus([False, False], type="Conv2d", start=4, prefix="c")
    assert untrained(relus([True, False, True, False]) + convs + [call("blind", 6, type="ReLU")]) == expected


def test_the_untrained_share_is_at_or_above_the_fraction():
    assert untrained(relus([True, False, False, False])) == []
    assert untrained(relus([True, False, False, False]), {"untrained_dead_layer_fraction": 0.25}) == [
        ("untrained", "warning", "", UNTRAINED.format(1, 4, "activation layers", "25%", 1), 0.25, -1.0)
    ]
    assert untrained(relus([True, False, True, False]), {"untrained_dead_layer_fraction": float(np.nextafter(0.5, 1.0))}) == []


def test_fewer_than_four_activations_count_every_measured_layer():
    layers = relus([True, True, True]) + relus([True, False], type="Conv2d", start=3, prefix="c")
    assert untrained(layers) == [("untrained", "warning", "", UNTRAINED.format(4, 5, "layers", "80%", 1), 0.8, -1.0)]
    assert untrained(relus([True, True, True])) == []  # three measured layers are too few
    assert untrained(relus([True, True, True, True], type="Conv2d")) == [("untrained", "warning", "", UNTRAINED.format(4, 4, "layers", "100%", 1), 1.0, -1.0)]


def test_no_untrained_finding_unless_every_batchnorm_is_fresh():
    dead = relus([True, True, True, True])
    assert untrained(dead, bn=batchnorm(tracked=1)) == []
    assert untrained(dead, bn=batchnorm(MOVED)) == []
    assert untrained(dead, a=batchnorm(), b=batchnorm(var=[1.0, 1.0, 1.0, 0.5])) == []
    assert untrained(dead, conv=nn.Conv2d(1, 1, 1)) == []  # no BatchNorm: nothing to tell by
    assert untrained(dead, bn=nn.BatchNorm2d(4, track_running_stats=False)) == []
    assert untrained(dead, a=batchnorm(), b=batchnorm()) == [("untrained", "warning", "", UNTRAINED.format(4, 4, "activation layers", "100%", 2), 1.0, -1.0)]
    # An InstanceNorm keeping running statistics is no BatchNorm: not counted.
    assert untrained(dead, a=batchnorm(), b=nn.InstanceNorm2d(4, track_running_stats=True)) == [
        ("untrained", "warning", "", UNTRAINED.format(4, 4, "activation layers", "100%", 1), 1.0, -1.0)
    ]
    # A BatchNorm with NaN weights is the non-finite check's, and not counted.
    broken = batchnorm(weight=[float("nan"), 1.0, 1.0, 1.0])
    assert untrained(dead, a=batchnorm(), b=broken) == [("untrained", "warning", "", UNTRAINED.format(4, 4, "activation layers", "100%", 1), 1.0, -1.0)]


# --------------------------------------------------------------------------------------------
# The whole model, and the order of the alerts


def test_a_model_without_convolution_and_a_synthetic_input_are_notes():
    no_conv = "the model has no convolution layer: no filters or activation maps to show"
    assert plain(check_no_convolution(context([call("fc", 0)], root(fc=nn.Linear(2, 2))))) == [("no_convolution", "info", "", no_conv, None, -1.0)]
    for conv in (nn.Conv1d(1, 1, 1), nn.ConvTranspose2d(1, 1, 1), nn.Conv3d(1, 1, 1)):
        assert check_no_convolution(context([], root(block=nn.Sequential(conv)))) == []
    synthetic = "no probes were given: activations come from a synthetic input and say little about real data"
    ctx = context([call("fc", 0)])
    assert check_synthetic_input(ctx) == []
    ctx.synthetic_input = True
    assert plain(check_synthetic_input(ctx)) == [("synthetic_input", "info", "", synthetic, None, -1.0)]


def test_alerts_come_errors_first_then_warnings_then_notes_each_in_execution_order():
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight[0, 0] = float("nan")
    model = root(a=nn.ReLU(), b=nn.ReLU(), fc=fc)
    layers = [
        call("a", 0, type="ReLU", probes=3, input_rms=[1.0, 1.0, 1.0], output_rms=[5000.0, 5000.0, 5000.0], **ranges((0.0, 0.0), (0.0, 2.0), (0.0, 3.0), (0.0, 1.0))),
        call("b", 1, type="ReLU", probes=3, **ranges((0.0, 0.0), (0.0, 0.0), (0.0, 3.0), (0.0, 1.0))),
    ]
    alerts = health_alerts(model, CaptureResult(layers), None, ReportOptions(), synthetic_input=True)
    assert [(a.severity.value, a.kind.value, a.layer) for a in alerts] == [
        ("error", "non_finite", "fc"),
        ("warning", "dead_channels", "a"),  # the same position: in the checks' order
        ("warning", "exploding_activations", "a"),
        ("warning", "dead_channels", "b"),
        ("info", "no_convolution", ""),
        ("info", "synthetic_input", ""),
    ]
    assert alerts[0].message == "weight has 1 NaN of 4 values"
