"""Issue 14, items 3 and 8: probe and checkpoint files that are too big, damaged or strange.

Memory follows the target size, not the files' (decoded one at a time, big ones shrunk while
decoding, a pixel limit read from the header, ``.npy`` headers checked against the file);
links, unreadable files and folders, FIFOs and damaged zips are one-line errors. The CLI runs
as a subprocess where the exit code and stderr are the promise: one line, exit 2, nothing
written and nothing left behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from cnnreport.errors import ProbeError, WeightsError
from cnnreport.io.loading import read_checkpoint
from cnnreport.io.probes import load_probes

NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)).mean((2, 3)))
    """
)
OLD_REPORT = b"<html>the report of yesterday</html>"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------
# helpers


def skimage_photo(name: str = "astronaut") -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.asarray(getattr(data, name)())


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def member_data_offset(path: Path, suffix: str) -> int:
    """Where the bytes of the zip member whose name ends with *suffix* start in the file."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    head = path.read_bytes()[info.header_offset : info.header_offset + 30]
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A well-formed PNG header declaring width x height, with a tiny IDAT: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def npy_declaring(path: Path, shape: tuple[int, ...], data: bytes = b"\0" * 16) -> Path:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under *folder* (links as their target text), to compare before and after."""
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            full = Path(root) / name
            rel = str(full.relative_to(folder))
            if full.is_symlink():
                files[rel] = b"-> " + os.readlink(full).encode()
            elif full.is_file() and os.access(full, os.R_OK) and not stat.S_ISFIFO(full.stat().st_mode):
                files[rel] = full.read_bytes()
            elif not full.is_dir():
                files[rel] = b"(special)"
    return files


def cli(args: list[str], cwd: Path, *, drop_root_reads: bool = False) -> subprocess.CompletedProcess:
    """``cnnreport ARGS`` as a separate process. With *drop_root_reads*, root loses the
    capabilities that let it read any file, so a mode-000 file is unreadable to it too."""
    command = [sys.executable, "-m", "cnnreport.cli", *args]
    if drop_root_reads and AS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180)


