"""Probe images and tensors -> one batch (cnnreport.probes)."""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

from cnnreport.errors import CnnReportError, OptionError, ProbeError
from cnnreport.io.probes import (
    ProbeBatch,
    expected_input_channels,
    expected_input_ndim,
    load_probes,
    normalisation,
    synthetic_probes,
)


def one_line(exc: CnnReportError) -> str:
    text = exc.one_line()
    assert "\n" not in text
    return text


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def solid(rgb: tuple[int, int, int], size=(6, 8)) -> np.ndarray:
    """An H×W×3 uint8 image of one colour."""
    return np.broadcast_to(np.array(rgb, np.uint8), size + (3,)).copy()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """img1, img2, img10 (natural order), a hidden file, a text file and a sub-folder image."""
    root = tmp_path / "probes"
    root.mkdir()
    save(solid((255, 0, 0)), root / "img10.png")
    save(solid((0, 255, 0)), root / "img2.png")
    save(solid((0, 0, 255)), root / "img1.png")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.txt").write_text("not an image")
    (root / "sub").mkdir()
    save(solid((10, 20, 30)), root / "sub" / "deep.png")
    return root


# ------------------------------------------------------------------------------------------
# tensors and arrays


def test_tensor_batch_passes_through_unchanged():
    x = torch.randn(3, 3, 5, 7)
    batch = load_probes(x)
    assert isinstance(batch, ProbeBatch)
    assert torch.equal(batch.tensor, x) and batch.tensor.dtype == torch.float32
    assert batch.inputs == (batch.tensor,)
    assert len(batch) == 3
    assert batch.names == ["probe 0", "probe 1", "probe 2"]
    assert batch.sources == ["", "", ""] and batch.sha256 == ["", "", ""]
    assert not batch.synthetic and batch.notes == []
    view = batch.display[1]
    assert view.dtype == np.uint8 and view.shape == (5, 7, 3)
    # min-max scaled per probe
    assert view.min() == 0 and view.max() == 255
    expected = (x[1] - x[1].min()) / (x[1].max() - x[1].min()) * 255
    assert np.abs(view.astype(float) - expected.permute(1, 2, 0).numpy()).max() <= 0.5 + 1e-4


def test_single_chw_tensor_gets_a_batch_dimension():
    x = torch.rand(1, 4, 4)
    batch = load_probes(x)
    assert batch.tensor.shape == (1, 1, 4, 4)
    assert batch.display[0].shape == (4, 4)  # grey


