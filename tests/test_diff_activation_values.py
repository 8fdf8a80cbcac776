"""cosine_change and compare_activations on literal numbers: 1 - cos at hand-worked values, its
exact 0 and 2 at the ends, the zero and non-finite cases, which layers are compared on which
basis, the NaN notes, the order and the bars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnreport.analysis.diff import compare_activations, cosine_change
from cnnreport.datamodel import ActivationStats, ChannelFact, LayerSection, ModelSummary, Provenance, ReportOptions
from cnnreport.report.document import Report

nan, inf = math.nan, math.inf


def stats(mean: float, std: float = 1.0, frac_zero: float = 0.0) -> ActivationStats:
    return ActivationStats(mean=mean, std=std, min=-1.0, max=1.0, frac_zero=frac_zero)


def section(name: str, *, means=None, per_probe=(), call_index: int = 1, mean: float = 0.0, frac_zero: float = 0.0, type: str = "Conv2d") -> LayerSection:
    return LayerSection(
        id=f"{name}-{call_index}",
        name=name,
        type=type,
        call_index=call_index,
        output_shape=[1, 2],
        stats=stats(mean, 1.0, frac_zero),
        per_probe_stats=[stats(m, s) for m, s in per_probe],
        channels=ChannelFact(means=list(means)) if means is not None else None,
    )


def report(sections: list[LayerSection]) -> Report:
    summary = ModelSummary(class_name="Net", input_shape=[1, 2], output_shape=[1, 2], total_params=0, trainable_params=0, non_trainable_params=0, mult_adds=0, param_bytes=0)
    return Report(title="t", model=summary, layers=[], sections=sections, probes=[], options=ReportOptions(progress=False), provenance=Provenance("0", "0", "0"))


# -- cosine_change -----------------------------------------------------------------------------


def test_cosine_change_at_hand_worked_values():
    assert cosine_change([3, 4], [4, 3]) == pytest.approx(1 - 24 / 25, rel=1e-12)
    assert cosine_change([1, 2, 2], [2, 1, 2]) == pytest.approx(1 / 9, rel=1e-12)
    # a side of norm 1 is no zero side
    assert cosine_change([1, 0], [1, 1]) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)
    assert cosine_change([1, 1], [0, 1]) == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)
    assert cosine_change([1, 0], [0, 1]) == 1.0
    assert cosine_change([2, 0], [-1, 1]) == pytest.approx(1 + 1 / math.sqrt(2), rel=1e-12)


def test_cosine_change_takes_float32_arrays_and_returns_a_float():
    x = np.array([3, 4], dtype=np.float32)
    y = np.array([4, 3], dtype=np.float32)
    value = cosine_change(x, y)
    assert type(value) is float and value == pytest.approx(0.04, rel=1e-12)


def test_float32_arrays_are_compared_in_float64():
    # float32 would round |x|^2 = 1 + 9e-8 and the dot product; float64 keeps them
    x = np.array([1, 3e-4], dtype=np.float32)
    y = np.array([3e-4, 1], dtype=np.float32)
    a, b = x.astype(np.float64), y.astype(np.float64)
    expected = 1 - (a @ b) / (math.sqrt(a @ a) * math.sqrt(b @ b))
    assert cosine_change(x, y) == pytest.approx(expected, rel=1e-12)
    assert cosine_change(x, b) == pytest.approx(expected, rel=1e-12)
    assert cosine_change(a, y) == pytest.approx(expected, rel=1e-12)


def test_unchanged_is_exactly_zero_and_opposite_exactly_two():
    # 1 - cos of these is 2.2e-16 in float64: equal values must still read as no change
    assert cosine_change([0.1, 0.7, 0.3], [0.1, 0.7, 0.3]) == 0.0
    # parallel but not equal: 1 - cos rounds to -2.2e-16, which is no change either
    assert cosine_change([3, 1, 7], [6, 2, 14]) == 0.0
    # opposite: 1 - cos rounds to 2.0000000000000004, and 2 is the most there is
    assert cosine_change([4, 13, 1], [-0.4, -1.3, -0.1]) == 2.0
    assert cosine_change([3, 4], [-3, -4]) == 2.0  # exact arithmetic all the way


def test_zero_sides():
    assert cosine_change([0, 0], [0, 0]) == 0.0
    assert cosine_change([0.0, 0.0], [0.0, -0.0]) == 0.0
    assert cosine_change([0, 0], [1, 0]) == 1.0
    assert cosine_change([1, 0], [0, 0]) == 1.0
    assert cosine_change([0.6, 0.8], [0, 0]) == 1.0
    assert cosine_change([], []) == 0.0


def test_only_entries_finite_on_both_sides_count():
    assert cosine_change([nan, 3, 4], [1, 4, 3]) == pytest.approx(0.04, rel=1e-12)
    assert cosine_change([3, 4, 1], [4, 3, inf]) == pytest.approx(0.04, rel=1e-12)
    assert cosine_change([inf, 3, 4], [-inf, 4, 3]) == pytest.approx(0.04, rel=1e-12)
    assert cosine_change([nan, 1, 2], [5, 1, 2]) == 0.0
    assert math.isnan(cosine_change([nan, 1], [1, -inf]))
    assert math.isnan(cosine_change([nan], [nan]))


def test_sequences_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match=r"^cosine_change needs two sequences of one length$"):
        cosine_change([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"^cosine_change needs two sequences of one length$"):
        cosine_change([[1, 2]], [1, 2])


# -- compare_activations -----------------------------------------------------------------------


def test_channel_means_order_and_bars():
    old = report([
        section("same", means=[1, 2]),
        section("tilt", means=[3, 4]),
        section("orth1", means=[1, 0]),
        section("flip", means=[3, 4]),
        section("lost2", means=[nan, 1]),
        section("orth2", means=[0, 1]),
        section("lost", means=[nan, nan]),
    ])
    new = report([
        section("orth2", means=[1, 0]),
        section("lost2", means=[1, inf]),
        section("same", means=[1, 2]),
        section("tilt", means=[4, 3]),
        section("flip", means=[-3, -4]),
        section("orth1", means=[0, 1]),
        section("lost", means=[1, 2]),
    ])
    out = compare_activations(old, new)
    # unknown first (by label), then largest first, ties by label
    assert [a.name for a in out] == ["lost", "lost2", "flip", "orth1", "orth2", "tilt", "same"]
    changes = {a.name: a.change for a in out}
    assert math.isnan(changes["lost"]) and math.isnan(changes["lost2"])
    assert (changes["flip"], changes["orth1"], changes["orth2"], changes["same"]) == (2.0, 1.0, 1.0, 0.0)
    assert changes["tilt"] == pytest.approx(0.04, rel=1e-12)
    bars = {a.name: a.bar for a in out}
    assert (bars["lost"], bars["lost2"], bars["flip"], bars["orth1"], bars["orth2"], bars["same"]) == (0.0, 0.0, 1.0, 0.5, 0.5, 0.0)
    assert bars["tilt"] == pytest.approx(0.02, rel=1e-12)  # 0.04 of the largest, 2
    basis = {a.name: a.basis for a in out}
    assert basis["lost"] == "channel means; no value finite on both sides, so the change is unknown"
    assert basis["lost2"] == "channel means; no value finite on both sides, so the change is unknown"
    assert basis["tilt"] == "channel means" and basis["same"] == "channel means"


def test_bars_are_zero_when_no_layer_changed():
    out = compare_activations(report([section("a", means=[1, 2]), section("b", means=[3])]), report([section("a", means=[1, 2]), section("b", means=[3])]))
    assert [(a.name, a.change, a.bar) for a in out] == [("a", 0.0, 0.0), ("b", 0.0, 0.0)]


def test_layers_whose_change_is_unknown_have_no_bar():
    [a] = compare_activations(report([section("x", means=[nan, 1])]), report([section("x", means=[2, nan])]))
    assert math.isnan(a.change) and a.bar == 0.0
    assert compare_activations(report([]), report([])) == []


def test_non_finite_values_left_out_are_counted_in_the_basis():
    old = report([section("c", means=[nan, 3, 1, 4]), section("p", per_probe=[(3, nan), (4, 1)])])
    new = report([section("c", means=[1, 4, inf, 3]), section("p", per_probe=[(4, 2), (3, 1)])])
    out = {a.name: a for a in compare_activations(old, new)}
    assert out["c"].change == pytest.approx(0.04, rel=1e-12)
    assert out["c"].basis == "channel means; 2 NaN/Inf value(s) left out"
    # p: (3, 4, 1) against (4, 3, 1) once the NaN std is left out: 1 - 25/26
    assert out["p"].change == pytest.approx(1 - 25 / 26, rel=1e-12)
    assert out["p"].basis == "per-probe mean and std; 1 NaN/Inf value(s) left out"


def test_per_probe_mean_and_std_when_the_channels_do_not_pair():
    old = report([
        section("count", means=[1, 2], per_probe=[(1, 2), (3, 4)]),
        section("oldnone", per_probe=[(1, 0)]),
        section("newnone", means=[5], per_probe=[(0, 1)]),
        section("empty", means=[], per_probe=[(3, 4)]),
        section("unpaired", means=[1], per_probe=[(1, 1)]),
        section("nothing"),
    ])
    new = report([
        section("onlynew", means=[1]),  # nothing to compare with
        section("unpaired", means=[1, 2], per_probe=[(1, 1), (2, 2)]),  # 2 probes against 1: skipped
        section("nothing"),  # no channels, no per-probe numbers: skipped
        section("count", means=[1, 2, 3], per_probe=[(2, 1), (3, 4)]),
        section("oldnone", means=[7], per_probe=[(1, 1)]),
        section("newnone", per_probe=[(1, 0)]),
        section("empty", means=[], per_probe=[(4, 3)]),
    ])
    out = {a.name: a for a in compare_activations(old, new)}
    assert set(out) == {"count", "oldnone", "newnone", "empty"}
    assert {a.basis for a in out.values()} == {"per-probe mean and std"}
    # (mean, std) per probe in turn: (1, 2, 3, 4) against (2, 1, 3, 4): 1 - 29/30
    assert out["count"].change == pytest.approx(1 / 30, rel=1e-12)
    assert out["oldnone"].change == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)  # (1, 0) against (1, 1)
    assert out["newnone"].change == 1.0  # (0, 1) against (1, 0)
    assert out["empty"].change == pytest.approx(0.04, rel=1e-12)


def test_sections_pair_by_name_and_call():
    old = report([
        section("rep", means=[1, 0], call_index=1, mean=0.25, frac_zero=0.5),
        section("rep", means=[3, 4], call_index=2, mean=-1.5, frac_zero=0.125),
    ])
    new = report([section("rep", means=[4, 3], call_index=2, mean=2.5, frac_zero=0.75, type="Conv1d")])
    [a] = compare_activations(old, new)
    assert (a.name, a.label, a.type) == ("rep", "rep (call 2)", "Conv1d")
    assert a.change == pytest.approx(0.04, rel=1e-12)
    assert (a.old_mean, a.new_mean, a.old_frac_zero, a.new_frac_zero) == (-1.5, 2.5, 0.125, 0.75)
    assert a.bar == 1.0
