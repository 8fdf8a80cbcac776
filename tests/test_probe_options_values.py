"""The probe options pinned value by value: mean/std presets and numbers, --image-size.

Every expected value and message is written out here by hand; the functions are called
directly with literal inputs, so each check reaches the code it is about.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnreport.errors import OptionError
from cnnreport.io.probes import load_probes, normalisation


def message(info: pytest.ExceptionInfo) -> str:
    return info.value.one_line()


# -- presets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagenet", "ImageNet", "  IMAGENET ", "imagenet\t"])
def test_the_imagenet_preset_is_found_whatever_its_case_and_spaces(name):
    assert normalisation(name, None) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("name", ["none", "None", " NONE "])
def test_the_none_preset_turns_normalisation_off(name):
    assert normalisation(name, None) is None


def test_a_std_repeating_the_mean_preset_is_accepted():
    assert normalisation("imagenet", "IMAGENET ") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalisation(" None", "none") is None


def test_no_mean_and_no_std_is_no_normalisation():
    assert normalisation(None, None) is None


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(OptionError) as info:
        normalisation("cifar", None)
    assert message(info) == "--mean 'cifar' is not a preset (imagenet, none) or numbers"


def test_a_std_preset_alone_says_presets_go_with_mean():
    with pytest.raises(OptionError) as info:
        normalisation(None, " ImageNet")
    assert message(info) == (
        "--std ' ImageNet': presets are given with --mean (--mean imagenet sets both the mean "
        "and the std); or give --std as numbers"
    )


def test_a_std_preset_beside_another_mean_preset_is_refused():
    with pytest.raises(OptionError) as info:
        normalisation("none", "imagenet")
    assert message(info) == (
        "--std 'imagenet': presets are given with --mean (--mean imagenet sets both the mean "
        "and the std); or give --std as numbers"
    )


def test_a_std_word_that_is_no_preset_asks_for_numbers():
    with pytest.raises(OptionError) as info:
        normalisation([0.5], "wide")
    assert message(info) == "--std 'wide' must be numbers, e.g. 0.229,0.224,0.225"


def test_a_numeric_std_with_the_none_preset_has_no_effect_and_is_refused():
    with pytest.raises(OptionError) as info:
        normalisation("None", [0.5])
    assert message(info) == (
        "--std has no effect with --mean none, which turns normalisation off; "
        "leave out --std, or give --mean as numbers"
    )


def test_a_numeric_std_with_the_imagenet_preset_is_refused():
    with pytest.raises(OptionError) as info:
        normalisation("imagenet", 0.5)
    assert message(info) == (
        "give --std as numbers only with numeric --mean (not with preset 'imagenet', "
        "which sets the std too)"
    )


# -- numbers -----------------------------------------------------------------------------------


def test_numbers_become_float_tuples_and_a_missing_side_takes_its_default():
    assert normalisation([1, 2], [3]) == ((1.0, 2.0), (3.0,))
    assert normalisation(0.25, None) == ((0.25,), (1.0,))
    assert normalisation(None, 4) == ((0.0,), (4.0,))
    result = normalisation((np.float64(0.5),), [np.int32(2)])
    assert result == ((0.5,), (2.0,))
    assert all(type(v) is float for side in result for v in side)


def test_a_bare_boolean_is_not_a_number():
    with pytest.raises(OptionError) as info:
        normalisation(True, None)
    assert message(info) == "--mean True must be numbers, e.g. 0.5,0.5,0.5"


def test_values_that_are_not_numbers_name_the_option():
    with pytest.raises(OptionError) as info:
        normalisation(None, ["a"])
    assert message(info) == "--std ['a'] must be numbers, e.g. 0.5,0.5,0.5"
    with pytest.raises(OptionError) as info:
        normalisation(object, None)
    assert message(info) == "--mean <class 'object'> must be numbers, e.g. 0.5,0.5,0.5"


def test_an_empty_list_needs_at_least_one_value():
    with pytest.raises(OptionError) as info:
        normalisation([], None)
    assert message(info) == "--mean needs at least one value"
    with pytest.raises(OptionError) as info:
        normalisation([0.5], [])
    assert message(info) == "--std needs at least one value"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_mean_must_be_finite(bad):
    with pytest.raises(OptionError) as info:
        normalisation([0.5, bad], None)
    shown = f"{bad:g}"
    assert message(info) == f"--mean 0.5,{shown} must be finite numbers (got {shown})"


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_a_std_must_be_finite_and_above_zero(bad):
    with pytest.raises(OptionError) as info:
        normalisation(None, [0.25, bad])
    shown = f"{bad:g}"
    assert message(info) == (
        f"--std 0.25,{shown} must be finite numbers above 0 (got {shown}); a probe is divided by it"
    )


def test_a_std_at_float32s_smallest_normal_is_accepted_and_below_it_refused():
    tiny = 2.0**-126  # float32's smallest normal number, 1.17549e-38
    assert normalisation(None, [tiny]) == ((0.0,), (tiny,))
    below = tiny / 2
    with pytest.raises(OptionError) as info:
        normalisation(None, [1.0, below])
    assert message(info) == (
        "--std 1,5.87747e-39: 5.87747e-39 is below float32's smallest normal number (1.18e-38), "
        "where the probes are divided; give a larger std"
    )


def test_values_beyond_float32s_range_are_refused_and_its_largest_is_accepted():
    largest = float(np.float32(3.4028234663852886e38))  # (2 - 2^-23) * 2^127
    assert largest == (2 - 2.0**-23) * 2.0**127
    assert normalisation([-largest], [largest]) == ((-largest,), (largest,))
    with pytest.raises(OptionError) as info:
        normalisation([-4e38], None)
    assert message(info) == (
        "--mean/--std value -4e+38 is beyond float32's range (3.4e+38), where the probes are normalised"
    )
    with pytest.raises(OptionError) as info:
        normalisation([0.0], [1.0, 5e38])
    assert message(info) == (
        "--mean/--std value 5e+38 is beyond float32's range (3.4e+38), where the probes are normalised"
    )


# -- the 0..255 scale, for images only ------------------------------------------------------------


def png(tmp_path, value=128):
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.fromarray(np.full((2, 2), value, np.uint8)).save(path)
    return path


def test_a_mean_above_one_on_images_says_divide_by_255(tmp_path):
    with pytest.raises(OptionError) as info:
        load_probes(png(tmp_path), mean=[123.675, 116.28, 103.53], std=[0.5])
    assert message(info) == (
        "--mean 123.675,116.28,103.53 is on the 0..255 scale, but probe images are read as values "
        "in [0, 1]: give --mean 0.485,0.456,0.406 (each divided by 255)"
    )


def test_a_std_above_one_on_images_says_divide_by_255(tmp_path):
    with pytest.raises(OptionError) as info:
        load_probes(png(tmp_path), mean=[0.5], std=[58.395, 1.0])
    assert message(info) == (
        "--std 58.395,1 is on the 0..255 scale, but probe images are read as values "
        "in [0, 1]: give --std 0.229,0.003922 (each divided by 255)"
    )


def test_a_mean_and_std_of_exactly_one_are_in_range_for_images(tmp_path):
    batch = load_probes(png(tmp_path, 51), mean=[1.0], std=[1.0])
    assert torch.allclose(batch.tensor, torch.full((1, 1, 2, 2), 0.2 - 1.0))


def test_the_0_255_scale_is_allowed_for_tensors():
    batch = load_probes(torch.full((1, 1, 1, 2), 255.0), mean=[127.5], std=[127.5])
    assert batch.tensor.tolist() == [[[[1.0, 1.0]]]]


# -- --image-size --------------------------------------------------------------------------------


def image_size_error(value) -> str:
    with pytest.raises(OptionError) as info:
        load_probes(torch.zeros(1, 1, 2, 2), image_size=value)
    return message(info)


def test_one_number_is_a_square_and_strings_of_digits_count():
    assert load_probes(torch.zeros(1, 1, 2, 2), image_size=[3]).tensor.shape == (1, 1, 3, 3)
    assert load_probes(torch.zeros(1, 1, 2, 2), image_size=("1", "3")).tensor.shape == (1, 1, 1, 3)


def test_image_size_errors_say_what_is_wrong():
    assert image_size_error((2, 0)) == "--image-size 2 0 must be two positive numbers H W"
    assert image_size_error([-1]) == "--image-size -1 -1 must be two positive numbers H W"
    assert image_size_error((1, 2, 3)) == "--image-size 1 2 3 must be two positive numbers H W"
    assert image_size_error(()) == "--image-size must be two positive numbers H W"
    assert image_size_error(("a", 2)) == "--image-size ('a', 2) must be two whole numbers H W"
    assert image_size_error(5) == "--image-size 5 must be two whole numbers H W"


def test_the_smallest_image_size_is_one_pixel():
    assert load_probes(torch.zeros(1, 1, 2, 2), image_size=(1, 1)).tensor.shape == (1, 1, 1, 1)


@pytest.mark.parametrize("option", ["mean", "std"])
def test_a_value_just_above_one_is_on_the_0_255_scale_for_images(tmp_path, option):
    kwargs = {"mean": [0.5], "std": [0.5], option: [1.5]}
    with pytest.raises(OptionError) as info:
        load_probes(png(tmp_path), **kwargs)
    assert message(info) == (
        f"--{option} 1.5 is on the 0..255 scale, but probe images are read as values "
        f"in [0, 1]: give --{option} 0.005882 (each divided by 255)"
    )
