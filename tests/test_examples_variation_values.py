"""The examples reduction's cheap paths, pinned by hand-worked cases: whether a channel varies
(told from the maxima and one value per row, with a minimum only where nothing else tells), the
top-k sorted only where a candidate can enter, and the zero count that skips blocks without a
zero. Each case's expected value is written out, or counted in float64 plain torch in the test."""

from __future__ import annotations

import math

import numpy as np
import torch

from cnnreport.capture.examples import EMPTY, ExamplePartial, merge, update


def _rows(*rows: list[float]) -> torch.Tensor:
    """One channel, one example per row: (N, 1, P)."""
    return torch.tensor(rows, dtype=torch.float32).unsqueeze(1)


def _reduced(x: torch.Tensor, start: int = 0, k: int = 3) -> ExamplePartial:
    part = ExamplePartial.empty(int(x.shape[1]), k)
    update(part, x, range(start, start + int(x.shape[0])))
    return part


# -- whether a channel varies ----------------------------------------------------------------


def test_a_row_whose_maximum_comes_first_varies_only_by_its_minimum():
    # The first value is the maximum in every row and the maxima are equal between examples:
    # only the rows' minimum (1.0 < 5.0) tells that the channel is not constant.
    part = _reduced(_rows([5.0, 1.0, 5.0, 5.0], [5.0, 5.0, 5.0, 1.0]))
    assert list(part.varies) == [True]
    assert list(part.dead_channels()) == []
    assert list(part.maximum) == [5.0]


def test_a_constant_channel_stays_dead_over_many_batches():
    part = ExamplePartial.empty(2, 2)
    x = torch.full((3, 2, 2, 2), 1.5)
    x[:, 1] = torch.arange(3.0).view(3, 1, 1)  # channel 1: each example constant, 0, 1, 2 apart
    for start in (0, 3, 6):
        update(part, x, range(start, start + 3))
    assert list(part.varies) == [False, True]
    assert list(part.dead_channels()) == [0]
    assert list(part.maximum) == [1.5, 2.0]


def test_examples_each_constant_but_different_between_batches_vary():
    part = _reduced(_rows([2.0, 2.0], [2.0, 2.0]))
    assert list(part.dead_channels()) == [0]  # one value so far
    update(part, _rows([3.0, 3.0]), [7])
    assert list(part.varies) == [True] and list(part.dead_channels()) == []
    # The earlier value below the new one tells as well.
    part = _reduced(_rows([2.0, 2.0]))
    update(part, _rows([1.0, 1.0]), [1])
    assert list(part.varies) == [True]


def test_examples_constant_within_one_batch_but_different_vary():
    assert list(_reduced(_rows([4.0, 4.0, 4.0], [-4.0, -4.0, -4.0])).varies) == [True]


def test_nan_is_left_out_of_whether_a_channel_varies():
    # [NaN, 2, 2] and [2, NaN, 2] hold one value, 2; an all-NaN row holds none.
    part = _reduced(_rows([math.nan, 2.0, 2.0], [2.0, math.nan, 2.0], [math.nan, math.nan, math.nan]))
    assert list(part.varies) == [False]
    assert list(part.dead_channels()) == [0]
    part = _reduced(_rows([math.nan, 2.0, 1.0]))  # the first value is NaN, the others differ
    assert list(part.varies) == [True]
    part = _reduced(_rows([math.nan, 2.0, 2.0]))
    update(part, _rows([2.0, 2.0, 1.0]), [1])  # the maximum is first, the minimum tells
    assert list(part.varies) == [True]


def test_a_channel_of_nothing_but_nan_is_neither_dead_nor_varying():
    part = _reduced(_rows([math.nan, math.nan], [math.nan, math.nan]))
    assert list(part.varies) == [False]
    assert list(part.dead_channels()) == []
    assert list(part.maxima_count()) == [0]


