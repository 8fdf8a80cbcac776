"""Shared fixtures: the demo model, tiny probe tensors, real photos resized small, a report helper.

The reference architectures live in ``tests/reference_models.py``; this folder is put on
``sys.path`` so every test module can ``import reference_models``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def photo(name: str, size: int = 32) -> np.ndarray:
    """An skimage.data photo (shipped with scikit-image, no download), centre-cropped square
    and resized to ``size`` x ``size``: uint8 (H, W, 3)."""
    import skimage.data

    image = getattr(skimage.data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BOX))


def photos_tensor(size: int = 32, names: tuple[str, ...] = PHOTO_NAMES) -> torch.Tensor:
    """The photos as one float batch (N, 3, size, size) in [0, 1]."""
    arrays = [photo(n, size) for n in names]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="session")
def demo_model():
    """The trained demo CNN that ships in the package (fresh copy per session; do not mutate)."""
    from cnnreport.io.demo import load_demo_model

    return load_demo_model()


@pytest.fixture
def fresh_demo_model():
    from cnnreport.io.demo import load_demo_model

    return load_demo_model()


@pytest.fixture
def probes() -> torch.Tensor:
    """Three seeded random probes, (3, 3, 16, 16)."""
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def photo_probes() -> torch.Tensor:
    """Four real photos from skimage.data, (4, 3, 32, 32) in [0, 1]."""
    return photos_tensor(32)


@pytest.fixture(scope="session")
def sample_image_probes() -> torch.Tensor:
    """scikit-learn's two sample photos (china, flower), (2, 3, 32, 32) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    arrays = []
    for image in load_sample_images().images:
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(image[top : top + side, left : left + side]).resize((32, 32), Image.Resampling.BOX)
        arrays.append(np.asarray(crop))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture
def probe_dir(tmp_path) -> Path:
    """A folder with three small RGB PNG photos (24 px)."""
    folder = tmp_path / "probes"
    folder.mkdir()
    for name in PHOTO_NAMES[:3]:
        Image.fromarray(photo(name, 24)).save(folder / f"{name}.png")
    return folder


def quick_options(**overrides):
    """Report options that keep tests fast and quiet."""
    from cnnreport.datamodel import ReportOptions

    base = dict(progress=False, max_channels=4, max_probes=4, tile_size=16)
    base.update(overrides)
    return ReportOptions(**base)


# ----------------------------------------------------------------------------------------------
# Reading a rendered report back with a real HTML parser (stdlib html.parser)

from html.parser import HTMLParser  # noqa: E402

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class ReportPage(HTMLParser):
    """What the tests look at in a page: images, ids, the architecture table, sections, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.ids: list[str] = []
        self.layer_sections: list[str] = []
        self.arch_body_rows: list[list[str]] = []  # each row: its cells' text
        self.arch_foot_cells: list[str] = []
        self.script_texts: list[str] = []
        self.script_count = 0
        self.text_parts: list[str] = []
        self.title = ""
        self._stack: list[str] = []
        self._in_arch = False
        self._arch_part = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._script: list[str] | None = None
        self._in_title = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "img":
            self.images.append(a)
        if tag == "section" and "layer" in a.get("class", "").split():
            self.layer_sections.append(a.get("id", ""))
        if tag == "table" and a.get("id") == "arch-table":
            self._in_arch = True
        if self._in_arch and tag in ("thead", "tbody", "tfoot"):
            self._arch_part = tag
        if self._in_arch and tag == "tr":
            self._row = []
        if self._in_arch and tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag == "script":
            self.script_count += 1
            self._script = []
        if tag == "title" and "head" in self._stack:  # the page's title, not an SVG <title>
            self._in_title = True
        if tag not in VOID:
            self._stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self._stack and tag in self._stack:
            while self._stack and self._stack.pop() != tag:
                pass
        if self._in_arch and tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if self._in_arch and tag == "tr" and self._row is not None:
            if self._arch_part == "tbody":
                self.arch_body_rows.append(self._row)
            elif self._arch_part == "tfoot":
                self.arch_foot_cells += self._row
            self._row = None
        if tag == "table" and self._in_arch:
            self._in_arch = False
        if tag == "script" and self._script is not None:
            self.script_texts.append("".join(self._script))
            self._script = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
            return
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())


def decode_data_png(src: str):
    """A data:image/png;base64 URI -> the decoded Pillow image (asserting it is one)."""
    import base64
    import io

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    raw = base64.b64decode(src[len(prefix) :], validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(raw))
    image.load()
    assert image.format == "PNG"
    return image


def report_figures(report) -> dict[str, object]:
    """Every Figure reachable from a Report, by data URI."""
    from dataclasses import fields, is_dataclass

    from cnnreport.datamodel import Figure

    found: dict[str, object] = {}

    def walk(value):
        if isinstance(value, Figure):
            found[value.data_uri()] = value
        elif is_dataclass(value) and not isinstance(value, type):
            for f in fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(report)
    return found


def assert_self_contained(html: str) -> None:
    """No URL to any network: the only 'http' allowed is the SVG namespace name (not a request)."""
    cleaned = html.replace('xmlns="http://www.w3.org/2000/svg"', "").replace("xmlns='http://www.w3.org/2000/svg'", "")
    lowered = cleaned.lower()
    assert "http:" not in lowered and "https:" not in lowered, lowered[max(0, lowered.find("http") - 80) : lowered.find("http") + 80]
    for protocol_relative in ('src="//', "src='//", 'href="//', "href='//", "url(//", 'url("//'):
        assert protocol_relative not in lowered
