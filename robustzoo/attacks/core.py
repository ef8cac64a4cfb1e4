"""Gradient attacks in pixel space ([0,1]); gradients w.r.t. the input only.

ε and step sizes are on the [0,1] pixel scale (8/255 = 0.0314). ``eps`` may be a float or a
per-example tensor of shape [B] (Customized AT's ε_i).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..plugins import declare_entry_check, instance_of

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{k≠y} z_k per example (positive = correctly classified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return true - other


def cw_loss(kappa: float = 50.0) -> LossFn:
    """CW∞ attack loss ``−max(z_y − max_{k≠y} z_k + κ, 0)`` (ascending it lowers the margin)."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -torch.clamp(cw_margin(logits, y) + kappa, min=0)

    return loss


def _as_column(v: float | torch.Tensor, x: torch.Tensor) -> float | torch.Tensor:
    """Broadcast a per-example [B] tensor to [B,1,1,1]; floats pass through."""
    if isinstance(v, torch.Tensor):
        return v.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return v


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str = "linf",
            clip: bool = True) -> torch.Tensor:
    """Project onto the ε-ball around x (L-inf or L2), then clip to [0,1] (unless ``clip`` is False)."""
    delta = x_adv - x
    if norm == "linf":
        e = _as_column(eps, x)
        delta = torch.maximum(torch.minimum(delta, e), -e) if isinstance(e, torch.Tensor) else delta.clamp(-e, e)
    elif norm == "l2":
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        e = _as_column(eps, x)
        delta = delta * torch.clamp(e / n, max=1.0)
    else:
        raise ValueError(f"unknown norm {norm!r}: use 'linf' or 'l2'")
    return (x + delta).clamp(0.0, 1.0) if clip else x + delta


@contextlib.contextmanager
def attack_bn_mode(model: nn.Module, mode: str | None) -> Iterator[None]:
    """Run the attack with BatchNorm in 'train' or 'eval' mode (None: leave as is), then restore."""
    if mode is None:
        yield
        return
    was_training = model.training
    model.train(mode == "train")
    try:
        yield
    finally:
        model.train(was_training)


def random_start(x: torch.Tensor, eps: float | torch.Tensor, kind: str, norm: str = "linf",
                 clip: bool = True) -> torch.Tensor:
    """Starting point: 'uniform' U(−ε, ε), 'normal' x + 0.001·N(0,I) (TRADES), or 'none'.

    ``eps`` here is the radius of the start (usually the attack's ε); ``clip`` clips to [0,1].
    """
    if kind == "none":
        return x.clone()
    if kind == "normal":
        out = x + 0.001 * torch.randn_like(x)
    elif kind == "uniform":
        e = _as_column(eps, x)
        if norm == "l2":
            d = torch.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            r = torch.rand(x.shape[0], device=x.device).view(-1, *([1] * (x.dim() - 1)))
            out = x + d * r * e
        else:
            out = x + (torch.rand_like(x) * 2 - 1) * e
    else:
        raise ValueError(f"unknown random start {kind!r}: use uniform, normal or none")
    return out.clamp(0.0, 1.0) if clip else out


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor,
    steps: int,
    norm: str = "linf",
    rand_init: str = "uniform",
    loss: LossFn = ce_loss,
    bn_mode: str | None = None,
    start_eps: float | None = None,
    clip: bool = True,
    clip_start: bool | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss`` within the ε-ball; returns detached x_adv.

    Args:
        model: maps [0,1] images to logits.
        x: clean images in [0,1].
        y: labels (or whatever ``loss`` takes as its second argument, e.g. soft labels).
        eps: radius on the [0,1] scale, float or per-example [B] tensor.
        alpha: step size (same scale), float or [B] tensor.
        steps: number of gradient steps (0 returns the random start).
        norm: 'linf' (sign steps) or 'l2' (normalised gradient steps).
        rand_init: 'uniform', 'normal' (x + 0.001·N) or 'none'.
        loss: per-example loss ``loss(logits, y) -> [B]``; the sum is ascended so each
            example's step does not depend on the batch size.
        bn_mode: BatchNorm mode during the attack: 'train', 'eval' or None (unchanged).
        start_eps: radius of the uniform random start (None: ``eps``). Calibrated AT's MNIST
            code starts from U(−0.1, 0.1) whatever ε is; the start is not projected onto the
            ε-ball before the first step, as there.
        clip: clip every iterate to [0,1] (False: the images may leave it, as in that code).
        clip_start: clip the random start to [0,1] (None: as ``clip``). TRADES' and MART's
            code take the first gradient at x + 0.001·N unclipped (False); every step after
            it is projected and clipped as ``clip`` says.
    """
    x = x.detach()
    x_adv = random_start(x, eps if start_eps is None else start_eps, rand_init, norm,
                         clip=clip if clip_start is None else clip_start)
    if steps == 0:
        return project(x_adv, x, eps, norm, clip=clip).detach()
    a = _as_column(alpha, x)
    with attack_bn_mode(model, bn_mode), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            obj = loss(model(x_adv), y).sum()
            (grad,) = torch.autograd.grad(obj, [x_adv])
            with torch.no_grad():
                if norm == "linf":
                    step = a * grad.sign()
                else:
                    gn = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
                    step = a * grad / gn
                x_adv = project(x_adv.detach() + step, x, eps, norm, clip=clip)
    return x_adv.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float | torch.Tensor,
         loss: LossFn = ce_loss, bn_mode: str | None = None) -> torch.Tensor:
    """One signed-gradient step of size ε from x (no random start)."""
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, rand_init="none", loss=loss, bn_mode=bn_mode)


@dataclass(frozen=True)
class AttackContext:
    """What an evaluation attack needs besides the model and data.

    Attributes:
        eps: budget on the [0,1] scale.
        alpha: step size of the dataset's evaluation protocol (0.003 CIFAR, 0.015 MNIST-like).
        num_classes: number of labels.
        seed: seed for random starts / random search.
        norm: 'linf' or 'l2'.
        device: torch device.
    """

    eps: float
    alpha: float
    num_classes: int = 10
    seed: int = 0
    norm: str = "linf"
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    """An evaluation attack in the registry.

    ``run(model, x, y, ctx) -> x_adv``; the model is in eval mode and x in [0,1]. ``settings``
    returns the attack's settings for the results table (steps, α, κ, ...). ``any_layout``:
    ``run`` works on x in any memory layout (no ``.view`` of it), so the evaluation may hand
    it batches already in the model's layout (channels_last on CUDA) and no attack step pays
    a layout copy; False (the default) keeps x contiguous NCHW.
    """

    name: str
    run: Callable[[nn.Module, torch.Tensor, torch.Tensor, AttackContext], torch.Tensor]
    description: str = ""
    threat_model: str = "linf"
    settings: Callable[[AttackContext], dict[str, Any]] = lambda ctx: {}
    kind: str = "white-box"
    batch_size: int | None = None
    any_layout: bool = False


declare_entry_check("attacks", instance_of(AttackSpec, "a robustzoo.attacks.AttackSpec"))
