"""Tensor probes pinned value by value: batching, integer scaling, channels-last arrays,
channel conversion, resize and centre crop, normalisation and joining.

Expected values are literal numbers worked out by hand or float64 torch/numpy computed here;
every input is built in the test, asymmetric so that a swapped axis or an off-by-one shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnreport.errors import OptionError, ProbeError
from cnnreport.io.probes import load_probes


def message(info: pytest.ExceptionInfo) -> str:
    return info.value.one_line()


def grid(*shape: int, dtype=torch.float32) -> torch.Tensor:
    """0, 1, 2, ... laid out in *shape*: every position holds a different value."""
    return torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape).to(dtype)


# -- batch dimension ------------------------------------------------------------------------------


def test_one_feature_vector_gets_a_batch_dimension_and_a_batch_of_them_keeps_its_own():
    assert load_probes(torch.tensor([1.0, 2.0, 3.0])).tensor.tolist() == [[1.0, 2.0, 3.0]]
    assert load_probes(grid(2, 3)).tensor.shape == (2, 3)
    assert load_probes(grid(2, 1, 2, 2, 2)).tensor.shape == (2, 1, 2, 2, 2)


def test_sample_ndim_reads_a_sample_as_one_probe_and_a_batch_as_a_batch():
    assert load_probes(grid(2, 5), sample_ndim=2).tensor.shape == (1, 2, 5)
    assert load_probes(grid(4, 2, 5), sample_ndim=2).tensor.shape == (4, 2, 5)
    # fewer dimensions than a sample are left for the model to reshape
    assert load_probes(grid(6), sample_ndim=2).tensor.shape == (6,)


def test_a_tensor_with_more_dimensions_than_a_batch_is_refused():
    with pytest.raises(ProbeError) as info:
        load_probes(grid(1, 2, 3, 4, 5), sample_ndim=3)
    assert message(info) == (
        "probe tensor has shape (1, 2, 3, 4, 5): the model takes one probe (C,H,W) or a batch of them (4-D)"
    )
    with pytest.raises(ProbeError) as info:
        load_probes(grid(1, 2, 3, 4), sample_ndim=2)
    assert message(info) == (
        "probe tensor has shape (1, 2, 3, 4): the model takes one probe 2-D or a batch of them (3-D)"
    )


def test_a_scalar_and_an_empty_batch_are_refused():
    with pytest.raises(ProbeError) as info:
        load_probes(torch.tensor(3.0))
    assert message(info) == "probe tensor is a scalar, not a probe tensor (C,H,W) or (N,C,H,W)"
    with pytest.raises(ProbeError) as info:
        load_probes(torch.zeros(0, 3, 2, 2))
    assert message(info) == "probe tensor holds no probes (its first dimension is 0)"


def test_probes_of_a_file_are_named_after_it_with_their_index(tmp_path):
    path = tmp_path / "batch.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2))
    batch = load_probes(path)
    assert batch.names == ["batch.npy[0]", "batch.npy[1]", "batch.npy[2]"]
    assert batch.sources == [str(path)] * 3
    assert len(set(batch.sha256)) == 1 and len(batch.sha256) == 3
    one = tmp_path / "one.npy"
    np.save(one, np.arange(4, dtype=np.float32).reshape(1, 2, 2))
    assert load_probes(one).names == ["one.npy"]


# -- integers, booleans and floats -------------------------------------------------------------------


def test_int8_with_negative_values_is_divided_by_128():
    batch = load_probes(torch.tensor([[-128, -64, 0, 127]], dtype=torch.int8))
    assert batch.tensor.tolist() == [[-1.0, -0.5, 0.0, 127 / 128]]
    assert batch.notes == [
        "scaled the int8 values of probe tensor (values -128..127) as full-scale signed samples: "
        "divided by 128, to [-1, 1)"
    ]


def test_int8_without_negative_values_is_8_bit():
    batch = load_probes(torch.tensor([[0, 51, 127]], dtype=torch.int8))
    assert batch.tensor.tolist() == [[0.0, float(np.float32(0.2)), float(np.float32(127 / 255))]]
    assert batch.notes == [
        "scaled the int8 values of probe tensor (values 0..127) to [0, 1] as 8-bit values (divided by 255)"
    ]


def test_the_8_bit_and_16_bit_ranges_end_exactly_at_255_and_65535():
    at_255 = load_probes(torch.tensor([[0, 255]], dtype=torch.int32))
    assert at_255.tensor.tolist() == [[0.0, 1.0]]
    at_256 = load_probes(torch.tensor([[0, 256]], dtype=torch.int32))
    assert at_256.tensor.tolist() == [[0.0, float(np.float32(256 / 65535))]]
    at_65535 = load_probes(torch.tensor([[0, 65535]], dtype=torch.int64))
    assert at_65535.tensor.tolist() == [[0.0, 1.0]]
    at_65536 = load_probes(torch.tensor([[0, 65536]], dtype=torch.int64))
    assert at_65536.tensor.tolist() == [[0.0, 65536.0]]
    assert at_65536.notes == [
        "fed the int64 values of probe tensor (values 0..65536) unscaled as float32: they fit no 8- or "
        "16-bit range, so no scale could be assumed"
    ]


def test_a_negative_value_beyond_int16_is_unscaled_and_large_values_say_they_lose_precision():
    signed = load_probes(torch.tensor([[-1, 5]], dtype=torch.int32))
    assert signed.tensor.tolist() == [[-1.0, 5.0]]
    assert signed.notes == [
        "fed the int32 values of probe tensor (values -1..5) unscaled as float32: they fit no 8- or "
        "16-bit range, so no scale could be assumed"
    ]
    exact = load_probes(torch.tensor([[-(2**24), 0]], dtype=torch.int64))
    assert "lose precision" not in exact.notes[0]
    big = load_probes(torch.tensor([[-(2**24) - 1, 0]], dtype=torch.int64))
    assert big.notes == [
        f"fed the int64 values of probe tensor (values {-(2**24) - 1}..0) unscaled as float32: they fit no 8- or "
        "16-bit range, so no scale could be assumed (values beyond 2^24 lose precision)"
    ]
    assert big.tensor.tolist() == [[float(-(2**24)), 0.0]]  # float32 rounds 2^24 + 1 to 2^24


def test_uint8_is_divided_by_255_whatever_its_values():
    batch = load_probes(torch.tensor([[0, 1, 51]], dtype=torch.uint8))
    assert batch.tensor.tolist() == [[0.0, float(np.float32(1 / 255)), float(np.float32(0.2))]]
    assert batch.notes == ["scaled uint8 values of probe tensor to [0, 1] (divided by 255)"]


@pytest.mark.skipif(not hasattr(torch, "uint16"), reason="torch.uint16 needs torch 2.3")
def test_torch_uint16_is_16_bit_by_its_dtype():
    batch = load_probes(torch.tensor([[0, 255]], dtype=torch.uint16))
    assert batch.tensor.tolist() == [[0.0, float(np.float32(255 / 65535))]]
    assert batch.notes == [
        "scaled the uint16 values of probe tensor (values 0..255) to [0, 1] as 16-bit values (divided by 65535)"
    ]


def test_an_empty_integer_tensor_is_cast_without_a_note():
    batch = load_probes(torch.zeros(2, 0, dtype=torch.int32))
    assert batch.tensor.dtype == torch.float32 and batch.tensor.shape == (2, 0)
    assert batch.notes == []


def test_float16_and_bfloat16_are_cast_silently_float64_rounded_with_a_note():
    half = load_probes(torch.tensor([[0.5, -2.0]], dtype=torch.float16))
    assert half.tensor.dtype == torch.float32 and half.tensor.tolist() == [[0.5, -2.0]]
    assert half.notes == []
    brain = load_probes(torch.tensor([[0.25]], dtype=torch.bfloat16))
    assert brain.tensor.dtype == torch.float32 and brain.notes == []
    wide = load_probes(torch.tensor([[0.1]], dtype=torch.float64))
    assert wide.tensor.dtype == torch.float32
    assert wide.tensor.item() == float(np.float32(0.1))
    assert wide.notes == ["rounded the float64 values of probe tensor to float32"]


def test_a_file_names_itself_in_the_scaling_note(tmp_path):
    path = tmp_path / "counts.npy"
    np.save(path, np.array([[1, 2]], dtype=np.int16))
    batch = load_probes(path)
    assert batch.notes == [
        f"scaled the int16 values of {path} (values 1..2) to [0, 1] as 8-bit values (divided by 255)"
    ]


# -- multi-input tuples ------------------------------------------------------------------------------


def test_later_inputs_of_a_tuple_are_cast_not_scaled_except_uint8():
    image = torch.zeros(2, 1, 2, 2)
    indices = torch.tensor([[3, 300], [7, 70000]], dtype=torch.int64)
    flags = torch.tensor([[255, 0], [1, 2]], dtype=torch.uint8)
    batch = load_probes((image, indices, flags))
    assert batch.inputs[1].dtype == torch.float32
    assert batch.inputs[1].tolist() == [[3.0, 300.0], [7.0, 70000.0]]
    assert batch.inputs[2].tolist() == [[1.0, 0.0], [float(np.float32(1 / 255)), float(np.float32(2 / 255))]]
    # the first input may be one sample; integer pixels of the first are scaled
    first = load_probes((torch.full((1, 2, 2), 255, dtype=torch.int32), torch.zeros(1, 4)))
    assert first.inputs[0].tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]


def test_a_tuple_with_max_probes_keeps_the_first_of_every_input():
    batch = load_probes((grid(3, 1, 1, 2), grid(3, 2)), max_probes=2)
    assert batch.inputs[0].tolist() == [[[[0.0, 1.0]]], [[[2.0, 3.0]]]]
    assert batch.inputs[1].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert batch.notes == ["kept the first 2 of 3 probes (max_probes=2)"]
    assert batch.names == ["probe 0", "probe 1"]


def test_a_tuple_with_max_probes_at_its_size_keeps_everything_silently():
    batch = load_probes((grid(2, 3), grid(2, 2)), max_probes=2)
    assert batch.inputs[0].shape == (2, 3) and batch.notes == []


# -- numpy layouts ----------------------------------------------------------------------------------


def test_a_channels_last_batch_is_moved_channels_first_with_every_value_in_place():
    array = np.arange(2 * 5 * 6 * 3, dtype=np.float32).reshape(2, 5, 6, 3)  # N, H, W, C
    batch = load_probes(array)
    assert batch.tensor.shape == (2, 3, 5, 6)
    expected = torch.from_numpy(array.transpose(0, 3, 1, 2).copy())
    assert torch.equal(batch.tensor, expected)
    assert batch.notes == ["read probe tensor of shape (2, 5, 6, 3) as channels-last and moved channels first"]


def test_a_channels_last_grey_image_with_one_channel():
    array = np.arange(5 * 7, dtype=np.float32).reshape(5, 7, 1)
    batch = load_probes(array)
    assert batch.tensor.shape == (1, 1, 5, 7)
    assert torch.equal(batch.tensor[0, 0], torch.from_numpy(array[..., 0]))


def test_an_ambiguous_layout_is_left_as_it_is():
    # first and last dimension both could be channels: channels-first is kept
    array = np.arange(3 * 5 * 4, dtype=np.float32).reshape(3, 5, 4)
    batch = load_probes(array)
    assert torch.equal(batch.tensor[0], torch.from_numpy(array))
    assert batch.notes == []
    # the last dimension is no channel count: left alone
    wide = np.arange(6 * 5 * 7, dtype=np.float32).reshape(6, 5, 7)
    assert torch.equal(load_probes(wide).tensor[0], torch.from_numpy(wide))


def test_a_torch_tensor_is_never_read_as_channels_last():
    tensor = grid(5, 6, 3)
    assert load_probes(tensor).tensor.shape == (1, 5, 6, 3)


# -- channel conversion of tensors ---------------------------------------------------------------------


def test_rgb_tensor_to_one_channel_uses_the_luma_weights():
    rgb = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.5]]]])  # (1, 3, 1, 2)
    batch = load_probes(rgb, channels=1)
    assert batch.tensor.shape == (1, 1, 1, 2)
    assert batch.tensor[0, 0, 0, 0].item() == pytest.approx(0.299, abs=1e-7)
    assert batch.tensor[0, 0, 0, 1].item() == pytest.approx(0.587 + 0.5 * 0.114, abs=1e-7)
    assert batch.notes == ["converted probe tensor from RGB to grayscale (luminance)"]


def test_a_float64_rgb_tensor_is_converted_in_its_own_precision_then_rounded():
    rgb = torch.tensor([[[[0.1]], [[0.2]], [[0.3]]]], dtype=torch.float64)
    batch = load_probes(rgb, channels=1)
    assert batch.tensor.item() == float(np.float32(0.299 * 0.1 + 0.587 * 0.2 + 0.114 * 0.3))


def test_one_channel_is_repeated_and_four_lose_the_fourth():
    grey = grid(1, 1, 2, 3)
    three = load_probes(grey, channels=3)
    assert torch.equal(three.tensor, grey.repeat(1, 3, 1, 1))
    assert three.notes == ["repeated the single channel of probe tensor to 3 channels"]
    rgba = grid(1, 4, 2, 2)
    dropped = load_probes(rgba, channels=3)
    assert torch.equal(dropped.tensor, rgba[:, :3])
    assert dropped.notes == ["dropped the fourth (alpha) channel of probe tensor"]


@pytest.mark.parametrize("have, want", [(2, 3), (3, 4), (4, 1), (1, 2)])
def test_other_channel_changes_are_refused(have, want):
    with pytest.raises(ProbeError) as info:
        load_probes(torch.zeros(1, have, 2, 2), channels=want)
    assert message(info) == (
        f"probe tensor has {have} channels, but the model's first convolution takes {want} "
        "(give probes with the right channel count)"
    )


def test_channels_apply_only_to_four_dimensional_tensors():
    batch = load_probes(grid(2, 3), channels=1)
    assert batch.tensor.shape == (2, 3) and batch.notes == []


def test_image_size_on_a_tensor_that_is_not_nchw_says_it_was_left(tmp_path):
    batch = load_probes(grid(2, 3), image_size=(4, 4))
    assert batch.tensor.shape == (2, 3)
    assert batch.notes == ["image size applies to (N,C,H,W) probes only; probe tensor left as it is"]
    path = tmp_path / "vec.npy"
    np.save(path, np.zeros((2, 3), np.float32))
    assert load_probes(path, image_size=(4, 4)).notes == [
        f"image size applies to (N,C,H,W) probes only; {path} left as it is"
    ]


def test_a_tensor_already_at_the_size_is_not_resized_and_says_nothing():
    x = grid(1, 1, 4, 5)
    batch = load_probes(x, image_size=(4, 5))
    assert torch.equal(batch.tensor, x) and batch.notes == []


# -- resize and centre crop ----------------------------------------------------------------------------


def test_a_tall_tensor_is_centre_cropped_without_resampling():
    # 1 x 1 x 7 x 2 to 2 x 2: the width fits, rows (7 - 2) // 2 = 2 and 3 are kept
    x = grid(1, 1, 7, 2)
    batch = load_probes(x, image_size=(2, 2))
    assert batch.tensor.tolist() == [[[[4.0, 5.0], [6.0, 7.0]]]]
    assert batch.notes == ["resized shorter side to 2 and centre-cropped to 2×2 (probe tensor)"]


def test_a_wide_tensor_is_centre_cropped_to_its_middle_columns():
    # 1 x 1 x 2 x 8 to 2 x 3: columns (8 - 3) // 2 = 2, 3, 4
    x = grid(1, 1, 2, 8)
    batch = load_probes(x, image_size=(2, 3))
    assert batch.tensor.tolist() == [[[[2.0, 3.0, 4.0], [10.0, 11.0, 12.0]]]]
    assert batch.notes == ["resized to cover 2×3 and centre-cropped (probe tensor)"]


def reference_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's Resize in float64: bilinear, antialiased, half-pixel centres."""
    return F.interpolate(x.double(), size=size, mode="bilinear", align_corners=False, antialias=True)


