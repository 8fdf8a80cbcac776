"""The preprocessing check on hand-written first-BatchNorm inputs: the mean shift and spread
ratio worked out by hand, the thresholds at and either side, the likely cause it names (raw
pixels, a missing normalisation, one applied twice, BGR against RGB), and the conditions under
which a channel swap is tried at all. Also :func:`summarise_input` on literal tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from literal_captures import call, context
from torch import nn

from cnnreport.analysis.alerts import InputSummary, check_preprocessing, summarise_input


def root(**modules: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, module in modules.items():
        setattr(model, name, module)
    return model.eval()


def batchnorm(mean: list[float], var: list[float], eps: float = 0.0) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(len(mean), eps=eps).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    return bn


def bn_input(means: list[list[float]], variances: list[list[float]], name: str = "bn", order: int = 0, **kw):
    """The first BatchNorm's call, with its input's per-probe channel means and variances."""
    return call(
        name, order, type="BatchNorm2d", probes=len(means),
        input_channel_mean=[np.array(m) for m in means], input_channel_var=[np.array(v) for v in variances], **kw,
    )


def findings(layers, model, summary=None, **options):
    ctx = context(layers, model, **options)
    ctx.probe_summary = summary
    return [(a.kind.value, a.severity.value, a.layer, a.message, a.value, a.numbers) for a, _ in check_preprocessing(ctx)]


# Two channels. Training: means 1 and -1, variances 4 and 1 (eps 0: standard deviations 2 and 1).
# Probes: means (5, 2) and (9, 4), variances 60 and 3 each: pooled means 7 and 3, variances
# 60 + 4 and 3 + 1, standard deviations 8 and 2. Shifts 3 and 4 training deviations: RMS
# sqrt(12.5); spread ratios 4 and 2: geometric mean sqrt(8).
SHIFTED = ([[5.0, 2.0], [9.0, 4.0]], [[60.0, 3.0], [60.0, 3.0]])
SHIFT, SCALE = math.sqrt(12.5), math.sqrt(8.0)
SHIFTED_WHAT = (
    "the input to bn has mean 5 where training saw 0, and spread 5.83 where training saw 1.58 "
    "(channel means 3.54 training standard deviations off, RMS over 2 channels; spread 2.83x training's)"
)
SHIFTED_NUMBERS = {
    "input_mean": 5.0, "training_mean": 0.0, "input_spread": math.sqrt(34.0), "training_spread": math.sqrt(2.5), "mean_shift": SHIFT, "spread_ratio": SCALE,
}
DEFAULT_WHY = "were the probes normalised as in training (mean/std, channel order)?"


def shifted(summary=None, **options):
    return findings([bn_input(*SHIFTED)], root(bn=batchnorm([1.0, -1.0], [4.0, 1.0])), summary, **options)


def test_a_mean_shift_above_the_threshold_is_reported_with_its_figures():
    (kind, severity, layer, message, value, numbers), = shifted()
    assert (kind, severity, layer, message) == ("preprocessing", "warning", "bn", f"{SHIFTED_WHAT}: {DEFAULT_WHY}")
    assert value == pytest.approx(SHIFT, rel=1e-12)
    assert numbers == pytest.approx(SHIFTED_NUMBERS, rel=1e-12)


def test_the_mean_shift_threshold_is_strict():
    assert shifted(preprocess_max_shift=SHIFT) == []
    assert [f[4] for f in shifted(preprocess_max_shift=float(np.nextafter(SHIFT, 0.0)))] == [pytest.approx(SHIFT, rel=1e-12)]


def test_the_spread_thresholds_are_strict_on_both_sides():
    # SCALE is just inside the default 3; a limit just below it makes it too wide.
    scale = float(np.exp(np.mean(np.log(np.array([8.0 / 2.0, 2.0 / 1.0])))))
    assert shifted(preprocess_max_shift=100.0, preprocess_max_scale=scale) == []
    wide = shifted(preprocess_max_shift=100.0, preprocess_max_scale=float(np.nextafter(scale, 0.0)))
    assert [(f[4], f[3].split(": ", 1)[1]) for f in wide] == [(scale, "the input is 2.83x wider than in training: were the probes normalised as in training (mean/std, value range)?")]
    # Narrow: the probes' spread a quarter of training's, means on training's.
    narrow = ([[1.0, -1.0], [1.0, -1.0]], [[0.25, 0.0625], [0.25, 0.0625]])
    model = root(bn=batchnorm([1.0, -1.0], [4.0, 1.0]))
    quarter = float(np.exp(np.mean(np.log(np.array([0.5 / 2.0, 0.25 / 1.0])))))
    assert findings([bn_input(*narrow)], model, preprocess_max_scale=1 / quarter * (1 + 1e-9)) == []
    (*_, message, value, numbers), = findings([bn_input(*narrow)], model, preprocess_max_scale=1 / quarter * (1 - 1e-9))
    assert value == quarter
    assert message.endswith("spread 0.25x training's): the input is 4x narrower than in training: were the probes normalised twice, or divided by 255 twice?")
    assert numbers["mean_shift"] == 0.0


def one_channel(summary, mean=(100.0, 140.0)):
    # Training mean 0.5, variance 0.25 (deviation 0.5); probes: means 100 and 140, variances
    # 9,600 each: pooled mean 120, variance 10,000 (deviation 100). Shift 239, spread 200x.
    layers = [bn_input([[mean[0]], [mean[1]]], [[9600.0], [9600.0]])]
    return findings(layers, root(bn=batchnorm([0.5], [0.25])), summary)


ONE_WHAT = "the input to bn has mean 120 where training saw 0.5, and spread 100 where training saw 0.5 (channel means 239 training standard deviations off, RMS over 1 channel; spread 200x training's)"


def test_raw_pixel_probes_are_named_from_their_range():
    (*_, message, value, numbers), = one_channel(InputSummary(0.0, 255.0, (120.0,)))
    assert message == f"{ONE_WHAT}: the probes run from 0 to 255, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    assert value == pytest.approx(200.0, rel=1e-12)
    assert numbers == pytest.approx({"input_mean": 120.0, "training_mean": 0.5, "input_spread": 100.0, "training_spread": 0.5, "mean_shift": 239.0, "spread_ratio": 200.0}, rel=1e-12)
    why = lambda summary: one_channel(summary)[0][3].split("training's): ")[1]  # noqa: E731
    assert why(InputSummary(0.0, 1000.0)) == "the probes run from 0 to 1,000, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    assert why(InputSummary(0.0, 1e6)) == "the probes run from 0 to 1e+06, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    assert why(InputSummary(0.0, float(np.nextafter(2.0, 3.0)))).startswith("the probes run from 0 to 2, like raw 0-255 pixels")
    wider = "the input is 200x wider than in training: were the probes normalised as in training (mean/std, value range)?"
    assert why(InputSummary(0.0, 2.0)) == wider
    assert why(InputSummary(-0.5, 255.0)) == wider
    assert why(None) == wider
    assert why(InputSummary(0.0, 1.0)) == wider  # in [0, 1] but wider, not narrower


def test_probes_in_0_1_reaching_the_layer_narrower_than_training():
    # Training: mean 0.5, variance 4 (deviation 2); probes: mean 0.5, variance 1/16 (deviation 1/4).
    model = root(bn=batchnorm([0.5], [4.0]))
    narrow = lambda summary: findings([bn_input([[0.5], [0.5]], [[0.0625], [0.0625]])], model, summary)  # noqa: E731
    (*_, message, value, _numbers), = narrow(InputSummary(0.0, 1.0, (0.5,)))
    assert value == pytest.approx(0.125, rel=1e-12)
    assert message.split("training's): ")[1] == (
        "the probes lie in [0, 1] and reach the layer 8x narrower than in training: was the mean/std normalisation used in training (ImageNet's, for one) left out?"
    )
    twice = "the input is 8x narrower than in training: were the probes normalised twice, or divided by 255 twice?"
    assert narrow(InputSummary(0.0, float(np.nextafter(1.0, 2.0))))[0][3].split("training's): ")[1] == twice
    assert narrow(InputSummary(-0.25, 1.0))[0][3].split("training's): ")[1] == twice


def test_a_mean_shift_at_training_s_spread_in_0_1_probes_gets_the_plain_question():
    # eps 0.25, variances 0.75: deviations exactly 1, spread ratio exactly 1; shift 3 and -3.
    layers = [bn_input([[3.5, -2.5], [3.5, -2.5]], [[0.75, 0.75], [0.75, 0.75]])]
    (*_, message, value, numbers), = findings(layers, root(bn=batchnorm([0.5, 0.5], [0.75, 0.75], eps=0.25)), InputSummary(0.0, 1.0))
    assert message == (
        "the input to bn has mean 0.5 where training saw 0.5, and spread 0.866 where training saw 0.866 "
        f"(channel means 3 training standard deviations off, RMS over 2 channels; spread 1x training's): {DEFAULT_WHY}"
    )
    assert (value, numbers["spread_ratio"]) == (3.0, 1.0)


def test_probes_with_non_finite_channel_means_are_left_out():
    nan = float("nan")
    layers = [bn_input([*SHIFTED[0], [nan, 1.0]], [*SHIFTED[1], [1.0, 1.0]])]
    (*_, message, value, numbers), = findings(layers, root(bn=batchnorm([1.0, -1.0], [4.0, 1.0])))
    assert message == f"{SHIFTED_WHAT}: {DEFAULT_WHY}"
    layers = [bn_input([*SHIFTED[0], [1.0, 1.0]], [*SHIFTED[1], [float("inf"), 1.0]])]
    assert findings(layers, root(bn=batchnorm([1.0, -1.0], [4.0, 1.0])))[0][3] == f"{SHIFTED_WHAT}: {DEFAULT_WHY}"
    assert findings([bn_input([[nan, 1.0]], [[1.0, 1.0]])], root(bn=batchnorm([1.0, -1.0], [4.0, 1.0]))) == []


def test_channels_with_broken_running_statistics_are_left_out():
    # A third channel with a collapsed variance: the figures are the two others'.
    layers = [bn_input([[5.0, 2.0, 100.0], [9.0, 4.0, 100.0]], [[60.0, 3.0, 1.0], [60.0, 3.0, 1.0]])]
    found = findings(layers, root(bn=batchnorm([1.0, -1.0, 0.0], [4.0, 1.0, 1e-6])))
    assert found[0][3] == f"{SHIFTED_WHAT}: {DEFAULT_WHY}"
    # The threshold for collapsed is bn_min_variance, inclusive.
    found = findings(layers, root(bn=batchnorm([1.0, -1.0, 0.0], [4.0, 1.0, 0.25])), bn_min_variance=0.25)
    assert "RMS over 3 channels" in found[0][3]
    found = findings(layers, root(bn=batchnorm([1.0, -1.0, 0.0], [4.0, 1.0, 0.25])), bn_min_variance=0.5)
    assert "RMS over 2 channels" in found[0][3]
    assert findings([bn_input(*SHIFTED)], root(bn=batchnorm([1.0, -1.0], [1e-6, 1e-7]))) == []


def test_no_preprocessing_finding_without_a_trained_batchnorm_input():
    shifted_bn = batchnorm([1.0, -1.0], [4.0, 1.0])
    assert findings([call("bn", 0)], root(bn=shifted_bn)) == []  # no input statistics recorded
    assert findings([bn_input(*SHIFTED)], root(bn=batchnorm([0.0, 0.0], [1.0, 1.0]))) == []  # initial statistics
    assert findings([bn_input(*SHIFTED)], root(bn=nn.BatchNorm2d(2, track_running_stats=False))) == []
    assert findings([bn_input(*SHIFTED)], root(bn=nn.LayerNorm(2))) == []
    instance = nn.InstanceNorm2d(2, track_running_stats=True).eval()  # running statistics, but no BatchNorm
    with torch.no_grad():
        instance.running_mean.copy_(torch.tensor([1.0, -1.0]))
        instance.running_var.copy_(torch.tensor([4.0, 1.0]))
    assert findings([bn_input(*SHIFTED)], root(bn=instance)) == []
    assert findings([bn_input(*SHIFTED)], root()) == []
    assert findings([bn_input(*SHIFTED)], root(bn=batchnorm([1.0, -1.0, 0.0], [4.0, 1.0, 1.0]))) == []  # channel counts differ
    broken = batchnorm([1.0, -1.0], [4.0, 1.0])
    with torch.no_grad():
        broken.weight[0] = float("nan")
    assert findings([bn_input(*SHIFTED)], root(bn=broken)) == []
    # The first call with input statistics is the one judged.
    assert [f[2] for f in findings([call("x", 0), bn_input(*SHIFTED, order=1)], root(bn=shifted_bn))] == ["bn"]
    assert findings([bn_input([[1.0, -1.0]], [[4.0, 1.0]], name="first"), bn_input(*SHIFTED, order=1)], root(first=batchnorm([1.0, -1.0], [4.0, 1.0]), bn=shifted_bn)) == []


# --------------------------------------------------------------------------------------------
# A channel swap (RGB against BGR)


def swap_case(conv=None, summary_means=(0.375, 0.5, 0.625), conv_rms=(1.0, 2.0), bn_rms=(1.0, 2.0), bn_order=1, conv_call=1, bn_channels=2, probe_means=(0.375, 0.625, 0.5), train_var=0.75, **options):
    """A 3-channel convolution of the probes, then the BatchNorm.

    The convolution passes the probes' first channel to its output 0 and their last to its
    output 1 (each through a 1x2 kernel of 0.5s: sums of 1). Training saw means 0.625 and 0.375
    (RGB), the probes give 0.375 and 0.625 (BGR): 0.25 training deviations off each; swapped
    back, exactly training's. eps 0.25 and variances 0.75: deviations 1, spread ratio 1."""
    if conv is None:
        conv = nn.Conv2d(3, 2, (1, 2), bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0] = 0.5
            conv.weight[1, 2] = 0.5
    mean, var = [0.625, 0.375, 0.5][:bn_channels], [train_var, train_var, 0.0][:bn_channels]
    model = root(conv=conv, bn=batchnorm(mean, var, eps=0.25))
    probe_means = list(probe_means)[:bn_channels]
    layers = [
        call("conv", 0, call_index=conv_call, output_rms=list(conv_rms), input_rms=[1.0, 1.0]),
        bn_input([probe_means, probe_means], [[train_var] * bn_channels] * 2, order=bn_order, input_rms=list(bn_rms)),
    ]
    summary = InputSummary(-1.0, 1.0, tuple(summary_means)) if summary_means is not None else None
    return findings(layers, model, summary, **options)