def assert_refused(done: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cnnreport: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """net.py, a checkpoint of it, a probe folder with two real images, and an old report."""
    (tmp_path / "net.py").write_text(NET)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(NET, namespace)
    torch.save(namespace["Net"]().state_dict(), tmp_path / "net.pt")
    probes = tmp_path / "probes"
    probes.mkdir()
    photo = Image.fromarray(skimage_photo("astronaut"))
    photo.resize((24, 24)).save(probes / "astronaut.png")
    Image.fromarray(skimage_photo("coffee")).resize((24, 24)).save(probes / "coffee.png")
    (tmp_path / "report.html").write_bytes(OLD_REPORT)
    return tmp_path


def generate(ws: Path, *args: str, weights: bool = True) -> list[str]:
    argv = ["generate", "net.py:Net", *args, "-o", "report.html", "-q"]
    return argv + (["--weights", "net.pt"] if weights else [])


def refused_and_untouched(ws: Path, args: list[str], *needles: str, drop_root_reads: bool = False) -> str:
    before = snapshot(ws)
    line = assert_refused(cli(args, ws, drop_root_reads=drop_root_reads), *needles)
    assert snapshot(ws) == before  # the old report, every input, and no temp or partial file
    return line


# ------------------------------------------------------------------------------------------
# item 3: memory bounded by the target size; limits read from headers


def test_image_over_the_pixel_limit_is_refused_from_its_header(ws):
    png_declaring(ws / "probes" / "bomb.png", 100_000, 100_000)  # 10 gigapixels in 100 bytes
    line = refused_and_untouched(ws, generate(ws, "--probes", "probes", "--image-size", "32", "32"),
                                 "bomb.png", "100000×100000", "--max-image-pixels")
    assert "10000.0 megapixels" in line


def test_pixel_limit_can_be_lowered_and_raised(ws):
    # astronaut.png and coffee.png are 24x24 = 576 pixels
    refused_and_untouched(ws, generate(ws, "--probes", "probes", "--max-image-pixels", "575"),
                          "astronaut.png", "24×24", "575", "--max-image-pixels 576")
    batch = load_probes(str(ws / "probes"), max_image_pixels=576)
    assert tuple(batch.tensor.shape) == (2, 3, 24, 24)


def test_pixel_limit_without_probes_is_refused(ws):
    refused_and_untouched(ws, generate(ws, "--input-size", "3", "8", "8", "--max-image-pixels", "100"),
                          "--max-image-pixels", "--probes")


def test_large_image_without_image_size_is_refused_with_the_way_out(ws):
    big = ws / "probes" / "scan.png"
    Image.new("L", (2100, 2001), 128).save(big)  # 4.2 MP, above the full-size limit of 2048x2048
    line = refused_and_untouched(ws, generate(ws, "--probes", str(big)), "scan.png", "2001×2100", "--image-size")
    assert "--image-size 2001 2100" in line  # asking for its own size uses it as it is
    batch = load_probes(str(big), image_size=(2001, 2100))
    assert tuple(batch.tensor.shape) == (1, 1, 2001, 2100)
    assert float(batch.tensor.min()) == float(batch.tensor.max()) == pytest.approx(128 / 255)


def test_image_of_2048_squared_is_still_used_at_full_size(tmp_path):
    path = tmp_path / "edge.png"
    Image.new("L", (2048, 2048), 200).save(path)
    batch = load_probes(str(path))
    assert tuple(batch.tensor.shape) == (1, 1, 2048, 2048)


def test_terabyte_npy_header_is_refused_before_allocating(ws):
    npy_declaring(ws / "probes" / "huge.npy", (2**38,))  # 1 TiB of float32 declared, 16 bytes held
    line = refused_and_untouched(ws, generate(ws, "--probes", "probes/huge.npy"), "huge.npy", "(274877906944,)")
    assert "1.1 TB" in line and "16 bytes" in line


def test_terabyte_header_of_a_version_3_npy_is_refused_too(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (274877906944,), }"
    header += " " * ((64 - (12 + len(header) + 1) % 64) % 64) + "\n"
    path = tmp_path / "v3.npy"
    path.write_bytes(b"\x93NUMPY\x03\x00" + struct.pack("<I", len(header)) + header.encode() + b"\0" * 16)
    with pytest.raises(ProbeError, match=r"v3\.npy declares an array of shape \(274877906944,\) float32 \(1\.1 TB\)"):
        load_probes(str(path))


def test_truncated_npy_is_named(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.ones((2, 3, 8, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ProbeError, match=r"cut\.npy declares an array of shape \(2, 3, 8, 8\) float32 \(1,536 bytes\) but holds only 1,436 bytes"):
        load_probes(str(path))


def test_npy_with_a_damaged_header_is_named(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 12}   \n")
    with pytest.raises(ProbeError, match=r"bad\.npy"):
        load_probes(str(path))


def test_npy_that_fits_its_header_loads_unchanged(tmp_path):
    array = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.save(tmp_path / "a.npy", array)
    np.save(tmp_path / "f.npy", np.asfortranarray(array))
    for name in ("a.npy", "f.npy"):
        assert torch.equal(load_probes(str(tmp_path / name)).tensor, torch.from_numpy(array))


def _reference(pixels: np.ndarray, goal: tuple[int, int]) -> torch.Tensor:
    """Plain float64 torch: the full-size image in [0, 1], covered and centre-cropped to goal."""
    full = torch.from_numpy(pixels.astype(np.float64) / 255.0)
    full = (full[..., None] if full.dim() == 2 else full).permute(2, 0, 1)[None]
    h, w = full.shape[-2:]
    scale = max(goal[0] / h, goal[1] / w)
    size = (max(goal[0], round(h * scale)), max(goal[1], round(w * scale)))
    out = F.interpolate(full, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - goal[0]) // 2, (size[1] - goal[1]) // 2
    return out[0, :, top : top + goal[0], left : left + goal[1]]


def _big_photo(name: str, size: tuple[int, int]) -> np.ndarray:
    """A real photo upscaled to (W, H) = size: above 4 MP, so it takes the shrinking path."""
    return np.asarray(Image.fromarray(skimage_photo(name)).resize(size, Image.Resampling.BICUBIC))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_large_real_photo_shrunk_while_decoding_matches_a_full_size_resize(tmp_path, suffix):
    pixels = _big_photo("astronaut", (2600, 2400))  # 6.2 MP
    path = tmp_path / f"big{suffix}"
    Image.fromarray(pixels).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    with Image.open(path) as opened:  # what the file decodes to at full size
        decoded = np.asarray(opened.convert("RGB"))
    batch = load_probes(str(path), image_size=(96, 80))
    assert tuple(batch.tensor.shape) == (1, 3, 96, 80)
    diff = (batch.tensor[0].double() - _reference(decoded, (96, 80))).abs()
    # measured: PNG 0.0012 mean, 0.02 max; JPEG (DCT-scaled) 0.0003, 0.003; 2x margin: 0.0057
    assert float(diff.mean()) < 0.003
    assert float(diff.max()) < 0.05
    assert any("shrank 1 image(s)" in note for note in batch.notes)


def test_small_images_load_exactly_as_a_direct_resize(tmp_path):
    pixels = np.asarray(Image.fromarray(skimage_photo("coffee")).resize((300, 200)))
    Image.fromarray(pixels).save(tmp_path / "c.png")
    batch = load_probes(str(tmp_path / "c.png"), image_size=(64, 64))
    expected = _reference(pixels, (64, 64)).float()
    torch.testing.assert_close(batch.tensor[0], expected, atol=1e-5, rtol=0)
    assert not any("shrank" in note for note in batch.notes)


def test_large_rotated_jpeg_is_shown_upright(tmp_path):
    # stored 2600 wide x 1700 tall, EXIF 6: shown 1700 wide x 2600 tall; left half red, right blue
    stored = np.zeros((1700, 2600, 3), np.uint8)
    stored[:, :1300] = (255, 0, 0)
    stored[:, 1300:] = (0, 0, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif, quality=95)
    batch = load_probes(str(path), image_size=(52, 34), resize="stretch")
    assert tuple(batch.tensor.shape) == (1, 3, 52, 34)
    # ROTATE_270 puts the stored left (red) on top
    top, bottom = batch.tensor[0, :, :20].mean((1, 2)), batch.tensor[0, :, -20:].mean((1, 2))
    assert top[0] > 0.9 and top[2] < 0.1
    assert bottom[2] > 0.9 and bottom[0] < 0.1


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "1"])
def test_large_images_of_every_mode_shrink_to_what_a_full_size_resize_gives(tmp_path, mode):
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    rgba = np.asarray(Image.fromarray(coarse, "RGBA").resize((2310, 1890), Image.Resampling.NEAREST))
    if mode == "RGBA":
        image = Image.fromarray(rgba, "RGBA")
        straight = rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0) + (1 - rgba[..., 3:] / 255.0)
        reference_pixels = straight * 255.0
    elif mode == "P":
        image = Image.fromarray(rgba[..., :3]).quantize(16)
        reference_pixels = np.asarray(image.convert("RGB"))
    elif mode == "I;16":
        grey = rgba[..., 0].astype(np.uint16) * 257
        image = Image.fromarray(grey)
        reference_pixels = grey / 257.0
    else:
        image = Image.fromarray(rgba[..., 0] > 127)
        reference_pixels = (rgba[..., 0] > 127) * 255.0
    path = tmp_path / "big.png"
    image.save(path)
    batch = load_probes(str(path), image_size=(60, 70))
    channels = 3 if mode in ("RGBA", "P") else 1
    assert tuple(batch.tensor.shape) == (1, channels, 60, 70)
    diff = (batch.tensor[0].double() - _reference(np.asarray(reference_pixels), (60, 70))).abs()
    assert float(diff.mean()) < 0.01