def test_a_crop_that_needs_resampling_covers_then_cuts_the_middle():
    # 1 x 1 x 6 x 10 to 3 x 3: scale max(3/6, 3/10) = 0.5 -> 3 x 5, then columns 1..3
    x = torch.rand(1, 1, 6, 10, generator=torch.Generator().manual_seed(3))
    batch = load_probes(x, image_size=(3, 3))
    expected = reference_resize(x, (3, 5))[..., :, 1:4]
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1e-6, rtol=0)


def test_a_crop_that_rounds_the_covering_size():
    # 1 x 1 x 5 x 7 to 2 x 2: scale max(2/5, 2/7) = 0.4 -> 2 x round(2.8) = 3, then column 0..1
    x = torch.rand(1, 1, 5, 7, generator=torch.Generator().manual_seed(4))
    batch = load_probes(x, image_size=(2, 2))
    expected = reference_resize(x, (2, 3))[..., :, 0:2]
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1e-6, rtol=0)


def test_an_upscaling_crop_interpolates_bilinearly():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    batch = load_probes(x, image_size=(4, 4))
    # half-pixel centres: output centres at -0.25, 0.25, 0.75, 1.25 of the input (clamped)
    rows = torch.tensor([[0.0, 0.25, 0.75, 1.0], [0.5, 0.8125, 1.4375, 1.75],
                         [1.5, 1.9375, 2.8125, 3.25], [2.0, 2.5, 3.5, 4.0]])  # fmt: skip
    torch.testing.assert_close(batch.tensor[0, 0], rows, atol=1e-6, rtol=0)


