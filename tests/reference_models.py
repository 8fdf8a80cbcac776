"""Reference CNN architectures written out in plain torch (torchvision and timm do not work with
the CPU torch here): a ResNet (basic and bottleneck blocks, skip connections, in-place ReLUs), a
MobileNet (depthwise-separable convolutions) and an Inception-style net (four parallel branches
joined by ``torch.cat``), plus a few odd small models the tests share.

``resnet50_like()`` has torchvision's ResNet-50 layout ([3, 4, 6, 3] bottlenecks, 25,557,032
parameters at 1000 classes) for benchmarks; ``tiny_resnet()`` and friends are for tests.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise every parameter from a fixed seed (and return the model, in eval mode).

    BatchNorm running statistics are set to non-trivial values, so a BatchNorm changes its input.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.05)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
                module.running_mean.copy_(0.05 * torch.randn(module.running_mean.shape, generator=gen))
                module.running_var.copy_(1.0 + 0.1 * torch.rand(module.running_var.shape, generator=gen))
    return model.eval()


# ----------------------------------------------------------------------------------------------
# ResNet


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)  # one module, called twice per block
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in-place add, as torchvision does
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet layout: stem, four stages of blocks, global pool, linear head."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: int = 64,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if small_input:  # 3x3 stride-1 stem, no max-pool: for 32-64 px inputs
            self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        cin = stem
        for i, (count, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(count):
                blocks.append(block(cin, width, stride=2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50_like(num_classes: int = 1000) -> ResNet:
    """ResNet-50's layout: [3, 4, 6, 3] bottlenecks, 25,557,032 parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)


def resnet18_like(num_classes: int = 1000) -> ResNet:
    """ResNet-18's layout: [2, 2, 2, 2] basic blocks, 11,689,512 parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def tiny_resnet(num_classes: int = 10, in_channels: int = 3, bottleneck: bool = False) -> ResNet:
    """A few thousand parameters, same structure: stem, 2 stages of 1 block, skip connections."""
    if bottleneck:
        return ResNet(Bottleneck, [1, 1], widths=(4, 8), stem=8, num_classes=num_classes, in_channels=in_channels, small_input=True)
    return ResNet(BasicBlock, [1, 1], widths=(8, 16), stem=8, num_classes=num_classes, in_channels=in_channels, small_input=True)


def small_resnet(num_classes: int = 10) -> ResNet:
    """A moderately sized ResNet (basic blocks [1, 1, 1], widths 16-64) for example reports."""
    return ResNet(BasicBlock, [1, 1, 1], widths=(16, 32, 64), stem=16, num_classes=num_classes, small_input=True)


# ----------------------------------------------------------------------------------------------
# MobileNet


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv (groups == channels) + BN + ReLU6, then 1x1 pointwise + BN + ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU6(inplace=True)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.pointwise(self.act1(self.bn1(self.depthwise(x))))))


class MobileNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (8, 16, 24, 32), num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(in_channels, widths[0], 3, 2), nn.ReLU6(inplace=True))
        blocks = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            blocks.append(DepthwiseSeparable(cin, cout, stride=2 if cout != widths[1] else 1))
        self.blocks = nn.Sequential(*blocks)
        # A grouped (not depthwise) convolution too: 4 groups.
        self.grouped = nn.Conv2d(widths[-1], widths[-1], 3, 1, 1, groups=4, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.grouped(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def tiny_mobilenet(num_classes: int = 10) -> MobileNet:
    return MobileNet(num_classes=num_classes)


# ----------------------------------------------------------------------------------------------
# Inception


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->5x5; pool->1x1) concatenated on channels."""

    def __init__(self, cin: int, b1: int, b3: tuple[int, int], b5: tuple[int, int], bp: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(cin, b1, 1), nn.ReLU(inplace=True))
        self.branch3 = nn.Sequential(nn.Conv2d(cin, b3[0], 1), nn.ReLU(inplace=True), nn.Conv2d(b3[0], b3[1], 3, padding=1), nn.ReLU(inplace=True))
        self.branch5 = nn.Sequential(nn.Conv2d(cin, b5[0], 1), nn.ReLU(inplace=True), nn.Conv2d(b5[0], b5[1], 5, padding=2), nn.ReLU(inplace=True))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, bp, 1), nn.ReLU(inplace=True))
        self.out_channels = b1 + b3[1] + b5[1] + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class InceptionNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.inc1 = InceptionBlock(16, 8, (8, 12), (4, 6), 6)
        self.inc2 = InceptionBlock(self.inc1.out_channels, 12, (8, 16), (4, 8), 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inc2.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc2(nn.functional.max_pool2d(self.inc1(self.stem(x)), 2))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_inception(num_classes: int = 10) -> InceptionNet:
    return InceptionNet(num_classes=num_classes)


# ----------------------------------------------------------------------------------------------
# Small odd models


class ConvInplaceRelu(nn.Module):
    """conv -> ReLU(inplace=True): the ReLU overwrites the conv's output tensor."""

    def __init__(self, cin: int = 3, cout: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


class SharedConv(nn.Module):
    """One convolution module applied twice in a forward pass."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, channels, 3, padding=1)
        self.shared = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        x = self.shared(x)
        x = self.shared(torch.relu(x))
        return self.head(x)


class TupleOutput(nn.Module):
    """Returns (logits, feature map)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv(x))
        return self.fc(f.mean((2, 3))), f


class DictOutput(nn.Module):
    """Returns {"features": map, "logits": scores}."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.conv(x))
        return {"features": f, "logits": self.fc(f.mean((2, 3)))}


class SegmentationOutput(nn.Module):
    """A fully convolutional net: (N, classes, H, W) output, no per-image class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.conv(x)))


class FrozenBNNet(nn.Module):
    """conv -> bn -> relu -> linear, for the frozen-BatchNorm training-flag test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.relu(self.bn(self.conv(x))).mean((2, 3))))


class Exploding(nn.Module):
    """Raises inside the forward pass, after the first convolution ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bad = nn.Linear(7, 2)  # wrong in_features: a shape error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bad(self.conv(x).flatten(1))


ARCHITECTURES = {
    "resnet": tiny_resnet,
    "resnet_bottleneck": lambda: tiny_resnet(bottleneck=True),
    "mobilenet": tiny_mobilenet,
    "inception": tiny_inception,
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
