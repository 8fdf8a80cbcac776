"""What every check shares: the section an alert links to, a value that is not finite, and
:func:`health_alerts` handing each of its arguments to the check that reads it."""

from __future__ import annotations

import numpy as np
import torch
from literal_captures import call, context, ranges
from torch import nn

from cnnreport.analysis.alerts import InputSummary, check_activation_scale, check_dead_filters, check_preprocessing, health_alerts
from cnnreport.capture.activations import CaptureResult
from cnnreport.datamodel import ReportOptions


def dead_conv() -> nn.Module:
    model = nn.Module().eval()
    model.conv = nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        model.conv.weight.fill_(1.0)
        model.conv.weight[0] = 0.0
    return model


def test_an_alert_links_to_its_layer_s_call_or_else_its_first_section():
    calls = [call("conv", 0), call("conv", 1, call_index=2, detailed=True), call("conv", 2, call_index=3, detailed=True)]
    (alert, _), = check_dead_filters(context(calls, dead_conv()))
    assert alert.section_id == "sec-conv-call2"  # call 1 has no section: the first call that has one
    (alert, _), = check_dead_filters(context([call("conv", 0, detailed=True)], dead_conv()))
    assert alert.section_id == "sec-conv"
    (alert, _), = check_dead_filters(context([call("conv", 0)], dead_conv()))
    assert alert.section_id == ""


def test_the_sections_given_are_the_ones_linked():
    ctx = context([call("conv", 0, detailed=True)], dead_conv())
    ctx_none = type(ctx)(ctx.model, ctx.capture, [], ctx.options)
    (alert, _), = check_dead_filters(ctx_none)
    assert alert.section_id == ""


def test_a_ratio_too_large_for_a_float_has_no_value():
    layer = call("conv", 0, probes=3, input_rms=[1e-20] * 3, output_rms=[1e300] * 3)
    (alert, _), = check_activation_scale(context([layer]))
    assert (alert.kind.value, alert.value, alert.message) == ("exploding_activations", None, "output RMS is infx its input's (1e-20 -> 1e+300, median over probes)")


def test_a_mean_shift_too_large_for_a_float_has_no_value_or_figure():
    bn = nn.BatchNorm2d(2, eps=0.0).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, 0.0]))
    model = nn.Module().eval()
    model.bn = bn
    layer = call("bn", 0, type="BatchNorm2d", probes=1, input_channel_mean=[np.array([1e200, 0.0])], input_channel_var=[np.array([1.0, 1.0])])
    (alert, _), = check_preprocessing(context([layer], model))
    assert alert.value is None
    assert alert.numbers["mean_shift"] is None
    assert alert.numbers["input_mean"] == 5e199


def test_no_swap_without_a_layer_before_the_batchnorm():
    bn = nn.BatchNorm2d(2, eps=0.25).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.625, 0.375]))
        bn.running_var.fill_(0.75)
    model = nn.Module().eval()
    model.bn = bn
    layer = call("bn", 1, type="BatchNorm2d", input_rms=[1.0, 2.0], input_channel_mean=[np.array([0.375, 0.625])] * 2, input_channel_var=[np.array([0.75, 0.75])] * 2)
    ctx = context([layer], model)
    ctx.probe_summary = InputSummary(-1.0, 1.0, (0.375, 0.5, 0.625))
    assert check_preprocessing(ctx) == []


def test_health_alerts_hands_each_argument_to_its_check():
    options = ReportOptions()
    model = nn.Module().eval()
    model.conv = nn.Conv2d(1, 1, 1)
    nan_input = CaptureResult([call("conv", 0, input_rms=[1.0, float("nan")], probe_nan=[0, 2])])
    alerts = health_alerts(model, nan_input, None, options, probe_nonfinite=4)
    assert alerts[0].message.endswith("its input was already non-finite: the probes hold 4 NaN/Inf values, check the probes")
    alerts = health_alerts(model, CaptureResult([call("conv", 0)]), None, options, output_nonfinite=3)
    assert [(a.kind.value, a.value) for a in alerts] == [("non_finite", 3.0)]
    alerts = health_alerts(model, CaptureResult([call("conv", 0)]), None, options, training_flags={"": True})
    assert [a.kind.value for a in alerts] == ["training_mode"]
    dead = CaptureResult([call("conv", 0, detailed=True, **ranges((0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)))])
    assert [(a.layer, a.section_id) for a in health_alerts(model, dead, None, options)] == [("conv", "sec-conv")]
    assert [a.section_id for a in health_alerts(model, dead, [], options)] == [""]
    bn = nn.BatchNorm2d(1, eps=0.0).eval()
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(0.25)
    model.bn = bn
    layer = call("bn", 0, type="BatchNorm2d", input_channel_mean=[np.array([100.0]), np.array([140.0])], input_channel_var=[np.array([9600.0])] * 2)
    alerts = health_alerts(model, CaptureResult([layer]), None, options, probe_summary=InputSummary(0.0, 255.0, (120.0,)))
    assert [a.message.split("training's): ")[1] for a in alerts] == [
        "the probes run from 0 to 255, like raw 0-255 pixels: were they scaled to [0, 1] and normalised as in training?"
    ]


def test_the_first_section_of_a_layer_is_its_lowest_call_not_the_first_in_text_order():
    calls = [call("conv", 0), call("conv", 1, call_index=2, detailed=True), call("conv", 2, call_index=10, detailed=True)]
    (alert, _), = check_dead_filters(context(calls, dead_conv()))
    assert alert.section_id == "sec-conv-call2"


def test_a_whole_model_note_links_to_no_section_even_when_the_model_has_one():
    from cnnreport.analysis.alerts import check_synthetic_input

    ctx = context([call("", 0, type="Module", detailed=True)])
    ctx.synthetic_input = True
    (alert, _), = check_synthetic_input(ctx)
    assert (alert.layer, alert.section_id) == ("", "")