def test_signed_zeros_are_one_value_and_infinities_are_values():
    assert list(_reduced(_rows([-0.0, 0.0], [0.0, -0.0])).dead_channels()) == [0]
    assert list(_reduced(_rows([-math.inf, -math.inf])).dead_channels()) == [0]
    assert list(_reduced(_rows([math.inf, math.inf], [math.inf, math.inf])).dead_channels()) == [0]
    assert list(_reduced(_rows([math.inf, 3.0])).varies) == [True]  # the maximum first, then 3
    assert list(_reduced(_rows([-math.inf, -math.inf], [-math.inf, 0.0])).varies) == [True]


def test_a_vector_output_varies_between_examples_only():
    part = ExamplePartial.empty(2, 2)
    update(part, torch.tensor([[1.0, 7.0], [1.0, 8.0]]), [0, 1])
    assert list(part.varies) == [False, True]
    update(part, torch.tensor([[1.0, 7.0]]), [2])
    assert list(part.dead_channels()) == [0]


def test_merge_tells_constant_shards_of_different_values_apart():
    ones, twos = _reduced(_rows([1.0, 1.0])), _reduced(_rows([2.0, 2.0]), start=1)
    assert list(merge(ones, twos).varies) == [True]
    assert list(merge(twos, ones).varies) == [True]
    also_ones = _reduced(_rows([1.0, 1.0], [1.0, 1.0]), start=5)
    assert list(merge(ones, also_ones).dead_channels()) == [0]
    nothing = _reduced(_rows([math.nan, math.nan]), start=9)  # a shard without a value
    assert list(merge(nothing, ones).dead_channels()) == [0]
    assert list(merge(ones, ExamplePartial.empty(1, 3)).dead_channels()) == [0]
    varying = _reduced(_rows([1.0, 0.0]), start=3)
    assert list(merge(also_ones, varying).varies) == [True]


def test_one_pass_and_shards_agree_on_variation_and_maxima():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(20, 6, 3, 4, generator=gen)
    x[:, 0] = 0.5  # dead
    x[:, 1] = torch.arange(20.0).view(20, 1, 1) % 2  # constant within examples, 0 or 1
    x[:, 2, 0, 0] = 10.0  # the maximum first in every row, the rest differs
    x[4:9, 3] = math.nan
    whole = _reduced(x, k=4)
    left = _reduced(x[:9], k=4)
    right = _reduced(x[9:], start=9, k=4)
    merged = merge(left, right)
    flat = x.double().flatten(2)
    expected_varies = [len(set(v for v in flat[:, c].reshape(-1).tolist() if not math.isnan(v))) > 1 for c in range(6)]
    assert expected_varies == [False, True, True, True, True, True]
    assert list(whole.varies) == expected_varies
    assert list(merged.varies) == expected_varies
    assert list(whole.maximum) == list(merged.maximum) == [float(flat[:, c].nan_to_num(-math.inf).max()) for c in range(6)]


# -- the top-k, sorted only where a candidate can enter ----------------------------------------


def test_a_later_example_with_an_equal_value_and_a_smaller_index_enters():
    part = ExamplePartial.empty(1, 2)
    update(part, _rows([5.0], [3.0]), [10, 11])
    update(part, _rows([3.0]), [2])  # ties the k-th (3.0), with a smaller index: takes its place
    assert list(part.top_values[0]) == [5.0, 3.0]
    assert list(part.top_indices[0]) == [10, 2]
    update(part, _rows([3.0], [2.5]), [20, 21])  # a tie with a larger index, and a smaller value
    assert list(part.top_indices[0]) == [10, 2]


def test_a_candidate_of_minus_infinity_fills_an_empty_slot_but_never_displaces():
    part = ExamplePartial.empty(1, 3)
    update(part, _rows([-math.inf, -math.inf]), [4])
    assert list(part.top_indices[0]) == [4, EMPTY, EMPTY]
    assert list(part.top_values[0]) == [-math.inf, -math.inf, -math.inf]
    update(part, _rows([1.0, -2.0], [0.5, 0.25], [math.nan, math.nan]), [5, 6, 7])
    assert list(part.top_indices[0]) == [5, 6, 4]  # the all-NaN example 7 has no maximum
    assert list(part.top_positions[0]) == [0, 0, 0]
    update(part, _rows([-math.inf, -math.inf]), [1])  # ties -inf with a smaller index: enters
    assert list(part.top_indices[0]) == [5, 6, 1]