def test_stretch_resizes_each_side_on_its_own():
    x = torch.rand(1, 2, 6, 10, generator=torch.Generator().manual_seed(5))
    batch = load_probes(x, image_size=(3, 4), resize="stretch")
    torch.testing.assert_close(batch.tensor.double(), reference_resize(x, (3, 4)), atol=1e-6, rtol=0)
    assert batch.notes == ["resized to 3×4 without keeping the aspect ratio (probe tensor)"]


# -- normalisation ------------------------------------------------------------------------------------


def test_per_channel_mean_and_std_in_float64():
    x = grid(1, 2, 1, 2)  # channel 0: 0, 1; channel 1: 2, 3
    batch = load_probes(x, mean=[0.5, 1.0], std=[0.25, 2.0])
    assert batch.tensor.tolist() == [[[[-2.0, 2.0]], [[0.5, 1.0]]]]
    assert batch.notes == ["normalised with mean (0.5, 1) and std (0.25, 2)"]


def test_one_mean_and_several_stds_broadcast_over_channels():
    x = grid(1, 3, 1, 1)
    batch = load_probes(x, mean=[1.0], std=[1.0, 2.0, 4.0])
    assert batch.tensor.flatten().tolist() == [-1.0, 0.0, 0.25]


def test_normalisation_of_a_batch_of_vectors_uses_the_second_dimension():
    batch = load_probes(grid(2, 2), mean=[0.0, 1.0], std=[1.0, 2.0])
    assert batch.tensor.tolist() == [[0.0, 0.0], [2.0, 1.0]]


