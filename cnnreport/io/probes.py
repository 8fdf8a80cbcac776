"""Probe images and tensors -> one float32 batch, plus the names and thumbnails the page shows.

:func:`load_probes` reads folders (sorted, optionally recursive), glob patterns, image files
(PNG, JPEG, BMP, GIF first frame, TIFF, WebP via Pillow, EXIF orientation applied), ``.npy`` and
``.pt`` tensors, in-memory tensors and numpy arrays, and lists of any of those. Images are
scaled to ``[0, 1]``, converted to the channel count asked for, resized to one size and then,
only if asked, normalised with a mean and std. Float tensors pass through unchanged unless a
preprocessing option asks otherwise; integer and boolean tensors are scaled to floats by one
rule (:data:`INTEGER_SCALING_RULE`), and the batch's notes say what was done.

:func:`synthetic_probes` makes a deterministic noise input when there are no probes.
This module never runs the model; :func:`expected_input_channels` only reads its layers.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import glob as globlib
import math
import os
import re
import stat
import struct
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CnnReportError, OptionError, ProbeError
from ..support.hashing import file_sha256
from .archives import is_zip, zip_damage

__all__ = [
    "IMAGE_SUFFIXES",
    "INTEGER_SCALING_RULE",
    "LARGE_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS",
    "MEAN_STD_PRESETS",
    "ProbeBatch",
    "SUPPORTED_SUFFIXES",
    "TENSOR_SUFFIXES",
    "expected_input_channels",
    "expected_input_ndim",
    "load_probes",
    "normalisation",
    "synthetic_probes",
]

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
)
TENSOR_SUFFIXES: tuple[str, ...] = (".npy", ".pt", ".pth")
SUPPORTED_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + TENSOR_SUFFIXES

#: ``--mean`` presets: name -> (mean, std), or ``None`` for no normalisation.
MEAN_STD_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": None,
}

#: Most pixels (width x height) one probe image may have by default, read from its header
#: before anything is decoded (``max_image_pixels`` / ``--max-image-pixels`` raise it).
#: 2**28 = 16384x16384: a whole Sentinel-2 tile (10980x10980, 121 MP) or a large pathology
#: region still loads, and decoding one at the limit holds 0.8 GB (8-bit RGB) to 1.6 GB (16-bit
#: grayscale, made 32-bit for the box filter). Pillow's own guard (179 MP) would refuse such tiles.
MAX_IMAGE_PIXELS = 1 << 28
#: An image above this many pixels (2048x2048) is never held at full size as floats: it is
#: shrunk while it is decoded (JPEG DCT scaling, then a box filter to 4-8x the target size,
#: then the usual antialiased resize), and without ``--image-size`` it is refused rather than
#: made the model's input at full size. Every smaller image loads exactly as it always did.
#: 4 MP is above the inputs CNNs are usually run at (Cityscapes 2048x1024, detection
#: 1333x800); a 12 MP phone photo at full size would put gigabytes of activations in every
#: convolution.
LARGE_IMAGE_PIXELS = 1 << 22

# ITU-R 601-2 luma, the weights Pillow's RGB -> "L" conversion uses.
_LUMA = (0.299, 0.587, 0.114)
_RESIZE_MODES = ("crop", "stretch")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class ProbeBatch:
    """The model's input batch and what the report needs to show it."""

    inputs: tuple[torch.Tensor, ...]  # each (N, ...) float32; several only for multi-input models
    names: list[str]  # display names (file names, or "probe 0".. for tensors)
    # per probe: uint8 HxW (grey) or HxWx3 (RGB) before normalisation; (0, 0) when no 2-D view
    display: list[np.ndarray]
    sources: list[str] = field(default_factory=list)  # file paths ("" for tensors)
    sha256: list[str] = field(default_factory=list)  # per-file sha256 ("" for tensors)
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)  # what preprocessing did, in words

    @property
    def tensor(self) -> torch.Tensor:
        """The first (usually the only) input tensor."""
        return self.inputs[0]

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs else 0


# --------------------------------------------------------------------------------------------
# model helpers


def expected_input_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the model's first convolution (``named_modules`` order), else ``None``.

    Works for TorchScript modules too (scripted ones keep ``in_channels``; traced ones only
    their weight, whose second dimension is ``in_channels / groups``). Lazy convolutions that
    have not run yet give ``None``.
    """
    conv = _first_conv(model)
    if conv is None:
        return None
    module, _ = conv
    if isinstance(module, nn.modules.conv._ConvNd):
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            return None
        return int(module.in_channels)
    channels = getattr(module, "in_channels", None)
    if isinstance(channels, int):
        return channels
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 3:
        groups = getattr(module, "groups", 1)
        return int(weight.shape[1]) * (groups if isinstance(groups, int) else 1)
    return None


def image_channels(model: nn.Module) -> int | None:
    """The channel count images should be converted to, or None to leave them as they are.

    The first convolution is found in definition order, which is not always the order it runs
    in (a head defined before the stem): only a count an image can have (1, 3 or 4) is trusted;
    anything else leaves the images alone, and a real mismatch is then named by the forward
    pass, with the layer and the shapes.
    """
    channels = expected_input_channels(model)
    return channels if channels in (1, 3, 4) else None


def expected_input_ndim(model: nn.Module) -> int | None:
    """Dimensions of one sample the first convolution takes: 2 (Conv1d), 3 (Conv2d), 4 (Conv3d).

    Pass it as ``load_probes(..., sample_ndim=...)`` so a ``(N, C, L)`` tensor for a Conv1d
    model is read as a batch, not as one ``(C, H, W)`` image.
    """
    conv = _first_conv(model)
    return None if conv is None else conv[1] + 1


def _first_conv(model: nn.Module) -> tuple[nn.Module, int] | None:
    """The first convolution module and its spatial dimension count (1, 2 or 3)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module, len(module.kernel_size)
        # TorchScript modules are RecursiveScriptModule; their class name survives here.
        original = getattr(module, "original_name", "")
        match = re.fullmatch(r"(?:Lazy)?Conv(?:Transpose)?([123])d", str(original))
        if match:
            return module, int(match.group(1))
    return None


# --------------------------------------------------------------------------------------------
# synthetic input


def synthetic_probes(input_size: Sequence[int], *, seed: int = 0, count: int = 1) -> ProbeBatch:
    """A deterministic standard-normal batch of shape ``(count, *input_size)``, marked synthetic.

    Uses its own ``torch.Generator`` so the caller's global RNG state is untouched.
    """
    try:
        size = tuple(int(s) for s in input_size)
    except (TypeError, ValueError):
        raise OptionError(
            f"--input-size {input_size!r} must be whole numbers, e.g. 3 224 224"
        ) from None
    if not size or any(s <= 0 for s in size):
        raise OptionError(f"--input-size {' '.join(map(str, size)) or '()'} must be positive sizes, "
                          "e.g. 3 224 224")
    if count <= 0:
        raise OptionError(f"synthetic probe count must be positive, got {count}")
    generator = torch.Generator().manual_seed(int(seed))
    tensor = torch.randn((count, *size), generator=generator, dtype=torch.float32)
    shape = "(" + ", ".join(map(str, size)) + ")"
    return ProbeBatch(
        inputs=(tensor,),
        names=[f"synthetic {i}" for i in range(count)],
        display=[_tensor_view(tensor[i]) for i in range(count)],
        sources=[""] * count,
        sha256=[""] * count,
        synthetic=True,
        notes=[
            f"no probes given: synthetic standard-normal input of shape {shape} (seed {seed}); "
            "activations show the response to noise, not to real images"
        ],
    )


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class _Piece:
    """Some probes from one source, in source order, before they are joined into a batch."""

    tensor: torch.Tensor | None  # (n, ...) float32; None for an image not decoded yet
    names: list[str]
    sources: list[str]
    sha256: list[str]
    image: bool = False  # a file read by Pillow: values in [0, 1], resized and converted here
    raw_ndarray: bool = False  # came from numpy (channel-last layouts are recognised)