SWAP_WHY = "swapping the probes' first and last channels would bring the channel means to 0 training standard deviations: were they loaded as BGR where training used RGB (or the reverse)?"


def test_a_channel_swap_that_explains_the_shift_is_reported_however_small():
    (kind, severity, layer, message, value, numbers), = swap_case()
    assert (kind, severity, layer, value) == ("preprocessing", "warning", "bn", 0.25)
    assert message == (
        "the input to bn has mean 0.5 where training saw 0.5, and spread 0.866 where training saw 0.866 "
        f"(channel means 0.25 training standard deviations off, RMS over 2 channels; spread 1x training's): {SWAP_WHY}"
    )
    assert numbers == pytest.approx(
        {"input_mean": 0.5, "training_mean": 0.5, "input_spread": math.sqrt(0.75), "training_spread": math.sqrt(0.75), "mean_shift": 0.25, "spread_ratio": 1.0, "mean_shift_channels_swapped": 0.0},
        rel=1e-12, abs=1e-15,
    )


def test_a_swap_must_explain_the_shift_by_the_gain():
    # Probe channel means 0.4, 0.5, 0.6 given: swapped back, the input's means would move by
    # 0.2 to 0.575 and 0.425, 0.05 off training's: 0.05 x 4 = 0.2 <= 0.25.
    (*_, message, value, numbers), = swap_case(summary_means=(0.4, 0.5, 0.6))
    assert value == 0.25
    assert numbers["mean_shift_channels_swapped"] == pytest.approx(0.05, rel=1e-9)
    assert "bring the channel means to 0.05 training standard deviations" in message
    assert swap_case(summary_means=(0.4, 0.5, 0.6), preprocess_swap_gain=6.0) == []  # 0.3 > 0.25
    assert [f[4] for f in swap_case(summary_means=(0.4, 0.5, 0.6), preprocess_swap_gain=4.5)] == [0.25]  # 0.225
    # 0.45, 0.5, 0.55 given: swapped, 0.15 off; not 4 times less than 0.25.
    assert swap_case(summary_means=(0.45, 0.5, 0.55)) == []
    # Swapped exactly onto training's: any gain.
    assert [f[4] for f in swap_case(preprocess_swap_gain=1e9)] == [0.25]


