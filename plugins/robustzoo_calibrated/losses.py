"""The two outer losses of Calibrated Adversarial Training as pure functions of logits.

Notation: ``p(.) = softmax(f(.))``, ``KL(p‖q) = Σ_c p_c (log p_c − log q_c)`` and "batchmean"
= sum over classes and batch divided by the batch size B (not by B·C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_DIRECTIONS = ("code", "paper")


def batchmean_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``(1/B) Σ_i KL(p_i ‖ q_i)`` with p = softmax(logits_p), q = softmax(logits_q).

    Computed from log-softmax on both sides, so it stays finite when a probability underflows.
    """
    log_p = F.log_softmax(logits_p, dim=1)
    log_q = F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / logits_p.shape[0]


def calibrated_classifier_loss(
    logits_nat: torch.Tensor,
    logits_cal: torch.Tensor,
    y: torch.Tensor,
    beta: float,
    weighted_ce: bool = True,
    kl_direction: str = "code",
) -> torch.Tensor:
    """The θ-step loss L_f of Calibrated AT (nothing is detached).

    ``L_f = (1/B) Σ_i CE(f(x_i), y_i)·(1 − p_{y_i}(x_i)) + β·batchmean KL``, where the KL is
    ``KL(p(x) ‖ p(x_cal))`` for ``kl_direction='code'`` (the authors' code, TRADES-style) and
    ``KL(p(x_cal) ‖ p(x))`` for ``'paper'`` (eq. 13 of the paper).

    Args:
        logits_nat: f(x), shape [B, C].
        logits_cal: f(x_cal), shape [B, C].
        y: labels, shape [B].
        beta: weight of the KL term (5 on CIFAR, 1 on MNIST).
        weighted_ce: weight each clean CE by ``1 − p_y(x)`` (False: plain mean CE, the paper's
            ablation).
        kl_direction: 'code' or 'paper' (see above).

    Returns:
        A scalar tensor.
    """
    if kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {kl_direction!r}")
    ce = F.cross_entropy(logits_nat, y, reduction="none")
    if weighted_ce:
        # The weight is differentiated too (no detach), as in the authors' code.
        p_y = F.softmax(logits_nat, dim=1).gather(1, y[:, None]).squeeze(1)
        ce = ce * (1.0 - p_y)
    if kl_direction == "code":
        kl = batchmean_kl(logits_nat, logits_cal)
    else:
        kl = batchmean_kl(logits_cal, logits_nat)
    return ce.mean() + beta * kl


def calibrated_mask_loss(
    logits_adv: torch.Tensor,
    logits_cal: torch.Tensor,
    y: torch.Tensor,
    beta1: float,
    kl_direction: str = "code",
) -> torch.Tensor:
    """The φ-step loss L_g of the mask network.

    ``L_g = batchmean KL + β1·(1/B) Σ_i CE(f(x_cal_i), y_i)``: the KL keeps x_cal close to the
    adversarial example x' (inner-maximisation constraint), the CE keeps it in class y
    (oracle constraint). The KL is ``KL(p(x') ‖ p(x_cal))`` for ``kl_direction='code'`` (the
    authors' code: p(x') is the target) and ``KL(p(x_cal) ‖ p(x'))`` for ``'paper'`` (eq. 14,
    which puts P(X_cal) first as eq. 13 does).

    Args:
        logits_adv: f(x'), shape [B, C]; callers pass it detached.
        logits_cal: f(x_cal), shape [B, C], differentiable w.r.t. the mask.
        y: labels, shape [B].
        beta1: weight of the CE term (0.05 on CIFAR, 0.3 on MNIST).
        kl_direction: 'code' or 'paper' (see above).

    Returns:
        A scalar tensor.
    """
    if kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}, got {kl_direction!r}")
    kl = batchmean_kl(logits_adv, logits_cal) if kl_direction == "code" else batchmean_kl(logits_cal, logits_adv)
    return kl + beta1 * F.cross_entropy(logits_cal, y)
