"""Architectures: native CIFAR/MNIST nets, any timm model, normalisation inside the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import NotFoundError, UsageError, did_you_mean, first_sentence
from ..plugins import declare_entry_check, declare_entry_type, registry
from .nets import CNNMnist, Normalize, Normalized, PreActResNet18, SmallCNN, WideResNet

__all__ = ["ArchitectureSpec", "build_model", "check_input_size", "Normalize", "Normalized", "PreActResNet18",
           "WideResNet", "CNNMnist", "SmallCNN", "count_parameters"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """A model factory in the architectures registry.

    ``factory(num_classes=, in_chans=, input_size=, mean=, std=, **kwargs) -> nn.Module``.
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    input_size: str = "any"
    params: str = ""
    extra: dict = field(default_factory=dict)


def _architecture_entry(entry: ArchitectureSpec | str, factory: Callable[..., nn.Module] | None = None,
                        **info: object) -> ArchitectureSpec:
    """``register(ArchitectureSpec(...))`` or the shorthand ``register(name, factory, **info)``."""
    if isinstance(entry, ArchitectureSpec):
        return entry
    return ArchitectureSpec(name=entry, factory=factory, **info)


declare_entry_type("architectures", _architecture_entry)
declare_entry_check("architectures", lambda e: None if isinstance(e, ArchitectureSpec) and callable(e.factory)
                    else "an ArchitectureSpec, or (name, factory) with a callable factory")

TIMM_PREFIX = "timm/"


def build_model(
    arch: str,
    *,
    num_classes: int,
    in_chans: int,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    **kwargs: object,
) -> nn.Module:
    """Build ``arch`` from the registry, or any timm model named ``timm/<name>``.

    Raises:
        NotFoundError: unknown name, with close matches from both registries.
    """
    reg = registry("architectures")
    if arch in reg:
        spec = reg.get(arch)
        return spec.factory(num_classes=num_classes, in_chans=in_chans, input_size=tuple(input_size),
                            mean=tuple(mean), std=tuple(std), **kwargs)
    import timm  # deferred: slow to import, and only timm/<name> architectures need it

    name = arch[len(TIMM_PREFIX):] if arch.startswith(TIMM_PREFIX) else None
    if name and timm.is_model(name):
        try:
            net = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                    in_chans=in_chans, **kwargs)
        except TypeError as exc:
            raise UsageError(f"timm model {name!r} rejected the settings: {exc}") from None
        return Normalized(net, mean, std)
    # A typo in a timm name: timm's close names first, spelled as --arch takes them.
    hint = did_you_mean(arch, [TIMM_PREFIX + m for m in timm.list_models()]) if name else ""
    hint = hint or did_you_mean(arch, reg.list())
    if not hint and timm.list_models(f"*{arch}*"):
        hint = f" (timm has it: use 'timm/{timm.list_models(f'*{arch}*')[0]}')"
    raise NotFoundError(f"unknown architecture {arch!r}{hint}; see `robustzoo list architectures` "
                        f"or use any timm model as 'timm/<name>'")


def check_input_size(arch: str, *, num_classes: int, shape: Sequence[int], mean: Sequence[float],
                     std: Sequence[float], dataset: str = "") -> None:
    """Refuse an architecture that cannot take images of ``shape`` (C, H, W), before any data loads.

    The net is built on the meta device (no memory, no initialisation cost) and given one
    image; only when that fails is it built for real on the CPU, so an op without a meta
    kernel is never mistaken for a size mismatch. Both happen under ``fork_rng``: a seeded
    run draws exactly what it drew without the check.

    Raises:
        UsageError: the forward pass fails, naming ``--arch``, the image size and the error.
    """
    c, h, w = (int(v) for v in shape)

    def forward(device: str) -> None:
        with torch.device(device):
            net = build_model(arch, num_classes=num_classes, in_chans=c, input_size=(h, w), mean=mean, std=std)
            net.eval()
            with torch.no_grad():
                net(torch.zeros(2, c, h, w))

    with torch.random.fork_rng(devices=[]):
        try:
            forward("meta")
            return
        except (NotFoundError, UsageError):
            raise
        except Exception:  # noqa: BLE001 - maybe only the meta device; the CPU decides below
            pass
        try:
            forward("cpu")
        except (NotFoundError, UsageError):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of one forward pass is this user error
            first = first_sentence(exc)
            of = f" of {dataset}" if dataset else ""
            raise UsageError(f"--arch {arch} cannot take the {c}×{h}×{w} images{of} ({type(exc).__name__}: "
                             f"{first}); choose an architecture for that size (`robustzoo list architectures`, "
                             f"column input)") from None


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
