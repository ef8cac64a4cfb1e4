"""MART loss as a pure function of logits (Wang et al., ICLR 2020).

With ``p = softmax(f(x))`` and ``p' = softmax(f(x'))``:

    BCE_i = −log p'_{i,y} − log(1.0001 − max_{k≠y} p'_{i,k} + 1e-12)
    L     = mean_i BCE_i + λ · (1/B) Σ_i KL(p_i ‖ p'_i) · (1 − p_{i,y})

The constants inside the logs are the authors' clamps (they keep both logs finite when a
probability reaches 0 or 1); ``log p'_c`` inside the KL is likewise ``log(p'_c + 1e-12)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Numerical guards of the authors' code (mart.py): 1 − p becomes 1.0001 − p, log q becomes log(q + 1e-12).
ONE_PLUS = 1.0001
TINY = 1e-12


def boosted_ce(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example boosted CE ``−log p'_y − log(1.0001 − max_{k≠y} p'_k + 1e-12)``, shape [B]."""
    probs = F.softmax(logits_adv, dim=1)
    others = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), float("-inf"))
    top_other = others.amax(dim=1)
    ce = F.cross_entropy(logits_adv, y, reduction="none")
    return ce - torch.log(ONE_PLUS - top_other + TINY)


def weighted_kl(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(p(x) ‖ p(x')) · (1 − p_y(x))``, shape [B]; nothing is detached.

    The weight (1 − p_y(x)) is large for misclassified clean examples, which is MART's point;
    its gradient also flows into the clean logits (as in the authors' code).
    """
    p = F.softmax(logits_nat, dim=1)
    log_p = F.log_softmax(logits_nat, dim=1)
    log_q = torch.log(F.softmax(logits_adv, dim=1) + TINY)
    kl = (p * (log_p - log_q)).sum(dim=1)
    weight = 1.0 - p.gather(1, y[:, None]).squeeze(1)
    return kl * weight


def mart_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """MART outer loss: mean boosted CE on x' plus ``λ · (1/B) Σ_i KL(p_i ‖ p'_i)(1 − p_{i,y})``.

    Args:
        logits_nat: [B, C] logits on clean images.
        logits_adv: [B, C] logits on adversarial images.
        y: [B] labels.
        lam: λ (the authors' code calls it ``beta``): 6 for WRN-34-10, 5 for ResNet-18.

    Returns:
        A scalar tensor.
    """
    return boosted_ce(logits_adv, y).mean() + lam * weighted_kl(logits_nat, logits_adv, y).mean()
