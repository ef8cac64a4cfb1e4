"""Soft-mask networks g_φ of Calibrated AT: image in, per-pixel mask in (0, 1) out.

Both networks end with a nearest-neighbour upsample to the input's H×W, a 3×3 convolution
to the image's channel count and a sigmoid, so the mask has the shape of the image whatever
its size (8×8 digits, 28×28 MNIST, 32×32 CIFAR). Inputs are images in [0, 1] (x + δ) or,
with ``mask_input='concat'``, the 2C-channel stack [x, δ]; no normalisation layer, as in the
authors' code.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK_ARCHS = ("auto", "mnist", "cifar")


class BasicBlock(nn.Module):
    """ResNet basic block (conv-BN-ReLU-conv-BN plus shortcut, then ReLU)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarMaskNet(nn.Module):
    """ResNet-18 trunk without pooling/FC (512 × H/8 × W/8) → upsample → 3×3 conv → sigmoid.

    Args:
        in_chans: channels of the network's input (C, or 2C for [x, δ]).
        out_chans: channels of the mask (the image's C).
        size: (H, W) of the mask.
    """

    def __init__(self, in_chans: int, out_chans: int, size: tuple[int, int]):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes)))
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.head = nn.Conv2d(512, out_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))
        h = F.interpolate(h, size=self.size, mode="nearest")
        return torch.sigmoid(self.head(h).float())  # fp32 under autocast: M stays strictly in (0, 1)


class MnistMaskNet(nn.Module):
    """conv 64 (stride 2) → conv 128 → conv 128 (LeakyReLU 0.2) → upsample → conv → sigmoid.

    Args:
        in_chans: channels of the network's input (C, or 2C for [x, δ]).
        out_chans: channels of the mask (the image's C).
        size: (H, W) of the mask.
    """

    def __init__(self, in_chans: int, out_chans: int, size: tuple[int, int]):
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 128, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(128, 128, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Conv2d(128, out_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.features(x), size=self.size, mode="nearest")
        return torch.sigmoid(self.head(h).float())  # fp32 under autocast: M stays strictly in (0, 1)


def resolve_mask_arch(arch: str, channels: int) -> str:
    """'auto' → 'mnist' for one-channel images, 'cifar' otherwise."""
    if arch not in MASK_ARCHS:
        raise ValueError(f"mask_arch must be one of {MASK_ARCHS}, got {arch!r}")
    if arch == "auto":
        return "mnist" if channels == 1 else "cifar"
    return arch


def build_mask_net(arch: str, input_shape: tuple[int, int, int], mask_input: str = "sum") -> nn.Module:
    """The mask network for images of ``input_shape`` = (C, H, W).

    Args:
        arch: 'auto', 'mnist' or 'cifar'.
        input_shape: (C, H, W) of one image.
        mask_input: 'sum' (the network sees x + δ) or 'concat' (it sees [x, δ], 2C channels).
    """
    c, h, w = (int(v) for v in input_shape)
    in_chans = 2 * c if mask_input == "concat" else c
    cls = MnistMaskNet if resolve_mask_arch(arch, c) == "mnist" else CifarMaskNet
    return cls(in_chans, c, (h, w))


def mask_net_input(x: torch.Tensor, delta: torch.Tensor, mask_input: str) -> torch.Tensor:
    """What g_φ sees: x + δ ('sum', the authors' code) or [x, δ] on channels ('concat', the paper's g_φ(X, δ))."""
    if mask_input == "concat":
        return torch.cat([x, delta], dim=1)
    return x + delta
