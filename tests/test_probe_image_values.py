"""Probe images pinned value by value: each Pillow mode's scale, alpha on white, channel
targets, EXIF orientation, first frames, and the shrink of a large image while it decodes.

Images are built in the test, asymmetric, and the expected floats are worked out here by hand
or in float64 numpy/torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnreport.errors import ProbeError
from cnnreport.io.probes import load_probes


def values(batch) -> np.ndarray:
    """The first probe as C x H x W float64."""
    return batch.tensor[0].double().numpy()


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


# -- modes -------------------------------------------------------------------------------------


def test_an_8_bit_grey_image_is_divided_by_255(tmp_path):
    pixels = np.array([[0, 51, 255]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    batch = load_probes(tmp_path / "g.png")
    assert batch.tensor.shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(values(batch)[0], f32(pixels / 255.0))
    assert batch.notes == []


def test_a_bilevel_image_is_zero_or_one(tmp_path):
    Image.fromarray(np.array([[True, False, True]])).convert("1").save(tmp_path / "b.png")
    batch = load_probes(tmp_path / "b.png")
    assert batch.tensor.tolist() == [[[[1.0, 0.0, 1.0]]]]


def test_a_16_bit_image_is_divided_by_65535(tmp_path):
    pixels = np.array([[0, 300], [40000, 65535]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    batch = load_probes(tmp_path / "deep.png")
    np.testing.assert_array_equal(values(batch)[0], f32(pixels / 65535.0))
    assert batch.notes == ["read 16-bit grayscale image(s) as values in [0, 1] by dividing by 65535, their full range"]


def test_a_32_bit_integer_image_above_255_is_read_as_16_bit(tmp_path):
    pixels = np.array([[0, 256, 65535]], np.int32)
    Image.fromarray(pixels).save(tmp_path / "i.tif")
    batch = load_probes(tmp_path / "i.tif")
    np.testing.assert_allclose(values(batch)[0], pixels / 65535.0, atol=1e-7)
    assert batch.notes == ["read 16-bit grayscale image(s) as values in [0, 1] by dividing by 65535, their full range"]


def test_a_32_bit_integer_image_within_255_says_it_is_dark(tmp_path):
    pixels = np.array([[0, 255, 51]], np.int32)
    Image.fromarray(pixels).save(tmp_path / "i.tif")
    batch = load_probes(tmp_path / "i.tif")
    np.testing.assert_allclose(values(batch)[0], pixels / 65535.0, atol=1e-7)
    assert batch.notes == [
        "read i.tif, a 32-bit integer image whose values are all within 0..255, as 16-bit (values divided "
        "by 65535, so it is dark); save it as 8-bit if that is its range"
    ]


def test_a_32_bit_integer_image_beyond_16_bits_is_scaled_by_its_range(tmp_path):
    pixels = np.array([[-10, 0, 90]], np.int32)
    Image.fromarray(pixels).save(tmp_path / "i.tif")
    batch = load_probes(tmp_path / "i.tif")
    np.testing.assert_allclose(values(batch)[0], [[0.0, 0.1, 1.0]], atol=1e-7)
    assert batch.notes == ["scaled i.tif from its value range [-10, 90] to [0, 1]"]
    above = np.array([[0, 65536]], np.int32)
    Image.fromarray(above).save(tmp_path / "j.tif")
    assert load_probes(tmp_path / "j.tif").tensor.tolist() == [[[[0.0, 1.0]]]]


def test_a_float_image_in_0_1_is_used_as_it_is(tmp_path):
    pixels = np.array([[0.0, 0.25, 1.0]], np.float32)
    Image.fromarray(pixels).save(tmp_path / "f.tif")
    batch = load_probes(tmp_path / "f.tif")
    assert batch.tensor.tolist() == [[[[0.0, 0.25, 1.0]]]]
    assert batch.notes == []


def test_a_float_image_outside_0_1_is_scaled_by_its_range(tmp_path):
    pixels = np.array([[-1.0, 0.0, 3.0]], np.float32)
    Image.fromarray(pixels).save(tmp_path / "f.tif")
    batch = load_probes(tmp_path / "f.tif")
    assert batch.tensor.tolist() == [[[[0.0, 0.25, 1.0]]]]
    assert batch.notes == ["scaled f.tif from its value range [-1, 3] to [0, 1]"]
    low = np.array([[-0.5, 0.5]], np.float32)
    Image.fromarray(low).save(tmp_path / "g.tif")
    assert load_probes(tmp_path / "g.tif").tensor.tolist() == [[[[0.0, 1.0]]]]


def test_a_constant_float_image_outside_0_1_becomes_zeros(tmp_path):
    Image.fromarray(np.full((1, 2), 7.0, np.float32)).save(tmp_path / "c.tif")
    batch = load_probes(tmp_path / "c.tif")
    assert batch.tensor.tolist() == [[[[0.0, 0.0]]]]
    assert batch.notes == ["scaled c.tif from its value range [7, 7] to [0, 1]"]


def test_grey_with_alpha_is_composited_on_white(tmp_path):
    la = np.array([[[0, 255], [0, 0], [100, 51]]], np.uint8)  # (1, 3, 2): L, A
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    batch = load_probes(tmp_path / "la.png")
    grey, alpha = la[..., 0] / 255.0, la[..., 1] / 255.0
    expected = grey * alpha + (1 - alpha)  # 0 opaque, white where transparent
    assert batch.tensor.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(values(batch)[0], expected, atol=1e-6)
    assert batch.notes == ["dropped the alpha channel of 1 image(s) (composited on white)"]


def test_rgba_is_composited_on_white_channel_by_channel(tmp_path):
    rgba = np.array([[[255, 0, 51, 255], [10, 20, 30, 0], [200, 100, 0, 102]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    batch = load_probes(tmp_path / "a.png")
    rgb, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    expected = (rgb * alpha + (1 - alpha)).transpose(2, 0, 1)
    np.testing.assert_allclose(values(batch), expected, atol=1e-6)


def test_rgba_with_four_channels_keeps_its_alpha_as_it_is(tmp_path):
    rgba = np.array([[[255, 0, 51, 255], [10, 20, 30, 0]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    batch = load_probes(tmp_path / "a.png", channels=4)
    np.testing.assert_allclose(values(batch), (rgba / 255.0).transpose(2, 0, 1), atol=1e-6)
    assert batch.notes == []


def test_rgb_and_grey_with_four_channels_get_an_opaque_alpha(tmp_path):
    Image.fromarray(np.array([[[255, 0, 51]]], np.uint8)).save(tmp_path / "c.png")
    rgb = load_probes(tmp_path / "c.png", channels=4)
    np.testing.assert_allclose(values(rgb)[:, 0, 0], [1.0, 0.0, 0.2, 1.0], atol=1e-6)
    Image.fromarray(np.array([[102]], np.uint8)).save(tmp_path / "g.png")
    grey = load_probes(tmp_path / "g.png", channels=4)
    np.testing.assert_allclose(values(grey)[:, 0, 0], [0.4, 0.4, 0.4, 1.0], atol=1e-6)
    la = np.array([[[102, 51]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    grey_alpha = load_probes(tmp_path / "la.png", channels=4)
    np.testing.assert_allclose(values(grey_alpha)[:, 0, 0], [0.4, 0.4, 0.4, 0.2], atol=1e-6)


def test_rgba_to_one_channel_composites_then_takes_the_luma(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    batch = load_probes(tmp_path / "a.png", channels=1)
    np.testing.assert_allclose(values(batch)[0, 0], [0.299, 1.0], atol=1e-6)
    assert batch.notes == [
        "dropped the alpha channel of 1 image(s) (composited on white)",
        "converted 1 RGB image(s) to grayscale (luminance)",
    ]


def test_a_palette_image_with_transparency_is_composited(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1
    image.save(tmp_path / "p.png", transparency=1)
    batch = load_probes(tmp_path / "p.png")
    np.testing.assert_allclose(values(batch)[:, 0, :], [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]], atol=1e-6)


def test_a_palette_image_without_transparency_is_rgb(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 51, 255] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png")
    batch = load_probes(tmp_path / "p.png")
    np.testing.assert_allclose(values(batch)[:, 0, :], [[1.0, 0.0], [0.0, 0.2], [0.0, 1.0]], atol=1e-6)
    assert batch.notes == []


def test_a_cmyk_image_is_converted_to_rgb(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]]], np.uint8)  # white, cyan
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    batch = load_probes(tmp_path / "c.tif")
    assert batch.tensor.shape == (1, 3, 1, 2)
    np.testing.assert_allclose(values(batch)[:, 0, :], [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]], atol=1e-6)


# -- several images -------------------------------------------------------------------------------


def test_grey_beside_rgb_becomes_rgb_and_says_why(tmp_path):
    Image.fromarray(np.array([[51]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[[255, 0, 0]]], np.uint8)).save(tmp_path / "b.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(batch.tensor[0, :, 0, 0].numpy(), [0.2, 0.2, 0.2], atol=1e-6)
    assert batch.notes == ["converted 1 grayscale image(s) to 3 channels to match the colour ones"]


def test_grey_asked_as_three_channels_says_no_why(tmp_path):
    Image.fromarray(np.array([[51]], np.uint8)).save(tmp_path / "a.png")
    batch = load_probes(tmp_path / "a.png", channels=3)
    assert batch.notes == ["converted 1 grayscale image(s) to 3 channels"]


def test_only_grey_images_stay_one_channel(tmp_path):
    Image.fromarray(np.array([[51]], np.uint8)).save(tmp_path / "a.png")
    batch = load_probes([tmp_path / "a.png"])
    assert batch.tensor.shape == (1, 1, 1, 1)


@pytest.mark.parametrize("channels", [2, 5])
def test_an_image_channel_count_images_cannot_have_is_refused(tmp_path, channels):
    Image.fromarray(np.array([[51]], np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ProbeError) as info:
        load_probes(tmp_path / "a.png", channels=channels)
    assert info.value.one_line() == (
        f"the model takes {channels} input channels, but images give 1 (grayscale) or 3 (RGB) "
        "(pass the probes as .npy or .pt tensors with the right channel count)"
    )


def test_images_of_other_sizes_follow_the_first_and_are_counted(tmp_path):
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 6), 255, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.full((2, 3), 51, np.uint8)).save(tmp_path / "c.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (3, 1, 2, 3)
    np.testing.assert_allclose(batch.tensor[1].numpy(), np.ones((1, 2, 3)), atol=1e-6)
    assert batch.notes == [
        "probe images have different sizes; resized 1 to 2×3, the first image's size "
        "(resized to cover 2×3 and centre-cropped)"
    ]


def test_a_resized_image_is_clamped_to_0_1(tmp_path):
    # a sharp edge upscaled bilinearly stays within [0, 1]; the count says 1 image
    pixels = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "e.png")
    batch = load_probes(tmp_path / "e.png", image_size=(5, 5), resize="stretch")
    assert float(batch.tensor.min()) >= 0.0 and float(batch.tensor.max()) <= 1.0
    assert batch.notes == ["resized to 5×5 without keeping the aspect ratio (1 image(s))"]


def test_an_image_crop_cuts_the_middle_of_an_upscaled_image(tmp_path):
    # 2 x 4 grey to 4 x 4: scale max(4/2, 4/4) = 2 -> 4 x 8, columns 2..5
    pixels = np.array([[0, 51, 102, 153], [204, 255, 0, 51]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "r.png")
    batch = load_probes(tmp_path / "r.png", image_size=(4, 4))
    reference = F.interpolate(torch.from_numpy(pixels / 255.0)[None, None], size=(4, 8), mode="bilinear",
                              align_corners=False, antialias=True)[..., 2:6].clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), reference, atol=1e-6, rtol=0)
    assert batch.notes == ["resized shorter side to 4 and centre-cropped to 4×4 (1 image(s))"]


# -- orientation and frames -----------------------------------------------------------------------


ROWS = np.array([[0, 51], [102, 153], [204, 255]], np.uint8)  # 3 rows x 2 columns, all different


def exif_image(path: Path, orientation: int) -> Path:
    image = Image.fromarray(ROWS)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


@pytest.mark.parametrize(
    "orientation, shown",
    [
        (1, ROWS),
        (2, ROWS[:, ::-1]),
        (3, ROWS[::-1, ::-1]),
        (4, ROWS[::-1]),
        (5, ROWS.T),
        (6, ROWS[::-1].T),
        (7, ROWS[::-1, ::-1].T),
        (8, ROWS[:, ::-1].T),
    ],
)
def test_each_exif_orientation_shows_the_image_upright(tmp_path, orientation, shown):
    batch = load_probes(exif_image(tmp_path / "o.png", orientation))
    np.testing.assert_array_equal(np.rint(values(batch)[0] * 255).astype(int), shown.astype(int))
    notes = ["applied the EXIF orientation of o.png"] if orientation != 1 else []
    assert batch.notes == notes


def test_a_multi_frame_image_uses_its_first_frame_and_says_how_many(tmp_path):
    frames = [Image.fromarray(np.full((2, 2), v, np.uint8)) for v in (51, 102, 153)]
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    batch = load_probes(tmp_path / "m.tif")
    np.testing.assert_allclose(values(batch), np.full((1, 2, 2), 0.2), atol=1e-6)
    assert batch.notes == ["used the first of 3 frames of m.tif"]


# -- large images shrink while they decode --------------------------------------------------------


def stripes(height: int, width: int) -> np.ndarray:
    """Vertical stripes 32 wide, brighter rows below: a box in the wrong place shows."""
    x = np.arange(width)
    y = np.arange(height)
    column = np.where((x // 32) % 2 == 0, 0, 160)
    row = (y * 90) // height
    return (column[None, :] + row[:, None]).astype(np.uint8)


def box_means(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Means of factor x factor boxes, the few pixels left over trimmed evenly (float64)."""
    h, w = pixels.shape
    top, left = (h % factor) // 2, (w % factor) // 2
    rows, cols = h // factor, w // factor
    trimmed = pixels[top : top + rows * factor, left : left + cols * factor].astype(np.float64)
    return trimmed.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def test_a_large_image_is_box_reduced_by_a_whole_factor_before_the_resize(tmp_path):
    # 2000 x 2200 = 4.4 MP, above the 4 MP (2^22) threshold. To 16 x 16: the cover size is
    # 16 x round(2200 * 16 / 2000) = 16 x 18, so the box factor is
    # min(2200 // (4 * 18), 2000 // (4 * 16)) = min(30, 31) = 30: 66 x 73 boxes, trimmed
    # (2000 % 30) // 2 = 10 rows above and (2200 % 30) // 2 = 5 columns left.
    pixels = stripes(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(16, 16))
    reduced = box_means(pixels, 30) / 255.0
    assert reduced.shape == (66, 73)
    # then the usual antialiased resize: 66 x 73 covers 16 x 16 as 16 x round(73 * 16 / 66) = 16 x 18
    covered = F.interpolate(torch.from_numpy(reduced)[None, None], size=(16, 18), mode="bilinear",
                            align_corners=False, antialias=True)
    expected = covered[..., :, 1:17].clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1.0 / 255, rtol=0)
    assert batch.notes == [
        "resized shorter side to 16 and centre-cropped to 16×16 (1 image(s))",
        "shrank 1 image(s) of over 4.2 megapixels while decoding, to at least 4x the target size, "
        "before the resize",
    ]


