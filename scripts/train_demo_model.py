"""Regenerate the demo's weights and probe images from scikit-learn's digits.

    python scripts/train_demo_model.py

Trains DigitsCNN on the 8x8 digits upsampled to 32x32 (a few seconds on 2 cores), writes the
state dict to cnnreport/data/demo/digits_cnn.pt and one held-out test image per class to
cnnreport/data/demo/probes/. Deterministic: fixed seeds, one thread.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cnnreport.io.demo import DATA_DIR, IMAGE_SIZE, PROBES, WEIGHTS, DigitsCNN  # noqa: E402


def digits_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.tensor(images / 16.0, dtype=torch.float32)[:, None]
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.images))
    test_idx, train_idx = order[:300], order[300:]
    x_all = digits_tensor(digits.images)
    y_all = torch.tensor(digits.target)
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    model = DigitsCNN()
    epochs = 20
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Annealing to zero lets the BatchNorm running statistics settle on the final weights.
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x_train) + 63) // 64))
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train))
        for start in range(0, len(perm), 64):
            idx = perm[start : start + 64]
            # Small random shifts keep the filters from memorising pixel positions.
            batch = torch.roll(x_train[idx], shifts=(int(torch.randint(-2, 3, ())), int(torch.randint(-2, 3, ()))), dims=(2, 3))
            loss = F.cross_entropy(model(batch), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x_all[test_idx]).argmax(1) == y_all[test_idx]).float().mean().item()
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.3f}  held-out accuracy {acc:.3f}")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    WEIGHTS.write_bytes(buffer.getvalue())
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1024:.0f} KB)")
    PROBES.mkdir(exist_ok=True)
    for old in PROBES.glob("*.png"):
        old.unlink()
    with torch.no_grad():
        probs = torch.softmax(model(x_all[test_idx]), 1)
    for digit in range(10):
        # The first held-out example of each digit that the model gets right: a demo that shows
        # a healthy model should not open on a misclassified probe.
        i = next(
            int(i)
            for i, p in zip(test_idx, probs)
            if digits.target[i] == digit and int(p.argmax()) == digit
        )
        pixels = (digits.images[i] / 16.0 * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        image.save(PROBES / f"digit_{digit}.png", optimize=True)
    print(f"wrote 10 probe images to {PROBES}")


if __name__ == "__main__":
    main()