def test_images_after_a_large_one_follow_the_first_size(tmp_path):
    Image.fromarray(skimage_photo("coffee")).resize((40, 30)).save(tmp_path / "a_small.png")
    Image.fromarray(_big_photo("astronaut", (2200, 2200))).save(tmp_path / "b_big.png")
    batch = load_probes(str(tmp_path))
    assert tuple(batch.tensor.shape) == (2, 3, 30, 40)


# ------------------------------------------------------------------------------------------
# item 8: links, unreadable files and folders, FIFOs, damaged zips


def test_dangling_symlink_in_a_probe_folder_is_named(ws):
    os.symlink(ws / "gone.png", ws / "probes" / "link.png")
    refused_and_untouched(ws, generate(ws, "--probes", "probes"), "link.png", "symbolic link", "gone.png", "does not exist")


def test_symlink_loop_in_a_probe_folder_is_named(ws):
    os.symlink("b.png", ws / "probes" / "a.png")
    os.symlink("a.png", ws / "probes" / "b.png")
    refused_and_untouched(ws, generate(ws, "--probes", "probes"), "a.png", "symbolic link loop")


def test_dangling_symlink_given_directly_or_matched_by_a_glob_is_named(ws):
    os.symlink(ws / "gone.png", ws / "link.png")
    with pytest.raises(ProbeError, match=r"link\.png is a symbolic link to .*gone\.png, which does not exist"):
        load_probes(str(ws / "link.png"))
    with pytest.raises(ProbeError, match=r"link\.png is a symbolic link"):
        load_probes(str(ws / "l*.png"))


