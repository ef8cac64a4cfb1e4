"""Early-stopped PGD-K-τ, the inner search of Friendly Adversarial Training.

Each example i keeps a budget τ_i. Before every step the current point is classified; an
example that is already misclassified spends one unit of budget, or, when its budget is
exhausted, stops for good (frozen at its current point). τ = K therefore never stops anyone
and reproduces plain PGD exactly; τ = 0 stops each example at the first misclassified point.

Unlike the authors' code, which drops finished examples from the batch and concatenates them
in the order they finish, every example stays in its row: (x', x, y) need no re-alignment,
shapes stay fixed (no recompilation, no boolean-mask indexing, no host sync in the loop).
The price is that finished examples still ride along in the forward and backward: the cost is
K × 2F per image whatever τ is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from robustzoo.attacks import attack_bn_mode, ce_loss, project
from robustzoo.attacks.core import random_start

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]


def early_stopped_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor,
    steps: int,
    tau: int | torch.Tensor,
    loss: LossFn = ce_loss,
    rand_init: str = "uniform",
    omega: float = 0.0,
    bn_mode: str | None = "eval",
    loss_target: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L-inf PGD that freezes each example once it has been misclassified more than τ times.

    Args:
        model: maps [0,1] images to logits.
        x: clean images in [0,1], [B, C, H, W].
        y: [B] labels, used to decide misclassification (and as the loss target by default).
        eps: radius on the [0,1] scale, float or per-example [B] tensor.
        alpha: step size on the same scale, float or [B] tensor.
        steps: K, the most steps any example takes.
        tau: budget τ (int, or per-example [B] integer tensor); τ >= K equals plain PGD.
        loss: per-example loss ``loss(logits, loss_target) -> [B]``; its sum is ascended.
        rand_init: 'uniform' U(−ε, ε), 'normal' x + 0.001·N, or 'none'.
        omega: std of the Gaussian noise ω·N(0, I) added to every step before projection
            (FAT: 0.001 for the AT variant); 0 draws no noise at all.
        bn_mode: BatchNorm mode during the search: 'eval' (FAT), 'train' or None (unchanged).
        loss_target: second argument of ``loss`` (e.g. clean logits for the TRADES KL);
            defaults to ``y``.

    Returns:
        ``(x_adv, steps_taken)``: detached adversarial images aligned row by row with x and y,
        and the [B] int64 number of gradient steps each example took.
    """
    x = x.detach()
    target = y if loss_target is None else loss_target
    n = x.shape[0]
    budget = (tau.to(x.device, torch.long).clone() if isinstance(tau, torch.Tensor)
              else torch.full((n,), int(tau), dtype=torch.long, device=x.device))
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    taken = torch.zeros(n, dtype=torch.long, device=x.device)
    col = (-1, *([1] * (x.dim() - 1)))
    a = alpha.to(x.device, x.dtype).view(col) if isinstance(alpha, torch.Tensor) else alpha
    x_adv = random_start(x, eps, rand_init)
    if steps == 0:
        return project(x_adv, x, eps).detach(), taken
    with attack_bn_mode(model, bn_mode), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            with torch.no_grad():
                wrong = active & (logits.argmax(1) != y)
                active &= ~(wrong & (budget <= 0))  # out of budget: frozen where it stands
                budget -= (wrong & active).long()   # misclassified but may go on: pay one unit
            (grad,) = torch.autograd.grad(loss(logits, target).sum(), [x_adv])
            with torch.no_grad():
                x_next = x_adv.detach() + a * grad.sign()
                if omega:
                    x_next = x_next + omega * torch.randn_like(x_next)
                x_next = project(x_next, x, eps)
                x_adv = torch.where(active.view(col), x_next, x_adv.detach())
                taken += active.long()
    return x_adv.detach(), taken