def test_uint8_tensor_is_scaled_and_other_dtypes_become_float32():
    batch = load_probes(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.equal(batch.tensor, torch.ones(1, 3, 2, 2))
    assert any("uint8" in n for n in batch.notes)
    assert load_probes(torch.ones(2, 3, dtype=torch.float64)).tensor.dtype == torch.float32


def test_numpy_channels_last_image_is_moved_channels_first():
    image = np.zeros((6, 9, 3), np.uint8)
    image[..., 1] = 255
    batch = load_probes(image)
    assert batch.tensor.shape == (1, 3, 6, 9)
    assert torch.equal(batch.tensor[0, 1], torch.ones(6, 9))
    assert torch.equal(batch.tensor[0, 0], torch.zeros(6, 9))
    assert any("channels-last" in n for n in batch.notes)


def test_conv1d_batches_with_sample_ndim_and_views():
    model = nn.Sequential(nn.Conv1d(2, 4, 3))
    assert expected_input_ndim(model) == 2
    x = torch.randn(5, 2, 16)
    batch = load_probes(x, sample_ndim=expected_input_ndim(model))
    assert batch.tensor.shape == (5, 2, 16)
    assert batch.display[0].shape == (2, 16)  # channels × length strip
    # without sample_ndim a 3-D tensor is one (C, H, W) image
    assert load_probes(x).tensor.shape == (1, 5, 2, 16)


def test_feature_vectors_have_no_picture_and_3d_volumes_show_a_slice():
    flat = load_probes(torch.randn(4, 10))
    assert flat.tensor.shape == (4, 10)
    assert all(v.shape == (0, 0) for v in flat.display)

    volume = torch.zeros(2, 1, 5, 4, 4)
    volume[:, :, 2] = torch.arange(16.0).view(4, 4)  # only the middle slice varies
    batch = load_probes(volume)
    assert batch.tensor.shape == (2, 1, 5, 4, 4)
    assert batch.display[0].shape == (4, 4)
    assert batch.display[0][0, 0] == 0 and batch.display[0][3, 3] == 255
    assert any("middle depth slice" in n for n in batch.notes)


def test_multi_input_tuple():
    image, meta = torch.randn(3, 3, 4, 4), torch.randn(3, 5)
    batch = load_probes((image, meta), mean=[0.5], std=[2.0])
    assert len(batch.inputs) == 2 and len(batch) == 3
    assert torch.allclose(batch.inputs[0], (image - 0.5) / 2.0)
    assert torch.equal(batch.inputs[1], meta)  # preprocessing touches the first input only
    assert batch.names == ["probe 0", "probe 1", "probe 2"]
    assert any("first of 2 inputs" in n for n in batch.notes)
    with pytest.raises(ProbeError, match="different batch sizes"):
        load_probes((torch.randn(3, 3, 4, 4), torch.randn(2, 5)))


def test_tensor_channels_are_converted_only_when_asked():
    grey = torch.rand(2, 1, 4, 4)
    assert load_probes(grey).tensor.shape == (2, 1, 4, 4)
    rgb = load_probes(grey, channels=3)
    assert rgb.tensor.shape == (2, 3, 4, 4)
    assert torch.equal(rgb.tensor[:, 2], grey[:, 0])
    assert load_probes(torch.rand(1, 4, 4, 4), channels=3).tensor.shape == (1, 3, 4, 4)
    with pytest.raises(ProbeError) as info:
        load_probes(torch.rand(1, 5, 4, 4), channels=3)
    assert "has 5 channels" in one_line(info.value) and "takes 3" in one_line(info.value)


def test_tensor_resize_only_when_asked():
    x = torch.rand(1, 3, 8, 8)
    assert load_probes(x).tensor.shape == (1, 3, 8, 8)
    assert load_probes(x, image_size=(4, 4)).tensor.shape == (1, 3, 4, 4)


def test_tensors_of_different_shapes_cannot_be_joined():
    with pytest.raises(ProbeError) as info:
        load_probes([torch.rand(3, 4, 4), torch.rand(3, 5, 5)])
    assert "do not share one shape" in one_line(info.value)
    assert "--image-size" in one_line(info.value)


def test_list_of_tensors_concatenates_in_order():
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(1, 2, 2)
    batch = load_probes([a, b])
    assert batch.tensor.shape == (3, 1, 2, 2)
    assert torch.equal(batch.tensor[2], b)
    assert batch.names == ["probe 0", "probe 1", "probe 2"]


# ------------------------------------------------------------------------------------------
# files, folders, globs


def test_folder_is_sorted_naturally_and_skips_hidden_and_unsupported(folder):
    batch = load_probes(folder)
    assert batch.names == ["img1.png", "img2.png", "img10.png"]
    assert batch.sources == [str(folder / n) for n in batch.names]
    assert batch.sha256 == [hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in batch.names]
    assert batch.tensor.shape == (3, 3, 6, 8)
    # blue, green, red, each exactly 1.0 in its channel and [0, 1] overall
    assert torch.equal(batch.tensor[0, 2], torch.ones(6, 8))
    assert torch.equal(batch.tensor[1, 1], torch.ones(6, 8))
    assert torch.equal(batch.tensor[2, 0], torch.ones(6, 8))
    assert batch.tensor.sum() == 3 * 6 * 8
    assert batch.display[2].shape == (6, 8, 3) and tuple(batch.display[2][0, 0]) == (255, 0, 0)
    assert any("skipped 1 file(s) of unsupported type" in n and "README.txt" in n for n in batch.notes)


def test_recursive_folder_includes_subfolders(folder):
    batch = load_probes(folder, recursive=True)
    assert batch.names == ["img1.png", "img2.png", "img10.png", "deep.png"]
    assert batch.sources[-1] == str(folder / "sub" / "deep.png")


def test_empty_folder_and_folder_with_only_subfolders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProbeError) as info:
        load_probes(empty)
    assert one_line(info.value) == f"probe folder {empty} holds no images"
    (empty / "nested").mkdir()
    with pytest.raises(ProbeError) as info:
        load_probes(empty)
    assert "--recursive" in one_line(info.value)


def test_folder_with_only_unsupported_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ProbeError) as info:
        load_probes(tmp_path)
    text = one_line(info.value)
    assert "holds no supported files" in text and "notes.txt" in text and ".png" in text


