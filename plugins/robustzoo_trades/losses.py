"""TRADES losses as pure functions of logits (no model, no attack).

Notation: ``p = softmax(logits_nat)`` is the prediction on clean images, ``q = softmax(logits_adv)``
on adversarial ones, ``KL(p‖q) = Σ_c p_c (log p_c − log q_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("batchmean", "mean")


def kl_per_example(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(logits_p) ‖ softmax(logits_q))`` for each row, shape [B].

    Both distributions keep their gradients: detach ``logits_p`` yourself where p must be a
    constant (the TRADES attack).
    """
    log_p = F.log_softmax(logits_p, dim=1)
    log_q = F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_attack_loss(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """Per-example attack loss ``KL(p(x) ‖ p(x'))`` with p(x) held constant.

    Shaped like :func:`robustzoo.attacks.ce_loss` (``loss(logits, target) -> [B]``) so that
    :func:`robustzoo.attacks.pgd` can ascend it; pass the clean logits where the labels go.
    """
    return kl_per_example(logits_clean.detach(), logits_adv)


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float,
                reduction: str = "batchmean") -> torch.Tensor:
    """TRADES outer loss ``CE(f(x), y) + β · KL(p(x) ‖ p(x'))``.

    p(x) is NOT detached: the KL term also trains the clean prediction (as in the authors'
    code). CE is the batch mean.

    Args:
        logits_nat: [B, C] logits on clean images.
        logits_adv: [B, C] logits on adversarial images.
        y: [B] labels.
        beta: weight of the KL term (β = 1/λ in the paper; 6 on CIFAR-10).
        reduction: 'batchmean' divides the KL summed over batch and classes by B (the paper
            and code); 'mean' divides by B·C, which silently shrinks β by the number of
            classes — offered only to reproduce implementations that made that mistake.

    Returns:
        A scalar tensor.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown KL reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")
    kl = kl_per_example(logits_nat, logits_adv).sum()
    denom = logits_nat.shape[0] * (logits_nat.shape[1] if reduction == "mean" else 1)
    return F.cross_entropy(logits_nat, y) + beta * kl / denom