def test_a_swap_below_a_quarter_deviation_is_not_reported():
    # Training 0.6 and 0.4, probes 0.4 and 0.6: 0.2 off, swapped exactly training's.
    conv = nn.Conv2d(3, 2, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 0.5
        conv.weight[1, 2] = 0.5
    model = root(conv=conv, bn=batchnorm([0.6, 0.4], [0.75, 0.75], eps=0.25))
    layers = [call("conv", 0, output_rms=[1.0, 2.0]), bn_input([[0.4, 0.6], [0.4, 0.6]], [[0.75, 0.75]] * 2, order=1, input_rms=[1.0, 2.0])]
    assert findings(layers, model, InputSummary(-1.0, 1.0, (0.4, 0.5, 0.6))) == []


def grouped_conv() -> nn.Conv2d:
    conv = nn.Conv2d(3, 3, 1, groups=3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return conv


def three_out() -> nn.Conv2d:
    conv = nn.Conv2d(3, 3, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 0.5
        conv.weight[1, 2] = 0.5
        conv.weight[2, 1] = 0.5
    return conv


@pytest.mark.parametrize(
    "case",
    [
        {"summary_means": None},
        {"summary_means": (0.375, 0.625)},
        {"summary_means": (0.375, 0.5, 0.625, 0.5)},
        {"bn_order": 2},
        {"conv_call": 2},
        {"conv": nn.Linear(3, 2)},
        {"conv": nn.Conv2d(4, 2, 1)},
        {"conv": three_out()},
        {"conv_rms": (1.0, 2.5)},
        {"conv_rms": (1.0, 2.00004)},
        {"conv_rms": ()},
        {"bn_rms": (1.0, 2.0, 3.0)},
        {"conv_rms": (1e-9, 3e-9), "bn_rms": (1e-9, 2e-9)},
    ],
    ids=["no-summary", "two-channels", "four-channels", "bn-not-second", "later-call", "not-a-conv", "four-inputs", "three-outputs", "rms-differs", "rms-just-off", "no-rms", "rms-count", "tiny-rms-differs"],
)
def test_a_swap_is_tried_only_on_a_3_channel_convolution_feeding_the_batchnorm(case):
    # The swap alone explains the shift here: without it, nothing is reported.
    assert swap_case(**case) == []


def test_a_swap_is_tried_with_one_probe_and_beside_a_collapsed_channel():
    assert [f[4] for f in swap_case(conv_rms=(1.0,), bn_rms=(1.0,))] == [0.25]
    # The BatchNorm's third channel has a collapsed variance: left out of the swap as of the shift.
    assert [f[4] for f in swap_case(conv=three_out(), bn_channels=3)] == [0.25]


def test_a_swap_on_a_grouped_convolution_is_not_tried():
    model = root(conv=grouped_conv(), bn=batchnorm([0.625, 0.375, 0.5], [0.75, 0.75, 0.75], eps=0.25))
    layers = [call("conv", 0, output_rms=[1.0, 2.0]), bn_input([[0.375, 0.625, 0.5]] * 2, [[0.75] * 3] * 2, order=1, input_rms=[1.0, 2.0])]
    assert findings(layers, model, InputSummary(-1.0, 1.0, (0.375, 0.5, 0.625))) == []


def test_the_rms_match_is_relative_within_1e_5():
    assert [f[4] for f in swap_case(conv_rms=(1.0, 2.00001))] == [0.25]


# --------------------------------------------------------------------------------------------
# summarise_input


def test_summary_of_the_first_floating_point_input():
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[5.0, 7.0]], [[2.0, 2.0]]]])  # (2, 2, 1, 2)
    ints = torch.ones(2, 2, dtype=torch.int64)
    assert summarise_input((ints, torch.empty(0), "x", x, -x)) == InputSummary(0.0, 7.0, (4.0, 1.0))
    assert summarise_input([x.double()]) == InputSummary(0.0, 7.0, (4.0, 1.0))
    assert summarise_input([x.half()]) == InputSummary(0.0, 7.0, (4.0, 1.0))