def _check_probe_options(
    image_size: Any, resize: str, max_probes: int | None, channels: int | None, max_image_pixels: int | None, mean: Any, std: Any
) -> tuple[tuple[int, int] | None, int, Any]:
    """:func:`load_probes`' options checked before any file is read: the target size, the pixel
    limit and the normalisation; :class:`OptionError` for a value that cannot work."""
    size = _check_size(image_size)
    if resize not in _RESIZE_MODES:
        raise OptionError(f"resize mode {resize!r} is not one of {', '.join(_RESIZE_MODES)}")
    if max_probes is not None and int(max_probes) <= 0:
        raise OptionError(f"--max-probes must be at least 1, got {max_probes}")
    if channels is not None and int(channels) <= 0:
        raise OptionError(f"channels must be at least 1, got {channels}")
    return size, _check_pixel_limit(max_image_pixels), _mean_std(mean, std)


def load_probes(
    source: Any,
    *,
    image_size: tuple[int, int] | Sequence[int] | None = None,
    resize: str = "crop",
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    channels: int | None = None,
    recursive: bool = False,
    max_probes: int | None = None,
    sample_ndim: int | None = None,
    max_image_pixels: int | None = None,
) -> ProbeBatch:
    """Read *source* into a :class:`ProbeBatch`.

    *source* is a tensor ``(C,H,W)``/``(N,C,H,W)`` (or any ``(N, ...)``), a numpy array, a
    tuple of tensors (a multi-input model), a folder, a glob pattern, an image file, a
    ``.npy``/``.pt`` file, or a list of any of those (probes are concatenated in list order;
    folders and globs are sorted naturally, ``img2`` before ``img10``).

    Images become ``[0, 1]`` floats; RGBA is composited on white; grayscale and RGB are
    converted to *channels* (or to RGB when they are mixed); all are resized to *image_size*
    ``(H, W)`` (``resize="crop"``: cover then centre-crop; ``"stretch"``: plain resize), or to
    the first image's size. *mean*/*std* (sequences, or a preset name of
    :data:`MEAN_STD_PRESETS`) normalise everything when given. *max_probes* keeps the first N.
    *sample_ndim* (see :func:`expected_input_ndim`) says how many dimensions one sample has,
    so a 3-D tensor can be told apart as a batch or as one image.

    Images are decoded one at a time and each is reduced to *image_size* before the next, so
    memory follows the target size, not the files'. An image with more than
    *max_image_pixels* pixels (default :data:`MAX_IMAGE_PIXELS`) is refused from its header,
    before it is decoded. Without *image_size*, a first image above
    :data:`LARGE_IMAGE_PIXELS` is refused, since it would be the model's input at full size:
    give *image_size* (its own size, to insist). ``.npy`` headers are checked against the file
    size, and zip-format ``.pt`` files against their CRC-32s, before anything is allocated.

    Raises :class:`ProbeError` for unreadable or missing probes and :class:`OptionError` for
    option values that cannot work.
    """
    size, pixel_limit, norm = _check_probe_options(image_size, resize, max_probes, channels, max_image_pixels, mean, std)
    notes: list[str] = []

    if isinstance(source, tuple) and source and all(_is_array(s) for s in source):
        return _multi_input(source, size, resize, norm, channels, max_probes, sample_ndim, notes)

    pieces: list[_Piece] = []
    _gather(source, pieces, recursive, notes, top=True)
    if not pieces:
        raise ProbeError("no probes given", hint="pass a folder, image files, a glob or a tensor")
    if norm is not None and any(p.image for p in pieces):
        _check_image_scale(norm)
    for piece in pieces:
        if not piece.image:
            piece.tensor = _batched(piece.tensor, sample_ndim, piece, notes)  # type: ignore[arg-type]
    # Cap before decoding, so a folder of 10,000 photos costs only the ones kept.
    pieces = _cap(pieces, max_probes, notes)
    _decode_images(pieces, size, resize, channels, notes, pixel_limit)
    _preprocess_tensors([p for p in pieces if not p.image], size, resize, channels, notes)

    batch = _join(pieces)
    display: list[np.ndarray] = []
    for piece in pieces:
        assert piece.tensor is not None
        for row in piece.tensor:
            display.append(_image_view(row) if piece.image else _tensor_view(row, notes))
    if norm is not None:
        batch = _normalise(batch, norm, notes)
    names = _unique_names([_printable(n) for p in pieces for n in p.names], [_printable(s) for p in pieces for s in p.sources])
    return ProbeBatch(
        inputs=(batch,),
        names=names,
        display=display,
        sources=[_printable(s) for p in pieces for s in p.sources],
        sha256=[h for p in pieces for h in p.sha256],
        notes=_dedupe(notes),
    )


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (torch.Tensor, np.ndarray))


def _check_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        values = [int(v) for v in image_size]
    except (TypeError, ValueError):
        raise OptionError(f"--image-size {image_size!r} must be two whole numbers H W") from None
    if len(values) == 1:
        values = values * 2  # one number means a square
    if len(values) != 2 or min(values) <= 0:
        raise OptionError(
            f"--image-size {' '.join(map(str, values))} must be two positive numbers H W"
        )
    return values[0], values[1]