def test_glob_pattern(folder):
    batch = load_probes(str(folder / "img*.png"))
    assert batch.names == ["img1.png", "img2.png", "img10.png"]
    assert load_probes(str(folder / "**" / "*.png")).names[-1] == "deep.png"
    with pytest.raises(ProbeError) as info:
        load_probes(str(folder / "*.jpeg"))
    assert "matches no files" in one_line(info.value) and "*.jpeg" in one_line(info.value)


def test_explicit_files_keep_their_order_and_max_probes(folder):
    files = [folder / "img10.png", str(folder / "img1.png")]
    assert load_probes(files).names == ["img10.png", "img1.png"]
    capped = load_probes(folder, max_probes=2)
    assert capped.names == ["img1.png", "img2.png"] and len(capped) == 2
    assert "kept the first 2 of 3 probes (max_probes=2)" in capped.notes
    assert len(load_probes(torch.zeros(5, 3), max_probes=3)) == 3


def test_duplicate_file_names_get_their_folders(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        save(solid((1, 2, 3)), tmp_path / sub / "x.png")
    batch = load_probes(tmp_path, recursive=True)
    assert batch.names == ["a/x.png", "b/x.png"]


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("notes.txt", b"hello", "unsupported probe file type '.txt'"),
        ("broken.png", b"definitely not a png", "cannot read probe image"),
        ("empty.jpg", b"", "is empty (0 bytes)"),
    ],
)
def test_bad_files_are_named(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ProbeError) as info:
        load_probes(path)
    text = one_line(info.value)
    assert fragment in text and str(path) in text