def test_summary_means_need_three_dimensions():
    assert summarise_input([torch.tensor([[1.0, -2.0], [3.0, 4.0]])]) == InputSummary(-2.0, 4.0, ())
    assert summarise_input([torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])]) == InputSummary(-2.0, 3.0, (2.0, -1.0))


def test_no_summary_without_a_finite_floating_point_input():
    assert summarise_input([torch.ones(2, 3, dtype=torch.int64)]) is None
    assert summarise_input([]) is None
    assert summarise_input([torch.tensor([[1.0, float("nan")]])]) is None
    assert summarise_input([torch.tensor([[1.0, float("inf")]])]) is None
    assert summarise_input([torch.tensor([[-float("inf"), 1.0]])]) is None


def test_a_swap_that_does_not_explain_a_large_shift_is_not_named_as_the_cause():
    # The input 2.75 and 3.25 deviations off; swapped back, 3 and 3: no better.
    (*_, message, value, numbers), = swap_case(probe_means=(3.375, 3.625, 0.5))
    assert numbers["mean_shift_channels_swapped"] == pytest.approx(3.0, rel=1e-9)
    assert message.endswith(f"spread 1x training's): {DEFAULT_WHY}")


def test_the_cause_of_a_mean_shift_at_the_spread_limits_is_the_plain_question():
    # A spread ratio of exactly 1 against a limit of 1: neither narrower nor wider.
    layers = [bn_input([[3.5, -2.5], [3.5, -2.5]], [[0.75, 0.75], [0.75, 0.75]])]
    found = findings(layers, root(bn=batchnorm([0.5, 0.5], [0.75, 0.75], eps=0.25)), preprocess_max_scale=1.0)
    assert [(f[3].endswith(f"spread 1x training's): {DEFAULT_WHY}"), f[4]) for f in found] == [(True, 3.0)]
    # Half training's spread is inside the default limit of 3: the shift is the finding, no "narrower".
    layers = [bn_input([[6.5], [6.5]], [[1.0], [1.0]])]
    (*_, message, value, numbers), = findings(layers, root(bn=batchnorm([0.5], [4.0])))
    assert (message.split("training's): ")[1], value, numbers["spread_ratio"]) == (DEFAULT_WHY, 3.0, pytest.approx(0.5, rel=1e-12))


