"""Native architectures of the robustness literature, with normalisation inside the model.

Every model takes images in [0,1] and starts with a :class:`Normalize` layer, so attacks
work in pixel space and a checkpoint carries its own preprocessing.

Every net also keeps timm's model contract, so that a published model fine-tunes, extracts
features and exports like any timm backbone (timm's own ``tests/test_models.py`` passes on
all of them):

* ``num_classes``, ``num_features`` (channels of the unpooled feature map),
  ``head_hidden_size`` (width of the pre-logits), ``in_chans``, ``get_classifier()``,
  ``reset_classifier(num_classes, global_pool=None)``;
* ``forward_features(x)``: normalisation and the conv stages, an unpooled (N, C, H, W) map
  (also for the MNIST nets); ``forward_head(x, pre_logits=False)``: pooling (the conv nets
  average, the MNIST nets flatten into their FC layers, as in their papers), dropout and
  the classifier; ``global_pool=''`` with ``num_classes=0`` returns the feature map itself;
* ``feature_info``, ``forward_intermediates`` and ``prune_intermediate_layers``: what
  ``timm.create_model(..., features_only=True)`` builds on;
* ``group_matcher`` (layer-wise learning-rate decay in timm's optimizer factory);
* ``drop_rate`` (dropout before the classifier; SmallCNN's is the TRADES dropout after its
  first FC layer, default 0.5) and ``drop_path_rate`` (stochastic depth on the residual
  branches of the two ResNets; the MNIST nets have no residual branch and refuse it);
* ``device`` / ``dtype`` factory arguments; unknown arguments raise ``TypeError``;
* forwards that ``torch.jit.script`` and ``torch.fx`` can compile.

The classifier is the last linear layer (its module name is the ``classifier`` of the timm
config: ``fc`` or ``classifier.5``). State-dict keys are the ones every earlier checkpoint
has, so every checkpoint written before still loads.
"""

# No `from __future__ import annotations` here, unlike the rest of the package: TorchScript
# and torch.fx read the annotations of forward() as objects, and strings break both
# (`torch.jit.script` of an fx-traced net fails on them). Python 3.10 spells every hint
# below without it.

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are saved with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: Any = None, dtype: Any = None):
        super().__init__()
        kw = dict(dtype=dtype or torch.float32, device=device)
        self.register_buffer("mean", torch.tensor(list(mean), **kw).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), **kw).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def adapt_channels(values: Sequence[float], in_chans: int) -> list[float]:
    """Per-channel constants (mean, std) of a net trained on ``len(values)`` channels, for
    ``in_chans`` channels — the way timm adapts the first conv's weights.

    timm repeats the stem's weights cyclically (scaled by old/new channels) when there are
    more channels and sums them into one for ``in_chans=1``; repeating mean and std the same
    way keeps a grey image replicated into every channel exactly as the net saw it. For one
    channel from several the average is used (exact when the channels' constants agree).
    """
    values = [float(v) for v in values]
    if len(values) == in_chans or not values:
        return values
    if in_chans == 1:
        return [sum(values) / len(values)]
    return [values[i % len(values)] for i in range(in_chans)]


def _norm(in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None, dd: dict) -> Normalize:
    mean = [0.0] * in_chans if mean is None else adapt_channels(mean, in_chans)
    std = [1.0] * in_chans if std is None else adapt_channels(std, in_chans)
    if len(mean) != in_chans or len(std) != in_chans:
        raise UsageError(f"mean/std need {in_chans} values (one per channel)")
    return Normalize(mean, std, **dd)


def _linear_or_identity(in_features: int, num_classes: int, dd: dict) -> nn.Module:
    # timm's convention: num_classes=0 removes the classifier (forward returns features).
    return nn.Linear(in_features, num_classes, **dd) if num_classes > 0 else nn.Identity()