def test_truncated_image_is_named(tmp_path):
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(whole, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(ProbeError) as info:
        load_probes(path)
    assert "cannot read probe image" in one_line(info.value) and "cut.png" in one_line(info.value)


def test_missing_probe_file(tmp_path):
    with pytest.raises(ProbeError, match="probe file not found: .*missing.png"):
        load_probes(tmp_path / "missing.png")
    with pytest.raises(ProbeError, match="the list of probes is empty"):
        load_probes([])


def test_npy_and_pt_files(tmp_path):
    single = np.random.default_rng(1).random((3, 4, 4)).astype(np.float32)
    many = torch.rand(2, 3, 4, 4)
    np.save(tmp_path / "one.npy", single)
    torch.save(many, tmp_path / "two.pt")
    batch = load_probes([tmp_path / "one.npy", tmp_path / "two.pt"])
    assert batch.names == ["one.npy", "two.pt[0]", "two.pt[1]"]
    assert torch.equal(batch.tensor[0], torch.from_numpy(single))
    assert torch.equal(batch.tensor[1:], many)
    assert batch.sha256[1] == batch.sha256[2] == hashlib.sha256((tmp_path / "two.pt").read_bytes()).hexdigest()


def test_bad_tensor_files(tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "dict.pt")
    with pytest.raises(ProbeError, match="holds a value of type dict, not a tensor"):
        load_probes(tmp_path / "dict.pt")
    torch.save({"x": torch.zeros(1), "cfg": argparse.Namespace()}, tmp_path / "ns.pt")
    with pytest.raises(ProbeError) as info:
        load_probes(tmp_path / "ns.pt")
    assert one_line(info.value) == (
        f"probe file {tmp_path / 'ns.pt'} holds Python objects beyond tensors; "
        "save probes with torch.save(tensor, path)"
    )
    (tmp_path / "junk.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ProbeError, match="cannot read probe file .*junk.pt"):
        load_probes(tmp_path / "junk.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ProbeError, match="holds Python objects"):
        load_probes(tmp_path / "obj.npy")


# ------------------------------------------------------------------------------------------
# image formats and conversions


@pytest.mark.parametrize(
    "suffix, kwargs", [(".png", {}), (".bmp", {}), (".tif", {}), (".webp", {"lossless": True})]
)
def test_lossless_formats_round_trip(tmp_path, suffix, kwargs):
    pixels = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save(pixels, tmp_path / f"x{suffix}", **kwargs)
    batch = load_probes(path)
    assert batch.tensor.shape == (1, 3, 5, 7)
    assert torch.allclose(batch.tensor[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    assert np.array_equal(batch.display[0], pixels)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # left half red
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    batch = load_probes(path)
    assert batch.tensor.shape == (1, 3, 20, 10)  # height and width swapped
    reference = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(batch.display[0], reference)
    assert batch.display[0][:10, :, 0].mean() > 200  # red ended up on top
    assert "applied the EXIF orientation of phone.jpg" in batch.notes


def test_gif_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(solid(c)) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    batch = load_probes(path)
    assert tuple(batch.display[0][0, 0]) == (255, 0, 0)
    assert "used the first of 2 frames of anim.gif" in batch.notes


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[0, 0] = (255, 0, 0, 255)  # opaque red
    pixels[0, 1] = (255, 0, 0, 0)  # fully transparent
    pixels[1, 0] = (0, 0, 0, 128)  # half-transparent black
    batch = load_probes(save(pixels, tmp_path / "a.png"))
    assert batch.tensor.shape == (1, 3, 2, 2)
    assert batch.tensor[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert batch.tensor[0, :, 0, 1].tolist() == [1.0, 1.0, 1.0]
    assert torch.allclose(batch.tensor[0, :, 1, 0], torch.full((3,), 1 - 128 / 255))
    assert any("alpha" in n and "white" in n for n in batch.notes)


def test_16_bit_png_uses_the_full_range(tmp_path):
    pixels = np.array([[0, 65535], [32768, 256]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    batch = load_probes(path)
    expected = torch.from_numpy(pixels.astype(np.float32) / 65535)
    assert torch.allclose(batch.tensor[0, 0], expected)
    assert batch.display[0].tolist() == [[0, 255], [128, 1]]


def test_palette_image_is_converted(tmp_path):
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 128, 255]]], np.uint8))
    path = tmp_path / "pal.png"
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(path)
    batch = load_probes(path)
    reference = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(batch.display[0], reference)


def test_grey_and_rgb_mixed_become_rgb(tmp_path):
    grey = save(np.full((6, 8), 100, np.uint8), tmp_path / "a_grey.png")
    save(solid((0, 0, 255)), tmp_path / "b_rgb.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (2, 3, 6, 8)
    assert torch.allclose(batch.tensor[0], torch.full((3, 6, 8), 100 / 255))
    assert "converted 1 grayscale image(s) to 3 channels to match the colour ones" in batch.notes
    only_grey = load_probes(grey)
    assert only_grey.tensor.shape == (1, 1, 6, 8) and only_grey.display[0].shape == (6, 8)


def test_channels_option_converts_images(tmp_path):
    rgb = save(np.array([[[200, 100, 50]]], np.uint8), tmp_path / "c.png")
    grey = load_probes(rgb, channels=1)
    assert grey.tensor.shape == (1, 1, 1, 1)
    expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert grey.tensor.item() == pytest.approx(expected, abs=1e-6)
    reference = np.asarray(Image.open(rgb).convert("L"))[0, 0] / 255
    assert grey.tensor.item() == pytest.approx(reference, abs=1 / 255)
    assert "converted 1 RGB image(s) to grayscale (luminance)" in grey.notes

    grey_file = save(np.full((1, 1), 7, np.uint8), tmp_path / "g.png")
    three = load_probes(grey_file, channels=3)
    assert three.tensor.shape == (1, 3, 1, 1) and "converted 1 grayscale image(s) to 3 channels" in three.notes
    with pytest.raises(ProbeError) as info:
        load_probes(grey_file, channels=2)
    assert "takes 2 input channels" in one_line(info.value)


def test_resize_crop_keeps_the_centre_and_stretch_keeps_everything(tmp_path):
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 16:64] = (0, 255, 0)  # the centre 40 columns and a margin for the filter
    pixels[:, 64:] = (0, 0, 255)
    path = save(pixels, tmp_path / "stripes.png")

    crop = load_probes(path, image_size=(20, 20))
    assert crop.tensor.shape == (1, 3, 20, 20)
    assert crop.tensor[0, 1].min() > 0.99 and crop.tensor[0, 0].max() < 0.01  # all green
    assert "resized shorter side to 20 and centre-cropped to 20×20 (1 image(s))" in crop.notes

    stretch = load_probes(path, image_size=(20, 20), resize="stretch")
    assert stretch.tensor[0, 0, :, 0].min() > 0.99  # red on the left
    assert stretch.tensor[0, 2, :, -1].min() > 0.99  # blue on the right
    assert any("without keeping the aspect ratio" in n for n in stretch.notes)

    wide = load_probes(path, image_size=(10, 30))
    assert wide.tensor.shape == (1, 3, 10, 30)
    assert "resized to cover 10×30 and centre-cropped (1 image(s))" in wide.notes


def test_different_sizes_follow_the_first_image(tmp_path):
    save(solid((9, 9, 9), (6, 8)), tmp_path / "a.png")
    save(solid((9, 9, 9), (12, 16)), tmp_path / "b.png")
    batch = load_probes(tmp_path)
    assert batch.tensor.shape == (2, 3, 6, 8)
    assert any("different sizes; resized 1 to 6×8, the first image's size" in n for n in batch.notes)


def test_mean_std_and_presets(folder):
    raw = load_probes(folder)
    imagenet = load_probes(folder, mean="imagenet")
    m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # the published ImageNet figures
    s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(imagenet.tensor, (raw.tensor - m) / s)
    # thumbnails show the image before normalisation
    assert all(np.array_equal(a, b) for a, b in zip(imagenet.display, raw.display))
    assert any(n.startswith("normalised with mean (0.485, 0.456, 0.406)") for n in imagenet.notes)
    assert torch.equal(load_probes(folder, mean="none").tensor, raw.tensor)
    assert torch.allclose(load_probes(folder, mean=[0.5], std=[0.25]).tensor, (raw.tensor - 0.5) / 0.25)
    # tensors are normalised too, but only when asked
    assert torch.allclose(load_probes(torch.ones(1, 2, 2), mean=[1.0], std=[2.0]).tensor, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"mean": "cifar"}, "'cifar' is not a preset"),
        ({"mean": [0.1, 0.2]}, "--mean has 2 values but the probes have 3 channel(s)"),
        ({"mean": [0.5], "std": [0.0]}, "--std 0 must be finite numbers above 0"),
        ({"mean": "imagenet", "std": [0.5]}, "--std as numbers only with numeric --mean"),
        ({"image_size": (0, 4)}, "must be two positive numbers"),
        ({"image_size": (1, 2, 3)}, "must be two positive numbers"),
        ({"resize": "squash"}, "'squash' is not one of crop, stretch"),
        ({"max_probes": 0}, "--max-probes must be at least 1"),
    ],
)
def test_bad_options(folder, kwargs, fragment):
    with pytest.raises(OptionError) as info:
        load_probes(folder, **kwargs)
    assert fragment in one_line(info.value)


