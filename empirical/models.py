"""ResNets with BatchNorm for the empirical side: ``build_model(arch, num_classes, in_channels, image_size)``.

* ``resnet8/14/20/32``: the CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", Sec. 4.2): a 3x3 conv
  with 16 channels, three stages of ``n`` basic blocks with 16/32/64 channels (stride 2 at the start of stages 2
  and 3), global average pooling, a linear layer; depth 6n + 2. Shortcuts are **option A** as in the paper's
  CIFAR experiments: identity, and where the shape changes, stride-2 subsampling with zero-padded extra channels
  (no parameters). ResNet-20 has 0.27M parameters (the paper's Table 6).
* ``resnet18_cifar``: the common CIFAR ResNet-18: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max
  pooling (1x1-conv + BN projection shortcuts).
* ``resnet18/34/50``: ``torchvision.models`` with ``weights=None``; for ``in_channels != 3`` the 7x7 stem conv
  is replaced by one with ``in_channels`` inputs.

* ``quadratic``: no network: one parameter vector θ of dimension ``in_channels`` whose output on x is θ − x (the
  quadratic closure test, empirical/quadratic.py; ``num_classes`` and ``image_size`` are unused).

The ResNets end in global average pooling, so any input side works, including 8x8 digits and 28x28 MNIST. Conv weights
use Kaiming-normal init (fan_out, ReLU gain), BatchNorm starts at weight 1 / bias 0, and the final linear layer
keeps PyTorch's default uniform init (as torchvision does); so a model is determined by ``torch.manual_seed``.
All work in ``channels_last`` memory format.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """He et al. option A: take every ``stride``-th pixel and zero-pad the new channels (parameter-free)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads from the last dim backwards: (W left, W right, H top, H bottom, C front, C back).
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between; ReLU after adding the shortcut (He et al. Fig. 2)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        same = stride == 1 and in_planes == planes
        self.shortcut = nn.Identity() if same else ShortcutA(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Depth 6n + 2: stem, 3 stages x ``n`` BasicBlocks (16, 32, 64 channels), global average pool, linear."""

    def __init__(self, n: int, num_classes: int, in_channels: int = 3, widths: tuple = (16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if (stage > 0 and i == 0) else 1))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _torchvision(name: str, stem: str = "imagenet") -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if stem == "cifar":  # 3x3 stride-1 stem, no max pool: keeps 32x32 inputs at full resolution in layer1
            model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
        return model

    return build


ARCHS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet8": lambda k, c: CifarResNet(1, k, c),
    "resnet14": lambda k, c: CifarResNet(2, k, c),
    "resnet20": lambda k, c: CifarResNet(3, k, c),
    "resnet32": lambda k, c: CifarResNet(5, k, c),
    "resnet18_cifar": _torchvision("resnet18", stem="cifar"),
    "resnet18": _torchvision("resnet18"),
    "resnet34": _torchvision("resnet34"),
    "resnet50": _torchvision("resnet50"),
    "quadratic": lambda k, c: _quadratic_model(c),
}


def _quadratic_model(dim: int) -> nn.Module:
    from empirical.quadratic import QuadraticModel   # here, not at the top: quadratic.py imports the data module
    return QuadraticModel(dim)


def build_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A freshly initialised ``arch`` (a key of ``ARCHS``) mapping (B, in_channels, H, W) to (B, num_classes)
    logits (quadratic: (B, D) to (B, D)). ``image_size`` (pixels) is only checked: every ResNet pools globally, so
    any side >= 1 works."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    return ARCHS[arch](num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not, each shared tensor once); buffers such as BatchNorm
    running statistics are not parameters and are not counted."""
    return sum(p.numel() for p in model.parameters())
