"""The float16 range check on hand-written captures: which layer of a run of layers near or past
65,504 is reported, with what margin and message; nothing after the first overflow; runs of
layers below float16's smallest normal reported at their first layer; the thresholds at and
either side."""

from __future__ import annotations

import numpy as np
import pytest
from literal_captures import call, context
from torch import nn

from cnnreport.analysis.alerts import check_fp16_range

BF16 = "; bfloat16 (up to 3.4e38) holds it"


def peak(name: str, order: int, value: float, **kw):
    """A call whose largest |value| is ``value`` (its maximum; the minimum is -1)."""
    return call(name, order, probe_min=[-1.0, -1.0], probe_max=[1.0, value], **kw)


def fp16(layers, model=None, **options):
    return [(a.kind.value, a.severity.value, a.layer, a.message, a.value, a.numbers, order) for a, order in check_fp16_range(context(layers, model, **options))]


def near(value: str, margin: str, then: str = "") -> str:
    return f"largest |value| {value} is within {margin} of float16's largest, 65,504: other inputs may overflow it in float16{then}{BF16}"


def over(value: str, times: str, also: str = "") -> str:
    return f"largest |value| {value} is {times} float16's largest, 65,504: run or exported in float16 it overflows to Inf, and every later layer with it{also}{BF16}"


def test_a_run_near_the_limit_then_past_it_is_reported_at_its_first_layer_and_its_first_overflow():
    layers = [
        peak("l0", 0, 1.0),
        peak("l1", 1, 40000.0),
        peak("l2", 2, 50000.0),
        peak("l3", 3, 131008.0),  # twice 65,504
        peak("l4", 4, 70000.0),
        peak("l5", 5, 1.0),
        peak("l6", 6, 40000.0),  # after an overflow: float16 has Inf there already
        peak("l7", 7, 1e6),
    ]
    found = fp16(layers)
    assert found == [
        ("fp16_overflow", "warning", "l1", near("40,000", "1.64x", "; so does the layer right after it (l2)"), 65504 / 40000, {"max_abs": 40000.0, "fp16_max": 65504.0, "margin": 65504 / 40000}, 1.0),
        ("fp16_overflow", "warning", "l3", over("131,008", "2x", "; 2 later layers also exceed it"), 0.5, {"max_abs": 131008.0, "fp16_max": 65504.0, "margin": 0.5}, 3.0),
    ]


def test_an_overflow_at_the_start_of_a_run_is_its_only_finding():
    found = fp16([peak("a", 0, 100000.0), peak("b", 1, 40000.0), peak("c", 2, 1.0), peak("d", 3, 65505.0)])
    assert [(f[2], f[3]) for f in found] == [("a", over("100,000", "1.53x", "; 1 later layer also exceeds it"))]
    found = fp16([peak("a", 0, 100000.0)])
    assert [(f[2], f[3], f[4]) for f in found] == [("a", over("100,000", "1.53x"), 0.65504)]


def test_separate_runs_near_the_limit_are_each_reported_and_followers_named():
    layers = [peak("a", 0, 40000.0), peak("b", 1, 1.0), *[peak(f"c{i}", 2 + i, 40000.0) for i in range(9)]]
    found = fp16(layers)
    assert [(f[2], f[3]) for f in found] == [
        ("a", near("40,000", "1.64x")),
        ("c0", near("40,000", "1.64x", "; so do the 8 layers right after it (c1, c2, c3, c4, c5, c6 … (+2))")),
    ]
    found = fp16([peak("a", 0, 40000.0), peak("b", 1, 40000.0), peak("c", 2, 40000.0, call_index=2)])
    assert [(f[2], f[3]) for f in found] == [("a", near("40,000", "1.64x", "; so do the 2 layers right after it (b, c (call 2))"))]


