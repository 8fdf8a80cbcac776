"""Regenerate ``example_reports/``: the demo report and a ResNet-style report on real photos.

    python scripts/make_example_reports.py

Deterministic: the same code gives byte-identical files (seeded weights, photos that ship with
scikit-image, no timestamps, paths relative to the repository). Each file stays under 2 MB.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from reference_models import seeded, small_resnet  # noqa: E402

from cnnreport import build_report  # noqa: E402
from cnnreport.io.demo import CLASS_NAMES, demo_probe_paths, load_demo_model  # noqa: E402
from cnnreport.io.probes import ProbeBatch  # noqa: E402
from cnnreport.io.provenance import default_provenance  # noqa: E402

OUT = REPO / "example_reports"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
PHOTO_SIZE = 112
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Made-up class names for the untrained ResNet: its predictions are noise, said so in the title.
RESNET_CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MAX_BYTES = 2_000_000


def provenance():
    prov = default_provenance()
    prov.command_line = "python scripts/make_example_reports.py"
    return prov


def photo(name: str, size: int) -> np.ndarray:
    """A centre-cropped square of an skimage.data photo, area-resized to ``size`` pixels."""
    import skimage.data

    image = getattr(skimage.data, name)()
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BOX))


def photo_batch() -> ProbeBatch:
    images = [photo(name, PHOTO_SIZE) for name in PHOTOS]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return ProbeBatch(
        inputs=(x,),
        names=[f"{name}.png" for name in PHOTOS],
        display=images,
        sources=[f"skimage.data.{name}()" for name in PHOTOS],
        sha256=[hashlib.sha256(image.tobytes()).hexdigest() for image in images],
        notes=[f"skimage.data photos, centre-cropped and resized to {PHOTO_SIZE}x{PHOTO_SIZE}, ImageNet mean/std"],
    )


def write(report, name: str) -> Path:
    path = OUT / name
    report.write_html(str(path))
    size = path.stat().st_size
    print(f"wrote {path.relative_to(REPO)} ({size / 1e6:.2f} MB, {len(report.sections)} sections)")
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size / 1e6:.2f} MB, over the 2 MB budget: show fewer channels or probes")
    return path


def main() -> None:
    os.chdir(REPO)  # probe paths relative to the repository: the page does not name this machine
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)

    demo_paths = [os.path.relpath(p, REPO) for p in demo_probe_paths()]
    demo = build_report(
        load_demo_model(),
        demo_paths,
        title="Demo: DigitsCNN trained on scikit-learn digits",
        class_names=CLASS_NAMES,
        provenance=provenance(),
        progress=False,
    )
    write(demo, "demo.html")

    torch.manual_seed(0)
    model = seeded(small_resnet(num_classes=len(RESNET_CLASSES)), seed=0)
    resnet = build_report(
        model,
        photo_batch(),
        title="ResNet-style net (random seeded weights) on four skimage photos",
        class_names=RESNET_CLASSES,
        provenance=provenance(),
        max_channels=9,
        tile_size=48,
        progress=False,
    )
    write(resnet, "resnet_photos.html")


if __name__ == "__main__":
    main()