def test_real_photos(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    photo = Image.fromarray(skimage_data.chelsea()).resize((90, 60))  # 3:2 cat photo, kept small
    photo.save(tmp_path / "cat.jpg", quality=90)
    Image.fromarray(skimage_data.camera()).resize((48, 48)).save(tmp_path / "camera.png")
    batch = load_probes(tmp_path, image_size=(32, 32), mean="imagenet", channels=3)
    assert batch.names == ["camera.png", "cat.jpg"]
    assert batch.tensor.shape == (2, 3, 32, 32)
    # the grey camera photo became three equal channels
    assert np.array_equal(batch.display[0][..., 0], batch.display[0][..., 2])
    # normalised values sit in the usual ImageNet range
    assert -2.2 < batch.tensor.min() < 0 < batch.tensor.max() < 2.7
    # the crop is the centre: compare with a plain Pillow centre crop of the photo
    reference = np.asarray(ImageOps.fit(Image.open(tmp_path / "cat.jpg"), (32, 32)), dtype=float)
    assert np.abs(batch.display[1].astype(float) - reference).mean() < 12


# ------------------------------------------------------------------------------------------
# synthetic input and model helpers


def test_synthetic_probes_are_deterministic_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    a = synthetic_probes((3, 8, 8))
    assert torch.equal(torch.get_rng_state(), state)
    b = synthetic_probes([3, 8, 8])
    c = synthetic_probes((3, 8, 8), seed=1)
    assert a.synthetic and a.tensor.shape == (1, 3, 8, 8) and a.tensor.dtype == torch.float32
    assert torch.equal(a.tensor, b.tensor) and not torch.equal(a.tensor, c.tensor)
    assert a.names == ["synthetic 0"] and a.display[0].shape == (8, 8, 3)
    assert "synthetic" in a.notes[0] and "(3, 8, 8)" in a.notes[0]
    assert len(synthetic_probes((4,), count=3)) == 3
    with pytest.raises(OptionError, match="must be positive"):
        synthetic_probes((3, 0, 8))


def test_expected_input_channels_and_ndim():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)  # defined before the convs, but not a convolution
            self.stem = nn.Sequential(nn.Conv2d(5, 4, 3, groups=1), nn.ReLU())
            self.body = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.head(self.body(self.stem(x)).mean((2, 3)))

    net = Net()
    assert expected_input_channels(net) == 5 and expected_input_ndim(net) == 3
    assert expected_input_channels(nn.Sequential(nn.Conv3d(2, 1, 1))) == 2
    assert expected_input_ndim(nn.Sequential(nn.Conv3d(2, 1, 1))) == 4
    assert expected_input_channels(nn.Sequential(nn.Linear(3, 3))) is None
    assert expected_input_ndim(nn.Linear(3, 3)) is None
    assert expected_input_channels(nn.LazyConv2d(4, 3)) is None
    assert expected_input_channels(nn.Conv2d(6, 6, 3, groups=3)) == 6


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_expected_input_channels_of_torchscript():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert expected_input_channels(torch.jit.script(model)) == 3
    traced = torch.jit.trace(model, torch.zeros(1, 3, 8, 8))
    assert expected_input_channels(traced) == 3
    assert expected_input_ndim(traced) == 3


