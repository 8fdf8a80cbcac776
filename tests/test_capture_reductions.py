"""The capture's reductions, called directly on small asymmetric tensors: per-probe mean, std
(with its exact pass for a spread tiny next to the mean), RMS, range, zero and NaN/Inf counts,
tiles, the histogram sample, the pooled figures of a layer.

Every expected value is float64 plain torch computed here, or a literal worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnreport.capture import activations as act
from cnnreport.capture.activations import (
    LayerCapture,
    ProbeTiles,
    area_downsample,
    as_image_channels,
    histogram_sample,
    probe_statistics,
    top_channel_tiles,
)

NAN = float("nan")
INF = float("inf")


def grid_tensor(dtype=torch.float32) -> torch.Tensor:
    """(2, 3, 2, 2), no two probes alike: probe 0 straddles zero with two exact zeros, probe 1
    is positive throughout; the channels differ in mean and spread."""
    x = torch.tensor(
        [
            [[[0.0, 1.5], [-2.0, 4.0]], [[3.0, 0.0], [1.0, -0.5]], [[7.0, 5.0], [6.0, 8.0]]],
            [[[1.0, 2.0], [3.0, 9.0]], [[0.25, 0.5], [0.75, 1.0]], [[2.0, 2.0], [2.0, 2.5]]],
        ],
        dtype=torch.float64,
    )
    return x.to(dtype)


def reference(x: torch.Tensor) -> dict[str, list]:
    flat = x.double().reshape(x.shape[0], -1)
    return {
        "mean": flat.mean(1).tolist(),
        "std": flat.std(1, correction=0).tolist(),
        "min": flat.amin(1).tolist(),
        "max": flat.amax(1).tolist(),
        "zeros": (flat == 0).sum(1).tolist(),
        "rms": flat.pow(2).mean(1).sqrt().tolist(),
    }


def close(got, expected, rel=1e-6):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=rel, atol=1e-7)


# -- probe_statistics on finite values ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_per_probe_figures_of_a_channel_tensor_equal_float64(dtype):
    x = grid_tensor(dtype)
    ref = reference(x)
    stats = probe_statistics(x)
    for key in ("mean", "std", "min", "max", "rms"):
        close(stats[key], ref[key])
    assert stats["zeros"] == [2, 0]
    assert stats["nan"] == [0, 0]
    assert stats["inf"] == [0, 0]
    x64 = x.double()
    close(stats["channel_min"], x64.amin((0, 2, 3)).numpy())
    close(stats["channel_max"], x64.amax((0, 2, 3)).numpy())
    close(stats["channel_means"], x64.mean((2, 3)).numpy())
    assert stats["channel_means"].shape == (2, 3)
    torch.testing.assert_close(stats["channel_means_t"].double(), x64.mean((2, 3)), rtol=1e-6, atol=1e-7)
    low, high = stats["range_nc"]
    torch.testing.assert_close(low.double(), x64.amin((2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(high.double(), x64.amax((2, 3)), rtol=0, atol=0)


def test_the_figures_are_plain_python_numbers():
    stats = probe_statistics(grid_tensor())
    assert all(type(v) is float for key in ("mean", "std", "min", "max", "rms") for v in stats[key])
    assert all(type(v) is int for key in ("zeros", "nan", "inf") for v in stats[key])


def test_a_flat_tensor_has_no_channel_figures():
    x = torch.tensor([[0.0, -3.0, 1.0, 2.0, 0.0], [4.0, 4.5, 5.0, 7.0, 4.0]])
    stats = probe_statistics(x)
    ref = reference(x)
    for key in ("mean", "min", "max", "rms"):
        close(stats[key], ref[key])
    close(stats["std"], ref["std"], rel=1e-5)  # rms^2 - mean^2 in float32 sums: ~1e-6
    assert stats["zeros"] == [2, 0]
    assert sorted(stats) == ["inf", "max", "mean", "min", "nan", "rms", "std", "zeros"]


def test_a_three_dimensional_tensor_is_per_channel_too():
    x = torch.tensor([[[1.0, -1.0, 3.0], [0.5, 0.0, 2.0]]])  # (1, 2, 3)
    stats = probe_statistics(x)
    close(stats["channel_min"], [-1.0, 0.0])
    close(stats["channel_max"], [3.0, 2.0])
    close(stats["channel_means"], [[1.0, 2.5 / 3]])
    close(stats["mean"], [5.5 / 6])
    assert stats["zeros"] == [1]


def test_without_moments_mean_and_std_are_nan_and_the_rest_is_kept():
    x = grid_tensor()
    stats = probe_statistics(x, moments=False)
    assert all(math.isnan(v) for v in stats["mean"] + stats["std"])
    ref = reference(x)
    close(stats["rms"], ref["rms"])
    close(stats["min"], ref["min"])
    close(stats["max"], ref["max"])
    assert stats["zeros"] == [2, 0]
    assert "channel_means" not in stats and "channel_means_t" not in stats
    close(stats["channel_min"], x.double().amin((0, 2, 3)).numpy())


def test_without_moments_a_flat_tensor_keeps_its_rms():
    x = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    stats = probe_statistics(x, moments=False, count_zeros=False)
    close(stats["rms"], [2.5, 1.0])
    assert stats["zeros"] == [0, 0]


def test_without_the_zero_count_zeros_are_reported_as_none():
    stats = probe_statistics(grid_tensor(), count_zeros=False)
    assert stats["zeros"] == [0, 0]


@pytest.mark.parametrize(
    "rows, zeros",
    [
        ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], [1, 0]),  # zero is the first row's minimum
        ([[-1.0, -2.0, 0.0], [1.0, 2.0, 3.0]], [1, 0]),  # zero is its maximum
        ([[1.0, 2.0, 3.0], [-0.0, 5.0, 0.0]], [0, 2]),  # -0.0 is a zero; the second row only
        ([[1.0, 2.0, 3.0], [-3.0, -2.0, -1.0]], [0, 0]),  # no row reaches zero
    ],
)
def test_zeros_are_counted_where_the_range_holds_zero(rows, zeros):
    assert probe_statistics(torch.tensor(rows))["zeros"] == zeros


def test_a_known_channel_range_is_taken_as_given():
    x = grid_tensor()
    low = torch.tensor([[-5.0, -1.0, 0.5], [0.5, 0.1, 1.5]])
    high = torch.tensor([[4.0, 3.0, 9.0], [9.5, 1.0, 2.5]])
    stats = probe_statistics(x, channel_range=(low, high))
    assert stats["min"] == [-5.0, 0.10000000149011612]
    assert stats["max"] == [9.0, 9.5]
    close(stats["channel_min"], [-5.0, -1.0, 0.5])
    close(stats["channel_max"], [9.5, 3.0, 9.0])
    assert stats["range_nc"][0] is low and stats["range_nc"][1] is high


# -- std: rms^2 - mean^2 where that is exact enough, squared deviations where it is not ----------


def test_a_large_mean_row_and_an_ordinary_row_each_get_an_exact_std():
    gen = torch.Generator().manual_seed(11)
    big = 2e4 + 0.3 * torch.randn(1, 4000, generator=gen, dtype=torch.float64)
    plain = 1.0 + 2.0 * torch.randn(1, 4000, generator=gen, dtype=torch.float64)
    x = torch.cat([big, plain]).float()
    ref = x.double().std(1, correction=0)
    stats = probe_statistics(x)
    np.testing.assert_allclose(stats["std"], ref.numpy(), rtol=1e-4, atol=0)
    np.testing.assert_allclose(stats["rms"], x.double().pow(2).mean(1).sqrt().numpy(), rtol=1e-6, atol=0)


def test_a_constant_row_has_std_zero_exactly():
    x = torch.tensor([[3.1, 3.1, 3.1, 3.1], [-7.3, -7.3, -7.3, -7.3], [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 6.0]])
    stats = probe_statistics(x)
    assert stats["std"][:3] == [0.0, 0.0, 0.0]
    close(stats["std"][3:], [float(x[3].double().std(correction=0))])


def test_the_exact_pass_in_chunks_equals_float64(monkeypatch):
    """Chunks of two columns (CHUNK_ELEMENTS 5 over 2 rows) and a last, shorter one."""
    monkeypatch.setattr(act, "CHUNK_ELEMENTS", 5)
    x = torch.tensor(
        [[1e4 + 0.5, 1e4 - 0.25, 1e4 + 0.0, 1e4 + 1.0, 1e4 - 1.5, 1e4 + 0.75, 1e4 + 0.125], [0.0, 0.0, 1.0, -2.0, 0.0, 5.0, 0.0]],
        dtype=torch.float32,
    )
    stats = probe_statistics(x)
    ref = reference(x)
    np.testing.assert_allclose(stats["std"], ref["std"], rtol=1e-5, atol=0)
    assert stats["zeros"] == [0, 4]


def test_zeros_in_chunks_of_one_column(monkeypatch):
    monkeypatch.setattr(act, "CHUNK_ELEMENTS", 1)
    x = torch.tensor([[0.0, 2.0, 0.0, -0.0, 1.0], [5.0, 0.0, 3.0, 0.0, 0.0]])
    assert probe_statistics(x)["zeros"] == [3, 3]


# -- probe_statistics with NaN and Inf --------------------------------------------------------


def test_nan_and_inf_are_counted_and_the_figures_are_over_the_finite_values():
    x = torch.tensor(
        [
            [[[1.0, NAN], [4.0, 0.0]], [[INF, -2.0], [0.0, 3.0]]],  # probe 0: 6 finite values
            [[[NAN, NAN], [NAN, NAN]], [[-INF, NAN], [INF, NAN]]],  # probe 1: none finite
        ]
    )
    stats = probe_statistics(x)
    finite = torch.tensor([1.0, 4.0, 0.0, -2.0, 0.0, 3.0], dtype=torch.float64)
    assert stats["nan"] == [1, 6]
    assert stats["inf"] == [1, 2]
    assert stats["zeros"] == [2, 0]
    assert stats["mean"][0] == pytest.approx(float(finite.mean()), rel=1e-12)
    assert stats["std"][0] == pytest.approx(float(finite.std(correction=0)), rel=1e-12)
    assert (stats["min"][0], stats["max"][0]) == (-2.0, 4.0)
    assert all(math.isnan(stats[key][1]) for key in ("mean", "std", "min", "max"))
    assert math.isnan(stats["rms"][0]) and math.isnan(stats["rms"][1])
    assert "channel_min" not in stats and "channel_means" not in stats


def test_inf_alone_keeps_the_finite_figures_and_an_infinite_rms():
    x = torch.tensor([[2.0, INF, -1.0, 5.0], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    stats = probe_statistics(x)
    assert stats["inf"] == [1, 0]
    assert stats["nan"] == [0, 0]
    assert stats["mean"] == pytest.approx([2.0, 2.5], rel=1e-12)
    assert stats["std"] == pytest.approx([math.sqrt(6.0), math.sqrt(1.25)], rel=1e-12)
    assert stats["min"] == [-1.0, 1.0]
    assert stats["max"] == [5.0, 4.0]
    assert stats["rms"][0] == INF
    assert stats["rms"][1] == pytest.approx(math.sqrt(7.5), rel=1e-6)


def test_the_finite_extremes_of_float16_with_inf():
    x = torch.tensor([[-INF, 60000.0, -60000.0, INF]], dtype=torch.float16)
    stats = probe_statistics(x)
    assert (stats["min"], stats["max"]) == ([-60000.0], [60000.0])
    assert stats["inf"] == [2]


# -- _rms, as_image_channels, area_downsample ---------------------------------------------------


def test_rms_per_row_and_of_rows_with_no_values():
    assert act._rms(torch.tensor([[3.0, 4.0], [0.0, -2.0]])) == pytest.approx([math.sqrt(12.5), math.sqrt(2.0)], rel=1e-7)
    assert act._rms(torch.zeros(3, 0)) == [0.0, 0.0, 0.0]
    assert act._rms(torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float16)) == pytest.approx([math.sqrt(3.0)], rel=1e-6)


def test_as_image_channels_of_each_rank():
    x4 = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert as_image_channels(x4) == (x4, "")
    x3 = torch.arange(6.0).reshape(1, 2, 3)
    images, note = as_image_channels(x3)
    assert images.shape == (1, 2, 1, 3)
    assert images[0, 1, 0].tolist() == [3.0, 4.0, 5.0]
    assert note == "1-D activations: each tile is one channel's signal as a strip"
    x5 = torch.tensor([[[[[1.0, 9.0]], [[5.0, 2.0]], [[3.0, 4.0]]]]])  # (1, 1, 3, 1, 2): depth 3
    images, note = as_image_channels(x5)
    assert images.tolist() == [[[[5.0, 9.0]]]]
    assert note == "3-D activations: each tile is a maximum projection over depth"
    assert as_image_channels(torch.zeros(2, 5)) == (None, "")
    assert as_image_channels(torch.zeros(1, 1, 1, 1, 1, 1)) == (None, "")


def test_area_downsample_windows_by_hand():
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]]]])
    # 3 -> 2: windows rows 0..1 and 1..2, columns likewise (adaptive pooling's)
    expected = [[[[3.0, 4.0], [6.0, 7.25]]]]
    assert area_downsample(x, (2, 2)).tolist() == expected
    assert area_downsample(x, (2, 2), finite=True).tolist() == expected
    assert area_downsample(x, (1, 3)).tolist() == [[[pytest.approx([4.0, 5.0, 19.0 / 3], rel=1e-7)]]]


def test_area_downsample_keeps_a_nan_in_its_window():
    x = torch.tensor([[[[1.0, 2.0, 3.0, 4.0], [5.0, NAN, 7.0, 8.0]]]])
    out = area_downsample(x, (1, 2))
    assert math.isnan(out[0, 0, 0, 0])
    assert out[0, 0, 0, 1] == 5.5
    out = area_downsample(x, (1, 2), finite=False)
    assert math.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 5.5


def test_area_downsample_of_float64_stays_float64():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]], dtype=torch.float64)
    out = area_downsample(x, (1, 1))
    assert out.dtype == torch.float64
    assert out.item() == 2.75


# -- top_channel_tiles ---------------------------------------------------------------------------


def quantised(values: torch.Tensor, lo: float, hi: float) -> list:
    """0..254 in steps of 2 over [lo, hi], by hand: 2 * round(127 * (v - lo) / (hi - lo))."""
    return (2 * torch.round(127 * (values.double() - lo) / (hi - lo))).to(torch.int64).tolist()


def test_tiles_of_the_top_channels_quantised_on_the_probes_scale():
    images = torch.tensor(
        [
            [[[0.1, 0.2], [0.3, 0.4]], [[0.9, 0.7], [0.5, 0.35]], [[-0.2, 0.0], [0.05, 0.6]]],
            [[[2.0, 3.0], [4.0, 5.0]], [[1.0, 1.0], [1.0, 1.5]], [[9.0, -1.0], [0.0, 0.0]]],
        ]
    )
    means = images.mean((2, 3))  # probe 0: 0.25, 0.6125, 0.1125; probe 1: 3.5, 1.125, 2.0
    first, second = top_channel_tiles(images, means, k=2, tile_size=64)
    assert first.channels == [1, 0]
    assert second.channels == [0, 2]
    assert (first.vmin, first.vmax) == pytest.approx((0.1, 0.9), abs=1e-7)
    assert (second.vmin, second.vmax) == (-1.0, 9.0)
    assert first.tiles.dtype == np.uint8 and first.tiles.shape == (2, 2, 2)
    assert first.tiles.tolist() == quantised(images[0, [1, 0]], 0.1, 0.9)
    assert second.tiles.tolist() == quantised(images[1, [0, 2]], -1.0, 9.0)
    assert first.nonfinite == [] and second.nonfinite == []


def test_channels_last_images_give_the_same_tiles():
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(2, 5, 3, 4, generator=gen)
    means = images.mean((2, 3))
    plain = top_channel_tiles(images, means, k=3, tile_size=64)
    strided = top_channel_tiles(images.to(memory_format=torch.channels_last), means, k=3, tile_size=64)
    assert images.to(memory_format=torch.channels_last).is_contiguous() is False
    for a, b in zip(plain, strided):
        assert a.channels == b.channels
        assert np.array_equal(a.tiles, b.tiles)
        assert (a.vmin, a.vmax) == (b.vmin, b.vmax)
    for i in range(2):
        expected = torch.argsort(means[i], descending=True)[:3].tolist()
        assert plain[i].channels == expected
        assert plain[i].tiles.tolist() == quantised(images[i, expected], float(images[i, expected].min()), float(images[i, expected].max()))


def test_more_channels_asked_than_there_are_gives_them_all():
    images = torch.tensor([[[[1.0]], [[3.0]]]])
    (probe,) = top_channel_tiles(images, images.mean((2, 3)), k=5, tile_size=4)
    assert probe.channels == [1, 0]
    assert probe.tiles.tolist() == [[[254]], [[0]]]


def test_a_flat_tile_below_one_unit_of_spread_is_quantised_on_its_span():
    images = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.75]]]])
    (probe,) = top_channel_tiles(images, torch.tensor([[0.5, 0.5625]]), k=2, tile_size=4)
    assert probe.channels == [1, 0]
    assert probe.tiles.tolist() == [[[0, 0], [0, 254]], [[0, 0], [0, 0]]]


def test_a_constant_tile_is_the_bottom_of_the_scale():
    images = torch.full((1, 1, 2, 3), 4.25)
    (probe,) = top_channel_tiles(images, torch.tensor([[4.25]]), k=1, tile_size=8)
    assert (probe.vmin, probe.vmax) == (4.25, 4.25)
    assert probe.tiles.tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_tiles_are_shrunk_to_the_tile_size_on_the_longer_side():
    images = torch.arange(48.0).reshape(1, 1, 8, 6)
    (probe,) = top_channel_tiles(images, images.mean((2, 3)), k=1, tile_size=4)
    assert probe.tiles.shape == (1, 4, 3)  # scale 2: 8 x 6 -> 4 x 3
    pooled = torch.nn.functional.adaptive_avg_pool2d(images.double(), (4, 3))[0, 0]
    assert probe.tiles[0].tolist() == quantised(pooled, float(pooled.min()), float(pooled.max()))


def test_a_tile_of_exactly_the_tile_size_is_not_resampled():
    images = torch.tensor([[[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]]])
    (probe,) = top_channel_tiles(images, images.mean((2, 3)), k=1, tile_size=4)
    assert probe.tiles.shape == (1, 2, 4)
    assert probe.tiles[0].tolist() == quantised(images[0, 0], 0.0, 7.0)


def test_a_thin_map_keeps_one_pixel_across():
    images = torch.arange(100.0).reshape(1, 1, 100, 1)
    (probe,) = top_channel_tiles(images, images.mean((2, 3)), k=1, tile_size=4)
    assert probe.tiles.shape == (1, 4, 1)  # 100 / 25 = 4 rows, 1 / 25 rounds to 0: kept at 1
    pooled = torch.nn.functional.adaptive_avg_pool2d(images.double(), (4, 1))[0, 0]
    assert probe.tiles[0].tolist() == quantised(pooled, float(pooled.min()), float(pooled.max()))


def test_non_finite_pixels_are_grey_counted_per_channel_and_left_out_of_the_scale():
    images = torch.tensor(
        [
            [[[NAN, 2.0], [4.0, INF]], [[1.0, 1.5], [3.0, 2.0]]],
            [[[NAN, NAN], [NAN, NAN]], [[-INF, NAN], [NAN, INF]]],
        ]
    )
    means = torch.tensor([[3.0, 1.875], [NAN, NAN]])
    first, second = top_channel_tiles(images, means, k=2, tile_size=8)
    assert first.channels == [0, 1]
    assert first.nonfinite == [2, 0]
    assert first.nonfinite_count == 2
    assert (first.vmin, first.vmax) == (1.0, 4.0)
    assert first.tiles.tolist() == [[[255, 84], [254, 255]], [[0, 42], [170, 84]]]
    assert second.nonfinite == [4, 4]
    assert math.isnan(second.vmin) and math.isnan(second.vmax)
    assert second.tiles.tolist() == [[[255, 255], [255, 255]], [[255, 255], [255, 255]]]


def test_finite_true_skips_the_count_and_finite_false_looks():
    images = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
    (told,) = top_channel_tiles(images, torch.tensor([[2.75]]), k=1, tile_size=4, finite=True)
    (looked,) = top_channel_tiles(images, torch.tensor([[2.75]]), k=1, tile_size=4, finite=False)
    assert told.nonfinite == [] and looked.nonfinite == []
    assert told.tiles.tolist() == looked.tiles.tolist() == [[[0, 64], [128, 254]]]


def test_a_non_finite_map_shrunk_keeps_its_nan_in_its_window():
    images = torch.tensor([[[[NAN, 1.0, 2.0, 2.0, 5.0, 5.0], [1.0, 1.0, 2.0, 4.0, 5.0, 5.0]]]])
    (probe,) = top_channel_tiles(images, torch.tensor([[3.0]]), k=1, tile_size=3)
    assert probe.nonfinite == [1]
    assert probe.tiles.tolist() == [[[255, 0, 254]]]  # windows NaN, 2.5, 5
    assert (probe.vmin, probe.vmax) == (2.5, 5.0)


# -- histogram_sample --------------------------------------------------------------------------


def test_histogram_sample_takes_one_value_per_stratum_at_hashed_offsets():
    # 10 values, 3 wanted: strata of 3; offsets (i * 2654435761) % 3 for i = 0, 1, 2 are 0, 1, 2
    # (digit sums 43 and 41): positions 0, 4 and 8.
    x = torch.arange(20.0, dtype=torch.float64).reshape(2, 10)
    first, second = histogram_sample(x, per_probe=3)
    assert first.dtype == np.float32
    assert first.tolist() == [0.0, 4.0, 8.0]
    assert second.tolist() == [10.0, 14.0, 18.0]


def test_histogram_sample_of_exactly_as_many_values_is_all_of_them():
    x = torch.tensor([[5.0, -1.0, 2.0], [0.5, 0.25, 0.125]], dtype=torch.bfloat16)
    sample = histogram_sample(x, per_probe=3)
    assert [s.tolist() for s in sample] == [[5.0, -1.0, 2.0], [0.5, 0.25, 0.125]]
    assert sample[0].dtype == np.float32


def test_histogram_sample_is_a_copy():
    x = torch.tensor([[1.0, 2.0]])
    (sample,) = histogram_sample(x, per_probe=8)
    x.mul_(10)
    assert sample.tolist() == [1.0, 2.0]


def test_histogram_sample_of_a_larger_layer_stays_in_its_strata():
    x = torch.arange(2 * 1000, dtype=torch.float32).reshape(2, 10, 100)
    first, second = histogram_sample(x, per_probe=64)  # strata of 15
    assert len(first) == 64
    assert all(15 * i <= v < 15 * (i + 1) for i, v in enumerate(first.tolist()))
    assert (second - first).tolist() == [1000.0] * 64


# -- the layer's pooled figures ----------------------------------------------------------------


def test_overall_pools_the_probes_as_float64_does():
    values = torch.tensor([[1.0, 2.0, 3.0, 10.0], [-4.0, 0.0, 0.0, 2.0], [5.0, 5.0, 6.0, 0.0]], dtype=torch.float64)
    layer = LayerCapture("l", "Conv2d", 1, 0, [4], True, numel_per_probe=4)
    layer.probe_mean = values.mean(1).tolist()
    layer.probe_std = values.std(1, correction=0).tolist()
    layer.probe_min = values.amin(1).tolist()
    layer.probe_max = values.amax(1).tolist()
    layer.probe_zeros = [0, 2, 1]
    layer.probe_nan = [0, 1, 2]
    layer.probe_inf = [3, 0, 1]
    got = layer.overall()
    assert got["mean"] == pytest.approx(float(values.mean()), rel=1e-12)
    assert got["std"] == pytest.approx(float(values.std(correction=0)), rel=1e-12)
    assert (got["min"], got["max"]) == (-4.0, 10.0)
    assert got["frac_zero"] == 3 / 12
    assert (got["nan_count"], got["inf_count"], got["numel"]) == (3, 4, 12)
    assert type(got["nan_count"]) is int and type(got["numel"]) is int
    assert layer.probes == 3


def test_overall_leaves_out_probes_without_finite_figures():
    layer = LayerCapture("l", "ReLU", 1, 0, [2], False, numel_per_probe=2)
    layer.probe_mean = [1.0, NAN, 3.0]
    layer.probe_std = [0.0, 1.0, INF]
    layer.probe_min = [1.0, NAN, -INF]
    layer.probe_max = [1.0, INF, 2.0]
    layer.probe_zeros = [0, 0, 0]
    got = layer.overall()
    assert (got["mean"], got["std"]) == (1.0, 0.0)
    assert (got["min"], got["max"]) == (1.0, 2.0)
    assert got["numel"] == 6


def test_overall_with_nothing_finite_is_nan():
    layer = LayerCapture("l", "ReLU", 1, 0, [2], False, numel_per_probe=2)
    layer.probe_mean = [NAN]
    layer.probe_std = [NAN]
    layer.probe_min = [NAN]
    layer.probe_max = [NAN]
    layer.probe_zeros = [0]
    got = layer.overall()
    assert all(math.isnan(got[key]) for key in ("mean", "std", "min", "max"))
    assert (got["frac_zero"], got["numel"]) == (0.0, 2)


def test_overall_of_a_layer_with_no_probes():
    got = LayerCapture("l", "ReLU", 1, 0, [0], False, numel_per_probe=0).overall()
    assert got["frac_zero"] == 0.0 and got["numel"] == 0
    got = LayerCapture("l", "ReLU", 1, 0, [3], False, numel_per_probe=3).overall()
    assert got["numel"] == 3  # no probe yet counts as one for the total


def test_probe_tiles_count_their_non_finite_values():
    tiles = ProbeTiles([0, 1], np.zeros((2, 1, 1), np.uint8), 0.0, 1.0, [3, 4])
    assert tiles.nonfinite_count == 7
    assert type(tiles.nonfinite_count) is int
    assert ProbeTiles([0], np.zeros((1, 1, 1), np.uint8), 0.0, 1.0).nonfinite_count == 0


# -- the float16 count's sample ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [4097, 8192, 100003])
def test_the_float16_sample_is_256_runs_of_16_each_inside_its_stratum(count):
    index = act._fp16_sample_index(count)
    assert index.dtype == torch.int64
    assert tuple(index.shape) == (4096,)
    runs = index.reshape(256, 16)
    assert (runs[:, 1:] - runs[:, :-1]).unique().tolist() == [1]  # consecutive values
    step = count // 256  # 256 equal strata
    starts, ends = runs[:, 0], runs[:, -1]
    strata = torch.arange(256)
    assert bool((starts >= strata * step).all()) is True
    assert bool((ends < (strata + 1) * step).all()) is True
    assert torch.equal(act._fp16_sample_index(count), index)


def test_the_float16_sample_offsets_spread_over_the_strata():
    runs = act._fp16_sample_index(256 * 48).reshape(256, 16)
    offsets = (runs[:, 0] - torch.arange(256) * 48).tolist()
    assert (min(offsets), max(offsets)) == (0, 48 - 16)  # every start that leaves room for a run
    assert len(set(offsets)) == 33


def test_float16_counts_of_a_sample_by_hand():
    layer = LayerCapture("l", "Conv2d", 1, 0, [4], True)
    sample = [np.array([0.0, 1e-5, -2.0**-14, 3.0], np.float32), np.array([np.nan, -1e-7, 0.0, 6.1e-5], np.float32)]
    act._count_fp16_sample(layer, sample, sampled=False)
    assert (layer.fp16_nonzero, layer.fp16_tiny, layer.fp16_sampled) == (5, 3, False)
    act._count_fp16_sample(layer, [np.array([2.0**-15], np.float32)], sampled=True)
    assert (layer.fp16_nonzero, layer.fp16_tiny, layer.fp16_sampled) == (6, 4, True)
    act._count_fp16_sample(layer, [np.array([1.0], np.float32)], sampled=False)
    assert (layer.fp16_nonzero, layer.fp16_tiny, layer.fp16_sampled) == (7, 4, True)  # once sampled, said so
    act._count_fp16_sample(layer, [], sampled=False)
    assert (layer.fp16_nonzero, layer.fp16_tiny) == (7, 4)


def test_the_mean_over_finite_values_is_summed_in_float64():
    # 2**24 + 3 has no float32: a float32 sum of these four finite values cannot be exact
    x = torch.tensor([[2.0**24, 1.0, NAN, 1.0, 1.0]], dtype=torch.float32)
    stats = probe_statistics(x)
    assert stats["mean"] == [(2.0**24 + 3.0) / 4.0]
    assert stats["nan"] == [1]


def test_a_probe_of_one_value_is_its_own_rms_with_no_spread():
    stats = probe_statistics(torch.tensor([[3.0], [-2.0]]))
    assert stats["rms"] == [3.0, 2.0]
    assert stats["std"] == [0.0, 0.0]
    assert stats["mean"] == [3.0, -2.0]
    stats = probe_statistics(torch.tensor([[[[5.0]]]]))  # (1, 1, 1, 1)
    assert (stats["rms"], stats["std"], stats["mean"]) == ([5.0], [0.0], [5.0])


def test_an_ordinary_spread_takes_std_from_the_rms_with_no_pass_of_its_own(monkeypatch):
    passes = []
    real = act._chunked

    def spy(flat, reduce, dtype):
        passes.append(tuple(flat.shape))
        return real(flat, reduce, dtype)

    monkeypatch.setattr(act, "_chunked", spy)
    gen = torch.Generator().manual_seed(4)
    ordinary = (10.0 + torch.randn(2, 500, generator=gen, dtype=torch.float64)).float()  # var ~ mean^2 / 100
    stats = probe_statistics(ordinary, count_zeros=False)
    assert passes == []
    np.testing.assert_allclose(stats["std"], ordinary.double().std(1, correction=0).numpy(), rtol=1e-4)
    tight = (1e4 + 0.5 * torch.randn(2, 500, generator=gen, dtype=torch.float64)).float()
    stats = probe_statistics(tight, count_zeros=False)
    assert passes == [(2, 500)]  # the exact pass, once, for both rows
    np.testing.assert_allclose(stats["std"], tight.double().std(1, correction=0).numpy(), rtol=1e-4)


def test_each_probe_with_nan_keeps_its_own_colour_scale():
    images = torch.tensor([[[[NAN, 1.0], [2.0, 3.0]]], [[[10.0, 30.0], [NAN, 20.0]]]])
    first, second = top_channel_tiles(images, torch.tensor([[2.0], [20.0]]), k=1, tile_size=4)
    assert (first.vmin, first.vmax) == (1.0, 3.0)
    assert (second.vmin, second.vmax) == (10.0, 30.0)
    assert first.tiles.tolist() == [[[255, 0], [128, 254]]]  # 2 * round(63.5) = 128 (half to even)
    assert second.tiles.tolist() == [[[0, 254], [255, 128]]]
    assert (first.nonfinite, second.nonfinite) == ([1], [1])


def test_a_positive_tensor_counts_no_zeros_without_a_pass_and_says_so_in_ints(monkeypatch):
    passes = []
    real = act._chunked
    monkeypatch.setattr(act, "_chunked", lambda flat, reduce, dtype: passes.append(1) or real(flat, reduce, dtype))
    stats = probe_statistics(torch.tensor([[0.5, 2.0, 1.0], [3.0, 4.0, 0.75]]))
    assert passes == []  # no zero can lie outside [min, max]
    assert stats["zeros"] == [0, 0]
    assert [type(v) for v in stats["zeros"]] == [int, int]


def test_without_moments_a_probe_of_one_value_is_its_own_rms():
    assert probe_statistics(torch.tensor([[3.0], [-2.0]]), moments=False)["rms"] == [3.0, 2.0]