def _take_indices(n: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's feature-index convention: None = all, an int = the last n, a sequence = those
    indices (negative ones count from the end). Returns (sorted indices, the largest)."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"last-n index {indices} is out of range (1 to {n})")
        take = list(range(n - indices, n))
    else:
        take = [n + i if i < 0 else int(i) for i in indices]
        if not all(0 <= i < n for i in take):
            raise ValueError(f"feature indices {list(indices)} are out of range (0 to {n - 1})")
    return take, max(take)


class RobustNet(nn.Module):
    """timm's model interface shared by the native nets.

    A subclass sets in ``__init__``: ``num_classes``, ``num_features``, ``head_hidden_size``,
    ``in_chans``, ``global_pool``, ``drop_rate`` and ``feature_info`` (one dict per stage:
    ``num_chs``, ``reduction``, ``module``), and as class attributes ``_stages`` (the module
    names each stage applies in order, normalisation first: running them all, then
    :meth:`_final_norm`, is ``forward_features``), ``_head_name`` (the classifier),
    ``_pools`` (the ``global_pool`` values it takes, default first) and ``_groups``
    (:meth:`group_matcher`). It defines :meth:`forward_features` and :meth:`forward_head`
    explicitly, so that TorchScript and torch.fx see plain code.
    """

    _stages = ()
    _head_name = "fc"
    _pools = ("avg", "")
    _groups = {}

    def _check_pool(self, global_pool: str, num_classes: int | None = None) -> str:
        """A supported ``global_pool``; at construction ('' with a classifier is refused: the
        classifier cannot take an unpooled map)."""
        if global_pool not in self._pools:
            raise UsageError(f"global_pool {global_pool!r} is not supported by {type(self).__name__}; "
                             f"use {self._pools[0]!r} or '' (no pooling, with num_classes=0)")
        if global_pool == "" and num_classes:
            raise UsageError(f"global_pool '' keeps the unpooled feature map, which a classifier cannot "
                             f"take; pass num_classes=0 with it (or global_pool={self._pools[0]!r})")
        return global_pool

    def _factory(self) -> dict:
        """device and dtype of the existing parameters (a new head goes where the net is)."""
        p = next(self.parameters())
        return dict(device=p.device, dtype=p.dtype)

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (``nn.Identity`` after ``reset_classifier(0)``)."""
        return self.get_submodule(self._head_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier by a new, freshly initialised one for ``num_classes``.

        ``num_classes=0`` removes it (the model then returns the pre-logits features);
        ``global_pool=''`` keeps the feature map unpooled; ``None`` keeps the current pooling.
        """
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.num_classes = int(num_classes)
        parent, _, leaf = self._head_name.rpartition(".")
        owner = self.get_submodule(parent) if parent else self
        head = _linear_or_identity(self.head_hidden_size, self.num_classes, self._factory())
        owner._modules[leaf] = head.train(self.training)  # setattr would refuse an index name such as '5'

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps after each stage of ``feature_info``, as timm defines the call.

        Args:
            x: images in [0,1].
            indices: None (all), an int (the last n) or a sequence of stage indices.
            norm: apply the final norm (pre-activation nets: BN-ReLU) to the last stage's map.
            stop_early: stop after the last stage asked for.
            output_fmt: 'NCHW' only.
            intermediates_only: return only the list of maps.

        Returns:
            The maps, or (``forward_features(x)``, maps).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; these nets give 'NCHW'")
        take, last_taken = _take_indices(len(self._stages), indices)
        out: list[torch.Tensor] = []
        last = len(self._stages) - 1
        for i, names in enumerate(self._stages):
            for name in names:
                x = self.get_submodule(name)(x)
            if i in take:
                out.append(self._final_norm(x) if norm and i == last else x)
            if stop_early and i == last_taken:
                break
        if intermediates_only:
            return out
        return (self._final_norm(x) if i == last else x), out

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last index asked for (and the final norm / the head), as
        timm's feature extraction does; returns the absolute indices."""
        take, last_taken = _take_indices(len(self._stages), indices)
        for names in self._stages[last_taken + 1:]:
            for name in names:
                parent, _, leaf = name.rpartition(".")
                (self.get_submodule(parent) if parent else self)._modules[leaf] = nn.Identity()
        truncated = last_taken < len(self._stages) - 1
        if prune_norm or truncated:
            self._prune_norm()
        if truncated:
            self.num_features = self.head_hidden_size = int(self.feature_info[last_taken]["num_chs"])
        if prune_head or truncated:
            self._prune_head()
        return take

    def _prune_norm(self) -> None:
        pass

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise learning-rate decay (stem, then the blocks)."""
        return {"stem": self._groups["stem"], "blocks": self._groups["coarse" if coarse else "fine"]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0,1] (normalisation is the first layer)."""
        return self.forward_head(self.forward_features(x))


def _drop_path(rate: float) -> nn.Module:
    """Stochastic depth on a residual branch: timm's DropPath, or nothing at rate 0."""
    if rate <= 0:
        return nn.Identity()
    from timm.layers import DropPath  # deferred: `import robustzoo` must not import timm (slow)

    return DropPath(rate)


def _drop_path_rates(rate: float, blocks: int) -> list[float]:
    # timm's schedule: the rate grows linearly from 0 at the first block to `rate` at the last.
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"drop_path_rate {rate} must be in [0, 1)")
    return [rate * i / max(blocks - 1, 1) for i in range(blocks)]


