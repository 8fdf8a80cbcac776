"""Histogram bins and counts: the edges and counts of the activation and weight histograms.

Expected edges and counts are worked out by hand from the documented rule (``bins`` equal bins
over the finite values' range, or a wider known span; half-open bins, the last one closed; a
(nearly) constant set widened by ``max(|lo|, |hi|, 1) * 1e-6 * bins``), or taken from float64
``np.histogram``, the rule ``bin_counts`` says it follows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnreport.analysis.statistics import activation_histogram, bin_counts, histogram, weight_histogram
from cnnreport.capture.activations import LayerCapture

NAN, INF = float("nan"), float("inf")


def _layer(**fields) -> LayerCapture:
    return LayerCapture(name="conv", type="Conv2d", call_index=1, order=0, output_shape=[2, 2, 2], detailed=True, **fields)


# ---------------------------------------------------------------------------- histogram()


def test_counts_over_the_values_range_worked_by_hand():
    # range 0..10 in 5 bins of 2: [0,2) holds 0, 1, 1; [2,4) holds 2, 3; [8,10] holds 10
    got = histogram(np.array([10.0, 0.0, 3.0, 1.0, 2.0, 1.0]), 5)
    assert got.edges == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert got.counts == [3, 2, 0, 0, 1]


def test_float16_values_are_counted_in_float64():
    # 2049 is not a float16; 2048 and 2050 are: the bins come from the float16 values as they are
    values = np.array([2048.0, 2050.0, 2052.0, 2056.0], dtype=np.float16)
    got = histogram(values, 4)
    assert got.edges == [2048.0, 2050.0, 2052.0, 2054.0, 2056.0]
    assert got.counts == [1, 1, 1, 1]


def test_nan_and_inf_values_are_left_out():
    got = histogram(np.array([NAN, -INF, 4.0, 0.0, INF, 1.0]), 2)
    assert got.edges == [0.0, 2.0, 4.0]
    assert got.counts == [2, 1]


@pytest.mark.parametrize("values", [np.array([NAN, INF, -INF]), np.zeros(0)], ids=["non-finite", "empty"])
def test_no_finite_value_gives_an_empty_histogram(values):
    got = histogram(values, 4)
    assert (got.edges, got.counts) == ([], [])


def test_a_span_wider_than_the_values_sets_the_range():
    # -1..7 in 4 bins of 2: 1 and 2 in [1,3), 3 in [3,5)
    got = histogram(np.array([1.0, 2.0, 3.0]), 4, span=(-1.0, 7.0))
    assert got.edges == [-1.0, 1.0, 3.0, 5.0, 7.0]
    assert got.counts == [0, 2, 1, 0]


def test_a_span_narrower_than_the_values_does_not_cut_them():
    got = histogram(np.array([0.0, 8.0]), 4, span=(2.0, 4.0))
    assert got.edges == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert got.counts == [1, 0, 0, 1]


def test_a_span_wider_on_one_side_only():
    # low end from the span (-4), high end from the values (8)
    got = histogram(np.array([0.0, 8.0]), 3, span=(-4.0, 4.0))
    assert got.edges == [-4.0, 0.0, 4.0, 8.0]
    assert got.counts == [0, 1, 1]
    # and the other way round: low end from the values (0), high end from the span (12)
    got = histogram(np.array([0.0, 8.0]), 3, span=(4.0, 12.0))
    assert got.edges == [0.0, 4.0, 8.0, 12.0]
    assert got.counts == [1, 0, 1]


@pytest.mark.parametrize("span", [(NAN, 20.0), (-20.0, NAN), (-INF, 20.0), (-20.0, INF)], ids=["nan-lo", "nan-hi", "inf-lo", "inf-hi"])
def test_a_span_with_a_non_finite_end_is_ignored(span):
    got = histogram(np.array([0.0, 8.0, 2.0]), 4, span=span)
    assert got.edges == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert got.counts == [1, 1, 0, 1]


@pytest.mark.parametrize(
    "value, bins, edges",
    [
        # pad = 3 * 1e-6 * 3 = 9e-6: edges 3 - 4.5e-6 .. 3 + 4.5e-6 in steps of 3e-6
        (3.0, 3, [3 - 4.5e-6, 3 - 1.5e-6, 3 + 1.5e-6, 3 + 4.5e-6]),
        # a negative value: pad from |lo| = 1000: 1000 * 1e-6 * 3 = 3e-3
        (-1000.0, 3, [-1000.0015, -1000.0005, -999.9995, -999.9985]),
        # below 1 the pad is 1e-6 * bins: 5e-6 for 5 bins
        (0.5, 5, [0.5 - 2.5e-6, 0.5 - 1.5e-6, 0.5 - 0.5e-6, 0.5 + 0.5e-6, 0.5 + 1.5e-6, 0.5 + 2.5e-6]),
        (0.0, 3, [-1.5e-6, -0.5e-6, 0.5e-6, 1.5e-6]),
    ],
    ids=["3", "-1000", "0.5", "0"],
)
def test_a_constant_set_is_widened_relative_to_its_value(value, bins, edges):
    got = histogram(np.full(4, value), bins)
    assert got.edges == pytest.approx(edges, rel=1e-12, abs=1e-18)
    middle = bins // 2
    assert got.counts == [4 if i == middle else 0 for i in range(bins)]


def test_a_nearly_constant_set_is_widened_by_the_larger_end():
    # pad = 2000.001 * 1e-6 * 4 = 0.008000004 > 0.001 = hi - lo: half of it on each side
    got = histogram(np.array([2000.0, 2000.001]), 4)
    assert got.edges[0] == pytest.approx(1999.995999998, rel=1e-15)
    assert got.edges[-1] == pytest.approx(2000.005000002, rel=1e-15)
    assert got.counts == [0, 1, 1, 0]
    # negative: |lo| is the larger end
    got = histogram(np.array([-2000.0, -2000.001]), 4)
    assert got.edges[0] == pytest.approx(-2000.005000002, rel=1e-15)
    assert got.edges[-1] == pytest.approx(-1999.995999998, rel=1e-15)
    assert got.counts == [0, 1, 1, 0]


def test_a_range_exactly_the_pad_is_not_widened():
    # bins 1, values below 1: pad = 1e-6, and hi - lo = 1e-6 is not below it
    got = histogram(np.array([0.0, 1e-6]), 1)
    assert got.edges == [0.0, 1e-6]
    assert got.counts == [2]
    # half of it is: widened by pad / 2 on each side, to [-5e-7, 1e-6]
    got = histogram(np.array([0.0, 5e-7]), 1)
    assert got.edges == pytest.approx([-5e-7, 1e-6], rel=1e-12)
    assert got.counts == [2]


# ---------------------------------------------------------------------------- bin_counts()


@pytest.mark.parametrize("lo, hi, bins", [(-0.3, 0.7, 10), (0.1, 0.4, 3), (-7.3, 1e3 / 7, 17), (1e-3, 2e-3, 7), (-1.0, 1.0, 1)])
def test_bin_counts_match_np_histogram_on_and_beside_every_edge(lo, hi, bins):
    edges = np.linspace(lo, hi, bins + 1)
    rng = np.random.default_rng(bins)
    values = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), rng.uniform(lo, hi, 200)])
    values = values[(values >= lo) & (values <= hi)]
    want_counts, want_edges = np.histogram(values, bins, range=(lo, hi))
    counts, got_edges = bin_counts(values, lo, hi, bins)
    assert counts.tolist() == want_counts.tolist()
    assert got_edges.tolist() == want_edges.tolist()


def test_bin_counts_put_an_edge_value_in_the_bin_above_and_the_top_in_the_last():
    # edges 0, 0.1, ..., 1.0 (linspace); 0.3 is below linspace's 0.30000000000000004: bin 2,
    # the edge itself is bin 3, and 1.0 is in the last bin (closed on the right)
    edges = np.linspace(0.0, 1.0, 11)
    values = np.array([0.3, edges[3], 0.0, 1.0, edges[7], np.nextafter(edges[7], -1.0)])
    counts, _ = bin_counts(values, 0.0, 1.0, 10)
    assert counts.tolist() == [1, 0, 1, 1, 0, 0, 1, 1, 0, 1]
    assert len(counts) == 10


# ---------------------------------------------------------------------------- activation_histogram()


def test_activation_histogram_spans_the_layers_true_range():
    # the sample holds 1, 2, 3; the probes' true range is -1..5 (probe 1's min, probe 0's max)
    layer = _layer(
        probe_mean=[2.0, 1.0],
        probe_std=[1.0, 1.0],
        probe_min=[0.0, -1.0],
        probe_max=[5.0, 4.0],
        probe_zeros=[0, 0],
        probe_nan=[0, 0],
        probe_inf=[0, 0],
        numel_per_probe=8,
        samples=[np.array([1.0, 2.0], dtype=np.float32), np.array([3.0], dtype=np.float32)],
    )
    got = activation_histogram(layer, 3)
    assert got.edges == [-1.0, 1.0, 3.0, 5.0]
    assert got.counts == [0, 2, 1]


def test_activation_histogram_of_a_layer_without_a_sample_is_none():
    layer = _layer(probe_mean=[0.0], probe_std=[1.0], probe_min=[-1.0], probe_max=[1.0], numel_per_probe=8)
    assert activation_histogram(layer, 3) is None


# ---------------------------------------------------------------------------- weight_histogram()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_weight_histogram_worked_by_hand(dtype):
    # 0..3 in 3 bins: 0 | 1, 1 | 3 (the top, in the last bin)
    w = torch.tensor([[0.0, 3.0], [1.0, 1.0]], dtype=dtype).reshape(2, 1, 2, 1)
    got = weight_histogram(w, 3)
    assert got.edges == [0.0, 1.0, 2.0, 3.0]
    assert got.counts == [1, 2, 1]


@pytest.mark.parametrize(
    "bad",
    [[NAN, 0.0, 3.0, 1.0, 2.5], [0.0, INF, 3.0, 1.0, 2.5], [-INF, 0.0, 3.0, 1.0, 2.5], [0.0, 3.0, NAN, 1.0, 2.5], [0.0, 3.0, 1.0, 2.5, -INF]],
    ids=["nan-first", "inf", "-inf", "nan-middle", "-inf-last"],
)
def test_weight_histogram_leaves_out_nan_and_inf(bad):
    got = weight_histogram(torch.tensor(bad).reshape(1, 1, 1, 5), 3)
    assert got.edges == [0.0, 1.0, 2.0, 3.0]
    assert got.counts == [1, 1, 2]


def test_weight_histogram_of_no_finite_weight_is_empty():
    got = weight_histogram(torch.tensor([NAN, INF, -INF]).reshape(1, 1, 3), 4)
    assert (got.edges, got.counts) == ([], [])


def test_weight_histogram_of_a_constant_layer_is_widened():
    # pad = 2 * 1e-6 * 3 = 6e-6: edges 2 - 3e-6 .. 2 + 3e-6
    got = weight_histogram(torch.full((4, 2, 3, 3), 2.0), 3)
    assert got.edges == pytest.approx([2 - 3e-6, 2 - 1e-6, 2 + 1e-6, 2 + 3e-6], rel=1e-12)
    assert got.counts == [0, 72, 0]
    # negative and large, float16: pad from |lo| = 4096: 4096 * 1e-6 * 3 = 0.012288
    got = weight_histogram(torch.full((3, 1, 1, 1), -4096.0, dtype=torch.float16), 3)
    assert got.edges == pytest.approx([-4096.006144, -4096.002048, -4095.997952, -4095.993856], rel=1e-13)
    assert got.counts == [0, 3, 0]
    # below 1: pad = 1e-6 * 3
    got = weight_histogram(torch.full((3, 1, 1, 1), 0.25), 3)
    assert got.edges == pytest.approx([0.25 - 1.5e-6, 0.25 - 0.5e-6, 0.25 + 0.5e-6, 0.25 + 1.5e-6], rel=1e-12)
    assert got.counts == [0, 3, 0]


def test_weight_histogram_of_a_nearly_constant_layer_is_widened_by_the_larger_end():
    # float32 2048 and 2048 + 2^-11 (exact): pad = (2048 + 2^-11) * 1e-6 * 4 > 2^-11
    hi = 2048.0 + 2.0**-11
    got = weight_histogram(torch.tensor([2048.0, hi]).reshape(1, 1, 2), 4)
    pad = hi * 4e-6
    assert got.edges[0] == pytest.approx(2048.0 - pad / 2, rel=1e-15)
    assert got.edges[-1] == pytest.approx(hi + pad / 2, rel=1e-15)
    got = weight_histogram(torch.tensor([-2048.0, -hi]).reshape(1, 1, 2), 4)
    assert got.edges[0] == pytest.approx(-hi - pad / 2, rel=1e-15)
    assert got.edges[-1] == pytest.approx(-2048.0 + pad / 2, rel=1e-15)


def test_weight_histogram_counts_an_even_stride_of_a_large_layer():
    # 131,073 weights w[i] = i: above 65,536, so every 3rd (ceil(131073 / 65536) = 3) is
    # counted: 0, 3, ..., 131070, 43,691 weights; edges 0, 43690, 87380, 131070.
    # [0, 43690): 3k for k = 0..14563; [43690, 87380): k = 14564..29126; the rest 14,564.
    # A NaN and an Inf off the stride are never seen.
    w = torch.arange(131073, dtype=torch.float32)
    w[1] = NAN
    w[131072] = INF
    got = weight_histogram(w.reshape(1, 1, -1), 3)
    assert got.edges == [0.0, 43690.0, 87380.0, 131070.0]
    assert got.counts == [14564, 14563, 14564]


def test_weight_histogram_counts_every_weight_up_to_the_sample_size():
    # exactly 65,536 weights: all counted, 0..65535 in 2 bins of 32767.5
    got = weight_histogram(torch.arange(65536, dtype=torch.float32).reshape(1, 1, -1), 2)
    assert got.edges == [0.0, 32767.5, 65535.0]
    assert got.counts == [32768, 32768]
    # one more: every 2nd, 0..65536 (32,769 of them)
    got = weight_histogram(torch.arange(65537, dtype=torch.float32).reshape(1, 1, -1), 2)
    assert got.edges == [0.0, 32768.0, 65536.0]
    assert got.counts == [16384, 16385]


def test_a_single_finite_value_gets_its_bins():
    # one value, 5: pad 5 * 1e-6 * 3 = 1.5e-5, the value in the middle bin
    got = histogram(np.array([NAN, 5.0, INF]), 3)
    assert got.edges == pytest.approx([5 - 7.5e-6, 5 - 2.5e-6, 5 + 2.5e-6, 5 + 7.5e-6], rel=1e-12)
    assert got.counts == [0, 1, 0]
    got = weight_histogram(torch.tensor([NAN, 5.0, -INF]).reshape(1, 1, 3), 3)
    assert got.edges == pytest.approx([5 - 7.5e-6, 5 - 2.5e-6, 5 + 2.5e-6, 5 + 7.5e-6], rel=1e-12)
    assert got.counts == [0, 1, 0]


def test_weight_range_exactly_the_pad_is_not_widened():
    # float32 ends found so that hi - lo is exactly the pad, hi * 1e-6 * 3, in float64
    lo, hi = 1.9073429107666016, 1.9073486328125
    assert (float(np.float32(lo)), float(np.float32(hi))) == (lo, hi)  # the premise: float32 values
    assert hi - lo == hi * 1e-6 * 3
    got = weight_histogram(torch.tensor([hi, lo]).reshape(1, 1, 2), 3)
    assert (got.edges[0], got.edges[-1]) == (lo, hi)
    assert got.counts == [1, 0, 1]