def test_a_large_image_stretched_is_reduced_for_each_side(tmp_path):
    # stretch to 8 x 40: the need is 8 x 40 itself; factor min(2200 // 160, 2000 // 32) = 13
    pixels = stripes(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(8, 40), resize="stretch")
    reduced = box_means(pixels, 13) / 255.0
    expected = F.interpolate(torch.from_numpy(reduced)[None, None], size=(8, 40), mode="bilinear",
                             align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1.0 / 255, rtol=0)


def test_a_large_image_close_to_its_target_is_not_reduced(tmp_path):
    # 2049 x 2049 to 600 x 600: 2049 // 2400 = 0 < 2, no box filter, only the resize
    pixels = stripes(2049, 2049)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(600, 600))
    assert batch.tensor.shape == (1, 1, 600, 600)
    assert batch.notes == ["resized shorter side to 600 and centre-cropped to 600×600 (1 image(s))"]


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (5, lambda a: a.T),
        (6, lambda a: a[::-1].T),
        (7, lambda a: a[::-1, ::-1].T),
        (8, lambda a: a[:, ::-1].T),
    ],
)
def test_a_large_turned_image_is_reduced_as_stored_and_shown_upright(tmp_path, orientation, upright):
    # stored 2000 x 2200 with a quarter-turn orientation (shown 2200 x 2000); to 18 x 16 as
    # shown: need shown 18 x 16, stored 16 x 18 -> the same factor 30 as above (shown as
    # stored, the factor would be min(2200 // 64, 2000 // 72) = 27)
    pixels = stripes(2000, 2200)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "turned.png", exif=exif, compress_level=1)
    batch = load_probes(tmp_path / "turned.png", image_size=(18, 16))
    upright = np.ascontiguousarray(upright(box_means(pixels, 30))) / 255.0  # 73 x 66, as shown
    covered = F.interpolate(torch.from_numpy(upright)[None, None], size=(18, 16), mode="bilinear",
                            align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), covered, atol=1.0 / 255, rtol=0)
    assert "applied the EXIF orientation of turned.png" in batch.notes