def _check_drop_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:
        raise UsageError(f"drop_rate {rate} must be in [0, 1)")
    return float(rate)


class _ConvNet(RobustNet):
    """Pre-activation ResNet trunk: stages, then BN-ReLU, average pooling and ``fc``."""

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(x)) if self.final_act else self.bn(x)

    def _prune_norm(self) -> None:
        self.bn = nn.Identity()
        self.final_act = False

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average-pool (``global_pool='avg'``), dropout and classify what ``forward_features`` gave.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the pooled features (``head_hidden_size`` wide) instead of logits.
        """
        if self.global_pool == "avg":
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice, identity shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, drop_path: float = 0.0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(in_planes, **dd)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, **dd)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False, **dd)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.drop_path(out) + short


class PreActResNet18(_ConvNet):
    """PreAct ResNet-18 for 32x32 inputs (Rice et al. 2020): 11.17 M parameters at 10 classes.

    ``forward_features`` gives an (N, 512, H/8, W/8) map; ``feature_info``: the stem and the
    four stages (strides 1, 1, 2, 4, 8).
    """

    _stages = (("normalize", "conv1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
    _groups = {"stem": r"^normalize|^conv1", "coarse": r"^layer(\d+)",
               "fine": [(r"^layer(\d+)\.(\d+)", None), (r"^bn", (99999,))]}

    def __init__(self, num_classes: int = 10, in_chans: int = 3, input_size: Sequence[int] = (32, 32),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.global_pool = self._check_pool(global_pool, num_classes)
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        self.num_features = self.head_hidden_size = 512
        self.drop_rate, self.final_act = _check_drop_rate(drop_rate), True
        dpr = _drop_path_rates(drop_path_rate, 8)
        self.normalize = _norm(in_chans, mean, std, dd)
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False, **dd)
        layers, in_planes = [], 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2))):
            layers.append(nn.Sequential(PreActBlock(in_planes, planes, stride, dpr[2 * i], **dd),
                                        PreActBlock(planes, planes, 1, dpr[2 * i + 1], **dd)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512, **dd)
        self.fc = _linear_or_identity(512, num_classes, dd)
        self.feature_info = [dict(num_chs=64, reduction=1, module="conv1")] + [
            dict(num_chs=c, reduction=r, module=f"layer{i}")
            for i, (c, r) in enumerate(((64, 1), (128, 2), (256, 4), (512, 8)), 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then the conv stages and the final BN-ReLU: an unpooled (N, 512, H/8, W/8) map."""
        x = self.conv1(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self._final_norm(x)


class WideBlock(nn.Module):
    """Pre-activation wide block as in the TRADES/MART code (shortcut conv when widths change)."""

    def __init__(self, in_planes: int, planes: int, stride: int, drop_path: float = 0.0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.bn1 = nn.BatchNorm2d(in_planes, **dd)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(planes, **dd)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False, **dd)
        self.equal = in_planes == planes and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, planes, 1, stride, bias=False, **dd)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        short = x if self.shortcut is None else self.shortcut(o)
        out = self.conv2(F.relu(self.bn2(self.conv1(o))))
        return self.drop_path(out) + short