def test_a_count_of_values_that_is_neither_one_nor_the_channels_is_refused():
    with pytest.raises(OptionError) as info:
        load_probes(grid(1, 2, 1, 1), mean=[0.0, 0.0, 0.0])
    assert message(info) == "--mean has 3 values but the probes have 2 channel(s)"
    with pytest.raises(OptionError) as info:
        load_probes(grid(1, 2, 1, 1), mean=[0.0], std=[1.0, 1.0, 1.0])
    assert message(info) == "--std has 3 values but the probes have 2 channel(s)"


def test_probes_without_a_channel_dimension_cannot_be_normalised():
    with pytest.raises(OptionError) as info:
        load_probes(torch.tensor([1.0, 2.0]), sample_ndim=2, mean=[0.5])
    assert message(info) == "--mean/--std need probes with a channel dimension (N, C, ...)"


def test_a_normalised_multi_input_first_input_and_its_note():
    batch = load_probes((grid(1, 1, 1, 2), grid(1, 2)), mean=[1.0], std=[2.0])
    assert batch.inputs[0].tolist() == [[[[-0.5, 0.0]]]]
    assert batch.inputs[1].tolist() == [[0.0, 1.0]]
    assert batch.notes == [
        "normalised with mean (1) and std (2)",
        "preprocessing applied to the first of 2 inputs only",
    ]


