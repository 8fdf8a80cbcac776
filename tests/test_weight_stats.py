"""A layer's weight std is right when the weights sit far from zero next to their spread.

BatchNorm-like scales near 1 with a small spread, a layer offset by a large constant, and a
constant layer all have a mean that dwarfs the spread: a std taken as sqrt(norm^2/n - mean^2)
from float32 sums cancels almost every digit there. Expectations are float64 plain torch over
the same values, population std (``correction=0``), as the report documents.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnreport.analysis.statistics import weight_stats


def _noise(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _true(w: torch.Tensor) -> tuple[float, float]:
    flat = w.double().flatten()
    flat = flat[torch.isfinite(flat)]
    return flat.std(correction=0).item(), flat.mean().item()


@pytest.mark.parametrize(
    "offset, spread, dtype",
    [
        (1.0, 1e-3, torch.float32),  # BatchNorm-like scales near 1: was ~3-10% off
        (1e4, 1.0, torch.float32),  # was 44 (or 0) for a true 1
        (-1e4, 1.0, torch.float32),  # the sign of the offset does not matter
        (1.0, 3e-2, torch.float32),  # |mean| ~30 std: float32 cancellation still costs digits
        (1.0, 1e-3, torch.float16),  # float16 weights (was 0.0)
        (1.0, 1e-2, torch.bfloat16),  # bfloat16 weights (was ~25% off)
        (1.0, 1e-3, torch.float64),
        (1e4, 1e-4, torch.float64),  # float64 weights whose spread float32 cannot hold at 1e4
    ],
    ids=["1+1e-3", "1e4+1", "-1e4+1", "1+3e-2", "float16", "bfloat16", "float64", "float64-1e4+1e-4"],
)
def test_std_is_exact_when_the_mean_dwarfs_the_spread(offset, spread, dtype):
    w = (offset + spread * _noise((1000, 4, 5, 5), seed=1)).to(dtype)  # n = 100k
    true_std, true_mean = _true(w)
    got = weight_stats(w)
    assert got.std == pytest.approx(true_std, rel=1e-9)
    assert got.mean == pytest.approx(true_mean, rel=1e-6)


@pytest.mark.parametrize("offset", [0.0, 0.3, -0.9])
def test_std_of_ordinary_weights_with_a_mean_below_the_spread(offset):
    w = (offset + _noise((1000, 4, 5, 5), seed=2)).float()
    true_std, true_mean = _true(w)
    got = weight_stats(w)
    assert got.std == pytest.approx(true_std, rel=1e-5)
    assert got.mean == pytest.approx(true_mean, rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("value", [0.1, 7.7, -1e4 / 3, 0.0])
def test_a_constant_layer_has_std_exactly_zero(value):
    # 7.7 in float32 read std 0.068 from the norm and the mean; a constant has none.
    w = torch.full((100, 10, 10, 10), value)
    got = weight_stats(w)
    assert got.std == 0.0
    assert got.mean == pytest.approx(float(torch.tensor(value)), rel=1e-12, abs=0.0)


def test_std_is_the_population_std_worked_by_hand():
    # mean 2.5, deviations +-0.5 and +-1.5: variance (0.25 + 2.25) * 2 / 4 = 1.25 (sample: 5/3)
    assert weight_stats(torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)).std == pytest.approx(math.sqrt(1.25), rel=1e-12)
    # mean 0: variance (9 + 1 + 1 + 9) / 4 = 5 (sample: 20/3)
    assert weight_stats(torch.tensor([-3.0, -1.0, 1.0, 3.0]).reshape(1, 1, 2, 2)).std == pytest.approx(math.sqrt(5.0), rel=1e-6)


def test_std_counts_every_weight_of_a_layer_larger_than_one_chunk():
    # 2^20 + 12345 weights near 1, the last 1000 shifted by +0.01: a pass that dropped or
    # repeated a chunk, or its tail, would read a different spread.
    w = 1.0 + 1e-3 * _noise(((1 << 20) + 12345,), seed=3)
    w[-1000:] += 0.01
    w = w.float().reshape(1, 1, 1, -1)
    true_std, true_mean = _true(w)
    got = weight_stats(w)
    assert got.std == pytest.approx(true_std, rel=1e-9)
    assert got.mean == pytest.approx(true_mean, rel=1e-6)


def test_std_near_one_skips_nan_and_inf_weights_and_counts_them():
    w = (1.0 + 1e-3 * _noise((1000, 4, 5, 5), seed=4)).float()
    flat = w.view(-1)
    flat[[5, 17, 99_998]] = float("nan")
    flat[[3, 40_000]] = float("inf")
    flat[77] = float("-inf")
    true_std, true_mean = _true(w)
    got = weight_stats(w)
    assert (got.nan_count, got.inf_count) == (3, 3)
    assert got.std == pytest.approx(true_std, rel=1e-9)
    assert got.mean == pytest.approx(true_mean, rel=1e-6)
    assert (got.min, got.max) == (float(w[torch.isfinite(w)].min()), float(w[torch.isfinite(w)].max()))


def test_all_nonfinite_and_empty_weights_have_nan_statistics():
    bad = torch.tensor([float("nan"), float("inf"), float("-inf"), float("nan")]).reshape(1, 1, 2, 2)
    got = weight_stats(bad)
    assert (got.nan_count, got.inf_count, got.frac_near_zero) == (2, 2, 0.0)
    assert [math.isnan(v) for v in (got.norm, got.mean, got.std, got.min, got.max)] == [True] * 5
    empty = weight_stats(torch.empty(0, 3, 3, 3))
    assert (empty.nan_count, empty.inf_count, empty.frac_near_zero) == (0, 0, 0.0)
    assert [math.isnan(v) for v in (empty.norm, empty.mean, empty.std, empty.min, empty.max)] == [True] * 5


def test_every_statistic_of_a_small_layer_worked_by_hand():
    # [-4, 0.5, 1, 2, 0, 0.0625]: sum -0.4375, sum of squares 21.25390625
    w = torch.tensor([-4.0, 0.5, 1.0, 2.0, 0.0, 0.0625]).reshape(1, 1, 2, 3)
    got = weight_stats(w, near_zero=0.25)
    mean = -0.4375 / 6
    assert got.norm == pytest.approx(math.sqrt(21.25390625), rel=1e-7)
    assert got.mean == pytest.approx(mean, rel=1e-7)
    assert got.std == pytest.approx(math.sqrt(21.25390625 / 6 - mean * mean), rel=1e-6)
    assert (got.min, got.max) == (-4.0, 2.0)
    # near zero: |w| <= 0.25 * 4 = 1 (1 itself included): 0.5, 1, 0, 0.0625
    assert got.frac_near_zero == 4 / 6
    assert (got.nan_count, got.inf_count) == (0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_near_zero_is_relative_to_the_largest_magnitude(dtype):
    # the largest |w| is 1024 (negative): the default 1e-3 of it is 1.024; 1 and -1 and 0 are
    # near zero, 1.5 is not, nor 1.0625 (above 1.024)
    w = torch.tensor([-1024.0, 1.0, -1.0, 1.5, 0.0, 1.0625, 512.0, 2.0], dtype=dtype).reshape(2, 1, 2, 2)
    got = weight_stats(w)
    assert got.frac_near_zero == 3 / 8
    assert (got.min, got.max) == (-1024.0, 512.0)
    assert got.mean == pytest.approx(-507.4375 / 8, rel=1e-6)
    assert got.norm == pytest.approx(math.sqrt(1024.0**2 + 1 + 1 + 2.25 + 1.0625**2 + 512.0**2 + 4), rel=1e-6)


def test_near_zero_of_a_layer_below_one():
    # the largest |w| is 0.5: near zero below 5e-4: only 1e-4 (and not 0.25, -0.5)
    w = torch.tensor([0.5, 1e-4, -0.25, -0.5]).reshape(1, 1, 2, 2)
    assert weight_stats(w).frac_near_zero == 0.25


def test_an_all_zero_layer_is_all_near_zero():
    got = weight_stats(torch.zeros(2, 3, 1, 1))
    assert got.frac_near_zero == 1.0
    assert (got.norm, got.mean, got.std, got.min, got.max) == (0.0, 0.0, 0.0, 0.0, 0.0)


def test_float64_weights_far_from_zero_keep_their_float64_mean_and_std():
    # 1e4 + 1e-4 k, k = 1, 2, 3, 4, 10: float32 cannot hold these (its step at 1e4 is 2^-10),
    # so mean and std come from the float64 values: mean 1e4 + 4e-4, std 1e-4 sqrt(10)
    k = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)
    w = (1e4 + 1e-4 * k).reshape(1, 1, 1, 5)
    got = weight_stats(w)
    assert got.mean == pytest.approx(w.mean().item(), rel=1e-15)
    assert got.mean == pytest.approx(10000.0004, rel=1e-13)
    assert got.std == pytest.approx(w.std(correction=0).item(), rel=1e-9)
    assert got.std == pytest.approx(1e-4 * math.sqrt(10.0), rel=1e-7)


def test_a_float64_constant_layer_has_its_float64_mean():
    # 0.1 is not a float32: the mean is the float64 0.1, not float32's 0.10000000149
    got = weight_stats(torch.full((3, 2, 2, 2), 0.1, dtype=torch.float64))
    assert got.mean == 0.1
    assert got.std == 0.0


def test_float64_weights_with_nan_near_one_skip_the_nan():
    # with a NaN the float64 values are not read as they are (the NaN would be in the sums)
    w = torch.tensor([1.0, 1.25, float("nan"), 1.5, 0.75], dtype=torch.float64).reshape(1, 1, 1, 5)
    got = weight_stats(w)
    assert got.nan_count == 1
    # finite: 1, 1.25, 1.5, 0.75: mean 1.125, deviations -0.125, 0.125, 0.375, -0.375
    assert got.mean == pytest.approx(1.125, rel=1e-12)
    assert got.std == pytest.approx(math.sqrt((2 * 0.015625 + 2 * 0.140625) / 4), rel=1e-12)
    assert got.frac_near_zero == 0.0


def test_inf_weights_are_counted_and_left_out_of_every_statistic():
    # finite: -3, 0.001, 4 (peak 4: near zero up to 4e-3: 0.001 only)
    w = torch.tensor([float("inf"), -3.0, 0.001, float("-inf"), 4.0, float("nan")]).reshape(1, 1, 2, 3)
    got = weight_stats(w)
    assert (got.nan_count, got.inf_count) == (1, 2)
    assert (got.min, got.max) == (-3.0, 4.0)
    assert got.norm == pytest.approx(math.sqrt(9 + 1e-6 + 16), rel=1e-6)
    assert got.mean == pytest.approx(1.001 / 3, rel=1e-6)
    assert got.frac_near_zero == 1 / 3


@pytest.mark.parametrize(
    "values, counts, lo, hi",
    [
        ([float("inf"), -3.0, 0.001, 4.0], (0, 1), -3.0, 4.0),  # the largest is +Inf, the smallest finite
        ([-3.0, float("-inf"), 0.001, 4.0], (0, 1), -3.0, 4.0),  # the smallest is -Inf
        ([-3.0, float("-inf"), 0.001, 4.0, float("inf")], (0, 2), -3.0, 4.0),
    ],
    ids=["+inf", "-inf", "both"],
)
def test_an_inf_at_one_end_only_is_left_out_too(values, counts, lo, hi):
    got = weight_stats(torch.tensor(values).reshape(1, 1, 1, -1))
    assert (got.nan_count, got.inf_count) == counts
    assert (got.min, got.max) == (lo, hi)
    assert got.norm == pytest.approx(math.sqrt(9 + 1e-6 + 16), rel=1e-6)
    assert got.mean == pytest.approx(1.001 / 3, rel=1e-6)
    # finite: -3, 0.001, 4: mean 1.001 / 3, population std from the deviations
    m = 1.001 / 3
    assert got.std == pytest.approx(math.sqrt(((-3 - m) ** 2 + (0.001 - m) ** 2 + (4 - m) ** 2) / 3), rel=1e-6)
    assert got.frac_near_zero == 1 / 3