class WideResNet(_ConvNet):
    """WideResNet-d-k for 32x32 inputs: stem 16, stages 16k/32k/64k, n=(d-4)/6 blocks each.

    ``forward_features`` gives an (N, 64k, H/4, W/4) map; ``feature_info``: the stem and the
    three stages (strides 1, 1, 2, 4).
    """

    _stages = (("normalize", "conv1"), ("block1",), ("block2",), ("block3",))
    _groups = {"stem": r"^normalize|^conv1", "coarse": r"^block(\d+)",
               "fine": [(r"^block(\d+)\.(\d+)", None), (r"^bn", (99999,))]}

    def __init__(self, depth: int = 34, widen: int = 10, num_classes: int = 10, in_chans: int = 3,
                 input_size: Sequence[int] = (32, 32), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, device: Any = None, dtype: Any = None):
        super().__init__()
        if (depth - 4) % 6:
            raise UsageError("WideResNet depth must be 6n+4")
        dd = dict(device=device, dtype=dtype)
        self.global_pool = self._check_pool(global_pool, num_classes)
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        self.num_features = self.head_hidden_size = widths[3]
        self.drop_rate, self.final_act = _check_drop_rate(drop_rate), True
        dpr = _drop_path_rates(drop_path_rate, 3 * n)
        self.normalize = _norm(in_chans, mean, std, dd)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False, **dd)
        stages, in_planes = [], widths[0]
        for s, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = [WideBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1,
                                dpr[s * n + i], **dd) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3], **dd)
        self.fc = _linear_or_identity(widths[3], num_classes, dd)
        self.feature_info = [dict(num_chs=widths[0], reduction=1, module="conv1")] + [
            dict(num_chs=widths[i], reduction=r, module=f"block{i}") for i, r in ((1, 1), (2, 2), (3, 4))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, then the three wide stages and the final BN-ReLU: an unpooled (N, 64k, H/4, W/4) map."""
        x = self.conv1(self.normalize(x))
        return self._final_norm(self.block3(self.block2(self.block1(x))))


def _no_drop_path(arch: str, rate: float) -> None:
    if rate:
        raise UsageError(f"{arch} has no residual branches, so drop_path_rate (stochastic depth) has "
                         f"nowhere to act; leave it at 0 (drop_rate adds dropout before the classifier)")


def _mnist_pool_size(input_size: Sequence[int], fn) -> tuple[int, int]:
    h, w = (int(s) for s in input_size)
    return fn(h), fn(w)


class CNNMnist(RobustNet):
    """Calibrated AT's MNIST net: conv 32, 32 s2, 64, 64 s2 (3x3, pad 1), FC 100, FC classes.

    ``forward_features`` ends after the convs: a (N, 64, 7, 7) map on 28x28 inputs. The head
    flattens it (``global_pool='flatten'``: 64*7*7 = 3136 features, as in the paper), applies
    FC 100 with its ReLU (the pre-logits, ``head_hidden_size`` 100) and the last FC (``fc``).
    ``feature_info``: after each conv (strides 1, 2, 2, 4).
    """

    _pools = ("flatten", "")
    _stages = (("normalize", "features.0", "features.1"), ("features.2", "features.3"),
               ("features.4", "features.5"), ("features.6", "features.7"))
    _groups = {"stem": r"^normalize|^features\.[01]\.", "coarse": r"^features\.(\d+)",
               "fine": [(r"^features\.(\d+)", None), (r"^fc1", (99999,))]}

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: Sequence[int] = (28, 28),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 global_pool: str = "flatten", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        _no_drop_path("cnn_mnist", drop_path_rate)
        dd = dict(device=device, dtype=dtype)
        self.global_pool = self._check_pool(global_pool, num_classes)
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        self.num_features, self.head_hidden_size = 64, 100
        self.drop_rate = _check_drop_rate(drop_rate)
        self.pool_size = _mnist_pool_size(input_size, lambda s: (s + 3) // 4)
        self.normalize = _norm(in_chans, mean, std, dd)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, 1, 1, **dd), nn.ReLU(), nn.Conv2d(32, 32, 3, 2, 1, **dd), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 1, 1, **dd), nn.ReLU(), nn.Conv2d(64, 64, 3, 2, 1, **dd), nn.ReLU())
        self.fc1 = nn.Linear(64 * self.pool_size[0] * self.pool_size[1], 100, **dd)
        self.fc = _linear_or_identity(100, num_classes, dd)
        self.feature_info = [dict(num_chs=c, reduction=r, module=f"features.{m}")
                             for c, r, m in ((32, 1, 1), (32, 2, 3), (64, 2, 5), (64, 4, 7))]

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")
        self.fc1 = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and the four convs: an unpooled (N, 64, H/4, W/4) map."""
        return self.features(self.normalize(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten into FC 100 + ReLU (``global_pool='flatten'``), dropout, the last FC.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the FC-100 features instead of logits.
        """
        if self.global_pool == "flatten":
            x = F.relu(self.fc1(x.flatten(1)))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)


class SmallCNN(RobustNet):
    """TRADES' MNIST net: 4 unpadded 3x3 convs with two max-pools, FC 200-200-classes.

    ``forward_features`` ends after the second max-pool: a (N, 64, 4, 4) map on 28x28 inputs.
    The head flattens it into ``classifier.0-4`` (FC 200, ReLU, the TRADES dropout — its rate
    is ``drop_rate``, 0.5 by default —, FC 200, ReLU: the pre-logits, ``head_hidden_size``
    200) and the last FC ``classifier.5``. The layers keep their ``classifier.<i>`` names so
    that TRADES-style checkpoints load unchanged. ``feature_info``: after the first conv pair,
    the second conv pair and the last pool (strides 1, 2, 4).
    """

    _head_name = "classifier.5"
    _pools = ("flatten", "")
    _stages = (("normalize", "features.0", "features.1", "features.2", "features.3"),
               ("features.4", "features.5", "features.6", "features.7", "features.8"), ("features.9",))
    _groups = {"stem": r"^normalize|^features\.[01]\.", "coarse": r"^features\.(\d+)",
               "fine": [(r"^features\.(\d+)", None), (r"^classifier\.[0-4]\.", (99999,))]}

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: Sequence[int] = (28, 28),
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 global_pool: str = "flatten", drop_rate: float = 0.5, drop_path_rate: float = 0.0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        _no_drop_path("smallcnn", drop_path_rate)
        dd = dict(device=device, dtype=dtype)
        self.global_pool = self._check_pool(global_pool, num_classes)
        self.num_classes, self.in_chans = int(num_classes), int(in_chans)
        self.num_features, self.head_hidden_size = 64, 200
        # The dropout is a layer of the classifier (classifier.2), where the TRADES code has it.
        self.drop_rate = _check_drop_rate(drop_rate)
        self.pool_size = _mnist_pool_size(input_size, lambda s: ((s - 4) // 2 - 4) // 2)
        fh, fw = self.pool_size
        if fh < 1 or fw < 1:
            raise UsageError(f"smallcnn needs inputs of at least 16x16, got {input_size[0]}x{input_size[1]}; "
                             f"use cnn_mnist")
        self.normalize = _norm(in_chans, mean, std, dd)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 32, 3, **dd), nn.ReLU(), nn.Conv2d(32, 32, 3, **dd), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, **dd), nn.ReLU(), nn.Conv2d(64, 64, 3, **dd), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(64 * fh * fw, 200, **dd), nn.ReLU(), nn.Dropout(self.drop_rate),
            nn.Linear(200, 200, **dd), nn.ReLU(), _linear_or_identity(200, num_classes, dd))
        self.feature_info = [dict(num_chs=c, reduction=r, module=f"features.{m}")
                             for c, r, m in ((32, 1, 3), (64, 2, 8), (64, 4, 9))]

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")
        for i in range(5):
            self.classifier._modules[str(i)] = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, the convs and both max-pools: an unpooled (N, 64, H', W') map."""
        return self.features(self.normalize(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten into the first two FC layers (``global_pool='flatten'``) and the last FC.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the second FC-200 features instead of logits.
        """
        if self.global_pool == "flatten":
            x = x.flatten(1)
            x = self.classifier[4](self.classifier[3](self.classifier[2](self.classifier[1](self.classifier[0](x)))))
        return x if pre_logits else self.classifier[5](x)


class Normalized(nn.Module):
    """Wraps a model that expects normalised input (e.g. any timm model) with a Normalize layer."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))