def test_a_large_jpeg_is_scaled_while_decoding_to_close_values(tmp_path):
    pixels = np.repeat(np.repeat(stripes(250, 275), 8, axis=0), 8, axis=1)  # 2000 x 2200
    rgb = np.stack([pixels, pixels // 2, 255 - pixels], axis=2)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=95)
    batch = load_probes(tmp_path / "big.jpg", image_size=(16, 16))
    assert batch.tensor.shape == (1, 3, 16, 16)
    reduced = box_means(pixels, 30) / 255.0
    covered = F.interpolate(torch.from_numpy(reduced)[None, None], size=(16, 18), mode="bilinear",
                            align_corners=False, antialias=True)[..., 1:17]
    assert float((batch.tensor[0, 0].double() - covered[0, 0]).abs().mean()) < 4 / 255
    assert any(n.startswith("shrank 1 image(s)") for n in batch.notes)


@pytest.mark.parametrize("mode", ["1", "P", "I;16", "CMYK", "LA", "RGBA"])
def test_large_images_of_other_modes_are_reduced_in_a_mode_the_filter_averages(tmp_path, mode):
    grey = stripes(2000, 2200)
    if mode == "1":
        image = Image.fromarray(grey >= 128)
        source = np.where(grey >= 128, 255, 0)
    elif mode == "P":
        image = Image.fromarray(grey).convert("P")  # a palette of greys
        source = grey
    elif mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
        source = grey
    elif mode == "CMYK":
        image = Image.fromarray(np.stack([255 - grey] * 3 + [np.zeros_like(grey)], axis=2), "CMYK")
        source = grey
    elif mode == "LA":
        image = Image.fromarray(np.stack([grey, np.full_like(grey, 255)], axis=2), "LA")
        source = grey
    else:
        image = Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=2), "RGBA")
        source = grey
    suffix = ".tif" if mode == "CMYK" else ".png"
    image.save(tmp_path / f"big{suffix}")
    batch = load_probes(tmp_path / f"big{suffix}", image_size=(16, 16))
    reduced = box_means(source, 30) / 255.0
    covered = F.interpolate(torch.from_numpy(reduced)[None, None], size=(16, 18), mode="bilinear",
                            align_corners=False, antialias=True)[..., 1:17].clamp(0, 1)
    first = batch.tensor[0, 0].double()
    assert float((first - covered[0, 0]).abs().max()) < 2.5 / 255
    assert any(n.startswith("shrank 1 image(s)") for n in batch.notes)


