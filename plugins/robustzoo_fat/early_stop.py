"""Early-stopped PGD-K-τ, the inner search of Friendly Adversarial Training.

Each example i keeps a budget τ_i. Before every step the current point is classified; an
example that is already misclassified spends one unit of budget, or, when its budget is
exhausted, stops for good (frozen at its current point). τ = K therefore never stops anyone
and reproduces plain PGD exactly; τ = 0 stops each example at the first misclassified point.

Every example keeps its row: (x', x, y) need no re-alignment. By default the whole batch
runs every step, finished examples included: shapes stay fixed (no recompilation, no host
sync in the loop) and the cost is K × 2F per image whatever τ is.

With ``compact=True`` each step runs only on the rows still attacking (the authors' code
drops finished examples too, but re-orders the batch): their positions are gathered, padded
with finished rows to a multiple of ``granule`` (few distinct shapes for cuDNN's autotuner,
and float kernels that give a row the same result in the full batch), and the results are
scattered back into place; the search ends once every row has stopped. Each example's path
is the same as without compaction: the same steps, the same stop decisions, the same noise
(drawn for the whole batch, as before). The price is one host sync per step (the number of
rows left) and a batch that changes shape. Only for a search in eval mode: in train mode
BatchNorm's batch statistics tie the rows together, and the full batch always runs.
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
    compact: bool = False,
    granule: int = 8,
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
        compact: run each step only on the rows still attacking (see the module docstring);
            ignored when the search runs in train mode.
        granule: compacted batches are padded to a multiple of this many rows.

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
        if compact and not model.training:
            return _compacted_search(model, x, y, target, x_adv, eps, a, budget, active, taken, steps, loss,
                                     omega, granule)
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


def _compacted_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Any, x_adv: torch.Tensor,
                      eps: float | torch.Tensor, a: float | torch.Tensor, budget: torch.Tensor,
                      active: torch.Tensor, taken: torch.Tensor, steps: int, loss: LossFn, omega: float,
                      granule: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop of :func:`early_stopped_pgd` on the rows still attacking (eval mode only).

    Row for row the same arithmetic as the full-batch loop, which it is while the padded
    count of rows left is the whole batch: a finished row is never updated (``torch.where``),
    and its budget and step count stay as they are.
    """
    n = x.shape[0]
    col = (-1, *([1] * (x.dim() - 1)))

    def take(v: Any, rows: torch.Tensor | None) -> Any:
        """``v[rows]`` for a per-example tensor (first dimension n); anything else as it is."""
        if rows is None or not (isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n):
            return v
        return v.index_select(0, rows)

    def put(full: torch.Tensor, rows: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
        return part if rows is None else full.index_copy(0, rows, part)

    x_adv = x_adv.detach()
    for k in range(steps):
        left = int(active.sum())  # the one host sync of a step
        if left == 0:
            if omega:  # draw the noise of the skipped steps: later draws stay the same
                for _ in range(steps - k):
                    torch.randn_like(x_adv)
            break
        m = min(n, -(-left // granule) * granule)
        # the rows still attacking in batch order, then finished ones as padding (never updated)
        rows = None if m == n else torch.argsort((~active).to(torch.uint8), stable=True)[:m]
        act, bud = take(active, rows), take(budget, rows)
        xr = take(x_adv, rows).requires_grad_(True)
        logits = model(xr)
        with torch.no_grad():
            wrong = act & (logits.argmax(1) != take(y, rows))
            act = act & ~(wrong & (bud <= 0))  # out of budget: frozen where it stands
            bud = bud - (wrong & act).long()   # misclassified but may go on: pay one unit
        (grad,) = torch.autograd.grad(loss(logits, take(target, rows)).sum(), [xr])
        with torch.no_grad():
            x_next = xr.detach() + take(a, rows) * grad.sign()
            if omega:  # the whole batch's draw, as the full-batch loop makes it
                x_next = x_next + omega * take(torch.randn_like(x_adv), rows)
            x_next = project(x_next, take(x, rows), take(eps, rows))
            x_adv = put(x_adv, rows, torch.where(act.view(col), x_next, xr.detach()))
            active, budget = put(active, rows, act), put(budget, rows, bud)
            taken = put(taken, rows, take(taken, rows) + act.long())
    return x_adv.detach(), taken