def test_a_single_multi_input_tuple_says_nothing_about_other_inputs():
    batch = load_probes((grid(1, 1, 1, 2),), mean=[1.0], std=[2.0])
    assert batch.notes == ["normalised with mean (1) and std (2)"]
    plain = load_probes((grid(1, 1, 1, 2), grid(1, 2)))
    assert plain.notes == []


@pytest.mark.parametrize("option", [{"image_size": (1, 1)}, {"channels": 1}])
def test_other_options_on_a_multi_input_tuple_are_named_too(option):
    batch = load_probes((grid(1, 1, 1, 1), grid(1, 2)), **option)
    assert batch.notes[-1] == "preprocessing applied to the first of 2 inputs only"


# -- joining ----------------------------------------------------------------------------------------


def test_joined_pieces_are_float32_in_source_order():
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[3, 4]], dtype=torch.int32)
    batch = load_probes([a, b])
    assert batch.tensor.dtype == torch.float32
    assert batch.tensor.tolist() == [[1.0, 2.0], [float(np.float32(3 / 255)), float(np.float32(4 / 255))]]


def test_pieces_of_different_shapes_name_both_shapes(tmp_path):
    path = tmp_path / "b.npy"
    np.save(path, np.zeros((1, 3), np.float32))
    with pytest.raises(ProbeError) as info:
        load_probes([torch.zeros(1, 2), path])
    assert message(info) == (
        f"probes do not share one shape: a probe tensor is (2,) but {path} is (3,) "
        "(give --image-size H W to resize them all, or pass one kind of probe)"
    )


def test_a_single_integer_value_is_scaled_like_any_other():
    batch = load_probes(torch.tensor([[51]], dtype=torch.int32))
    assert batch.tensor.tolist() == [[float(np.float32(0.2))]]
    assert batch.notes == [
        "scaled the int32 values of probe tensor (values 51..51) to [0, 1] as 8-bit values (divided by 255)"
    ]


@pytest.mark.parametrize(
    "shape, moved",
    [
        ((5, 6, 2), False),  # 2 is no channel count
        ((2, 5, 3), True),  # 2 first is no channel count: channels-last
        ((5, 6, 4), True),
    ],
)
def test_which_numpy_layouts_are_read_as_channels_last(shape, moved):
    array = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    expected = array.transpose(2, 0, 1) if moved else array
    assert torch.equal(load_probes(array).tensor[0], torch.from_numpy(np.ascontiguousarray(expected)))


def test_a_five_dimensional_array_is_never_rearranged():
    array = np.arange(2 * 5 * 6 * 3, dtype=np.float32).reshape(1, 2, 5, 6, 3)
    assert torch.equal(load_probes(array).tensor, torch.from_numpy(array))
