"""Regenerate ``example_reports/``: the demo report, the demo with dataset examples over all
1,797 scikit-learn digits (``demo_examples.html``), a ResNet-style report on real photos, and a
history of the demo model trained from scratch (``demo_history/``: its snapshots and index).

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
    demo_examples(demo_paths)

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
    demo_history()


#: The folder the digits are written to for demo_examples.html, relative to the repository
#: (the page names it as given), removed afterwards.
DIGITS_FOLDER = "build/scikit-learn-digits"


def demo_examples(demo_paths: list[str]) -> None:
    """``example_reports/demo_examples.html``: the demo model and probes with ``--examples``
    over every scikit-learn digit, each a 32 x 32 PNG named by its index and true label, as
    the demo's training saw them (scripts/train_demo_model.py's preprocessing)."""
    import shutil

    from sklearn.datasets import load_digits

    sys.path.insert(0, str(REPO / "scripts"))
    from train_demo_model import digits_tensor  # the demo's own preprocessing

    digits = load_digits()
    pixels = (digits_tensor(digits.images)[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    folder = REPO / DIGITS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        for i, (image, label) in enumerate(zip(pixels, digits.target)):
            Image.fromarray(image).save(folder / f"{i:04d}-digit{label}.png")
        report = build_report(
            load_demo_model(),
            demo_paths,
            examples=DIGITS_FOLDER,
            title="Demo: DigitsCNN with dataset examples over all 1,797 scikit-learn digits",
            class_names=CLASS_NAMES,
            provenance=provenance(),
            progress=False,
            example_channels=8,
            example_workers=0,
        )
        write(report, "demo_examples.html")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: Epochs of the demo history: the untrained model, then one snapshot after each epoch.
HISTORY_EPOCHS = 4


def demo_history() -> None:
    """``example_reports/demo_history/``: DigitsCNN trained from scratch for a few epochs with
    :class:`cnnreport.Run` (a snapshot before training and after each epoch, with the held-out
    accuracy) and the index page over the snapshots. The checkpoints and JSON views are made in
    a temporary folder and not kept: the pages are what a reader opens."""
    import shutil
    import tempfile

    from torch.nn import functional as F

    from cnnreport import Run
    from cnnreport.history.index import write_index
    from cnnreport.io.demo import DigitsCNN
    from cnnreport.io.probes import load_probes

    sys.path.insert(0, str(REPO / "scripts"))
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from train_demo_model import digits_tensor  # the demo's own preprocessing

    probes = load_probes([os.path.relpath(p, REPO) for p in demo_probe_paths()][:6])
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    x, y = digits_tensor(digits.images), torch.tensor(digits.target)
    test, train = order[:300], order[300:]
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = OUT / "demo_history"
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative paths only: the pages do not name this machine's folders
        try:
            run = Run("demo_history", probes=probes, class_names=CLASS_NAMES, max_channels=8, title="DigitsCNN from scratch")
            for epoch in range(HISTORY_EPOCHS + 1):
                if epoch:
                    model.train()
                    perm = torch.randperm(len(train))
                    for start in range(0, len(perm), 64):
                        idx = torch.as_tensor(train[perm[start : start + 64].numpy()])
                        optimizer.zero_grad()
                        F.cross_entropy(model(x[idx]), y[idx]).backward()
                        optimizer.step()
                model.eval()
                with torch.no_grad():
                    accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
                # safetensors: the same tensors give the same bytes (torch.save writes a random
                # serialization id), so the pages' checkpoint hashes and the pages stay the same.
                checkpoint = f"demo_history/epoch-{epoch}.safetensors"
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
                run.snapshot(model, step=epoch, epoch=epoch, metrics={"held_out_accuracy": accuracy}, checkpoint=checkpoint)
            write_index("demo_history", title="History: DigitsCNN trained from scratch on scikit-learn digits")
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
            for page in sorted(Path("demo_history").glob("*.html")):
                shutil.copyfile(page, target / page.name)
                size = (target / page.name).stat().st_size
                if size > MAX_BYTES:
                    raise SystemExit(f"{target / page.name} is {size / 1e6:.2f} MB, over the 2 MB budget")
        finally:
            os.chdir(REPO)
    total = sum(p.stat().st_size for p in target.iterdir())
    print(f"wrote {target.relative_to(REPO)}/ ({len(list(target.iterdir()))} pages, {total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
