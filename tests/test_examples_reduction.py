"""The dataset-examples reduction: top-k per channel with positions, counts, range, histogram,
merged shards equal to one pass. Expected values come from hand-worked numbers or plain float64
torch in the test, never from the module's own functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnreport.capture.examples import (
    EMPTY,
    HISTOGRAM_BINS,
    ExamplePartial,
    ExampleReducer,
    merge,
    position_to_yx,
    update,
)

CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])


def _cross_model() -> nn.Module:
    """Channel 0 is a 3x3 cross detector (no bias, no padding); channel 1 sums the 3x3 window."""
    conv = nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight[0, 0] = CROSS
        conv.weight[1, 0] = 1.0
    return nn.Sequential(conv)


def _reference(outputs: torch.Tensor, indices: list[int], k: int):
    """Per channel: sorted (-value, index) top-k of per-example maxima and first-argmax positions,
    plus sum, min, max, zeros, computed plainly in float64."""
    x = outputs.double().flatten(2)
    c = x.shape[1]
    tops = []
    for ch in range(c):
        rows = [(float(x[i, ch].max()), indices[i], int(torch.nonzero(x[i, ch] == x[i, ch].max())[0])) for i in range(x.shape[0])]
        rows.sort(key=lambda r: (-r[0], r[1]))
        tops.append(rows[:k])
    return tops, x.sum(dim=(0, 2)).numpy(), x.amin(dim=(0, 2)).numpy(), x.amax(dim=(0, 2)).numpy(), (x == 0).sum(dim=(0, 2)).numpy()


def test_cross_detector_finds_the_pasted_crosses_in_order_of_strength():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(12, 1, 10, 10, generator=gen) * 0.1  # faint noise: a window sums to < 0.5
    # Crosses of strengths 3, 2, 1 pasted into images 7, 2, 9, centred at (y, x) of the input.
    pasted = {7: (3.0, (4, 5)), 2: (2.0, (2, 2)), 9: (1.0, (6, 3))}
    for image, (strength, (y, x)) in pasted.items():
        images[image, 0, y - 1 : y + 2, x - 1 : x + 2] += strength * CROSS
    reducer = ExampleReducer(["0"], k=3)
    model = _cross_model()
    with torch.no_grad(), reducer.attached(model):
        for start in range(0, 12, 5):
            model(images[start : start + 5])
    part = reducer.partials["0"]
    assert part.spatial_shape == (8, 8)
    assert list(part.top_indices[0]) == [7, 2, 9]
    # The output position of a valid 3x3 conv centred at input (y, x) is (y - 1, x - 1).
    got = [tuple(int(v) for v in position_to_yx(int(p), part.spatial_shape)) for p in part.top_positions[0]]
    assert got == [(3, 4), (1, 1), (5, 2)]
    # Each value is 5 * strength (the cross's 5 ones) plus the noise under it.
    for slot, image in enumerate([7, 2, 9]):
        strength, (y, x) = pasted[image]
        window = images[image, 0, y - 1 : y + 2, x - 1 : x + 2].double()
        assert part.top_values[0, slot] == pytest.approx(float((window * CROSS.double()).sum()), rel=1e-6)
        assert 5 * strength < part.top_values[0, slot] < 5 * strength + 0.5
    assert part.examples == 12 and part.values == 12 * 64


def _random_outputs(n=24, c=5, h=4, w=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    x[x < -0.5] = 0.0  # exact zeros to count
    x[3, 1] = 0.25  # a constant example: its maximum's position is the first
    x[:, 4] = 1.5  # a dead (constant) channel
    return x


def _one_pass(x, indices, k, batch=7):
    part = ExamplePartial.empty(x.shape[1], k)
    for s in range(0, len(indices), batch):
        update(part, x[s : s + batch], indices[s : s + batch])
    return part


def _assert_exactly_equal(a: ExamplePartial, b: ExamplePartial):
    for name in ("top_values", "top_indices", "top_positions", "nan_count", "zero_count", "varies", "maximum", "histogram"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.examples, a.values, a.spatial_shape) == (b.examples, b.values, b.spatial_shape)
    np.testing.assert_allclose(a.means(), b.means(), rtol=1e-12)
    np.testing.assert_allclose(a.mean_maxima(), b.mean_maxima(), rtol=1e-12)


def test_one_pass_matches_plain_float64_reference():
    x = _random_outputs()
    indices = list(range(100, 124))
    part = _one_pass(x, indices, k=4)
    tops, total, lo, hi, zeros = _reference(x, indices, 4)
    for ch in range(5):
        assert [(float(v), int(i), int(p)) for v, i, p in zip(part.top_values[ch], part.top_indices[ch], part.top_positions[ch])] == tops[ch]
    np.testing.assert_allclose(part.means(), total / (24 * 12), rtol=1e-6)
    np.testing.assert_array_equal(part.varies, lo != hi)
    np.testing.assert_array_equal(part.maximum, hi)
    np.testing.assert_array_equal(part.zero_count, zeros)
    np.testing.assert_allclose(part.zero_fractions(), zeros / (24 * 12))
    assert list(part.dead_channels()) == [4]
    np.testing.assert_array_equal(part.histogram.sum(axis=1), 24)
    maxima = x.double().flatten(2).amax(dim=2)
    np.testing.assert_allclose(part.mean_maxima(), maxima.mean(dim=0).numpy(), rtol=1e-6)


def test_histogram_bins_by_hand():
    # One channel, (N, C) outputs: per-example maxima -3, 0, 5e-5, 1e-4 * 10**0.05 (inside the
    # first log bin), 1.0 (the bin starting at 10**0), 2e4 and +inf (overflow).
    values = torch.tensor([[-3.0], [0.0], [5e-5], [1e-4 * 10**0.05], [1.0], [2e4], [math.inf]], dtype=torch.float64)
    part = ExamplePartial.empty(1, 2)
    update(part, values, range(7))
    expected = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    expected[[1, 2, 3, 4, 4 + 40, HISTOGRAM_BINS - 1]] = [1, 1, 1, 1, 1, 2]
    np.testing.assert_array_equal(part.histogram[0], expected)


@pytest.mark.parametrize(
    "shards",
    [
        [list(range(0, 24, 2)), list(range(1, 24, 2))],  # even / odd
        [list(range(12, 24)), list(range(0, 12))],  # second half first
        [list(range(0, 24, 3)), list(range(2, 24, 3)), list(range(1, 24, 3))],
        [list(range(16, 24)), list(range(0, 5)), list(range(5, 16))],
    ],
)
def test_shards_merged_equal_one_pass(shards):
    x = _random_outputs()
    x[5, 2] = x[9, 2] = 7.0  # a tie across shards: the smaller index wins whatever the order
    indices = list(range(24))
    whole = _one_pass(x, indices, k=5)
    parts = [_one_pass(x[s], s, k=5, batch=4) for s in shards]
    merged = parts[0]
    for part in parts[1:]:
        merged = merge(merged, part)
    _assert_exactly_equal(merged, whole)
    backwards = parts[-1]
    for part in reversed(parts[:-1]):
        backwards = merge(part, backwards)
    _assert_exactly_equal(backwards, whole)
    assert list(whole.top_indices[2][:2]) == [5, 9]
    # merge(a, b) == merge(b, a) bitwise, sums included for two.
    ab, ba = merge(parts[0], parts[1]), merge(parts[1], parts[0])
    _assert_exactly_equal(ab, ba)
    _assert_exactly_equal(merge(ExamplePartial.empty(5, 5), whole), whole)


def test_ties_broken_by_smaller_example_index_and_first_position():
    x = torch.zeros(4, 1, 2, 2)
    x[:, 0, 1, 0] = 2.0  # every example ties at 2.0, at (1, 0)
    x[:, 0, 1, 1] = 2.0  # and again at (1, 1): the first position wins
    part = ExamplePartial.empty(1, 3)
    update(part, x[2:], [30, 10])
    update(part, x[:2], [20, 40])
    assert list(part.top_indices[0]) == [10, 20, 30]
    assert list(part.top_positions[0]) == [2, 2, 2]
    assert position_to_yx(2, (2, 2)) == (1, 0)


def test_nan_ignored_and_counted_infinities_ordered():
    x = torch.tensor(
        [
            [[1.0, math.nan, 3.0], [math.nan, math.nan, math.nan]],
            [[math.inf, 0.0, 2.0], [-math.inf, -1.0, math.nan]],
            [[-math.inf, -math.inf, -math.inf], [0.0, 0.0, -2.0]],
        ]
    )  # (3 examples, 2 channels, 3 positions)
    part = ExamplePartial.empty(2, 3)
    update(part, x, [0, 1, 2])
    # Channel 0: maxima 3 (at 2), inf (at 0), -inf (at 0).
    assert list(part.top_values[0]) == [math.inf, 3.0, -math.inf]
    assert list(part.top_indices[0]) == [1, 0, 2]
    assert list(part.top_positions[0]) == [0, 2, 0]
    # Channel 1: example 0 is all NaN (no maximum); example 1's maximum -1 at 1; example 2's 0 at 0.
    assert list(part.top_indices[1]) == [2, 1, EMPTY]
    assert list(part.top_values[1][:2]) == [0.0, -1.0]
    assert list(part.top_positions[1][:2]) == [0, 1]
    assert list(part.nan_count) == [1, 4]
    assert list(part.zero_count) == [1, 2]
    assert list(part.varies) == [True, True] and list(part.maximum) == [math.inf, 0.0]
    assert part.histogram[1, 0] == 1 and list(part.maxima_count()) == [3, 2]
    assert part.means()[1] == -math.inf  # (-inf - 1 + 0 + 0 - 2) / 5
    assert math.isnan(part.means()[0])  # +inf and -inf both
    assert part.mean_maxima()[1] == pytest.approx(-0.5)
    assert len(part.dead_channels()) == 0


def test_float16_and_bfloat16_outputs_match_their_float64_values():
    x = _random_outputs(n=6, seed=3)
    for dtype in (torch.float16, torch.bfloat16):
        low = x.to(dtype)
        part = _one_pass(low, list(range(6)), k=3, batch=4)
        tops, total, lo, hi, zeros = _reference(low, list(range(6)), 3)
        for ch in range(5):
            assert [(float(v), int(i), int(p)) for v, i, p in zip(part.top_values[ch], part.top_indices[ch], part.top_positions[ch])] == tops[ch]
        np.testing.assert_array_equal(part.varies, lo != hi)
        np.testing.assert_array_equal(part.zero_count, zeros)
        np.testing.assert_allclose(part.total, total, rtol=1e-5, atol=1e-5)
    # A float16 sum over many large values does not overflow (summed in float32).
    big = torch.full((2, 1, 64, 64), 60000.0, dtype=torch.float16)
    part = ExamplePartial.empty(1, 1)
    update(part, big, [0, 1])
    assert part.means()[0] == 60000.0


def test_nc_outputs_have_one_position():
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0], [1.0, -3.0]])
    part = ExamplePartial.empty(2, 2)
    update(part, x, torch.tensor([4, 5, 6]))
    assert part.spatial_shape == () and part.values == 3
    assert list(part.top_indices[0]) == [5, 6] and list(part.top_positions[0]) == [0, 0]
    assert list(part.top_indices[1]) == [5, 4]
    np.testing.assert_allclose(part.means(), [3.5 / 3, -4.0 / 3])
    assert position_to_yx(0, ()) == ()


def test_memory_does_not_grow_with_examples():
    gen = torch.Generator().manual_seed(0)
    part = ExamplePartial.empty(8, 4)
    update(part, torch.randn(10, 8, 3, 3, generator=gen), range(10))
    after_10 = part.nbytes()
    for start in range(10, 1000, 90):
        update(part, torch.randn(90, 8, 3, 3, generator=gen), range(start, start + 90))
    assert part.examples == 1000
    # (C, k): float64 values, int32 indices and positions; five (C,) 8-byte arrays, the (C,)
    # bools; the int32 histogram
    assert part.nbytes() == after_10 == 8 * 4 * 8 + 8 * 4 * 4 * 2 + 8 * 8 * 5 + 8 * 1 + 8 * HISTOGRAM_BINS * 4


class _Fails(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_hooks_removed_after_the_block_and_on_error_outputs_unchanged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    x = torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        reducer = ExampleReducer(["0", "2"], k=2)
        with reducer.attached(model):
            reducer.next_batch([10, 11, 12, 13, 14])
            got = model(x)
            got2 = model(x)  # numbered on: 15 .. 19
    assert torch.equal(got, expected) and torch.equal(got2, expected)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert reducer.partials["0"].examples == 10 and reducer.partials["2"].channels == 2
    # The same images twice: the best image's two copies, the first batch's (smaller index) first.
    with torch.no_grad():
        best = int(model[0](x).double().flatten(2).amax(dim=2)[:, 0].argmax())
    assert list(reducer.partials["0"].top_indices[0]) == [10 + best, 15 + best]

    failing = nn.Sequential(nn.Conv2d(3, 4, 3), _Fails())
    reducer = ExampleReducer(["0"], k=2)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), reducer.attached(failing):
        failing(x)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in failing.modules())
    assert reducer.partials["0"].examples == 5


class _Reuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.conv(self.conv(x) * 0 + 100.0)


def test_only_the_first_call_of_a_module_is_reduced():
    model = _Reuse()
    x = torch.randn(3, 2, 4, 4)
    reducer = ExampleReducer(["conv"], k=1)
    with torch.no_grad(), reducer.attached(model):
        model(x)
        model(x)
    part = reducer.partials["conv"]
    assert part.examples == 6
    with torch.no_grad():
        first = model.conv(x).double()
    np.testing.assert_array_equal(part.maximum, first.amax(dim=(0, 2, 3)).numpy())


def test_unknown_module_name_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        with ExampleReducer(["nope"]).attached(nn.Sequential(nn.ReLU())):
            pass
