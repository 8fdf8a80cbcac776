"""The non-finite check on tiny models and hand-written captures: which weights and buffers it
names with their counts, the first layer whose output holds NaN/Inf with its counts and where
they came from (the probes, the model's code between two layers, the layer itself, a negative
running variance), and a model output that no layer's output explains."""

from __future__ import annotations

import torch
from literal_captures import call, context, plain
from torch import nn

from cnnreport.analysis.alerts import check_nonfinite

NAN, INF = float("nan"), float("inf")


def root(**modules: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, module in modules.items():
        setattr(model, name, module)
    return model.eval()


def broken_conv() -> nn.Conv2d:
    conv = nn.Conv2d(2, 1, 3)  # 18 weights, 1 bias
    with torch.no_grad():
        conv.weight.fill_(0.5)
        conv.weight[0, 0, 0, 0] = NAN
        conv.weight[0, 1, 2, 2] = NAN
        conv.weight[0, 1, 0, 1] = -INF
    return conv


def test_weights_and_buffers_with_nan_or_inf_are_named_with_their_counts():
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean[1] = NAN
        bn.running_var[3] = INF
    only_inf = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        only_inf.bias[0] = INF
    model = root(conv=broken_conv(), bn=bn, other=only_inf, fine=nn.Conv2d(1, 1, 1))
    found = plain(check_nonfinite(context([call("conv", 0), call("x", 1)], model)))
    # Weights first, then buffers. The root and four modules: bn never ran, at 2 + 2/6; other at 2 + 3/6.
    assert found == [
        ("non_finite", "error", "conv", "weight has 2 NaN and 1 Inf of 18 values", None, 0.0),
        ("non_finite", "error", "other", "bias has 1 Inf of 2 values", None, 2.5),
        ("non_finite", "error", "bn", "running_mean has 1 NaN of 4 values; running_var has 1 Inf of 4 values", None, 2 + 2 / 6),
    ]


def test_a_finite_tensor_whose_sum_overflows_is_not_non_finite():
    model = root(conv=nn.Conv2d(1, 1, 1))
    model.big = nn.Parameter(torch.tensor([3e38, 3e38, -1.0]))
    model.register_buffer("empty", torch.empty(0))
    model.register_buffer("steps", torch.tensor([7], dtype=torch.int64))
    model.spectrum = nn.Parameter(torch.tensor([1.0 + 2.0j, 3.0j]))  # complex weights are no error
    assert check_nonfinite(context([], model)) == []


def test_a_parameter_of_the_root_module_is_named_as_the_model():
    model = root(conv=nn.Conv2d(1, 1, 1))
    model.scale = nn.Parameter(torch.tensor([1.0, NAN]))
    found = check_nonfinite(context([call("conv", 0)], model))
    assert [(a.layer, a.message, a.section_id) for a, _ in found] == [("(model)", "scale has 1 NaN of 2 values", "")]


def test_a_layer_with_bad_weights_whose_output_is_the_first_non_finite_one_is_one_alert():
    first = call("conv", 1, detailed=True, probe_nan=[4, 0])
    found = check_nonfinite(context([call("stem", 0), first], root(conv=broken_conv())))
    assert [(a.layer, a.message, a.value, a.section_id, order) for a, order in found] == [
        ("conv", "weight has 2 NaN and 1 Inf of 18 values; its output is the first non-finite activation of the forward pass", None, "sec-conv", 1.0)
    ]
    # Another layer's output first: the weights alone.
    found = check_nonfinite(context([call("stem", 0, probe_inf=[0, 1]), call("conv", 1)], root(conv=broken_conv())))
    assert [a.message for a, _ in found][0] == "weight has 2 NaN and 1 Inf of 18 values"


def first_bad_alert(layers, model=None, probe_nonfinite=None):
    ctx = context(layers, model)
    ctx.probe_nonfinite = probe_nonfinite
    return plain(check_nonfinite(ctx))


HEAD = "first layer whose output is non-finite: 3 NaN and 2 Inf of 48 values (2 of 3 probes); every later layer inherits them; "


def bad(name="b", order=2, input_rms=(1.0, NAN, 1.0), **kw):
    # 16 values per probe, 3 probes: 3 NaN in probe 0, 2 Inf in probe 1.
    return call(name, order, probes=3, probe_nan=[3, 0, 0], probe_inf=[0, 2, 0], input_rms=list(input_rms), **kw)


def before():
    return [call("a", 0), call("a", 1, call_index=2)]


def test_a_non_finite_input_from_non_finite_probes_blames_the_probes():
    found = first_bad_alert([*before(), bad(), bad("c", 3)], probe_nonfinite=5)
    assert found == [("non_finite", "error", "b", HEAD + "its input was already non-finite: the probes hold 5 NaN/Inf values, check the probes", 5.0, 2.0)]


def test_a_non_finite_input_from_finite_probes_is_placed_after_the_last_finite_layer():
    code = "the model's own forward code made them between a (call 2), whose output is finite, and this layer"
    found = first_bad_alert([*before(), bad(), bad("c", 3)], probe_nonfinite=0)
    assert found == [("non_finite", "error", "b", HEAD + f"its input was already non-finite though the probes are finite: {code}", 5.0, 2.0)]
    found = first_bad_alert([*before(), bad(), bad("c", 3)], probe_nonfinite=None)
    assert found == [("non_finite", "error", "b", HEAD + f"its input was already non-finite though no layer before it output any: {code}", 5.0, 2.0)]
    found = first_bad_alert([bad(order=0), call("a", 1)], probe_nonfinite=0)
    assert found[0][3] == HEAD + "its input was already non-finite though the probes are finite: the model's own forward code made them before this layer, the first to run"


def test_counts_of_only_nan_or_only_inf_and_a_later_call():
    found = first_bad_alert([call("a", 0), call("b", 1, call_index=2, probe_nan=[0, 6])])
    assert found[0][2:] == (
        "b (call 2)",
        "first layer whose output is non-finite: 6 NaN of 32 values (1 of 2 probes); every later layer inherits them; "
        "its input is finite and it has no weights of its own: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)",
        6.0,
        1.0,
    )
    found = first_bad_alert([call("b", 0, probe_inf=[1, 1])])
    assert found[0][3].startswith("first layer whose output is non-finite: 2 Inf of 32 values (2 of 2 probes); every later layer inherits them; its input is finite")


def test_a_layer_that_makes_nan_itself_with_finite_weights_or_a_negative_running_variance():
    model = root(conv=nn.Conv2d(1, 1, 1), bn=nn.BatchNorm2d(11).eval(), bn8=nn.BatchNorm2d(8).eval(), bn_mean=nn.BatchNorm2d(2).eval(), plain=nn.BatchNorm2d(2, affine=False).eval())
    with torch.no_grad():
        model.bn.running_var.copy_(torch.tensor([-1.0, 1.0, -2.0, -1e-5, -3.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]))
        model.bn8.running_var.copy_(torch.tensor([-1.0] * 8))
        model.bn_mean.running_mean.fill_(-5.0)  # a negative mean is no fault
        model.plain.running_var[1] = -0.5
    own = "its input is finite and its weights are finite"
    says = lambda name: first_bad_alert([call(name, 0, input_rms=[1.0, 1.0], probe_nan=[1, 0])])[0][3].split("; every later layer inherits them; ")[1]  # noqa: E731
    model_alert = lambda name: plain(check_nonfinite(context([call(name, 0, input_rms=[1.0, 1.0], probe_nan=[1, 0])], model)))[0][3].split("; every later layer inherits them; ")[1]  # noqa: E731
    assert says("anything") == "its input is finite and it has no weights of its own: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)"
    assert model_alert("conv") == f"{own}: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)"
    # -1e-5 plus the default eps 1e-5 is 0: not negative.
    assert model_alert("bn") == f"{own}, but its running_var is negative for channel(s) 0, 2, 4, 5, 6, 7, 8, 9 ... (a variance cannot be, and its square root is NaN): that state made them"
    assert model_alert("bn8") == f"{own}, but its running_var is negative for channel(s) 0, 1, 2, 3, 4, 5, 6, 7 (a variance cannot be, and its square root is NaN): that state made them"
    assert model_alert("bn_mean") == f"{own}: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)"
    assert model_alert("plain") == (
        "its input is finite and it has no weights of its own, but its running_var is negative for channel(s) 1 "
        "(a variance cannot be, and its square root is NaN): that state made them"
    )


def test_an_input_without_a_recorded_rms_counts_as_finite():
    found = first_bad_alert([call("b", 0, probe_nan=[1, 0])], probe_nonfinite=3)
    assert "its input is finite and it has no weights of its own" in found[0][3]


def test_a_non_finite_model_output_that_no_layer_output_explains():
    ctx = context([call("a", 0), call("fc", 1), call("a", 2, call_index=2)])
    ctx.output_nonfinite = 7
    assert plain(check_nonfinite(ctx)) == [
        ("non_finite", "error", "", "the model's output holds 7 NaN/Inf values, made by its own forward code after its last layer, a (call 2), whose output is finite", 7.0, 3.0)
    ]
    assert check_nonfinite(ctx)[0][0].section_id == ""
    ctx = context([])
    ctx.output_nonfinite = 2
    assert plain(check_nonfinite(ctx)) == [("non_finite", "error", "", "the model's output holds 2 NaN/Inf values, made by its own forward code outside every layer", 2.0, 0.0)]
    # A layer's output already non-finite explains the model's: one alert, on the layer.
    ctx = context([call("a", 0, probe_nan=[1, 0])])
    ctx.output_nonfinite = 2
    assert [a.layer for a, _ in check_nonfinite(ctx)] == ["a"]
    assert check_nonfinite(context([call("a", 0)])) == []


def test_only_the_layer_s_own_buffers_are_its_state_one_channel_included():
    model = root(one=nn.BatchNorm2d(1).eval(), block=nn.Sequential(nn.BatchNorm2d(2).eval()))
    with torch.no_grad():
        model.one.running_var.fill_(-1.0)
        model.block[0].running_var.fill_(-1.0)
    said = lambda name: plain(check_nonfinite(context([call(name, 0, input_rms=[1.0, 1.0], probe_nan=[1, 0])], model)))[0][3].split("inherits them; ")[1]  # noqa: E731
    assert said("one") == (
        "its input is finite and its weights are finite, but its running_var is negative for channel(s) 0 "
        "(a variance cannot be, and its square root is NaN): that state made them"
    )
    # The container's child holds the negative variance; the container itself has no state.
    assert said("block") == "its input is finite and it has no weights of its own: the layer's computation itself made them (an overflow, a division by zero, log or sqrt of a negative?)"


def test_a_later_call_sorts_at_its_own_position_and_the_output_alert_after_every_call():
    found = first_bad_alert([call("a", 0), call("x", 1), call("a", 2, call_index=2, probe_nan=[1, 0])])
    assert [(f[2], f[5]) for f in found] == [("a (call 2)", 2.0)]
    ctx = context([call("a", 0), call("", 1, type="Module")])
    ctx.output_nonfinite = 1
    assert [(a.message, order) for a, order in check_nonfinite(ctx)] == [
        ("the model's output holds 1 NaN/Inf values, made by its own forward code after its last layer, (model), whose output is finite", 2.0)
    ]


def test_every_tensor_is_looked_at_past_integer_and_one_value_ones():
    model = root(bn1=nn.BatchNorm2d(2).eval(), bn2=nn.BatchNorm2d(2).eval())
    model.gain = nn.Parameter(torch.tensor([NAN]))
    with torch.no_grad():
        model.bn2.running_mean[0] = NAN  # after bn1's integer num_batches_tracked
    found = check_nonfinite(context([], model))
    assert [(a.layer, a.message) for a, _ in found] == [("(model)", "gain has 1 NaN of 1 values"), ("bn2", "running_mean has 1 NaN of 2 values")]