# ------------------------------------------------------------------------------------------
# Numbers pinned by hand: the ImageNet preset and where the centre crop sits


def test_imagenet_preset_is_the_published_mean_and_std():
    # torchvision's ImageNet statistics, written out here rather than read from the code
    assert normalisation("imagenet", None) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalisation("none", None) is None


def test_imagenet_normalised_probe_equals_a_float64_hand_computation(tmp_path):
    # 2x3 RGB image, every pixel and channel different, so any channel's mean or std is seen
    pixels = np.array(
        [[[0, 10, 255], [51, 128, 200], [255, 255, 0]],
         [[17, 34, 68], [230, 5, 99], [128, 128, 128]]], np.uint8)  # fmt: skip
    path = save(pixels, tmp_path / "probe.png")
    batch = load_probes(path, mean="imagenet")
    assert batch.tensor.shape == (1, 3, 2, 3) and batch.tensor.dtype == torch.float32
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)
    scaled = torch.from_numpy(pixels.astype(np.float64) / 255.0).permute(2, 0, 1)
    expected = (scaled - mean) / std
    torch.testing.assert_close(batch.tensor[0].double(), expected, atol=1e-6, rtol=0)
    # one value worked out on paper: red 0 -> (0 - 0.485) / 0.229
    assert float(batch.tensor[0, 0, 0, 0]) == pytest.approx(-2.117903930, abs=1e-6)
    # blue 255 -> (1 - 0.406) / 0.225
    assert float(batch.tensor[0, 2, 0, 0]) == pytest.approx(2.64, abs=1e-6)


def _rows_image(height: int, width: int) -> np.ndarray:
    """Grey H x W uint8 image whose row r is 10 * r + 5 everywhere: every row distinct."""
    return np.repeat((10 * np.arange(height) + 5).astype(np.uint8)[:, None], width, axis=1)


def test_crop_of_a_tall_image_keeps_the_middle_rows(tmp_path):
    # 12 rows x 4 columns to 4 x 4: the width already fits (scale 1, no resampling), so the
    # crop is exact: rows (12 - 4) // 2 = 4 .. 7, not the top rows 0 .. 3
    path = save(_rows_image(12, 4), tmp_path / "tall.png")
    batch = load_probes(path, image_size=(4, 4))
    assert batch.tensor.shape == (1, 1, 4, 4)
    values = np.rint(batch.tensor[0, 0].numpy() * 255).astype(int)
    assert values[:, 0].tolist() == [45, 55, 65, 75]
    assert (values == values[:, :1]).all()
    assert batch.display[0][:, 0].tolist() == [45, 55, 65, 75]


def test_crop_of_an_odd_margin_rounds_the_top_down(tmp_path):
    # 11 rows to 4: 7 spare rows, (11 - 4) // 2 = 3 above and 4 below
    path = save(_rows_image(11, 4), tmp_path / "odd.png")
    values = np.rint(load_probes(path, image_size=(4, 4)).tensor[0, 0, :, 0].numpy() * 255).astype(int)
    assert values.tolist() == [35, 45, 55, 65]


def test_crop_of_a_wide_image_keeps_the_middle_columns(tmp_path):
    # the same image on its side: columns 4 .. 7 of 12
    path = save(np.ascontiguousarray(_rows_image(12, 4).T), tmp_path / "wide.png")
    batch = load_probes(path, image_size=(4, 4))
    values = np.rint(batch.tensor[0, 0].numpy() * 255).astype(int)
    assert values[0].tolist() == [45, 55, 65, 75]
    assert (values == values[:1]).all()
