"""The built-in demo: a small CNN trained on scikit-learn's handwritten digits.

The weights (``data/demo/digits_cnn.pt``) and probe images (``data/demo/probes/``) ship inside
the package, so ``cnnreport demo`` runs offline; ``scripts/train_demo_model.py`` regenerates them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"  # cnnreport/data/demo
WEIGHTS = DATA_DIR / "digits_cnn.pt"
PROBES = DATA_DIR / "probes"
CLASS_NAMES = [str(i) for i in range(10)]
IMAGE_SIZE = 32  # the 8x8 digits, upsampled so the layers have something to show


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear head; 1x32x32 grey digits in, 10 class logits out."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 3, padding=1, bias=False),
            nn.BatchNorm2d(48),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def load_demo_model() -> DigitsCNN:
    """The trained demo model, in eval mode."""
    model = DigitsCNN()
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def demo_probe_paths() -> list[Path]:
    return sorted(PROBES.glob("*.png"))