def test_folder_link_loop_with_recursive_reads_each_real_image_once(ws):
    os.symlink(".", ws / "probes" / "again")  # probes/again -> probes
    batch = load_probes(str(ws / "probes"), recursive=True)
    assert batch.names == ["astronaut.png", "coffee.png"]


def test_fifo_in_a_probe_folder_is_refused_without_blocking(ws):
    os.mkfifo(ws / "probes" / "pipe.png")
    refused_and_untouched(ws, generate(ws, "--probes", "probes"), "pipe.png", "FIFO", "not a regular file")


def test_unreadable_probe_file_is_named(ws):
    target = ws / "probes" / "coffee.png"
    target.chmod(0)
    try:
        refused_and_untouched(ws, generate(ws, "--probes", "probes"), "coffee.png", "cannot read probe file",
                              "Permission denied", drop_root_reads=True)
    finally:
        target.chmod(0o644)


def test_unreadable_probe_folder_is_called_unreadable_not_empty(ws):
    (ws / "probes").chmod(0)
    try:
        line = refused_and_untouched(ws, generate(ws, "--probes", "probes"), "probe folder probes", "cannot be read",
                                     "Permission denied", drop_root_reads=True)
        assert "holds no images" not in line
    finally:
        (ws / "probes").chmod(0o755)


def test_unreadable_subfolder_with_recursive_is_named(ws):
    sub = ws / "probes" / "more"
    sub.mkdir()
    Image.new("RGB", (24, 24)).save(sub / "x.png")
    sub.chmod(0)
    try:
        refused_and_untouched(ws, generate(ws, "--probes", "probes", "--recursive"), "folder more", "probes",
                              "cannot be read", drop_root_reads=True)
    finally:
        sub.chmod(0o755)


def test_unreadable_weights_file_is_named(ws):
    (ws / "net.pt").chmod(0)
    try:
        refused_and_untouched(ws, generate(ws, "--probes", "probes"), "cannot read weights file net.pt",
                              "Permission denied", drop_root_reads=True)
    finally:
        (ws / "net.pt").chmod(0o644)