def test_a_32_bit_integer_image_whose_largest_value_is_256_is_16_bit(tmp_path):
    Image.fromarray(np.array([[0, 256]], np.int32)).save(tmp_path / "i.tif")
    batch = load_probes(tmp_path / "i.tif")
    assert batch.notes == ["read 16-bit grayscale image(s) as values in [0, 1] by dividing by 65535, their full range"]


def test_a_float_image_just_above_one_is_scaled(tmp_path):
    Image.fromarray(np.array([[0.0, 1.5]], np.float32)).save(tmp_path / "f.tif")
    batch = load_probes(tmp_path / "f.tif")
    assert batch.tensor.tolist() == [[[[0.0, 1.0]]]]
    assert batch.notes == ["scaled f.tif from its value range [0, 1.5] to [0, 1]"]


def test_an_image_of_exactly_the_large_threshold_is_not_shrunk(tmp_path):
    # 2048 x 2048 = 2^22 pixels: not above the threshold, so decoded whole and only resized
    pixels = stripes(2048, 2048)
    Image.fromarray(pixels).save(tmp_path / "edge.png", compress_level=1)
    batch = load_probes(tmp_path / "edge.png", image_size=(16, 16))
    expected = F.interpolate(torch.from_numpy(pixels / 255.0)[None, None], size=(16, 16), mode="bilinear",
                             align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1e-5, rtol=0)
    assert batch.notes == ["resized shorter side to 16 and centre-cropped to 16×16 (1 image(s))"]