def test_the_swapped_shift_is_in_training_standard_deviations():
    # Deviations 2 (variance 3.75 + eps 0.25): the input 0.5 / 2 = 0.25 off; probe means 0.3,
    # 0.5, 0.7 given: swapped back, the input moves by 0.4 to 0.525 and 0.475, 0.1 / 2 = 0.05 off.
    (*_, message, value, numbers), = swap_case(probe_means=(0.125, 0.875, 0.5), train_var=3.75, summary_means=(0.3, 0.5, 0.7))
    assert value == 0.25
    assert numbers["mean_shift_channels_swapped"] == pytest.approx(0.05, rel=1e-9)
    assert "bring the channel means to 0.05 training standard deviations" in message


def test_a_swap_exactly_gain_times_smaller_explains_the_shift():
    # Probe means 0.40625, 0.5, 0.59375 given: swapped back, the input moves by 0.1875 to
    # 0.5625 and 0.4375: 0.0625 off, and 0.0625 x 4 is exactly the shift 0.25.
    (*_, message, value, numbers), = swap_case(summary_means=(0.40625, 0.5, 0.59375))
    assert (value, numbers["mean_shift_channels_swapped"]) == (0.25, 0.0625)
    assert "bring the channel means to 0.062 training standard deviations" in message


def test_a_spread_ratio_of_exactly_one_against_a_limit_of_one_is_no_finding():
    layers = [bn_input([[0.5, 0.5], [0.5, 0.5]], [[0.75, 0.75], [0.75, 0.75]])]
    assert findings(layers, root(bn=batchnorm([0.5, 0.5], [0.75, 0.75], eps=0.25)), preprocess_max_scale=1.0) == []
