"""Measures over a layer's capture: its statistics, per-probe statistics, channel means,
non-finite, dead and constant channels, and the output/input scale ratio.

Each test builds a ``LayerCapture`` by hand with asymmetric literal numbers and checks the
values worked out by hand (or float64 numpy over the same literals).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cnnreport.analysis.statistics import (
    activation_stats,
    channel_means,
    constant_channels,
    dead_channels,
    nonfinite_channels,
    per_probe_stats,
    scale_ratio,
)
from cnnreport.capture.activations import LayerCapture

NAN, INF = float("nan"), float("inf")


def _layer(**fields) -> LayerCapture:
    return LayerCapture(name="conv", type="Conv2d", call_index=1, order=0, output_shape=[2, 2, 2], detailed=True, **fields)


def _probes(n: int, numel: int, **fields) -> LayerCapture:
    """A layer of ``n`` probes, ``numel`` values each, with the per-probe lists filled."""
    base = dict(
        probe_mean=[0.0] * n,
        probe_std=[1.0] * n,
        probe_min=[-1.0] * n,
        probe_max=[1.0] * n,
        probe_zeros=[0] * n,
        probe_nan=[0] * n,
        probe_inf=[0] * n,
        numel_per_probe=numel,
    )
    base.update(fields)
    return _layer(**base)


# ---------------------------------------------------------------------------- activation_stats()


def test_activation_stats_pool_the_probes():
    # probes of 4 values: [1, 3, 3, 5] (mean 3, std sqrt(2)) and [0, 0, 2, -2] (mean 0, std sqrt(2))
    layer = _probes(
        2,
        4,
        probe_mean=[3.0, 0.0],
        probe_std=[math.sqrt(2.0), math.sqrt(2.0)],
        probe_min=[1.0, -2.0],
        probe_max=[5.0, 2.0],
        probe_zeros=[0, 2],
        probe_nan=[1, 0],
        probe_inf=[0, 3],
    )
    got = activation_stats(layer)
    every = np.array([1.0, 3.0, 3.0, 5.0, 0.0, 0.0, 2.0, -2.0])
    assert got.mean == pytest.approx(every.mean(), rel=1e-12)  # 1.5
    assert got.std == pytest.approx(every.std(), rel=1e-12)  # sqrt(2 + 2.25)
    assert (got.min, got.max) == (-2.0, 5.0)
    assert got.frac_zero == 2 / 8
    assert (got.nan_count, got.inf_count, got.numel) == (1, 3, 8)


# ---------------------------------------------------------------------------- per_probe_stats()


def test_per_probe_stats_one_per_probe_in_order():
    layer = _probes(
        3,
        8,
        probe_mean=[0.5, -1.25, 2.0],
        probe_std=[1.0, 0.25, 3.0],
        probe_min=[-1.0, -2.0, 0.0],
        probe_max=[2.0, 0.0, 9.0],
        probe_zeros=[2, 0, 6],
        probe_nan=[0, 1, 0],
        probe_inf=[3, 0, 1],
    )
    got = per_probe_stats(layer)
    assert [(s.mean, s.std, s.min, s.max) for s in got] == [(0.5, 1.0, -1.0, 2.0), (-1.25, 0.25, -2.0, 0.0), (2.0, 3.0, 0.0, 9.0)]
    assert [s.frac_zero for s in got] == [0.25, 0.0, 0.75]
    assert [(s.nan_count, s.inf_count, s.numel) for s in got] == [(0, 3, 8), (1, 0, 8), (0, 1, 8)]
    assert [type(s.nan_count) for s in got] == [int] * 3
    assert [type(s.inf_count) for s in got] == [int] * 3


def test_per_probe_stats_counts_from_numpy_become_ints():
    layer = _probes(1, 4, probe_zeros=[np.int64(1)], probe_nan=[np.int64(2)], probe_inf=[np.float64(1.0)])
    (got,) = per_probe_stats(layer)
    assert (got.nan_count, got.inf_count) == (2, 1)
    assert (type(got.nan_count), type(got.inf_count)) == (int, int)
    assert got.frac_zero == 0.25


def test_per_probe_stats_of_an_empty_output_divide_by_one():
    # no value per probe (an output of zero elements): zero fraction 0 / 1, not a ZeroDivisionError
    layer = _probes(2, 0, probe_zeros=[0, 0])
    got = per_probe_stats(layer)
    assert [(s.frac_zero, s.numel) for s in got] == [(0.0, 0), (0.0, 0)]


def test_per_probe_stats_of_no_probe_is_empty():
    assert per_probe_stats(_layer(numel_per_probe=8)) == []


# ---------------------------------------------------------------------------- channel_means()


def test_channel_means_average_the_probes():
    layer = _layer(channel_means=[np.array([1.0, -2.0, 0.5], dtype=np.float32), np.array([3.0, 4.0, 0.0], dtype=np.float32)])
    got = channel_means(layer)
    assert got.tolist() == [2.0, 1.0, 0.25]
    assert got.dtype == np.float64


def test_channel_means_of_float16_means_are_taken_in_float64():
    # float16 holds 2048 and 2049 is not one: 2048 and 2050 average to 2049 in float64
    layer = _layer(channel_means=[np.array([2048.0, 0.1], dtype=np.float16), np.array([2050.0, 0.2], dtype=np.float16)])
    got = channel_means(layer)
    assert got.dtype == np.float64
    assert got[0] == 2049.0
    assert got[1] == pytest.approx((float(np.float16(0.1)) + float(np.float16(0.2))) / 2, rel=1e-15)


def test_channel_means_skip_probes_where_a_channel_is_not_finite():
    # channel 0 finite everywhere; 1: NaN in probe 0; 2: Inf in probe 0, -Inf in probe 2; 3: NaN in all
    layer = _layer(
        channel_means=[
            np.array([1.0, NAN, INF, NAN]),
            np.array([3.0, 2.0, 5.0, NAN]),
            np.array([-1.0, 7.0, -INF, NAN]),
        ]
    )
    got = channel_means(layer)
    assert got[:3].tolist() == [1.0, 4.5, 5.0]
    assert math.isnan(got[3])
    assert got.dtype == np.float64


def test_channel_means_of_a_layer_without_them_is_empty():
    got = channel_means(_layer())
    assert got.shape == (0,)


# ---------------------------------------------------------------------------- nonfinite_channels()


def test_nonfinite_channels_are_those_with_a_nan_or_inf_end():
    layer = _layer(
        channel_min=np.array([0.0, NAN, 1.0, -INF, -5.0, 2.0], dtype=np.float32),
        channel_max=np.array([1.0, NAN, INF, 3.0, 5.0, NAN], dtype=np.float32),
    )
    got = nonfinite_channels(layer)
    assert got == [1, 2, 3, 5]
    assert [type(i) for i in got] == [int] * 4


@pytest.mark.parametrize("which", ["channel_min", "channel_max", "both"])
def test_nonfinite_channels_without_a_range_is_empty(which):
    ends = {"channel_min": np.array([NAN, 1.0]), "channel_max": np.array([NAN, 2.0])}
    if which == "both":
        ends = {}
    else:
        del ends[which]
    assert nonfinite_channels(_layer(**ends)) == []


# ---------------------------------------------------------------------------- constant_channels(), dead_channels()


def test_constant_channels_are_those_with_no_spread():
    # 2 probes x 2 positions per channel; channel 1 and 3 constant (3 is at zero), 0 and 2 vary
    layer = _probes(2, 8, channel_min=np.array([-1.0, 0.5, 0.0, 0.0]), channel_max=np.array([1.0, 0.5, 2.0, 0.0]))
    assert constant_channels(layer) == [1, 3]
    assert dead_channels(layer) == [1, 3]


def test_the_tolerance_is_relative_to_the_layers_largest_magnitude():
    # the largest |value| is 1024 (a negative one): tolerance 1e-7 * 1024 = 1.024e-4;
    # a spread of exactly that is constant, the next float up is not
    tol = 1e-7 * 1024
    layer = _probes(
        1,
        3 * 4,
        channel_min=np.array([-1024.0, 0.0, 0.0]),
        channel_max=np.array([-1024.0, tol, np.nextafter(tol, 1.0)]),
    )
    assert constant_channels(layer) == [0, 1]
    assert dead_channels(layer) == [0, 1]


def test_the_tolerance_has_a_floor_of_1e_12():
    # the largest |value| is 2e-12: 1e-7 times that is far below the floor, so the tolerance
    # is 1e-12: a spread of 1e-12 is constant, 2e-12 is not
    layer = _probes(2, 6, channel_min=np.array([0.0, 0.0, 0.0]), channel_max=np.array([0.0, 1e-12, 2e-12]))
    assert constant_channels(layer) == [0, 1]


def test_a_layer_of_values_below_one_has_a_tolerance_below_1e_7():
    # largest |value| 0.5: tolerance 5e-8; a spread of 6e-8 is not constant, 4e-8 is
    layer = _probes(1, 6, channel_min=np.array([0.5, 0.25, 0.25]), channel_max=np.array([0.5, 0.25 + 6e-8, 0.25 + 4e-8]))
    assert constant_channels(layer) == [0, 2]


def test_non_finite_ends_neither_count_as_constant_nor_set_the_tolerance():
    # an Inf and a NaN end must not make the tolerance infinite (or NaN): channel 1's spread
    # of 0.5 is far above 1e-7 * 3
    layer = _probes(
        2,
        8,
        channel_min=np.array([0.0, 0.0, NAN, 3.0, -INF]),
        channel_max=np.array([INF, 0.5, NAN, 3.0, -INF]),
    )
    assert constant_channels(layer) == [3]
    assert dead_channels(layer) == [3]


@pytest.mark.parametrize(
    "probes, numel, expected",
    [
        (1, 3, None),  # one value per channel: cannot tell
        (2, 3, [0, 2]),  # one position, two probes: two values each
        (1, 6, [0, 2]),  # one probe, two positions
        (1, 5, None),  # 5 // 3 = 1 position
        (0, 6, None),  # no probe
    ],
)
def test_constant_channels_need_two_values_per_channel(probes, numel, expected):
    layer = _probes(probes, numel, channel_min=np.array([1.0, 0.0, -2.0]), channel_max=np.array([1.0, 1.0, -2.0]))
    assert constant_channels(layer) == expected
    assert dead_channels(layer) == (expected or [])


@pytest.mark.parametrize("which", ["channel_min", "channel_max"])
def test_constant_channels_without_a_range_cannot_tell(which):
    ends = {"channel_min": np.array([1.0, 2.0]), "channel_max": np.array([1.0, 2.0])}
    del ends[which]
    layer = _probes(2, 4, **ends)
    assert constant_channels(layer) is None
    assert dead_channels(layer) == []


def test_constant_channels_of_zero_channels_cannot_tell():
    layer = _probes(2, 0, channel_min=np.zeros(0), channel_max=np.zeros(0))
    assert constant_channels(layer) is None


# ---------------------------------------------------------------------------- scale_ratio()


def test_scale_ratio_is_the_median_of_the_per_probe_ratios():
    # ratios 3, 1, 0.25: median 1
    layer = _layer(input_rms=[1.0, 2.0, 4.0], output_rms=[3.0, 2.0, 1.0])
    assert scale_ratio(layer) == 1.0
    # an even count: ratios 1, 2, 3, 10, median (2 + 3) / 2
    layer = _layer(input_rms=[2.0, 1.0, 1.0, 0.5], output_rms=[2.0, 2.0, 3.0, 5.0])
    assert scale_ratio(layer) == 2.5


def test_scale_ratio_leaves_out_non_finite_and_all_zero_inputs():
    # kept: probe 0 (ratio 4) and 4 (input 2e-30, just above the 1e-30 floor: ratio 1.5)
    # and 5 (ratio 0.5); out: probe 1 (NaN in), 2 (Inf out), 3 (input exactly 1e-30), 6 (-Inf in)
    layer = _layer(
        input_rms=[1.0, NAN, 1.0, 1e-30, 2e-30, 4.0, -INF],
        output_rms=[4.0, 1.0, INF, 5.0, 3e-30, 2.0, 1.0],
    )
    assert scale_ratio(layer) == pytest.approx(1.5, rel=1e-12)


def test_scale_ratio_of_a_zero_input_is_none():
    assert scale_ratio(_layer(input_rms=[0.0, 1e-30], output_rms=[1.0, 1.0])) is None
    assert scale_ratio(_layer(input_rms=[NAN], output_rms=[1.0])) is None


def test_scale_ratio_without_matching_rms_lists_is_none():
    assert scale_ratio(_layer(input_rms=[], output_rms=[])) is None
    assert scale_ratio(_layer(input_rms=[], output_rms=[1.0])) is None
    assert scale_ratio(_layer(input_rms=[1.0, 2.0], output_rms=[1.0])) is None
    assert scale_ratio(_layer(input_rms=[1.0], output_rms=[1.0, 2.0])) is None


def test_scale_ratio_is_a_float():
    got = scale_ratio(_layer(input_rms=[2.0], output_rms=[3.0]))
    assert (got, type(got)) == (1.5, float)


def test_constant_channels_of_a_single_channel_layer():
    # one channel, 3 probes of 1 position: three values, all 2.5
    layer = _probes(3, 1, channel_min=np.array([2.5]), channel_max=np.array([2.5]))
    assert constant_channels(layer) == [0]
    layer = _probes(3, 1, channel_min=np.array([2.5]), channel_max=np.array([2.75]))
    assert constant_channels(layer) == []


def test_constant_channels_measure_a_float32_range_in_float64():
    # the capture keeps float32 ranges. Channel 1 runs from -3.08e-12 to float32(1e-4): its
    # spread, 1e-4 + 3.08e-12 in float64, is just above the tolerance 1e-7 * 1000 = 1e-4 (the
    # float32 1e-4 is 2.5e-12 below it); a float32 subtraction would round it back to
    # float32(1e-4), below the tolerance
    lo = np.array([-1000.0, -3.0820955596727595e-12, 0.0], dtype=np.float32)
    hi = np.array([-1000.0, 1e-4, 0.0], dtype=np.float32)
    assert float(hi[1]) - float(lo[1]) > 1e-7 * 1000  # the premise, in float64
    layer = _probes(2, 6, channel_min=lo, channel_max=hi)
    assert constant_channels(layer) == [0, 2]


def test_constant_channels_of_a_layer_with_no_finite_end_are_none_of_them():
    layer = _probes(2, 6, channel_min=np.array([NAN, -INF, INF], dtype=np.float32), channel_max=np.array([NAN, INF, INF], dtype=np.float32))
    assert constant_channels(layer) == []
    assert dead_channels(layer) == []


def test_constant_channels_of_infinite_channels_warn_of_nothing():
    # inf - inf and -inf - -inf are NaN, with numpy's "invalid value" warning: not measured
    layer = _probes(2, 8, channel_min=np.array([INF, -INF, 1.0, NAN]), channel_max=np.array([INF, -INF, 1.0, NAN]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert constant_channels(layer) == [2]


def test_channel_means_of_a_channel_never_finite_warn_of_nothing():
    # 0 / 0 would be NaN with numpy's "invalid value" warning: the channel is left NaN unmeasured
    layer = _layer(channel_means=[np.array([NAN, 1.0]), np.array([INF, 2.0])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = channel_means(layer)
    assert math.isnan(got[0])
    assert got[1] == 1.5
