"""Native architectures of the robustness literature, with normalisation inside the model.

Every model takes images in [0,1] and starts with a :class:`Normalize` layer, so attacks
work in pixel space and a checkpoint carries its own preprocessing.

Every net also has timm's model interface, so that a published model fine-tunes like any
timm backbone (``timm.create_model("hf-hub:org/name", pretrained=True, num_classes=5)``):
``num_classes``, ``num_features``, ``get_classifier()``, ``reset_classifier(num_classes)``,
``forward_features(x)`` (normalisation included, pooling not) and
``forward_head(x, pre_logits=False)``. The classifier is the last linear layer (its module
name is the ``classifier`` of the timm config: ``fc`` or ``classifier.5``); state-dict keys
are unchanged, so every checkpoint written before still loads.
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


def _linear_or_identity(in_features: int, num_classes: int) -> nn.Module:
    # timm's convention: num_classes=0 removes the classifier (forward returns features).
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def _check_pool(global_pool: str) -> None:
    if global_pool not in ("avg", ""):
        raise UsageError(f"global_pool {global_pool!r} is not supported; use 'avg' (average "
                         f"pooling) or '' (no pooling)")


class TimmInterface:
    """timm's classifier interface for a net whose head is ``[pool ->] classifier``.

    Subclasses set ``num_classes``, ``num_features`` and ``global_pool`` in ``__init__``,
    define ``forward_features`` and name their classifier in ``_head_name``. Nets whose
    features are already flat (``_flat_features``) have nothing to pool: their
    ``global_pool`` is ''.
    """

    num_classes: int
    num_features: int
    global_pool: str
    _head_name: str = "fc"
    _flat_features: bool = False

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (``nn.Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self._head_name)  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a new, freshly initialised one for ``num_classes``.

        ``num_classes=0`` removes it (the model then returns pooled features); ``global_pool``
        '' keeps the feature map unpooled (conv nets only; 'avg' is the default).
        """
        if global_pool is not None:
            _check_pool(global_pool)
            if not self._flat_features:
                self.global_pool = global_pool
        self.num_classes = int(num_classes)
        parent, _, leaf = self._head_name.rpartition(".")
        owner = self.get_submodule(parent) if parent else self  # type: ignore[attr-defined]
        setattr(owner, leaf, _linear_or_identity(self.num_features, self.num_classes))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (conv nets, ``global_pool='avg'``) and classify what ``forward_features`` gave.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the pooled features (``num_features`` wide) instead of logits.
        """
        if self.global_pool == "avg" and x.dim() == 4:
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0,1] (normalisation is the first layer)."""
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


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


class PreActResNet18(TimmInterface, nn.Module):
    """PreAct ResNet-18 for 32x32 inputs (Rice et al. 2020): 11.17 M parameters at 10 classes."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, mean=None, std=None,
                 global_pool: str = "avg", **_: object):
        super().__init__()
        _check_pool(global_pool)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features, self.global_pool = 512, global_pool
        self.normalize = _norm(in_chans, mean, std)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.fc = _linear_or_identity(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then the conv stages: an (N, 512, H/8, W/8) map before pooling."""
        x = self.conv1(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.relu(self.bn(x))


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


class WideResNet(TimmInterface, nn.Module):
    """WideResNet-d-k for 32x32 inputs: stem 16, stages 16k/32k/64k, n=(d-4)/6 blocks each."""

    def __init__(self, depth: int = 34, widen: int = 10, num_classes: int = 10, in_chans: int = 3,
                 mean=None, std=None, global_pool: str = "avg", **_: object):
        super().__init__()
        if (depth - 4) % 6:
            raise UsageError("WideResNet depth must be 6n+4")
        _check_pool(global_pool)
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features, self.global_pool = widths[3], global_pool
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
        self.fc = _linear_or_identity(widths[3], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then the three wide stages: an (N, 64k, H/4, W/4) map before pooling."""
        x = self.conv1(self.normalize(x))
        return F.relu(self.bn(self.block3(self.block2(self.block1(x)))))


class CNNMnist(TimmInterface, nn.Module):
    """Calibrated AT's MNIST net: conv 32, 32 s2, 64, 64 s2 (3x3, pad 1), FC 100, FC classes.

    On 28x28 inputs the flattened features are 64*7*7 = 3136, as in the paper. The head is the
    last FC layer; ``forward_features`` ends after FC 100 and its ReLU (``num_features`` 100).
    """

    _flat_features = True

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size=(28, 28), mean=None,
                 std=None, **_: object):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features, self.global_pool = 100, ""
        self.normalize = _norm(in_chans, mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU())
        h, w = (int(s) for s in input_size)
        flat = 64 * ((h + 3) // 4) * ((w + 3) // 4)
        self.fc1 = nn.Linear(flat, 100)
        self.fc = _linear_or_identity(100, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, the four convs and FC 100 with its ReLU: (N, 100)."""
        x = self.features(self.normalize(x)).flatten(1)
        return F.relu(self.fc1(x))


class SmallCNN(TimmInterface, nn.Module):
    """TRADES' MNIST net: 4 unpadded 3x3 convs with two max-pools, FC 200-200-classes.

    The head is ``classifier.5`` (the last FC); ``forward_features`` ends after the second
    FC 200 and its ReLU (``num_features`` 200). The layers keep their ``classifier.<i>`` names
    so that TRADES-style checkpoints load unchanged.
    """

    _head_name = "classifier.5"
    _flat_features = True

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size=(28, 28), mean=None,
                 std=None, **_: object):
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.num_features, self.global_pool = 200, ""
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
            _linear_or_identity(200, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, the convs and the first two FC layers of the classifier: (N, 200)."""
        x = self.features(self.normalize(x)).flatten(1)
        for layer in list(self.classifier)[:5]:
            x = layer(x)
        return x


class Normalized(nn.Module):
    """Wraps a model that expects normalised input (e.g. any timm model) with a Normalize layer."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))
