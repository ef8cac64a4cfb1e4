"""Native architectures of the robustness literature, with normalisation inside the model.

Every model takes images in [0,1] and starts with a :class:`Normalize` layer, so attacks
work in pixel space and a checkpoint carries its own preprocessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are saved with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _norm(in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> Normalize:
    mean = [0.0] * in_chans if mean is None else list(mean)
    std = [1.0] * in_chans if std is None else list(std)
    if len(mean) != in_chans or len(std) != in_chans:
        raise UsageError(f"mean/std need {in_chans} values (one per channel)")
    return Normalize(mean, std)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice, identity shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + short


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32x32 inputs (Rice et al. 2020): 11.17 M parameters at 10 classes."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, mean=None, std=None, **_: object):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = _norm(in_chans, mean, std)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.relu(self.bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self.fc(x)


class WideBlock(nn.Module):
    """Pre-activation wide block as in the TRADES/MART code (shortcut conv when widths change)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal = in_planes == planes and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(o)
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return out + short


class WideResNet(nn.Module):
    """WideResNet-d-k for 32x32 inputs: stem 16, stages 16k/32k/64k, n=(d-4)/6 blocks each."""

    def __init__(self, depth: int = 34, widen: int = 10, num_classes: int = 10, in_chans: int = 3,
                 mean=None, std=None, **_: object):
        super().__init__()
        if (depth - 4) % 6:
            raise UsageError("WideResNet depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.num_classes = num_classes
        self.normalize = _norm(in_chans, mean, std)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        stages, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            blocks = [WideBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                      for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.normalize(x))
        x = F.relu(self.bn(self.block3(self.block2(self.block1(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class CNNMnist(nn.Module):
    """Calibrated AT's MNIST net: conv 32, 32 s2, 64, 64 s2 (3x3, pad 1), FC 100, FC classes.

    On 28x28 inputs the flattened features are 64*7*7 = 3136, as in the paper.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size=(28, 28), mean=None,
                 std=None, **_: object):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = _norm(in_chans, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU())
        h, w = (int(s) for s in input_size)
        flat = 64 * ((h + 3) // 4) * ((w + 3) // 4)
        self.fc1 = nn.Linear(flat, 100)
        self.fc = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x)).flatten(1)
        return self.fc(F.relu(self.fc1(x)))


class SmallCNN(nn.Module):
    """TRADES' MNIST net: 4 unpadded 3x3 convs with two max-pools, FC 200-200-classes."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size=(28, 28), mean=None,
                 std=None, **_: object):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = _norm(in_chans, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2))
        h, w = (int(s) for s in input_size)
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise UsageError(f"smallcnn needs inputs of at least 16x16, got {h}x{w}; use cnn_mnist")
        self.classifier = nn.Sequential(
            nn.Linear(64 * fh * fw, 200), nn.ReLU(), nn.Dropout(0.5), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)).flatten(1))


class Normalized(nn.Module):
    """Wraps a model that expects normalised input (e.g. any timm model) with a Normalize layer."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))
