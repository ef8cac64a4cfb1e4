"""Registers the native nets in timm's model registry.

Once robustzoo is imported, ``timm.create_model("preact_resnet18", num_classes=10)`` builds
our CIFAR net (timm's ImageNet stems are wrong for 32x32), and a Hub repo whose config.json
names one of them loads with ``timm.create_model("hf-hub:org/name", pretrained=True)``.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, register_model

from .nets import CNNMnist, PreActResNet18, SmallCNN, WideResNet

_CIFAR = dict(input_size=(3, 32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=10,
              first_conv="conv1", classifier="fc", crop_pct=1.0, interpolation="bilinear")
_MNIST = dict(input_size=(1, 28, 28), mean=(0.0,), std=(1.0,), num_classes=10, crop_pct=1.0,
              first_conv="features.0", interpolation="bilinear")


# timm reads the default config of each entrypoint from this module-level dict at
# registration (no pretrained weights: the configs only describe inputs and layer names).
default_cfgs = {
    "preact_resnet18": dict(_CIFAR),
    "wrn34_10": dict(_CIFAR),
    "wrn28_10": dict(_CIFAR),
    "cnn_mnist": dict(_MNIST, classifier="fc"),
    "smallcnn": dict(_MNIST, classifier="classifier.5"),
}


def _build(cls, variant: str, pretrained: bool, default_cfg: dict, **kwargs):
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


def _noop_registered(name: str) -> bool:
    import timm

    return timm.is_model(name)


if not _noop_registered("preact_resnet18"):

    @register_model
    def preact_resnet18(pretrained: bool = False, **kwargs):
        """PreAct ResNet-18 for 32x32 inputs (robustzoo)."""
        return _build(PreActResNet18, "preact_resnet18", pretrained, _CIFAR, **kwargs)

    @register_model
    def wrn34_10(pretrained: bool = False, **kwargs):
        """WideResNet-34-10 for 32x32 inputs (robustzoo)."""
        return _build(WideResNet, "wrn34_10", pretrained, _CIFAR, depth=34, widen=10, **kwargs)

    @register_model
    def wrn28_10(pretrained: bool = False, **kwargs):
        """WideResNet-28-10 for 32x32 inputs (robustzoo)."""
        return _build(WideResNet, "wrn28_10", pretrained, _CIFAR, depth=28, widen=10, **kwargs)

    @register_model
    def cnn_mnist(pretrained: bool = False, **kwargs):
        """Calibrated AT's 4-conv/2-FC MNIST net (robustzoo)."""
        return _build(CNNMnist, "cnn_mnist", pretrained, dict(_MNIST, classifier="fc"), **kwargs)

    @register_model
    def smallcnn(pretrained: bool = False, **kwargs):
        """TRADES' MNIST net (robustzoo)."""
        return _build(SmallCNN, "smallcnn", pretrained, dict(_MNIST, classifier="classifier.5"), **kwargs)
