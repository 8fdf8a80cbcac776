"""A large example set (``--examples DIR``): image files read one at a time, as the probes are.

The probes are a handful of images loaded into one batch; an example set is hundreds to tens of
thousands, so it is never held whole. :class:`ExampleImages` lists the image files of a folder
(natural order, like the probes') and decodes one on each ``__getitem__``, through
:func:`~cnnreport.io.probes.load_probes` itself, so an example gets exactly the probes'
preprocessing (size, resize mode, channels, normalisation, pixel limits, EXIF orientation).
:func:`example_loader` streams a set (or one shard of it) in batches through a
``torch.utils.data.DataLoader``, whose worker processes do the decoding.
:func:`display_images` reads back the few examples the page shows, un-normalised.

This module never runs the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from copy import copy as shallow_copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import CnnReportError, OptionError, ProbeError
from .probes import IMAGE_SUFFIXES, _natural_key, load_probes

__all__ = ["ExampleImages", "default_workers", "display_images", "example_loader", "shard"]


class ExampleImages(Dataset):
    """The image files of ``folder`` as a dataset of ``(input tensor, index)``.

    ``image_size`` ``(H, W)`` is required (every example must share the probes' size, so they
    batch together); ``resize``, ``mean``, ``std``, ``channels`` and ``max_image_pixels`` are
    :func:`~cnnreport.io.probes.load_probes`' options and mean the same. Hidden files and files
    of other types are skipped (``notes`` says how many); an image that cannot be decoded is an
    error naming it, raised while the set is streamed.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        image_size: Sequence[int] | None = None,
        resize: str = "crop",
        mean: Sequence[float] | str | None = None,
        std: Sequence[float] | str | None = None,
        channels: int | None = None,
        recursive: bool = False,
        max_image_pixels: int | None = None,
    ) -> None:
        self.folder = os.fspath(folder)
        self.image_size = tuple(int(v) for v in image_size) if image_size is not None else None
        self.resize = resize
        self.mean = mean
        self.std = std
        self.channels = channels
        self.recursive = recursive
        self.max_image_pixels = max_image_pixels
        self.notes: list[str] = []
        self.files = _list_images(self.folder, recursive, self.notes)

    def with_defaults(self, *, image_size: Sequence[int], channels: int | None) -> ExampleImages:
        """This set with ``image_size`` and ``channels`` filled where they were left out (the
        probes' own, so examples and probes reach the model alike)."""
        copy = shallow_copy(self)
        copy.notes = list(self.notes)
        if copy.image_size is None:
            copy.image_size = tuple(int(v) for v in image_size)
        if copy.channels is None:
            copy.channels = channels
        return copy

    def __len__(self) -> int:
        return len(self.files)

    def relative(self, index: int) -> str:
        """Example ``index``'s file as the page names it: relative to the folder, with ``/``."""
        return os.path.relpath(self.files[index], self.folder).replace(os.sep, "/")

    def _load(self, index: int, *, normalised: bool) -> Any:
        if self.image_size is None:
            raise OptionError("an example set needs an image size (the probes' own, or image_size=)")
        return load_probes(
            self.files[index],
            image_size=self.image_size,
            resize=self.resize,
            mean=self.mean if normalised else None,
            std=self.std if normalised else None,
            channels=self.channels,
            max_image_pixels=self.max_image_pixels,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        """``(input, index, "")``, or ``(None, index, why)`` for a file that cannot be read: a
        worker process's exception would reach the caller wrapped in its traceback text, so
        the reason travels as data and the caller raises it as one line."""
        try:
            return self._load(index, normalised=True).inputs[0][0], index, ""
        except CnnReportError as exc:
            return None, index, exc.one_line().replace("probe image", "example image", 1).replace("probe file", "example file", 1)


def _list_images(folder: str, recursive: bool, notes: list[str]) -> list[str]:
    """The image files under ``folder`` in natural order (``img2`` before ``img10``), the
    probes' own order, so a folder reads the same both ways."""
    if not os.path.isdir(folder):
        raise ProbeError(f"examples folder {folder} is not a folder" if os.path.exists(folder) else f"examples folder {folder} does not exist")
    found: list[str] = []
    other = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for name in files:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(os.path.join(root, name))
            else:
                other += 1
    if not found:
        raise ProbeError(
            f"examples folder {folder} holds no images" + (f" ({other} file(s) of other types)" if other else ""),
            hint=f"examples are image files ({', '.join(IMAGE_SUFFIXES)})" + ("" if recursive else "; pass --recursive to read subfolders"),
        )
    if other:
        notes.append(f"skipped {other} file(s) in the examples folder that are not images")
    found.sort(key=lambda path: _natural_key(os.path.relpath(path, folder).replace(os.sep, "/")))
    return found


def shard(count: int, rank: int, world: int) -> list[int]:
    """The example indices process ``rank`` of ``world`` reduces: every ``world``-th from
    ``rank``, so shards differ in size by one at most and each spans the whole set."""
    if world < 1 or not 0 <= rank < world:
        raise OptionError(f"rank {rank} of {world} processes is not a shard")
    return list(range(rank, count, world))


def default_workers() -> int:
    """Decoding worker processes by default: one per spare core, at most 4 (0: decode in
    this process, where there is no spare core)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _collate(items: list[tuple[torch.Tensor | None, int, str]]) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    """One batch: ``(inputs, indices, [])``, or ``(None, indices, reasons)`` when a file failed."""
    indices = torch.tensor([i for _, i, _ in items], dtype=torch.int64)
    failed = [why for _, _, why in items if why]
    if failed:
        return None, indices, failed
    return torch.stack([t for t, _, _ in items]), indices, []


def example_loader(examples: ExampleImages, indices: Sequence[int], batch_size: int, workers: int | None) -> DataLoader:
    """Batches ``(inputs, example indices, failures)`` of ``examples[indices]``, in that order,
    decoded by ``workers`` processes (None: :func:`default_workers`); ``inputs`` is None and
    ``failures`` names why when a file of the batch could not be read."""
    if batch_size < 1:
        raise OptionError(f"example_batch_size must be at least 1, got {batch_size}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise OptionError(f"example_workers must be 0 or more, got {workers}")
    subset = torch.utils.data.Subset(examples, list(indices))
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        # Workers hold a few batches each, never the set.
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


def display_images(examples: ExampleImages, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """The examples ``indices`` as the page shows them: uint8 H×W or H×W×3 at the model's input
    size, before normalisation (read again: only the few that win a channel)."""
    return {i: examples._load(i, normalised=False).display[0] for i in sorted(set(indices))}