def normalisation(
    mean: Sequence[float] | str | None, std: Sequence[float] | str | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` as :func:`load_probes` will apply them, or ``None``; a one-line
    :class:`OptionError` naming ``--mean`` or ``--std`` for values that cannot work. Call it
    early to refuse a bad value before any slow work."""
    return _mean_std(mean, std)


def _check_pixel_limit(value: Any) -> int:
    if value is None:
        return MAX_IMAGE_PIXELS
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise OptionError(f"--max-image-pixels must be a whole number of pixels, at least 1, got {value!r}")
    return int(value)


def _mean_std(
    mean: Sequence[float] | str | None, std: Sequence[float] | str | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Resolve presets and defaults to ``(mean, std)`` tuples, or ``None`` for no normalisation.

    A preset is a ``--mean`` value and sets both mean and std (``--std`` may repeat it); a std
    preset alone, a numeric std beside a preset, or ``--std`` with ``--mean none`` is refused,
    as each would do something other than what it says. Means must be finite; stds finite and
    positive. Each message names the option at fault.
    """
    if isinstance(std, str):
        key = std.strip().lower()
        if not (isinstance(mean, str) and mean.strip().lower() == key):
            if key in MEAN_STD_PRESETS:
                raise OptionError(
                    f"--std {std!r}: presets are given with --mean (--mean {key} sets both the "
                    "mean and the std); or give --std as numbers"
                )
            raise OptionError(f"--std {std!r} must be numbers, e.g. 0.229,0.224,0.225")
    if isinstance(mean, str):
        key = mean.strip().lower()
        if key not in MEAN_STD_PRESETS:
            raise OptionError(
                f"--mean {mean!r} is not a preset ({', '.join(MEAN_STD_PRESETS)}) or numbers"
            )
        if std is not None and not isinstance(std, str):
            if MEAN_STD_PRESETS[key] is None:
                raise OptionError(
                    f"--std has no effect with --mean {key}, which turns normalisation off; "
                    "leave out --std, or give --mean as numbers"
                )
            raise OptionError(
                f"give --std as numbers only with numeric --mean (not with preset {key!r}, "
                "which sets the std too)"
            )
        return MEAN_STD_PRESETS[key]
    if mean is None and std is None:
        return None
    mean_t = _numbers(mean, "--mean", [0.0])
    std_t = _numbers(std, "--std", [1.0])
    bad_mean = [m for m in mean_t if not math.isfinite(m)]
    if bad_mean:
        raise OptionError(f"--mean {_listed(mean_t)} must be finite numbers (got {_listed(bad_mean)})")
    bad_std = [s for s in std_t if not (math.isfinite(s) and s > 0)]
    if bad_std:
        raise OptionError(
            f"--std {_listed(std_t)} must be finite numbers above 0 (got {_listed(bad_std)}); "
            "a probe is divided by it"
        )
    # The division runs in float32: a std below its smallest normal number is 0 there, or
    # its reciprocal overflows, and every probe value would become Inf or NaN.
    tiny = float(np.finfo(np.float32).tiny)
    too_small = [s for s in std_t if s < tiny]
    if too_small:
        raise OptionError(f"--std {_listed(std_t)}: {_listed(too_small)} is below float32's smallest normal number ({tiny:.3g}), where the probes are divided; give a larger std")
    huge = float(np.finfo(np.float32).max)
    too_big = [m for m in mean_t if abs(m) > huge] + [s for s in std_t if s > huge]
    if too_big:
        raise OptionError(f"--mean/--std value {_listed(too_big)} is beyond float32's range ({huge:.3g}), where the probes are normalised")
    return mean_t, std_t


def _numbers(values: Any, option: str, default: list[float]) -> tuple[float, ...]:
    """*values* as a tuple of floats; a bare number counts as one value."""
    if values is None:
        return tuple(default)
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise OptionError(f"{option} {values!r} must be numbers, e.g. 0.5,0.5,0.5") from None
    if not numbers:
        raise OptionError(f"{option} needs at least one value")
    return numbers


def _listed(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _check_image_scale(norm: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    """Refuse a mean or std on the 0..255 scale: images are read as values in [0, 1], whose
    mean lies in [0, 1] and whose std is at most 0.5, so a value above 1 would wash every
    probe out to nearly one colour instead of normalising it."""
    for option, values in (("--mean", norm[0]), ("--std", norm[1])):
        if max(values) > 1:
            scaled = ",".join(f"{v / 255:.4g}" for v in values)
            raise OptionError(
                f"{option} {_listed(values)} is on the 0..255 scale, but probe images are read as "
                f"values in [0, 1]: give {option} {scaled} (each divided by 255)"
            )


# -- gathering sources ------------------------------------------------------------------------


def _gather(source: Any, pieces: list[_Piece], recursive: bool, notes: list[str], top: bool) -> None:
    if isinstance(source, (torch.Tensor, np.ndarray)):
        pieces.append(_array_piece(source, "", ""))
        return
    if isinstance(source, (list, tuple)):
        if not source and top:
            raise ProbeError("the list of probes is empty")
        for item in source:
            _gather(item, pieces, recursive, notes, top=False)
        return
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = os.path.expanduser(text)
        if os.path.isdir(path):
            files = _folder_files(text, path, recursive, notes)
        elif os.path.isfile(path):
            _check_suffix(text)
            files = [path]
        elif os.path.lexists(path):
            _check_suffix(text)
            _check_probe_file(path)  # a dangling link, a link loop, a device or a FIFO
            files = [path]
        elif _GLOB_CHARS.search(text):
            files = _glob_files(text, path, notes)
        else:
            raise ProbeError(f"probe file not found: {text}")
        for file in files:
            pieces.append(_file_piece(file))
        return
    raise ProbeError(
        f"probes of type {type(source).__name__} are not understood",
        hint="pass a tensor, a numpy array, a folder, image files or a glob pattern",
    )


def _supported_text() -> str:
    return ", ".join(SUPPORTED_SUFFIXES)


def _check_suffix(path: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        shown = f"'{suffix}'" if suffix else "without a suffix"
        raise ProbeError(
            f"unsupported probe file type {shown}: {path}", hint=f"supported: {_supported_text()}"
        )


def _natural_key(text: str) -> list[Any]:
    """Sort key that puts ``img2`` before ``img10``; ties broken by the plain string."""
    parts = re.split(r"(\d+)", text)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts] + [(2, 0, text)]


def _folder_files(shown: str, folder: str, recursive: bool, notes: list[str]) -> list[str]:
    supported: list[str] = []
    unsupported: list[str] = []
    subfolders = 0

    def unreadable(exc: OSError) -> None:
        # os.walk skips folders it cannot list; a probe set missing a folder is not the one asked for
        where = exc.filename if isinstance(exc.filename, str) else folder
        what = f"probe folder {shown}" if os.path.abspath(where) == os.path.abspath(folder) else (
            f"folder {os.path.relpath(where, folder)} in probe folder {shown}")
        raise ProbeError(f"{what} cannot be read: {exc.strerror or exc}")

    # Links to folders are listed, not followed (os.walk's default), so a link loop ends here.
    for root, dirs, files in os.walk(folder, onerror=unreadable):
        # hidden folders (.git, .ipynb_checkpoints) are never probe data
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if not recursive:
            subfolders = len(dirs)
            dirs[:] = []
        for name in files:
            if name.startswith("."):  # .DS_Store and friends
                continue
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder)
            (supported if Path(name).suffix.lower() in SUPPORTED_SUFFIXES else unsupported).append(rel)
    if not supported:
        if unsupported:
            raise ProbeError(
                f"probe folder {shown} holds no supported files "
                f"({len(unsupported)} of other types, e.g. {sorted(unsupported)[0]})",
                hint=f"supported: {_supported_text()}",
            )
        hint = f"pass --recursive to read its {subfolders} subfolder(s)" if subfolders else None
        raise ProbeError(f"probe folder {shown} holds no images", hint=hint)
    if unsupported:
        unsupported.sort(key=_natural_key)
        notes.append(
            f"skipped {len(unsupported)} file(s) of unsupported type in {shown} "
            f"({', '.join(unsupported[:3])}{', ...' if len(unsupported) > 3 else ''})"
        )
    supported.sort(key=lambda rel: _natural_key(rel.replace(os.sep, "/")))
    return [os.path.join(folder, rel) for rel in supported]


def _glob_files(shown: str, pattern: str, notes: list[str]) -> list[str]:
    # Anything but a folder: a dangling link that matches is named by _check_probe_file, not dropped.
    matches = [m for m in globlib.glob(pattern, recursive=True) if not os.path.isdir(m)]
    if not matches:
        raise ProbeError(f"probe pattern {shown!r} matches no files")
    supported = [m for m in matches if Path(m).suffix.lower() in SUPPORTED_SUFFIXES]
    if not supported:
        raise ProbeError(
            f"probe pattern {shown!r} matches only unsupported file types "
            f"(e.g. {sorted(matches)[0]})",
            hint=f"supported: {_supported_text()}",
        )
    skipped = len(matches) - len(supported)
    if skipped:
        notes.append(f"skipped {skipped} file(s) of unsupported type matched by {shown!r}")
    return sorted(supported, key=_natural_key)


def _check_probe_file(path: str) -> os.stat_result:
    """Stat *path*, following links; a link that leads nowhere, a loop, a folder, a device or
    a FIFO (reading one would block or never end) is a one-line :class:`ProbeError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ProbeError(
                f"probe file {path} is a symbolic link to {_link_target(path)}, which does not exist"
            ) from None
        raise ProbeError(f"probe file not found: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ProbeError(f"probe file {path} is a symbolic link loop ({exc.strerror})") from None
        raise ProbeError(f"cannot read probe file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "folder" if stat.S_ISDIR(info.st_mode) else _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "special file")
        raise ProbeError(f"probe file {path} is a {kind}, not a regular file")
    return info


_FILE_KINDS = {stat.S_IFIFO: "FIFO (named pipe)", stat.S_IFCHR: "character device",
               stat.S_IFBLK: "block device", stat.S_IFSOCK: "socket"}


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "a missing file"


def _file_piece(path: str) -> _Piece:
    name = os.path.basename(path)
    suffix = Path(path).suffix.lower()
    info = _check_probe_file(path)
    if info.st_size == 0:
        kind = "image" if suffix in IMAGE_SUFFIXES else "file"
        raise ProbeError(f"probe {kind} {path} is empty (0 bytes)")
    try:
        sha = file_sha256(path)
    except OSError as exc:  # permission denied, an I/O error of the disk
        raise ProbeError(f"cannot read probe file {path}: {exc.strerror or exc}") from None
    if suffix in IMAGE_SUFFIXES:
        return _Piece(tensor=None, names=[name], sources=[path], sha256=[sha], image=True)
    if suffix == ".npy":
        return _array_piece(_read_npy(path, info.st_size), path, sha)
    if is_zip(path):
        try:
            damage = zip_damage(path)
        except OSError as exc:
            raise ProbeError(f"cannot read probe file {path}: {exc.strerror or exc}") from None
        if damage:
            raise ProbeError(f"probe file {path} is corrupted: {damage}")
    try:
        obj = _torch_load_probe(path)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        # Only a GLOBAL the unpickler refused means objects; garbage bytes fail the same way.
        if "Weights only load failed" in str(exc) and "GLOBAL " in str(exc):
            # Probes never need Python objects, so there is no "trust" switch here.
            raise ProbeError(
                f"probe file {path} holds Python objects beyond tensors; "
                "save probes with torch.save(tensor, path)"
            ) from None
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].strip()
        line = text.splitlines()[0] if text else ""
        raise ProbeError(
            f"cannot read probe file {path}: {type(exc).__name__}: {line[:200]} "
            "(not a tensor saved with torch.save, or corrupted)"
        ) from exc
    if isinstance(obj, np.ndarray):
        return _array_piece(obj, path, sha)
    if not isinstance(obj, torch.Tensor):
        raise ProbeError(
            f"probe file {path} holds a value of type {type(obj).__name__}, "
            "not a tensor (C,H,W) or (N,C,H,W)"
        )
    return _array_piece(obj, path, sha)


def _read_npy(path: str, file_size: int) -> np.ndarray:
    """Read a ``.npy`` file, checking first that its header's shape and dtype fit in the file,
    so a header declaring a terabyte is an error, not an allocation."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                shape, dtype = _npy_v3_header(handle)
            data_start = handle.tell()
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"shape {shape!r} is not whole sizes")
    except OSError as exc:
        raise ProbeError(f"cannot read probe file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise ProbeError(f"cannot read probe file {path}: not a .npy file, or a damaged header ({exc})") from None
    if dtype.hasobject:
        raise ProbeError(f"probe file {path} holds Python objects, not a numeric array")
    needed = math.prod(shape) * dtype.itemsize
    held = file_size - data_start
    if needed > held:
        raise ProbeError(
            f"probe file {path} declares an array of shape {tuple(shape)} {dtype} "
            f"({_bytes_text(needed)}) but holds only {_bytes_text(held)} of data (truncated or damaged)"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ProbeError(f"probe file {path} holds Python objects, not a numeric array") from None
        raise ProbeError(f"cannot read probe file {path}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise ProbeError(f"cannot read probe file {path}: {exc}") from exc
    except MemoryError:
        raise ProbeError(f"probe file {path} is too large to load into memory") from None
    except Exception as exc:  # a damaged version-3 header: the tokenizer's errors
        raise ProbeError(f"cannot read probe file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(array, np.ndarray):
        kind = type(array).__name__
        raise ProbeError(f"probe file {path} holds a value of type {kind}, not an array")
    return array


def _npy_v3_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a version 3.0 ``.npy`` header (2.0's layout, UTF-8 text), which
    numpy reads only privately."""
    (length,) = struct.unpack("<I", handle.read(4))
    if length > 100_000:  # numpy's own reader stops at 10,000 bytes
        raise ValueError(f"a header of {length:,} bytes")
    header = ast.literal_eval(handle.read(length).decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(header.get("shape"), tuple):
        raise ValueError("the header is not a dict with a shape")
    return header["shape"], np.lib.format.descr_to_dtype(header["descr"])


def _bytes_text(count: int) -> str:
    """Exact below 10 MB, where a rounded size could hide the few bytes that are missing."""
    if count < 10_000_000:
        return f"{count:,} bytes"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:,} bytes"


def _torch_load_probe(path: str) -> Any:
    """``torch.load`` with ``weights_only``; memory-mapped when the file is a zip (torch's
    format since 1.6), so a tensor file is not copied into memory before it is used."""
    if is_zip(path):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def _array_piece(array: Any, path: str, sha: str) -> _Piece:
    raw = isinstance(array, np.ndarray)
    if raw:
        where = path or "(in memory)"
        if array.dtype.kind not in "biuf":
            raise ProbeError(f"probe array {where} has dtype {array.dtype}, not numbers")
        if array.ndim == 0:  # np.ascontiguousarray would make it 1-D and hide that it is one number
            raise ProbeError(f"probe array {where} is a single number, not a probe (C,H,W) or a batch (N,C,H,W)")
        if not array.dtype.isnative:  # big-endian files: torch reads native byte order only (lossless)
            array = array.astype(array.dtype.newbyteorder("="))
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    else:
        tensor = array.detach()
        label = path or "probe tensor"
        if tensor.is_complex():
            raise ProbeError(f"{label}: probe tensors must be real numbers, not complex")
        if tensor.is_quantized or tensor.is_meta:
            raise ProbeError(f"{label} is a {'quantized' if tensor.is_quantized else 'meta'} tensor; save the probe values as a plain float or integer tensor")
        if tensor.layout != torch.strided:  # sparse: the same numbers, laid out densely (lossless)
            tensor = tensor.to_dense()
    names, sources, hashes = ([os.path.basename(path)], [path], [sha]) if path else ([], [], [])
    return _Piece(tensor=tensor.cpu(), names=names, sources=sources, sha256=hashes, raw_ndarray=raw)


def _batched(
    tensor: torch.Tensor, sample_ndim: int | None, piece: _Piece, notes: list[str],
    *, scale: bool = True,
) -> torch.Tensor:
    """Give *tensor* its batch dimension, make it float32 and name its probes.

    ``scale=False`` (a multi-input model's inputs after the first, which may be indices or
    metadata rather than pixels): integers are cast, not scaled, except uint8 as before.
    """
    label = piece.sources[0] if piece.sources else "probe tensor"
    if tensor.dim() == 0:
        raise ProbeError(f"{label} is a scalar, not a probe tensor (C,H,W) or (N,C,H,W)")
    if piece.raw_ndarray:
        tensor = _channels_first(tensor, label, notes)
    if sample_ndim is not None:
        if tensor.dim() == sample_ndim:
            tensor = tensor.unsqueeze(0)
        elif tensor.dim() > sample_ndim + 1:  # fewer dims may be reshaped by the model itself
            want = "(C,H,W)" if sample_ndim == 3 else f"{sample_ndim}-D"
            raise ProbeError(f"{label} has shape {tuple(tensor.shape)}: the model takes one probe {want} or a batch of them ({sample_ndim + 1}-D)")
    elif tensor.dim() in (1, 3):
        # (C,H,W) is one image; (F,) one feature vector; 2-D and 4-D+ carry a batch dimension
        tensor = tensor.unsqueeze(0)
    if scale or tensor.dtype == torch.uint8:
        tensor = _to_float32(tensor, label, notes)
    else:
        tensor = tensor.float()
    count = int(tensor.shape[0])
    if count == 0:
        raise ProbeError(f"{label} holds no probes (its first dimension is 0)")
    if piece.sources:
        base = piece.names[0]
        piece.names = [base] if count == 1 else [f"{base}[{i}]" for i in range(count)]
        piece.sources = piece.sources * count
        piece.sha256 = piece.sha256 * count
    else:
        piece.names = [""] * count  # numbered after joining, by position in the batch
        piece.sources = [""] * count
        piece.sha256 = [""] * count
    return tensor.contiguous()


#: Integer probes the report scales, and how: one rule for every integer dtype.
INTEGER_SCALING_RULE = (
    "bool -> 0/1; uint8 -> /255; uint16 -> /65535; other integers: values in 0..255 are 8-bit "
    "(/255), in 0..65535 16-bit (/65535), int8/int16 with negative values full-scale signed "
    "(/128, /32768, to [-1, 1)); anything else is converted to float32 unscaled"
)

_UINT16 = getattr(torch, "uint16", None)  # a dtype of its own since torch 2.3


def _to_float32(tensor: torch.Tensor, label: str, notes: list[str]) -> torch.Tensor:
    """*tensor* as float32, with a note whenever that is more than a lossless cast.

    Integer tensors are pixel or sample values in some fixed-point range, and a model trained
    on floats expects them scaled; each integer dtype follows :data:`INTEGER_SCALING_RULE`,
    judged on its dtype and then on its values, and the note says which range was assumed.
    float64 is rounded to float32 (the precision the report computes in) and says so.
    """
    dtype = tensor.dtype
    name = str(dtype).replace("torch.", "")
    if dtype == torch.float32:
        return tensor
    if dtype.is_floating_point:
        if torch.finfo(dtype).bits > 32:
            notes.append(f"rounded the {name} values of {label} to float32")
        return tensor.float()
    if dtype == torch.bool:
        notes.append(f"read the boolean values of {label} as 0.0 and 1.0")
        return tensor.float()
    if tensor.numel() == 0:
        return tensor.float()
    # float64 holds every integer up to 2^53 exactly, and unsigned dtypes (uint16, uint32)
    # lack min/max of their own
    values = tensor.to(torch.float64)
    low, high = int(values.min()), int(values.max())
    span = f"values {low}..{high}"
    if dtype == torch.uint8:
        divisor, what = 255, "8-bit"
    elif dtype == _UINT16:
        divisor, what = 65535, "16-bit"
    elif low >= 0 and high <= 255:
        divisor, what = 255, "8-bit"
    elif low >= 0 and high <= 65535:
        divisor, what = 65535, "16-bit"
    elif dtype in (torch.int8, torch.int16):
        divisor = 128 if dtype == torch.int8 else 32768
        notes.append(
            f"scaled the {name} values of {label} ({span}) as full-scale signed samples: "
            f"divided by {divisor}, to [-1, 1)"
        )
        return values.div(divisor).float()
    else:
        notes.append(
            f"fed the {name} values of {label} ({span}) unscaled as float32: they fit no 8- or "
            "16-bit range, so no scale could be assumed"
            + (" (values beyond 2^24 lose precision)" if max(abs(low), abs(high)) > 2**24 else "")
        )
        return values.float()
    if dtype == torch.uint8:
        notes.append(f"scaled uint8 values of {label} to [0, 1] (divided by 255)")
    else:
        notes.append(
            f"scaled the {name} values of {label} ({span}) to [0, 1] as {what} values "
            f"(divided by {divisor})"
        )
    return values.div(divisor).float()


def _channels_first(tensor: torch.Tensor, label: str, notes: list[str]) -> torch.Tensor:
    """numpy images are usually H×W×C; move C first when the layout says so unambiguously."""
    if tensor.dim() in (3, 4):
        last, first = int(tensor.shape[-1]), int(tensor.shape[-3])
        if last in (1, 3, 4) and first not in (1, 3, 4):
            n = tensor.dim()
            dims = tuple(range(n - 3)) + (n - 1, n - 3, n - 2)
            notes.append(
                f"read {label} of shape {tuple(tensor.shape)} as channels-last and moved channels first"
            )
            return tensor.permute(*dims).contiguous()
    return tensor


def _cap(pieces: list[_Piece], max_probes: int | None, notes: list[str]) -> list[_Piece]:
    """Keep the first *max_probes* probes (tensor pieces are already batched)."""
    counts = [1 if p.image else len(p.names) for p in pieces]
    total = sum(counts)
    if max_probes is None or total <= max_probes:
        return pieces
    kept: list[_Piece] = []
    left = int(max_probes)
    for piece, count in zip(pieces, counts):
        if left <= 0:
            break
        if count > left:
            assert piece.tensor is not None
            piece.tensor = piece.tensor[:left]
            piece.names, piece.sources, piece.sha256 = (
                piece.names[:left], piece.sources[:left], piece.sha256[:left])
        kept.append(piece)
        left -= min(count, left)
    notes.append(f"kept the first {max_probes} of {total} probes (max_probes={max_probes})")
    return kept


# -- images ----------------------------------------------------------------------------------


def _decode_images(
    pieces: list[_Piece],
    size: tuple[int, int] | None,
    resize: str,
    channels: int | None,
    notes: list[str],
    pixel_limit: int = MAX_IMAGE_PIXELS,
) -> None:
    """Decode the image pieces one at a time, each made its final size before the next, so
    memory holds one full-size decode at most (and none above :data:`LARGE_IMAGE_PIXELS`)."""
    images = [p for p in pieces if p.image]
    if not images:
        return
    # Headers first: every limit is checked, and the channel count chosen, before any decode.
    headers = [_read_header(p.sources[0], pixel_limit) for p in images]
    if size is None and headers[0].pixels > LARGE_IMAGE_PIXELS:
        first = headers[0]
        height, width = first.oriented
        raise ProbeError(
            f"probe image {first.path} is {height}×{width} ({first.pixels / 1e6:.1f} megapixels): "
            "without --image-size it would be the model's input at full size",
            hint=f"give --image-size H W to resize the probes (e.g. --image-size 224 224), "
            f"or --image-size {height} {width} to use it as it is",
        )

    # Channels: what the caller asked for, else RGB when any image is colour, else grayscale.
    target = channels if channels is not None else (3 if any(h.colour == 3 for h in headers) else 1)
    if target not in (1, 3, 4):
        raise ProbeError(
            f"the model takes {target} input channels, but images give 1 (grayscale) or 3 (RGB)",
            hint="pass the probes as .npy or .pt tensors with the right channel count",
        )
    counts = {"alpha": 0, "grey_to_rgb": 0, "rgb_to_grey": 0}
    goal = size
    changed = shrunk = 0
    for piece, header in zip(images, headers):
        colour, array, was_shrunk = _read_image(header, notes, goal, resize, pixel_limit)
        shrunk += was_shrunk
        array = _to_target_channels(colour, array, target, counts)
        if goal is None:
            goal = (int(array.shape[0]), int(array.shape[1]))  # the first image's size
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
        del array
        if tuple(tensor.shape[1:]) != goal:
            tensor = _resize(tensor.unsqueeze(0), goal, resize)[0].clamp_(0.0, 1.0)
            changed += 1
        piece.tensor = tensor.unsqueeze(0)
    if counts["alpha"]:
        notes.append(f"dropped the alpha channel of {counts['alpha']} image(s) (composited on white)")
    if counts["grey_to_rgb"]:
        why = "" if channels is not None else " to match the colour ones"
        notes.append(f"converted {counts['grey_to_rgb']} grayscale image(s) to 3 channels{why}")
    if counts["rgb_to_grey"]:
        notes.append(f"converted {counts['rgb_to_grey']} RGB image(s) to grayscale (luminance)")
    if changed:
        assert goal is not None
        height, width = goal
        if size is None:
            notes.append(
                f"probe images have different sizes; resized {changed} to {height}×{width}, "
                f"the first image's size ({_describe_resize(goal, resize)})"
            )
        else:
            notes.append(f"{_describe_resize(goal, resize)} ({changed} image(s))")
    if shrunk:
        notes.append(
            f"shrank {shrunk} image(s) of over {LARGE_IMAGE_PIXELS / 1e6:.1f} megapixels while decoding, "
            f"to at least {_SHRINK_MARGIN}x the target size, before the resize"
        )


def _to_target_channels(colour: int, array: np.ndarray, target: int, counts: dict[str, int]) -> np.ndarray:
    """H×W×(colour [+ alpha]) floats -> H×W×target: alpha composited on white (kept for 4
    channels), grayscale repeated or RGB turned to luminance."""
    rgb, alpha = array[..., :colour], array[..., colour:]
    if target == 4:
        rgb = np.repeat(rgb, 3, axis=2) if colour == 1 else rgb
        alpha = alpha if alpha.size else np.ones(rgb.shape[:2] + (1,), np.float32)
        return np.concatenate([rgb, alpha], axis=2)
    if alpha.size:
        # Composite on white: what a browser or viewer shows for a transparent PNG.
        rgb = rgb * alpha + (1.0 - alpha)
        counts["alpha"] += 1
    if target == 3 and colour == 1:
        rgb = np.repeat(rgb, 3, axis=2)
        counts["grey_to_rgb"] += 1
    elif target == 1 and colour == 3:
        rgb = (rgb @ np.asarray(_LUMA, np.float32))[..., None]
        counts["rgb_to_grey"] += 1
    return rgb


def _describe_resize(goal: tuple[int, int], resize: str) -> str:
    height, width = goal
    if resize == "stretch":
        return f"resized to {height}×{width} without keeping the aspect ratio"
    if height == width:
        return f"resized shorter side to {height} and centre-cropped to {height}×{width}"
    return f"resized to cover {height}×{width} and centre-cropped"


def _resize(batch: torch.Tensor, goal: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize an ``(N, C, H, W)`` float batch: ``crop`` covers *goal* then centre-crops."""
    height, width = goal
    h, w = int(batch.shape[-2]), int(batch.shape[-1])
    if mode == "stretch":
        return _interpolate(batch, (height, width))
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    resized = _interpolate(batch, (new_h, new_w)) if (new_h, new_w) != (h, w) else batch
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[..., top : top + height, left : left + width]


def _interpolate(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Bilinear with antialias, as torchvision's Resize does: no aliasing when shrinking photos.
    return F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)


@dataclass(frozen=True)
class _ImageHeader:
    """What an image file's header says, read without decoding its pixels."""

    path: str
    width: int  # as stored, before the EXIF orientation
    height: int
    colour: int  # 1 (grayscale) or 3 (colour), as _to_float will give it
    orientation: int = 1  # the EXIF tag when the header holds it (a PNG's may follow the pixels)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def oriented(self) -> tuple[int, int]:
        """(H, W) as the image is shown, after its EXIF orientation."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width


_GREY_MODES = ("1", "L", "LA", "La", "I", "F")

# Pillow's decompression-bomb guard is a module global: this module sets it, one thread at a
# time, for as long as it works on one file, and puts it back after.
_PILLOW_GUARD = threading.Lock()


@contextlib.contextmanager
def _decoder_errors(path: str) -> Any:
    """Pillow's failures of every kind, on a damaged or hostile file, as one-line :class:`ProbeError`\\ s."""
    from PIL import Image, UnidentifiedImageError  # lazy: tensor probes never need Pillow

    try:
        yield
    except CnnReportError:
        raise
    except Image.DecompressionBombError as exc:  # a frame or tile larger than the header said
        raise ProbeError(
            f"cannot read probe image {path}: {exc}", hint="raise the limit with --max-image-pixels N"
        ) from None
    except UnidentifiedImageError:
        raise ProbeError(f"cannot read probe image {path}: not an image Pillow recognises") from None
    except MemoryError:
        raise ProbeError(f"cannot read probe image {path}: not enough memory to decode it") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ProbeError(f"cannot read probe image {path}: {exc}") from exc
    except Exception as exc:  # malformed files make decoders raise struct.error, IndexError, ...
        raise ProbeError(f"cannot read probe image {path}: {type(exc).__name__}: {exc} (a damaged file?)") from exc


@contextlib.contextmanager
def _opened_image(path: str, pixel_limit: int | None = None) -> Any:
    """``Image.open`` under this module's pixel limit instead of Pillow's 179 MP.

    With no *pixel_limit* (reading a header, whose size the caller compares with
    ``--max-image-pixels`` itself) Pillow's guard is off; with one, Pillow refuses any frame
    or tile it meets while decoding (GIF frames, TIFF tiles) above that limit.
    """
    from PIL import Image  # lazy: tensor probes never need Pillow

    with _decoder_errors(path), _PILLOW_GUARD, warnings.catch_warnings():
        # Pillow warns at half its error size; the limit is ours, and a warning is no answer.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if pixel_limit is None else -(-pixel_limit // 2)  # errors above 2x
        try:
            with Image.open(path) as opened:
                yield opened
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _read_header(path: str, pixel_limit: int) -> _ImageHeader:
    """Open *path* for its size and mode only, and refuse it when it has too many pixels."""
    with _opened_image(path) as opened:
        width, height = (int(v) for v in opened.size)
        mode = opened.mode
        # getexif() of a PNG without the tag in its header decodes the pixels: only when it is there
        orientation = opened.getexif().get(0x0112, 1) if "exif" in opened.info else 1
    if width * height > pixel_limit:
        raise ProbeError(
            f"probe image {path} is {width}×{height} ({width * height / 1e6:.1f} megapixels), "
            f"more than the limit of {pixel_limit:,} pixels",
            hint=f"raise it with --max-image-pixels {width * height} if the image is meant to be this large",
        )
    grey = mode in _GREY_MODES or mode.startswith("I;16")
    return _ImageHeader(path, width, height, 1 if grey else 3, orientation if isinstance(orientation, int) else 1)


# EXIF orientation -> the transpose that shows the image upright (what ImageOps.exif_transpose does)
_ORIENTATIONS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                 6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def _read_image(
    header: _ImageHeader,
    notes: list[str],
    goal: tuple[int, int] | None = None,
    resize: str = "crop",
    pixel_limit: int = MAX_IMAGE_PIXELS,
) -> tuple[int, np.ndarray, bool]:
    """Decode one image to ``(colour_channels, H×W×(colour[+alpha]) float32 in [0, 1], shrunk)``.

    An image above :data:`LARGE_IMAGE_PIXELS` headed for a known *goal* size is shrunk while
    it is decoded (``shrunk`` is then true): JPEG's DCT scaling, then Pillow's box filter
    (``Image.reduce``) on the 8-bit pixels, each keeping at least :data:`_SHRINK_MARGIN` times what the final
    antialiased resize needs, so only the reduced image ever becomes floats.
    """
    from PIL import Image  # lazy: tensor probes never need Pillow

    path = header.path
    with _opened_image(path, pixel_limit) as opened:
        frames = int(getattr(opened, "n_frames", 1) or 1)
        opened.seek(0)
        orientation = opened.getexif().get(0x0112, 1)
        swapped = orientation in (5, 6, 7, 8)
        need = None
        if goal is not None and header.pixels > LARGE_IMAGE_PIXELS:
            shown = (header.width, header.height) if swapped else (header.height, header.width)
            need_h, need_w = _cover_size(shown, goal, resize)
            need = (need_w, need_h) if swapped else (need_h, need_w)  # as stored: (H, W)
        if need is not None and opened.format == "JPEG":
            # DCT scaling by 1/2 .. 1/8, to no less than the margin asks
            opened.draft(opened.mode, (_SHRINK_MARGIN * need[1], _SHRINK_MARGIN * need[0]))
        opened.load()
        shrunk = opened.size != (header.width, header.height)
        image = opened
        if need is not None:
            image, reduced = _box_reduce(opened, need)
            shrunk = shrunk or reduced
        method = _ORIENTATIONS.get(orientation)
        if method is not None:
            image = image.transpose(getattr(Image.Transpose, method))
        if image is not opened:
            opened.close()  # frees the full-size decode before the floats are made
        colour, array = _to_float(image, path, notes)
    name = os.path.basename(path)
    if frames > 1:
        notes.append(f"used the first of {frames} frames of {name}")
    if orientation not in (1, None):
        notes.append(f"applied the EXIF orientation of {name}")
    return colour, array, shrunk


def _cover_size(shown: tuple[int, int], goal: tuple[int, int], resize: str) -> tuple[int, int]:
    """The (H, W) :func:`_resize` scales a *shown*-sized image to before cropping to *goal*."""
    height, width = goal
    h, w = shown
    if resize == "stretch":
        return height, width
    scale = max(height / h, width / w)
    return max(height, round(h * scale)), max(width, round(w * scale))


#: A large image is shrunk in Pillow to no less than this many times the size the final
#: antialiased resize makes: against that resize at full size, a real photo then differs by
#: 0.4/255 on average (2x: 1.5/255), and the floats held stay small (a 224 target: <40 MB).
_SHRINK_MARGIN = 4


def _box_reduce(image: Any, need: tuple[int, int]) -> tuple[Any, bool]:
    """Shrink a decoded image by a whole factor with Pillow's box filter, to no less than
    :data:`_SHRINK_MARGIN` times *need* (H, W) on either side; modes the filter cannot
    average are converted first. The box is centred on whole multiples of the factor (the
    few pixels left over are trimmed evenly), so no edge pixel is a partial average."""
    width, height = image.size
    factor = min(width // (_SHRINK_MARGIN * need[1]), height // (_SHRINK_MARGIN * need[0]))
    if factor < 2:
        return image, False
    mode = image.mode
    if mode == "1":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode.startswith("I;16"):
        image = image.convert("I")
    elif mode not in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV: averaged in RGB, as shown
    left, top = (width % factor) // 2, (height % factor) // 2
    box = (left, top, left + width // factor * factor, top + height // factor * factor)
    return image.reduce(factor, box=box), True


#: The note a 16-bit image gets: its values are divided by their full range.
SIXTEEN_BIT_NOTE = "read 16-bit grayscale image(s) as values in [0, 1] by dividing by 65535, their full range"


def _to_float(image: Any, path: str, notes: list[str]) -> tuple[int, np.ndarray]:
    """Pillow image -> (colour channels, H×W×C float32 in [0, 1]), alpha last when present."""
    mode = image.mode
    name = os.path.basename(path)
    if mode.startswith("I;16"):
        # 16-bit grayscale PNG/TIFF: full range is 0..65535, not 0..255
        array = np.asarray(image).astype(np.float32) / 65535.0
        notes.append(SIXTEEN_BIT_NOTE)
        return 1, array[..., None]
    if mode in ("I", "F"):
        array = np.asarray(image).astype(np.float32)
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if mode == "I" and low >= 0 and high <= 65535:
            array = array / 65535.0  # Pillow decodes 16-bit files (and 32-bit ones) as "I"
            notes.append(SIXTEEN_BIT_NOTE if high > 255 else
                         f"read {name}, a 32-bit integer image whose values are all within 0..255, as 16-bit (values divided by 65535, so it is dark); save it as 8-bit if that is its range")
        elif mode == "F" and low >= 0 and high <= 1:
            pass
        else:
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
            notes.append(f"scaled {name} from its value range [{low:g}, {high:g}] to [0, 1]")
        return 1, array[..., None]
    if mode in ("1", "L"):
        return 1, (np.asarray(image.convert("L")).astype(np.float32) / 255.0)[..., None]
    if mode in ("LA", "La", "PA"):
        if mode == "PA":
            image = image.convert("RGBA")
            return 3, np.asarray(image).astype(np.float32) / 255.0
        return 1, np.asarray(image.convert("LA")).astype(np.float32) / 255.0
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "RGBa"):
        return 3, np.asarray(image.convert("RGBA")).astype(np.float32) / 255.0
    if mode != "RGB":
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 16-bit RGB variants
    return 3, np.asarray(image).astype(np.float32) / 255.0


# -- tensors ---------------------------------------------------------------------------------


def _preprocess_tensors(
    pieces: list[_Piece],
    size: tuple[int, int] | None,
    resize: str,
    channels: int | None,
    notes: list[str],
) -> None:
    """Resize and convert channels of image-shaped tensors, but only when asked to."""
    for piece in pieces:
        tensor = piece.tensor
        assert tensor is not None
        label = piece.sources[0] if piece.sources and piece.sources[0] else "probe tensor"
        if tensor.dim() != 4:
            if size is not None:
                notes.append(f"image size applies to (N,C,H,W) probes only; {label} left as it is")
            continue
        if channels is not None and int(tensor.shape[1]) != channels:
            tensor = _convert_channels(tensor, channels, label, notes)
        if size is not None and tuple(tensor.shape[-2:]) != size:
            tensor = _resize(tensor, size, resize)
            notes.append(f"{_describe_resize(size, resize)} ({label})")
        piece.tensor = tensor.contiguous()


def _convert_channels(
    tensor: torch.Tensor, channels: int, label: str, notes: list[str]
) -> torch.Tensor:
    have = int(tensor.shape[1])
    if have == 1 and channels == 3:
        notes.append(f"repeated the single channel of {label} to 3 channels")
        return tensor.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:
        notes.append(f"converted {label} from RGB to grayscale (luminance)")
        weights = torch.tensor(_LUMA, dtype=tensor.dtype).view(1, 3, 1, 1)
        return (tensor * weights).sum(dim=1, keepdim=True)
    if have == 4 and channels == 3:
        notes.append(f"dropped the fourth (alpha) channel of {label}")
        return tensor[:, :3]
    raise ProbeError(
        f"{label} has {have} channels, but the model's first convolution takes {channels}",
        hint="give probes with the right channel count",
    )


def _join(pieces: list[_Piece]) -> torch.Tensor:
    first = pieces[0]
    assert first.tensor is not None
    for piece in pieces[1:]:
        assert piece.tensor is not None
        if piece.tensor.shape[1:] != first.tensor.shape[1:]:
            raise ProbeError(
                f"probes do not share one shape: {_label(first)} is "
                f"{tuple(first.tensor.shape[1:])} but {_label(piece)} is "
                f"{tuple(piece.tensor.shape[1:])}",
                hint="give --image-size H W to resize them all, or pass one kind of probe",
            )
    tensors = [p.tensor for p in pieces]
    batch = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)  # type: ignore[arg-type]
    return batch.to(torch.float32).contiguous()


def _label(piece: _Piece) -> str:
    return piece.sources[0] if piece.sources and piece.sources[0] else "a probe tensor"


def _normalise(
    batch: torch.Tensor, norm: tuple[tuple[float, ...], tuple[float, ...]], notes: list[str]
) -> torch.Tensor:
    mean, std = norm
    if batch.dim() < 2:
        raise OptionError("--mean/--std need probes with a channel dimension (N, C, ...)")
    have = int(batch.shape[1])
    for option, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, have):
            raise OptionError(
                f"{option} has {len(values)} values but the probes have {have} channel(s)"
            )
    shape = (1, -1) + (1,) * (batch.dim() - 2)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32).view(shape)
    notes.append(
        f"normalised with mean ({', '.join(f'{m:g}' for m in mean)}) "
        f"and std ({', '.join(f'{s:g}' for s in std)})"
    )
    return ((batch - mean_t) / std_t).contiguous()


def _multi_input(
    source: tuple[Any, ...],
    size: tuple[int, int] | None,
    resize: str,
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None,
    channels: int | None,
    max_probes: int | None,
    sample_ndim: int | None,
    notes: list[str],
) -> ProbeBatch:
    """A tuple of tensors feeds a model with several inputs; options apply to the first only."""
    inputs: list[torch.Tensor] = []
    for index, item in enumerate(source):
        piece = _array_piece(item, "", "")
        assert piece.tensor is not None
        # each input must already carry its batch dimension, except the first may be one sample
        ndim = sample_ndim if index == 0 else piece.tensor.dim() - 1
        tensor = _batched(piece.tensor, ndim, piece, notes, scale=index == 0)
        inputs.append(tensor)
    counts = {int(t.shape[0]) for t in inputs}
    if len(counts) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ProbeError(
            f"the inputs of a multi-input probe tuple have different batch sizes: {shapes}"
        )
    total = counts.pop()
    if max_probes is not None and total > max_probes:
        inputs = [t[:max_probes] for t in inputs]
        notes.append(f"kept the first {max_probes} of {total} probes (max_probes={max_probes})")
    first = _Piece(tensor=inputs[0], names=[], sources=[], sha256=[])
    _preprocess_tensors([first], size, resize, channels, notes)
    assert first.tensor is not None
    display = [_tensor_view(row, notes) for row in first.tensor]
    head = first.tensor
    if norm is not None:
        head = _normalise(head, norm, notes)
    if len(inputs) > 1 and (norm is not None or size is not None or channels is not None):
        notes.append(f"preprocessing applied to the first of {len(inputs)} inputs only")
    inputs[0] = head
    count = int(head.shape[0])
    return ProbeBatch(
        inputs=tuple(t.to(torch.float32).contiguous() for t in inputs),
        names=[f"probe {i}" for i in range(count)],
        display=display,
        sources=[""] * count,
        sha256=[""] * count,
        notes=_dedupe(notes),
    )


# -- display ---------------------------------------------------------------------------------


def _image_view(sample: torch.Tensor) -> np.ndarray:
    """A decoded image (C,H,W) in [0, 1] as uint8 H×W or H×W×3."""
    array = sample.detach().float().clamp(0, 1).numpy()
    pixels = np.rint(array * 255.0).astype(np.uint8)
    return _layout(pixels)


def _layout(pixels: np.ndarray) -> np.ndarray:
    channels = pixels.shape[0]
    if channels == 1:
        return np.ascontiguousarray(pixels[0])
    return np.ascontiguousarray(pixels[:3].transpose(1, 2, 0))


def _tensor_view(sample: torch.Tensor, notes: list[str] | None = None) -> np.ndarray:
    """A 2-D uint8 view of one tensor probe, min-max scaled over the whole probe.

    ``(C,H,W)``: RGB for 3 or 4 channels, grey for 1, the channel mean otherwise;
    ``(C,D,H,W)``: the middle depth slice; ``(C,L)`` or ``(H,W)``: a grey image as it is;
    anything else (feature vectors): an empty ``(0, 0)`` array.
    """
    array = sample.detach().to(torch.float32).cpu().numpy()
    array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    if array.ndim == 4:
        array = array[:, array.shape[1] // 2]
        if notes is not None:
            notes.append("3-D probes are shown as their middle depth slice")
    if array.ndim == 3:
        if array.shape[0] not in (1, 3, 4):
            array = array.mean(axis=0, keepdims=True)
        elif array.shape[0] == 4:
            array = array[:3]
    elif array.ndim == 2:
        array = array[None]
    else:
        return np.zeros((0, 0), dtype=np.uint8)
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return _layout(np.rint(scaled * 255.0).astype(np.uint8))


# -- names -----------------------------------------------------------------------------------


def _unique_names(names: list[str], sources: list[str]) -> list[str]:
    """Tensor probes become ``probe i``; file names that repeat get their folder path."""
    result = [name or f"probe {index}" for index, name in enumerate(names)]
    counts: dict[str, int] = {}
    for name in result:
        counts[name] = counts.get(name, 0) + 1
    repeated = {name for name, count in counts.items() if count > 1}
    if not repeated:
        return result
    files = [s for s in sources if s]
    try:
        root = os.path.commonpath([os.path.abspath(s) for s in files]) if files else ""
    except ValueError:  # different drives on Windows
        root = ""
    for index, (name, src) in enumerate(zip(result, sources)):
        if name in repeated and src:
            rel = os.path.relpath(os.path.abspath(src), root) if root else src
            suffix = name[len(os.path.basename(src)):]  # keep "[i]" of multi-probe files
            result[index] = rel.replace(os.sep, "/") + suffix
    return result


def _dedupe(notes: list[str]) -> list[str]:
    seen: set[str] = set()
    return [n for n in notes if not (n in seen or seen.add(n))]


def _printable(text: str) -> str:
    """A file name that is not valid UTF-8 reaches Python with surrogate escapes, which no
    UTF-8 page can hold: show the undecodable bytes as U+FFFD instead."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
