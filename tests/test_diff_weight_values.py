"""compare_weights, common_precision and precision_notes on literal weights: the relative change
and its norms, which modules are compared at all, the order and bars, the stored tensors and the
precision both sides are compared at, and the words of the precision notes.

Expected numbers are worked out by hand or in float64 plain torch inside the test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnreport.analysis.diff import common_precision, compare_weights, precision_notes

F16, F32, F64 = "torch.float16", "torch.float32", "torch.float64"


class Holder(nn.Module):
    """A layer holding the given tensors as its parameters, in that order."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        super().__init__()
        for key, value in tensors.items():
            self.register_parameter(key, nn.Parameter(value, requires_grad=value.is_floating_point()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def box(**children: nn.Module) -> nn.Module:
    model = nn.Module()
    for name, child in children.items():
        model.add_module(name, child)
    return model


def t(*values: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


nan, inf = math.nan, math.inf


def test_relative_change_and_norms_over_weight_and_bias_together():
    old = box(a=Holder(w=t(3, 0), b=t(4)))
    new = box(a=Holder(w=t(3, 1.5), b=t(2)))
    precisions: dict = {}
    [w] = compare_weights(old, new, precisions=precisions)
    # old (3, 0, 4): norm 5; new - old (0, 1.5, -2): norm 2.5
    assert (w.name, w.type, w.params) == ("a", "Holder", 3)
    assert (w.relative, w.abs_change, w.old_norm) == (0.5, 2.5, 5.0)
    assert w.new_norm == pytest.approx(math.sqrt(9 + 2.25 + 4), rel=1e-15)
    assert w.bar == 1.0
    assert precisions == {(F32, F32, F32): 2}  # weight and bias


def test_norms_are_taken_in_float64():
    small = float(torch.tensor(1e-4, dtype=torch.float32))  # as float32 holds it
    old = box(a=Holder(w=t(1.0, 1e-4)))
    new = box(a=Holder(w=t(1.0, 3e-4)))
    [w] = compare_weights(old, new)
    big = float(torch.tensor(3e-4, dtype=torch.float32))
    expected_old = math.sqrt(1.0 + small * small)  # 1.000000005: float32 would round it to 1
    assert w.old_norm == pytest.approx(expected_old, rel=1e-14)
    assert w.old_norm > 1.0
    assert w.new_norm == pytest.approx(math.sqrt(1.0 + big * big), rel=1e-14)
    assert w.abs_change == pytest.approx(big - small, rel=1e-12)
    assert w.relative == pytest.approx((big - small) / expected_old, rel=1e-12)


def test_order_bars_and_the_cases_with_no_ratio():
    old = box(
        a=Holder(w=t(3, 0), b=t(4)),
        c=Holder(w=t(0.3, 0.4, dtype=torch.float64)),  # norm 0.5, below 1
        d=Holder(w=t(1, 0)),
        e=Holder(w=t(0, 4), b=t(3)),
        i=Holder(w=t(1)),
        n=Holder(w=t(1, 2)),
        oi=Holder(w=t(inf, 0)),
        on=Holder(w=t(nan)),
        z=Holder(w=t(0, 0)),
        zn=Holder(w=t(0, 0)),
    )
    new = box(
        a=Holder(w=t(3, 1.5), b=t(2)),  # 0.5
        c=Holder(w=t(0.3, 0.4 + 0.125, dtype=torch.float64)),  # 0.125 / 0.5 = 0.25
        d=Holder(w=t(1, 0)),  # 0
        e=Holder(w=t(1.5, 2), b=t(3)),  # (1.5, -2, 0): 2.5 / 5 = 0.5, ties with a
        i=Holder(w=t(inf)),  # inf
        n=Holder(w=t(nan, 2)),  # NaN
        oi=Holder(w=t(1, 0)),  # old norm inf: no ratio
        on=Holder(w=t(nan)),  # old norm NaN: no ratio
        z=Holder(w=t(0, 0)),  # zero to zero: 0
        zn=Holder(w=t(0, 2)),  # from zero: no ratio
    )
    out = compare_weights(old, new)
    # no ratio first (by name), then inf and NaN (by name), then largest first, ties by name
    assert [w.name for w in out] == ["oi", "on", "zn", "i", "n", "a", "e", "c", "d", "z"]
    rel = {w.name: w.relative for w in out}
    assert [rel[k] for k in ("oi", "on", "zn")] == [None, None, None]
    assert rel["i"] == inf and math.isnan(rel["n"])
    assert (rel["a"], rel["e"], rel["d"], rel["z"]) == (0.5, 0.5, 0.0, 0.0)
    assert rel["c"] == pytest.approx(0.25, rel=1e-12)
    # bars: 1 for no ratio or a non-finite one, else the share of the largest finite (0.5)
    bars = {w.name: w.bar for w in out}
    assert [bars[k] for k in ("oi", "on", "zn", "i", "n", "a", "e", "d", "z")] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert bars["c"] == pytest.approx(0.5, rel=1e-12)
    by = {w.name: w for w in out}
    assert (by["zn"].abs_change, by["zn"].old_norm, by["zn"].new_norm) == (2.0, 0.0, 2.0)
    assert (by["z"].abs_change, by["z"].old_norm, by["z"].new_norm) == (0.0, 0.0, 0.0)
    assert by["oi"].old_norm == inf and by["oi"].abs_change == inf
    assert math.isnan(by["on"].old_norm) and math.isnan(by["on"].abs_change)
    assert by["i"].abs_change == inf and by["i"].old_norm == 1.0
    assert by["c"].old_norm == pytest.approx(0.5, rel=1e-15) and by["c"].params == 2
    assert by["e"].params == 3


def test_when_nothing_changed_every_bar_is_zero():
    out = compare_weights(box(a=Holder(w=t(1, 2)), b=Holder(w=t(0, 0))), box(a=Holder(w=t(1, 2)), b=Holder(w=t(0, 0))))
    assert [(w.name, w.relative, w.bar) for w in out] == [("a", 0.0, 0.0), ("b", 0.0, 0.0)]


def test_only_modules_with_the_same_type_parameter_names_order_and_shapes_are_compared():
    old = box(
        gone=Holder(w=t(1, 2)),
        retyped=nn.Linear(2, 1),
        act=nn.ReLU(),
        renamed=Holder(w=t(1, 2)),
        reordered=Holder(w=t(1, 2), b=t(1)),
        reshaped=Holder(w=t(1, 2)),
        nobias=nn.Linear(2, 1),
        same=Holder(w=t(1, 2), b=t(1)),  # after every skipped one: the skips go on to the next
    )
    new = box(
        same=Holder(w=t(1, 4), b=t(1)),
        retyped=Holder(weight=torch.tensor([[1.0, 2.0]]), bias=t(1)),  # the Linear's names and shapes, another type
        act=nn.ReLU(),
        renamed=Holder(v=t(1, 2)),
        reordered=Holder(b=t(1), w=t(1, 2)),
        reshaped=Holder(w=t(1, 2, 3)),
        nobias=nn.Linear(2, 1, bias=False),
        added=Holder(w=t(1, 2)),
    )
    [w] = compare_weights(old, new)
    # same: (1, 2, 1) -> (1, 4, 1): 2 / sqrt(6)
    assert (w.name, w.relative) == ("same", pytest.approx(2 / math.sqrt(6), rel=1e-12))


def test_no_comparable_module_or_no_finite_ratio():
    assert compare_weights(box(a=nn.ReLU()), box(a=nn.ReLU())) == []
    out = compare_weights(box(a=Holder(w=t(0, 0)), b=Holder(w=t(nan))), box(a=Holder(w=t(1, 0)), b=Holder(w=t(1))))
    assert [(w.name, w.relative, w.bar) for w in out] == [("a", None, 1.0), ("b", None, 1.0)]


def test_integer_parameters_are_compared_as_they_are():
    old = box(a=Holder(w=t(1, 2, dtype=torch.int64)), b=Holder(w=t(1, 2, dtype=torch.int64)))
    new = box(a=Holder(w=t(1, 4, dtype=torch.int64)), b=Holder(w=t(1.5, 2)))
    precisions: dict = {}
    out = {w.name: w for w in compare_weights(old, new, precisions=precisions)}
    assert out["a"].relative == pytest.approx(2 / math.sqrt(5), rel=1e-12)
    # int64 against float32: no common floating format, so neither side is rounded
    assert out["b"].relative == pytest.approx(0.5 / math.sqrt(5), rel=1e-12)
    assert precisions == {("torch.int64", "torch.int64", "torch.int64"): 1, ("torch.int64", F32, "torch.int64"): 1}


def test_a_float16_copy_of_float32_weights_is_no_change_but_a_real_change_shows():
    torch.manual_seed(0)
    w32 = torch.rand(5, 3) * 2 - 1
    assert not torch.equal(w32.half().float(), w32)  # float16 rounds these
    old = box(conv=Holder(weight=w32.clone()))
    precisions: dict = {}
    [same] = compare_weights(old, box(conv=Holder(weight=w32.half())), precisions=precisions)
    assert (same.relative, same.abs_change, same.bar) == (0.0, 0.0, 0.0)
    assert precisions == {(F32, F16, F16): 1}
    moved = (w32 + 0.25).half()
    [w] = compare_weights(old, box(conv=Holder(weight=moved)))
    a, b = w32.half().double(), moved.double()
    assert w.relative == pytest.approx(float((b - a).norm() / a.norm()), rel=1e-12)
    assert w.old_norm == pytest.approx(float(a.norm()), rel=1e-12)
    # the other way round: the float16 side first
    [back] = compare_weights(box(conv=Holder(weight=w32.half())), old)
    assert back.relative == 0.0


def test_stored_tensors_stand_in_for_the_models_casts_of_them():
    old = Holder(scale=t(1, 2))
    old.add_module("conv", Holder(w=t(0.5, 0.25), b=t(1)))
    new = Holder(scale=t(3, 4))
    new.add_module("conv", Holder(w=t(0.5, 0.25), b=t(2)))
    old_stored = {"scale": t(3, 4, dtype=torch.float64), "conv.w": t(0.5, 0.25, dtype=torch.float16)}
    precisions: dict = {}
    out = {w.name: w for w in compare_weights(old, new, old_stored=old_stored, precisions=precisions)}
    assert set(out) == {"(model)", "conv"}
    # the root's own parameter, looked up as "scale": stored (3, 4) in float64 against (3, 4)
    assert out["(model)"].relative == 0.0 and out["(model)"].old_norm == 5.0 and out["(model)"].params == 2
    # conv: stored w (float16) with the model's b: (0.5, 0.25, 1) -> (0.5, 0.25, 2)
    assert out["conv"].relative == pytest.approx(1 / math.sqrt(0.25 + 0.0625 + 1), rel=1e-12)
    assert precisions == {(F64, F32, F32): 1, (F16, F32, F16): 1, (F32, F32, F32): 1}


def test_new_stored_tensors_are_used_too():
    old = box(a=Holder(w=t(3, 4)))
    new = box(a=Holder(w=t(9, 9)))
    [w] = compare_weights(old, new, new_stored={"a.w": t(3, 5, dtype=torch.float64)})
    assert (w.relative, w.abs_change, w.new_norm) == (0.2, 1.0, pytest.approx(math.sqrt(34), rel=1e-15))


def test_precisions_add_to_the_counts_already_there():
    counts = {(F32, F32, F32): 5}
    compare_weights(box(a=Holder(w=t(1), b=t(2))), box(a=Holder(w=t(1), b=t(2))), precisions=counts)
    assert counts == {(F32, F32, F32): 7}


@pytest.mark.parametrize(
    "a, b, coarser",
    [
        (torch.float32, torch.float32, torch.float32),
        (torch.float32, torch.float16, torch.float16),
        (torch.float16, torch.float32, torch.float16),
        (torch.bfloat16, torch.float16, torch.bfloat16),  # eps 2^-7 against 2^-10
        (torch.float16, torch.bfloat16, torch.bfloat16),
        (torch.float64, torch.float32, torch.float32),
        (torch.float32, torch.float64, torch.float32),
        (torch.float8_e5m2, torch.float8_e5m2fnuz, torch.float8_e5m2),  # eps 0.25 against 0.125
        (torch.float8_e5m2fnuz, torch.float8_e5m2, torch.float8_e5m2),
        # the same eps (0.125): the smaller range (240 against 448) is the coarser
        (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e4m3fnuz),
        (torch.float8_e4m3fnuz, torch.float8_e4m3fn, torch.float8_e4m3fnuz),
        # not both floating: the first, as it is
        (torch.int64, torch.float32, torch.int64),
        (torch.float32, torch.int64, torch.float32),
        (torch.int32, torch.int64, torch.int32),
    ],
)
def test_common_precision(a, b, coarser):
    assert common_precision(a, b) == coarser


def test_precision_notes_words():
    seen = {(F32, F16, F16): 2, ("torch.bfloat16", "torch.bfloat16", "torch.bfloat16"): 1, (F32, F32, F32): 4}
    assert precision_notes(seen, "main", "pr", "float32") == [
        "Weights are compared in the checkpoints' own bfloat16 (1 parameter tensor); the models compute in float32.",
        "Weights are compared at float16, the coarser of the two precisions (main float32, pr float16; 2 parameter tensors): "
        "a difference that is only rounding to float16 shows as no change. "
        "Activations and predictions come from the models as loaded, so they may still differ by that rounding.",
    ]


def test_precision_notes_defaults_and_the_cases_with_nothing_to_say():
    assert precision_notes({(F64, F32, F32): 1}) == [
        "Weights are compared at float32, the coarser of the two precisions (old float64, new float32; 1 parameter tensor): "
        "a difference that is only rounding to float32 shows as no change. "
        "Activations and predictions come from the models as loaded, so they may still differ by that rounding."
    ]
    assert precision_notes({(F16, F16, F16): 3}) == []  # the model's dtype not known
    assert precision_notes({(F16, F16, F16): 3}, model_dtype="float16") == []
    assert precision_notes({(F16, F16, F16): 3}, model_dtype="float32") == [
        "Weights are compared in the checkpoints' own float16 (3 parameter tensors); the models compute in float32."
    ]
    assert precision_notes({}) == []