def test_only_channels_with_an_entering_candidate_change_and_earlier_arrays_stay():
    x = torch.zeros(2, 2, 1, 3)
    x[0, 0, 0] = torch.tensor([1.0, 9.0, 2.0])
    x[1, 0, 0] = torch.tensor([8.0, 0.0, 0.0])
    x[0, 1, 0] = torch.tensor([4.0, 0.0, 0.0])
    x[1, 1, 0] = torch.tensor([0.0, 0.0, 6.0])
    part = ExamplePartial.empty(2, 2)
    update(part, x, [0, 1])
    held = (part.top_values, part.top_indices, part.top_positions)
    held_copies = tuple(a.copy() for a in held)
    y = torch.zeros(1, 2, 1, 3)
    y[0, 0, 0] = torch.tensor([0.0, 0.0, 8.5])  # channel 0: beats 8.0, at position 2
    y[0, 1, 0] = torch.tensor([1.0, 3.0, 0.0])  # channel 1: below its k-th, 4.0
    update(part, y, [2])
    assert part.top_values.tolist() == [[9.0, 8.5], [6.0, 4.0]]
    assert part.top_indices.tolist() == [[0, 2], [1, 0]]
    assert part.top_positions.tolist() == [[1, 2], [2, 0]]
    for before, copy in zip(held, held_copies):
        np.testing.assert_array_equal(before, copy)


# -- the zero count ---------------------------------------------------------------------------


def test_zero_counts_are_exact_in_blocks_with_and_without_zeros():
    # 4 x 64 rows of 3,136 values: several of the count's cache-sized blocks. Zeros only in
    # rows far apart (one in the last block), a -0.0, and a NaN that is no zero.
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(4, 64, 56, 56, generator=gen) + 0.5  # no zero anywhere
    x[0, 10, 3, 4] = -0.0
    x[3, 8, :, :7] = 0.0  # 56 * 7 = 392 zeros in row 200
    x[3, 63, 55, 55] = 0.0  # the very last value
    x[1, 2, 0, 0] = math.nan
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        part = _reduced(x.to(dtype), k=1)
        expected = (x.to(dtype).double() == 0).sum(dim=(0, 2, 3))
        assert expected[10] == 1 and expected[8] == 392 and expected[63] == 1 and int(expected.sum()) == 394
        assert part.zero_count.tolist() == expected.tolist(), dtype
    # A block where every row has zeros, and channels-last memory.
    y = torch.zeros(2, 3, 5, 5)
    y[0, 1, 2, 2] = 1.0
    part = _reduced(y.to(memory_format=torch.channels_last), k=1)
    assert part.zero_count.tolist() == [50, 49, 50]


# -- the fixed bins of the per-example maximum --------------------------------------------------


def test_each_maximum_lands_in_its_fixed_bin_at_the_edges():
    from cnnreport.capture.examples import histogram_bins

    values = np.array([-math.inf, -1e-30, -0.0, 0.0, 5e-324, 1e-45, 9.9e-5, 1e-4, 10 ** -3.9, 1.0, 1.2, 9999.0, 1e4, math.inf])
    # By the table: below zero 1; zero 2; (0, 1e-4) 3; [10**(j/10), 10**((j+1)/10)) is bin 44 + j
    # for j = -40 .. 39; 1e4 and above 84.
    assert histogram_bins(values).tolist() == [1, 1, 2, 2, 3, 3, 3, 4, 5, 44, 44, 83, 84, 84]
    as_float32 = np.array([[0.0, 1e-45], [1.0, 3e38]], dtype=np.float32)
    assert histogram_bins(as_float32).tolist() == [[2, 3], [44, 84]]
    has = np.array([[True, False], [True, True]])
    assert histogram_bins(as_float32, has).tolist() == [[2, 0], [44, 84]]


