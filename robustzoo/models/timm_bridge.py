"""Registers the native nets in timm's model registry.

Once robustzoo is imported, ``timm.create_model("preact_resnet18", num_classes=10)`` builds
our CIFAR net (timm's ImageNet stems are wrong for 32x32): ``import robustzoo`` does not
import timm (it takes seconds), it asks for :func:`register_with_timm` to run as soon as timm
is imported (:func:`robustzoo.lazy.when_imported`). A Hub repo whose config.json
names one of them loads with ``timm.create_model("hf-hub:org/name", pretrained=True)`` —
also with a new head (``num_classes=5``): the default configs below name each net's
``classifier`` and ``first_conv``, which timm needs to drop or adapt those layers.

Weights of an ``hf-hub:`` model: timm's own download checks only the file size. When a
weights verifier is installed (``import robustzoo`` installs :func:`robustzoo.hub`'s, see
:func:`set_weights_verifier`), the factories below hand the download to it instead — the
checks of ``robustzoo pull`` (server hash, the sha256 list of the card of that commit) — and
timm loads the verified local file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..papers import ARCHITECTURES, timm_paper_fields
from .nets import CNNMnist, PreActResNet18, SmallCNN, WideResNet

# Normalisation is the model's first layer (mean/std are its model_args), so the data config
# timm derives (timm.data.resolve_data_config) must not normalise again: mean 0, std 1.
_CIFAR = dict(input_size=(3, 32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=10,
              first_conv="conv1", classifier="fc", crop_pct=1.0, interpolation="bilinear",
              label_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                           "truck"))
_MNIST = dict(input_size=(1, 28, 28), mean=(0.0,), std=(1.0,), num_classes=10, crop_pct=1.0,
              first_conv="features.0", interpolation="bilinear",
              label_names=tuple(str(i) for i in range(10)))
_COMMON = dict(license="apache-2.0",
               notes=("inputs in [0,1]; the model normalises them itself (its first layer)",))


def _cfg(base: dict[str, Any], arch: str, **extra: Any) -> dict[str, Any]:
    paper = ARCHITECTURES[arch]
    return dict(base, **_COMMON, paper_name=paper.title, **timm_paper_fields(paper), **extra)


# timm reads the default config of each entrypoint from this module-level dict at
# registration (no pretrained weights: the configs describe inputs, layer names and labels).
# pool_size: the (H, W) of forward_features at the default input size.
default_cfgs = {
    "preact_resnet18": _cfg(_CIFAR, "preact_resnet18", pool_size=(4, 4)),
    "wrn34_10": _cfg(_CIFAR, "wrn34_10", pool_size=(8, 8)),
    "wrn28_10": _cfg(_CIFAR, "wrn28_10", pool_size=(8, 8)),
    "cnn_mnist": _cfg(_MNIST, "cnn_mnist", classifier="fc", pool_size=(7, 7)),
    "smallcnn": _cfg(_MNIST, "smallcnn", classifier="classifier.5", pool_size=(4, 4)),
}

#: feature stages of each net (``features_only=True`` returns all of them by default).
_FEATURE_STAGES = {"preact_resnet18": 5, "wrn34_10": 4, "wrn28_10": 4, "cnn_mnist": 4, "smallcnn": 3}

#: pretrained_cfg keys a config.json may lack (written before they were recorded) and that
#: timm needs to adapt a pretrained model; filled from the default config of the net.
_ADAPT_KEYS = ("classifier", "first_conv")

WeightsVerifier = Callable[[str, Any], str]
_verifier: WeightsVerifier | None = None


def set_weights_verifier(fn: WeightsVerifier | None) -> None:
    """Install ``fn(hf_hub_id, cache_dir) -> local path of verified model.safetensors``.

    It replaces timm's size-only download of ``hf-hub:`` weights for the nets registered
    here; ``None`` restores timm's own download.
    """
    global _verifier
    _verifier = fn


def _hub_cfg(variant: str, pretrained_cfg: dict[str, Any], cache_dir: Any) -> dict[str, Any]:
    """A config.json's pretrained_cfg completed with the keys timm needs to change the head,
    and pointed at the verified weights when a verifier is installed."""
    cfg = dict(pretrained_cfg)
    for key in _ADAPT_KEYS:
        if cfg.get(key) is None:
            cfg[key] = default_cfgs[variant][key]
    if (_verifier is not None and cfg.get("source") == "hf-hub" and cfg.get("hf_hub_id")
            and not cfg.get("hf_hub_filename")):
        # timm then loads this checked local file instead of downloading by name.
        cfg["file"] = _verifier(str(cfg["hf_hub_id"]), cache_dir)
        cfg["source"] = "file"
    return cfg


def adapt_checkpoint(state_dict: dict[str, Any], model: Any) -> dict[str, Any]:
    """timm's ``pretrained_filter_fn``: fit a checkpoint to the model's channel count
    (``in_chans=3`` on an MNIST net, ``in_chans=1`` on a CIFAR one).

    The Normalize constants are repeated or averaged (:func:`robustzoo.models.nets.
    adapt_channels`) and the first conv's weights adapted as timm 1.0.31 does (summed into one
    channel; otherwise repeated cyclically and scaled by old/new channels) — here, because
    timm before 1.0.31 adapts only from 3 channels. The model's ``pretrained_cfg.input_size``
    then names its own channels, so timm finds nothing left to adapt.
    """
    from .nets import adapt_channels

    for key in ("normalize.mean", "normalize.std"):
        ours = model.state_dict().get(key)
        theirs = state_dict.get(key)
        if ours is not None and theirs is not None and theirs.shape != ours.shape:
            values = adapt_channels(theirs.flatten().tolist(), int(ours.numel()))
            state_dict[key] = theirs.new_tensor(values).view(ours.shape)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = f"{cfg.get('first_conv')}.weight"
    weight, want = state_dict.get(first), model.state_dict().get(first)
    if weight is not None and want is not None and weight.shape[1] != want.shape[1]:
        old, new = weight.shape[1], want.shape[1]
        if new == 1:
            weight = weight.float().sum(dim=1, keepdim=True)
        else:
            weight = weight.float().repeat(1, -(-new // old), 1, 1)[:, :new] * (old / new)
        state_dict[first] = weight.to(want.dtype)
        if isinstance(cfg, dict) and cfg.get("input_size"):
            cfg["input_size"] = (new, *tuple(cfg["input_size"])[1:])
    return state_dict


def _build(cls, variant: str, pretrained: bool, **kwargs):
    # Local import: this module is imported without timm (runs reads default_cfgs); timm is
    # loaded whenever these factories run, since timm calls them.
    from timm.models import build_model_with_cfg

    cfg = kwargs.get("pretrained_cfg")
    if isinstance(cfg, dict) and cfg.get("input_size") and "input_size" not in kwargs:
        # A Hub or local-dir config of another size (8x8 digits): the MNIST nets' first FC
        # depends on it, and timm before 1.0.31 exports no model_args that would say so.
        kwargs["input_size"] = tuple(cfg["input_size"])[1:]
    if pretrained and isinstance(cfg, dict):
        kwargs["pretrained_cfg"] = _hub_cfg(variant, cfg, kwargs.get("cache_dir"))
    # features_only=True: timm's FeatureGetterNet over forward_intermediates, every stage.
    feature_cfg = dict(feature_cls="getter", out_indices=tuple(range(_FEATURE_STAGES[variant])))
    return build_model_with_cfg(cls, variant, pretrained, feature_cfg=feature_cfg,
                                pretrained_filter_fn=adapt_checkpoint, **kwargs)


def preact_resnet18(pretrained: bool = False, **kwargs):
    """PreAct ResNet-18 for 32x32 inputs (robustzoo)."""
    return _build(PreActResNet18, "preact_resnet18", pretrained, **kwargs)


def wrn34_10(pretrained: bool = False, **kwargs):
    """WideResNet-34-10 for 32x32 inputs (robustzoo)."""
    return _build(WideResNet, "wrn34_10", pretrained, depth=34, widen=10, **kwargs)


def wrn28_10(pretrained: bool = False, **kwargs):
    """WideResNet-28-10 for 32x32 inputs (robustzoo)."""
    return _build(WideResNet, "wrn28_10", pretrained, depth=28, widen=10, **kwargs)


def cnn_mnist(pretrained: bool = False, **kwargs):
    """Calibrated AT's 4-conv/2-FC MNIST net (robustzoo)."""
    return _build(CNNMnist, "cnn_mnist", pretrained, **kwargs)


def smallcnn(pretrained: bool = False, **kwargs):
    """TRADES' MNIST net (robustzoo)."""
    return _build(SmallCNN, "smallcnn", pretrained, **kwargs)


ENTRYPOINTS = (preact_resnet18, wrn34_10, wrn28_10, cnn_mnist, smallcnn)


def register_with_timm() -> None:
    """Add the nets to timm's registry (with their default configs); once per process.

    timm reads each entrypoint's default config from this module's ``default_cfgs`` (keyed by
    the function's name) when it registers it.
    """
    # Local import: called when timm has just been imported (or by whoever wants timm now).
    import timm
    from timm.models import register_model

    for fn in ENTRYPOINTS:
        if not timm.is_model(fn.__name__):
            register_model(fn)