def test_a_small_jpeg_is_one_frame_and_needs_no_note(tmp_path):
    Image.fromarray(np.full((4, 6, 3), 128, np.uint8)).save(tmp_path / "s.jpg", quality=95)
    batch = load_probes(tmp_path / "s.jpg")
    assert batch.tensor.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(values(batch), np.full((3, 4, 6), 128 / 255), atol=2 / 255)
    assert batch.notes == []


# -- more of the shrink: which side binds, the smallest factor, modes the filter cannot average ----


def checks(height: int, width: int) -> np.ndarray:
    """Stripes both ways (32 columns, 24 rows): a box a few rows or columns off shows."""
    x, y = np.arange(width), np.arange(height)
    return (np.where((x // 32) % 2 == 0, 0, 120)[None, :] + np.where((y // 24) % 2 == 0, 0, 120)[:, None]).astype(np.uint8)


def stretched(reduced: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(torch.from_numpy(reduced / 255.0)[None, None], size=size, mode="bilinear",
                         align_corners=False, antialias=True).clamp(0, 1)


def test_the_box_is_trimmed_evenly_in_both_directions(tmp_path):
    # to 16 x 16 as above: factor 30, 10 rows trimmed above and 5 columns left
    pixels = checks(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(16, 16))
    expected = F.interpolate(torch.from_numpy(box_means(pixels, 30) / 255.0)[None, None], size=(16, 18),
                             mode="bilinear", align_corners=False, antialias=True)[..., 1:17].clamp(0, 1)
    torch.testing.assert_close(batch.tensor.double(), expected, atol=1.0 / 255, rtol=0)


def test_a_tall_target_makes_the_height_the_binding_side(tmp_path):
    # stretch to 40 x 8: factor min(2200 // 32, 2000 // 160) = min(68, 12) = 12
    pixels = checks(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(40, 8), resize="stretch")
    torch.testing.assert_close(batch.tensor.double(), stretched(box_means(pixels, 12), (40, 8)), atol=1.0 / 255, rtol=0)


def test_a_factor_of_two_is_still_a_shrink(tmp_path):
    # stretch to 250 x 250: factor min(2200 // 1000, 2000 // 1000) = 2, the smallest that shrinks
    pixels = checks(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(250, 250), resize="stretch")
    torch.testing.assert_close(batch.tensor.double(), stretched(box_means(pixels, 2), (250, 250)), atol=1.0 / 255, rtol=0)
    assert batch.notes == [
        "resized to 250×250 without keeping the aspect ratio (1 image(s))",
        "shrank 1 image(s) of over 4.2 megapixels while decoding, to at least 4x the target size, before the resize",
    ]


def test_a_large_palette_image_is_averaged_in_colour_not_by_index(tmp_path):
    # a palette whose index order is not its grey order: averaging indices would be wrong
    indices = checks(2000, 2200) // 120  # 0, 1, 2
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette([200, 200, 200, 0, 0, 0, 90, 90, 90] + [0] * 759)
    image.save(tmp_path / "big.png", compress_level=1)
    greys = np.array([200, 0, 90], np.uint8)[indices]
    batch = load_probes(tmp_path / "big.png", image_size=(16, 16))
    expected = F.interpolate(torch.from_numpy(box_means(greys, 30) / 255.0)[None, None], size=(16, 18),
                             mode="bilinear", align_corners=False, antialias=True)[..., 1:17].clamp(0, 1)
    assert batch.tensor.shape == (1, 3, 16, 16)
    torch.testing.assert_close(batch.tensor[:, :1].double(), expected, atol=1.5 / 255, rtol=0)


def test_a_large_palette_image_with_transparency_keeps_it(tmp_path):
    indices = (checks(2000, 2200) // 120 == 1).astype(np.uint8)  # 1 marks the transparent squares
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    image.save(tmp_path / "big.png", transparency=1, compress_level=1)
    # composited on white: black squares stay black, transparent ones become white
    greys = np.where(indices == 1, 255, 0).astype(np.uint8)
    batch = load_probes(tmp_path / "big.png", image_size=(16, 16))
    expected = F.interpolate(torch.from_numpy(box_means(greys, 30) / 255.0)[None, None], size=(16, 18),
                             mode="bilinear", align_corners=False, antialias=True)[..., 1:17].clamp(0, 1)
    torch.testing.assert_close(batch.tensor[:, :1].double(), expected, atol=2.0 / 255, rtol=0)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "I", "F"])
def test_modes_the_filter_averages_keep_their_channels_and_alpha(tmp_path, mode):
    grey = checks(2000, 2200)
    alpha = np.where((np.arange(2200) // 64) % 2 == 0, 255, 51).astype(np.uint8)[None, :].repeat(2000, 0)
    if mode == "L":
        image, source, alpha_f = Image.fromarray(grey), grey / 255.0, None
    elif mode == "LA":
        image, source, alpha_f = Image.fromarray(np.stack([grey, alpha], 2), "LA"), grey / 255.0, alpha / 255.0
    elif mode == "RGBA":
        image = Image.fromarray(np.stack([grey] * 3 + [alpha], 2), "RGBA")
        source, alpha_f = grey / 255.0, alpha / 255.0
    elif mode == "I":
        image, source, alpha_f = Image.fromarray(grey.astype(np.int32) * 200), grey.astype(np.float64) * 200 / 65535.0, None
    else:
        image, source, alpha_f = Image.fromarray((grey / 240.0).astype(np.float32)), grey / 240.0, None
    suffix = ".tif" if mode in ("I", "F") else ".png"
    image.save(tmp_path / f"big{suffix}")
    batch = load_probes(tmp_path / f"big{suffix}", image_size=(16, 16))
    shown = source if alpha_f is None else None
    if alpha_f is not None:  # the box averages colour and alpha apart; compositing follows
        colour, cover = box_means(source * 255, 30) / 255.0, box_means(alpha_f * 255, 30) / 255.0
        reduced = colour * cover + (1 - cover)
    else:
        reduced = box_means(shown * 255, 30) / 255.0
    expected = F.interpolate(torch.from_numpy(reduced)[None, None], size=(16, 18), mode="bilinear",
                             align_corners=False, antialias=True)[..., 1:17].clamp(0, 1)
    channels = 3 if mode == "RGBA" else 1
    assert batch.tensor.shape == (1, channels, 16, 16)
    torch.testing.assert_close(batch.tensor[:, :1].double(), expected, atol=2.0 / 255, rtol=0)


def test_two_of_each_conversion_are_counted(tmp_path):
    rgba = np.array([[[255, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a1.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a2.png")
    Image.fromarray(np.array([[51]], np.uint8)).save(tmp_path / "g1.png")
    Image.fromarray(np.array([[102]], np.uint8)).save(tmp_path / "g2.png")
    batch = load_probes(tmp_path)
    assert batch.notes == [
        "dropped the alpha channel of 2 image(s) (composited on white)",
        "converted 2 grayscale image(s) to 3 channels to match the colour ones",
    ]
    grey = load_probes([tmp_path / "a1.png", tmp_path / "a2.png"], channels=1)
    assert grey.notes[-1] == "converted 2 RGB image(s) to grayscale (luminance)"


def test_a_16_bit_grey_image_beside_a_colour_one_becomes_three_channels(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "b.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (2, 3, 1, 2)
    assert batch.tensor[0].tolist() == [[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]


def test_a_stretch_reduces_by_the_goal_not_by_a_covering_size(tmp_path):
    # stretch to 16 x 8: factor min(2200 // 32, 2000 // 64) = 31; a crop's cover of 16 x 18
    # would have given min(2200 // 72, 2000 // 64) = 30
    pixels = checks(2000, 2200)
    Image.fromarray(pixels).save(tmp_path / "big.png", compress_level=1)
    batch = load_probes(tmp_path / "big.png", image_size=(16, 8), resize="stretch")
    torch.testing.assert_close(batch.tensor.double(), stretched(box_means(pixels, 31), (16, 8)), atol=1.0 / 255, rtol=0)


def test_a_32_bit_grey_image_beside_a_colour_one_becomes_three_channels(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "a.tif")
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "b.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (2, 3, 1, 2)
    assert batch.tensor[0].tolist() == [[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 1.0]]]
