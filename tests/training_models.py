"""A small CNN trained for real in the training-loop tests: sklearn's 8x8 digits as 1x8x8 images.

Shared by tests/test_run.py, tests/test_lightning.py and tests/test_trackers.py (the tests
folder is on ``sys.path``, see conftest.py).
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    return images, torch.tensor(data.target, dtype=torch.long)


def digits(n: int = 512, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` digit images (N, 1, 8, 8) and labels, starting at ``offset`` (copies)."""
    images, labels = _digits()
    return images[offset : offset + n].clone(), labels[offset : offset + n].clone()


def probes() -> torch.Tensor:
    """Six held-out digits (images 1700..1705) as the report's probes."""
    return digits(6, offset=1700)[0]


class DigitsCNN(nn.Module):
    """conv(1->4, 3x3, pad 1) ReLU, conv(4->8, 3x3) ReLU, dropout, linear(8*6*6 -> 10).

    Parameters: 1*4*9+4 = 40, 4*8*9+8 = 296, 288*10+10 = 2890: 3226 in all.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(self.drop(x.flatten(1)))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, batch: int = 64) -> None:
    """One epoch over a fresh random permutation (drawn from torch's generator: a snapshot
    that moved the generator would change the next epoch's order)."""
    model.train()
    order = torch.randperm(len(images))
    for start in range(0, len(images), batch):
        idx = order[start : start + batch]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
        optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    was = model.training
    model.eval()
    acc = float((model(images).argmax(1) == labels).double().mean())
    model.train(was)
    return acc