# -- the examples' automatic batch -------------------------------------------------------------


def test_the_automatic_examples_batch_is_the_probes_on_the_cpu_and_32_elsewhere():
    from torch import nn

    from cnnreport.report.examples import automatic_example_batch

    assert automatic_example_batch(nn.Conv2d(3, 4, 3)) == 4
    assert automatic_example_batch(nn.ReLU()) == 4  # no tensor: the CPU
    assert automatic_example_batch(nn.Conv2d(3, 4, 3, device="meta")) == 32
    norm = nn.BatchNorm2d(4, affine=False, device="meta")  # buffers only
    assert automatic_example_batch(norm) == 32


def test_indices_and_positions_beyond_what_is_kept_are_refused():
    import pytest

    part = ExamplePartial.empty(1, 2)
    with pytest.raises(ValueError, match="from 0 to 2147483647"):
        update(part, _rows([1.0]), [2**31])
    with pytest.raises(ValueError, match="from 0 to 2147483647"):
        update(part, _rows([1.0]), [-1])
    update(part, _rows([1.0, 3.0]), [2**31 - 1])  # the largest index kept
    assert list(part.top_indices[0]) == [2**31 - 1, EMPTY] and list(part.top_positions[0]) == [1, 0]
    huge = torch.zeros(1, 1, 1, 1).expand(1, 1, 46341, 46341)  # 2,147,488,281 positions, no memory
    with pytest.raises(ValueError, match="2147488281 positions"):
        update(ExamplePartial.empty(1, 1), huge, [0])


def _bin_by_the_table(v: float) -> int:
    """The histogram's bin of one maximum, by the table in the module's comment."""
    if v < 0:
        return 1
    if v == 0:
        return 2
    if v < 10.0 ** (-40 / 10):
        return 3
    for j in range(-40, 40):
        if 10.0 ** (j / 10) <= v < 10.0 ** ((j + 1) / 10):
            return 44 + j
    return 84


def test_histograms_by_small_and_large_batches_are_the_table_counts():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(30, 3, 2, 2, generator=gen) * torch.tensor([0.01, 1.0, 300.0]).view(1, 3, 1, 1)
    x[5, 0] = -1.0  # a negative maximum
    x[6, 1] = 0.0  # a zero one
    expected = np.zeros((3, 85), dtype=np.int64)
    for maxima in x.double().flatten(2).amax(dim=2).tolist():
        for c, v in enumerate(maxima):
            expected[c, _bin_by_the_table(v)] += 1
    for batch in (1, 3, 8, 9, 30):
        part = ExamplePartial.empty(3, 2)
        for s in range(0, 30, batch):
            update(part, x[s : s + batch], range(s, min(30, s + batch)))
        np.testing.assert_array_equal(part.histogram, expected, err_msg=str(batch))
    # A histogram that is a strided view (built by hand) still counts in place.
    part = ExamplePartial.empty(3, 2)
    part.histogram = np.zeros((85, 3), dtype=np.int32).T
    update(part, x[:4], range(4))
    update(part, x[4:30], range(4, 30))
    np.testing.assert_array_equal(part.histogram, expected)


def test_the_position_is_the_first_of_equal_maxima_signed_zeros_included():
    part = _reduced(_rows([-1.0, -0.0, 0.0, -2.0], [3.0, 1.0, 3.0, 3.0], [0.0, -3.0, -0.0, -0.0]), k=3)
    assert part.top_indices[0].tolist() == [1, 0, 2]  # 3.0, then the two zeros by index
    assert part.top_positions[0].tolist() == [0, 1, 0]
    # With a NaN in the batch, the first position equal to the maximum, NaN skipped.
    part = _reduced(_rows([math.nan, 2.0, 5.0, 5.0], [5.0, math.nan, 5.0, 1.0]), k=2)
    assert part.top_positions[0].tolist() == [2, 0]