@pytest.mark.parametrize(
    ("value", "headroom", "expected"),
    [
        (32752.0, None, []),
        (float(np.nextafter(32752.0, 1e9)), None, [near("32,752", "2x")]),
        (65504.0, None, [near("65,504", "1x")]),
        (float(np.nextafter(65504.0, 1e9)), None, [over("65,504", "1x")]),
        (16376.0, 4.0, []),
        (16377.0, 4.0, [near("16,377", "4x")]),
        (-40000.0, None, [near("40,000", "1.64x")]),
    ],
    ids=["half-range", "just-above-half", "at-65504", "just-past", "quarter-at", "quarter-above", "negative"],
)
def test_the_headroom_is_a_strict_bound_from_the_options(value, headroom, expected):
    options = {} if headroom is None else {"fp16_headroom": headroom}
    layer = call("x", 0, probe_min=[-1.0, min(value, -1.0)], probe_max=[1.0, max(value, 1.0)])
    assert [f[3] for f in fp16([layer], **options)] == expected


def test_non_finite_outputs_and_values_are_left_out():
    # A layer with NaN/Inf output is the non-finite check's, and does not break a run.
    layers = [peak("a", 0, 40000.0), peak("bad", 1, 1e6, probe_nan=[0, 1]), peak("b", 2, 40000.0)]
    assert [(f[2], f[3]) for f in fp16(layers)] == [("a", near("40,000", "1.64x", "; so does the layer right after it (b)"))]
    inf = float("inf")
    assert [f[5]["max_abs"] for f in fp16([call("a", 0, probe_min=[float("nan"), -1.0], probe_max=[inf, 50000.0])])] == [50000.0]
    assert fp16([call("a", 0, probe_min=[float("nan")] * 2, probe_max=[float("nan")] * 2)]) == []


def test_a_layer_is_reported_once_whatever_its_calls():
    layers = [peak("a", 0, 40000.0), peak("b", 1, 1.0), peak("a", 2, 40000.0, call_index=2)]
    assert [(f[2], f[6]) for f in fp16(layers)] == [("a", 0.0)]
    layers = [peak("a", 0, 1.0), peak("a", 1, 40000.0, call_index=2, detailed=True)]
    found = check_fp16_range(context(layers))
    assert [(a.layer, a.section_id, order) for a, order in found] == [("a (call 2)", "sec-a-call2", 1.0)]


def test_a_container_call_is_not_a_layer_of_its_own():
    model = nn.Module().eval()
    model.block = nn.Sequential(nn.ReLU())
    layers = [peak("block.0", 0, 40000.0), peak("block", 1, 40000.0, type="Sequential")]
    assert [(f[2], f[3]) for f in fp16(layers, model)] == [("block.0", near("40,000", "1.64x"))]


# --------------------------------------------------------------------------------------------
# Underflow


def tiny(name: str, order: int, tiny_count: int, nonzero: int = 10, **kw):
    return call(name, order, fp16_tiny=tiny_count, fp16_nonzero=nonzero, **kw)


def under(pct: str, looked: str = "", then: str = "") -> str:
    return (
        f"{pct} of its nonzero values{looked} lie below float16's smallest normal, 6.1e-05: in float16 they keep "
        f"fewer digits, or become 0 where subnormals are flushed{then}; bfloat16 (normal down to 1.2e-38) holds them"
    )


def test_runs_of_layers_below_the_normal_range_are_reported_at_their_first_layer():
    layers = [tiny("a", 0, 1), tiny("b", 1, 5), tiny("c", 2, 0, fp16_sampled=True), tiny("d", 3, 9, fp16_sampled=True), tiny("e", 4, 0, nonzero=0)]
    found = fp16(layers)
    assert found == [
        ("fp16_underflow", "info", "a", under("10%", then="; so does the layer right after it (b)"), 0.1, {"below_normal_fraction": 0.1, "fp16_smallest_normal": 2.0**-14, "layers_after": 1.0}, 0.0),
        ("fp16_underflow", "info", "d", under("90%", looked=" (of an even sample)"), 0.9, {"below_normal_fraction": 0.9, "fp16_smallest_normal": 2.0**-14, "layers_after": 0.0}, 3.0),
    ]


