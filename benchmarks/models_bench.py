"""A ResNet-50-shaped model for the benchmark, written here because torchvision does not run
with the CPU torch of this project.

Bottleneck blocks [3, 4, 6, 3], widths 64-128-256-512 (x4 expansion), 1000 classes:
25,557,032 parameters, like torchvision's ``resnet50``. Weights are random but seeded, so
every run benchmarks the same network. ``tests/reference_models.resnet50_like`` is preferred
when it exists (see :func:`resnet50`).
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBench(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), base: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = base
        stages = []
        for i, blocks in enumerate(layers):
            width = base * 2**i
            stride = 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(in_ch, width, stride if b == 0 else 1))
                in_ch = width * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(seed: int = 0) -> nn.Module:
    """The ResNet-50-shaped model: the tests' reference builder if present, else this one."""
    try:
        from tests.reference_models import resnet50_like  # type: ignore[import-not-found]
    except Exception:
        resnet50_like = None
    torch.manual_seed(seed)
    if resnet50_like is not None:
        try:
            return resnet50_like().eval()
        except TypeError:
            pass
    return ResNetBench().eval()


def small_resnet(seed: int = 0) -> nn.Module:
    """A quick stand-in for ``--quick``: the same block structure, [1, 1, 1, 1] and width 16."""
    torch.manual_seed(seed)
    return ResNetBench(layers=(1, 1, 1, 1), base=16, num_classes=10).eval()


def plain_stack(depth: int = 100, width: int = 32, seed: int = 0) -> nn.Module:
    """A ``depth``-convolution plain stack (3x3, ``width`` channels, ReLU between, no
    normalisation), then pooling and a 10-class head: the deep-model case of issue 4."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1)]
    for m in layers:
        if isinstance(m, nn.Conv2d):  # keeps the scale of activations through 100 layers
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers).eval()