@pytest.mark.parametrize("member", ["data/0", "data.pkl"])
def test_checkpoint_with_a_flipped_byte_is_refused(ws, member):
    flip_byte(ws / "net.pt", member_data_offset(ws / "net.pt", member) + 5)
    line = refused_and_untouched(ws, generate(ws, "--probes", "probes"), "weights file net.pt is corrupted",
                                 member, "CRC-32")
    assert "copy or download it again" in line


def test_torchscript_model_with_a_flipped_byte_is_refused(ws):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 8, 8)), ws / "net.ts")
    flip_byte(ws / "net.ts", member_data_offset(ws / "net.ts", "data/0") + 3)
    refused_and_untouched(ws, ["generate", "net.ts", "--probes", "probes", "-o", "report.html", "-q"],
                          "model file net.ts is corrupted", "CRC-32")


def test_probe_tensor_with_a_flipped_byte_is_refused(ws):
    torch.save(torch.rand(2, 3, 8, 8), ws / "probes.pt")
    flip_byte(ws / "probes.pt", member_data_offset(ws / "probes.pt", "data/0") + 7)
    refused_and_untouched(ws, generate(ws, "--probes", "probes.pt"), "probe file probes.pt is corrupted", "CRC-32")


def test_intact_checkpoint_and_probe_tensor_still_load(tmp_path):
    state = {"w": torch.arange(12.0).reshape(3, 4)}
    torch.save(state, tmp_path / "w.pt")
    assert torch.equal(read_checkpoint(tmp_path / "w.pt").state_dict["w"], state["w"])
    probes = torch.rand(2, 3, 8, 8)
    torch.save(probes, tmp_path / "p.pt")
    assert torch.equal(load_probes(str(tmp_path / "p.pt")).tensor, probes)


def test_damaged_zip_directory_of_a_checkpoint_is_one_error(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "w.pt")
    data = bytearray((tmp_path / "w.pt").read_bytes())
    end = data.rfind(b"PK\x01\x02")  # the last central-directory entry's signature
    data[end + 20] ^= 0xFF  # its recorded compressed size
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"w\.pt"):
        read_checkpoint(tmp_path / "w.pt")


# ------------------------------------------------------------------------------------------
# malformed files of every kind: a float batch or a ProbeError, nothing else


def _seed_files() -> dict[str, bytes]:
    """One small valid file of every probe format, to damage."""
    import io

    try:
        from skimage import data

        small = Image.fromarray(data.astronaut()).resize((20, 16))
    except ImportError:
        small = Image.fromarray(np.arange(16 * 20 * 3, dtype=np.uint8).reshape(16, 20, 3))
    files = {}
    for suffix, fmt, kwargs in [(".png", "PNG", {}), (".jpg", "JPEG", {"quality": 80}), (".gif", "GIF", {}),
                                (".bmp", "BMP", {}), (".tif", "TIFF", {}), (".webp", "WEBP", {})]:
        buffer = io.BytesIO()
        small.save(buffer, fmt, **kwargs)
        files[suffix] = buffer.getvalue()
    buffer = io.BytesIO()
    np.save(buffer, np.ones((1, 3, 4, 4), np.float32))
    files[".npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save(torch.ones(1, 3, 4, 4), buffer)
    files[".pt"] = buffer.getvalue()
    return files


SEEDS = _seed_files()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.floats(0.05, 1.0)),
)
def test_damaged_files_load_or_fail_with_one_probe_error(tmp_path, suffix, edits, cut):
    data = bytearray(SEEDS[suffix])
    for where, mask in edits:
        data[int(where * len(data))] ^= mask
    if cut is not None:
        data = data[: max(1, int(cut * len(data)))]
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data))
    try:
        batch = load_probes(str(path), image_size=(8, 8))
    except ProbeError as exc:
        assert "\n" not in exc.one_line()
        assert "damaged" + suffix in exc.one_line()
        return
    assert batch.tensor.dtype == torch.float32 and batch.tensor.shape[0] >= 1