def test_the_underflow_fraction_is_inclusive_and_from_the_options():
    assert [f[4] for f in fp16([tiny("a", 0, 1)])] == [0.1]
    assert fp16([tiny("a", 0, 1)], fp16_underflow_fraction=float(np.nextafter(0.1, 1.0))) == []
    assert fp16([tiny("a", 0, 2)], fp16_underflow_fraction=0.25) == []
    assert [f[4] for f in fp16([tiny("a", 0, 3)], fp16_underflow_fraction=0.25)] == [0.3]


def test_a_saturated_layer_s_small_values_are_the_saturation_finding_and_break_the_run():
    # 5 channels of 4 positions, 2 probes: 40 values; 36 pinned is 90%, saturated.
    sat = tiny("s", 1, 5, type="Sigmoid", shape=(5, 2, 2), limits=(0.0, 1.0), saturated_high=36)
    layers = [tiny("a", 0, 5), sat, tiny("b", 2, 5)]
    assert [(f[2], f[5]["layers_after"]) for f in fp16(layers)] == [("a", 0.0), ("b", 0.0)]
    unsaturated = tiny("s", 1, 5, type="Sigmoid", shape=(5, 2, 2), limits=(0.0, 1.0), saturated_high=35)
    assert [(f[2], f[5]["layers_after"]) for f in fp16([tiny("a", 0, 5), unsaturated, tiny("b", 2, 5)])] == [("a", 2.0)]
    # Limits but no values recorded: not saturated.
    empty = tiny("s", 0, 5, limits=(0.0, 1.0), numel_per_probe=0)
    assert [f[2] for f in fp16([empty])] == ["s"]


def test_underflow_is_reported_once_per_layer_and_not_on_non_finite_output():
    layers = [tiny("a", 0, 5), tiny("b", 1, 0), tiny("a", 2, 5, call_index=2)]
    assert [f[2] for f in fp16(layers)] == ["a"]
    assert fp16([tiny("a", 0, 5, probe_inf=[1, 0])]) == []
    layers = [tiny("a", 0, 0), tiny("a", 1, 5, call_index=2)]
    assert [(f[2], f[6]) for f in fp16(layers)] == [("a (call 2)", 1.0)]


def test_overflow_and_underflow_are_independent():
    layers = [peak("a", 0, 1e6), tiny("b", 1, 5), peak("c", 2, 40000.0)]
    assert [(f[0], f[2]) for f in fp16(layers)] == [("fp16_overflow", "a"), ("fp16_underflow", "b")]


def test_the_first_overflow_of_a_run_right_after_its_head():
    found = fp16([peak("a", 0, 40000.0), peak("b", 1, 100000.0), peak("c", 2, 65504.0)])
    assert [(f[2], f[3]) for f in found] == [("a", near("40,000", "1.64x")), ("b", over("100,000", "1.53x"))]


def test_exactly_65504_is_near_the_limit_not_past_it_inside_a_run_and_after_an_overflow():
    found = fp16([peak("a", 0, 40000.0), peak("b", 1, 65504.0)])
    assert [(f[2], f[3]) for f in found] == [("a", near("40,000", "1.64x", "; so does the layer right after it (b)"))]
    found = fp16([peak("a", 0, 100000.0), peak("b", 1, 1.0), peak("c", 2, 65504.0)])
    assert [(f[2], f[3]) for f in found] == [("a", over("100,000", "1.53x"))]


def test_a_run_whose_head_was_reported_before_still_reports_its_overflow():
    layers = [peak("a", 0, 40000.0), peak("x", 1, 1.0), peak("a", 2, 40000.0, call_index=2), peak("b", 3, 100000.0)]
    assert [(f[2], f[3]) for f in fp16(layers)] == [("a", near("40,000", "1.64x")), ("b", over("100,000", "1.53x"))]


def test_underflow_runs_after_one_whose_head_was_reported_and_a_later_call_as_follower():
    layers = [tiny("a", 0, 5), tiny("x", 1, 0), tiny("a", 2, 5, call_index=2), tiny("y", 3, 0), tiny("b", 4, 5), tiny("c", 5, 5, call_index=2)]
    assert [(f[2], f[3]) for f in fp16(layers)] == [("a", under("50%")), ("b", under("50%", then="; so does the layer right after it (c (call 2))"))]
