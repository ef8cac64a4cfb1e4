"""Soft labels and the two losses of Customized Adversarial Training as pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "mix")
RULES = ("paper", "code")


def soft_labels(
    y: torch.Tensor,
    eps: torch.Tensor | float,
    c: float,
    num_classes: int,
    concentration: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``ỹ = (1 − c·ε)·onehot(y) + c·ε·u`` with ``u ~ Dirichlet(concentration·1)`` per example.

    ``c·ε`` is clamped to [0, 1], so every row is a probability vector (sums to 1). The
    paper's Algorithm 1 prints (1 − cε) on the Dirichlet term; that is a typo and c·ε is used.

    Args:
        y: labels [B].
        eps: per-example budgets [B] (or one float) on the [0,1] pixel scale.
        c: label-smoothing strength per unit of ε (10 in the paper).
        num_classes: C.
        concentration: Dirichlet β_D (1 = uniform on the simplex).
        generator: random generator on y's device (None: the global one).

    Returns:
        float32 tensor [B, C].
    """
    b = y.shape[0]
    w = torch.as_tensor(eps, dtype=torch.float32, device=y.device).expand(b) * c
    w = w.clamp(0.0, 1.0)[:, None]
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    # Dirichlet(β·1) = normalised Gamma(β, 1) draws; torch's gamma sampler takes a generator.
    alpha = torch.full((b, num_classes), float(concentration), device=y.device)
    g = torch._standard_gamma(alpha, generator=generator)
    u = g / g.sum(1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
    return (1.0 - w) * onehot + w * u


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example soft-label cross-entropy ``−Σ_c ỹ_c log p_c`` [B]."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1)


def logit_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-example ``max(max_{j≠y} z_j − z_y, −κ)`` [B] (CAT-MIX's CW-style term)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return torch.clamp(other - true, min=-kappa)


def customized_loss_per_example(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor,
                                loss: str = "ce", kappa: float = 10.0) -> torch.Tensor:
    """Per-example Customized AT loss [B]: soft CE ('ce') or soft CE + logit margin ('mix')."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    out = soft_ce(logits, soft)
    if loss == "mix":
        out = out + logit_margin(logits, y, kappa)
    return out


def customized_loss(logits: torch.Tensor, y: torch.Tensor, soft_labels: torch.Tensor,
                    loss: str = "ce", kappa: float = 10.0) -> torch.Tensor:
    """Batch mean of :func:`customized_loss_per_example`.

    Args:
        logits: [B, C].
        y: hard labels [B] (used by the 'mix' margin).
        soft_labels: ỹ [B, C].
        loss: 'ce' (CAT-CE) or 'mix' (CAT-MIX).
        kappa: margin floor κ of 'mix' (10 in the paper).
    """
    return customized_loss_per_example(logits, y, soft_labels, loss, kappa).mean()


# --- the authors' released code (main_adv_cus.py / attacker/pgd.py), ``rule=code`` ---------------

def code_hinge(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-example ``max(max_{j≠y} z_j − z_y + κ, 0)`` [B]: zero once the margin z_y − z_j reaches κ."""
    return torch.clamp(logit_margin(logits, y, float("inf")) + kappa, min=0.0)


def code_attack_objective(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, eps: torch.Tensor,
                          batch_size: int, loss: str = "ce", kappa: float = 10.0) -> torch.Tensor:
    """Per-example objective [B] that the released code's attack ascends (its sum is the batch's).

    'ce': ``softCE_i / B``; 'mix': ``softCE_i / B − ε_i · max(z_y − max_{j≠y} z_j + κ, 0)``. The
    1/B (mean soft CE) against the un-normalised ε-weighted hinge is kept because it sets the
    balance of the two terms, and so the sign of each step, exactly as in that code.

    Args:
        logits: [B, C]; y: labels [B]; soft: soft labels ỹ [B, C]; eps: ε_i [B] (the attack's
        budgets); batch_size: B of the training batch; loss: 'ce' or 'mix'; kappa: κ (10).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    out = soft_ce(logits, soft) / batch_size
    if loss == "mix":
        margin = -logit_margin(logits, y, float("inf"))  # z_y − max_{j≠y} z_j
        out = out - eps.to(out.dtype) * torch.clamp(margin + kappa, min=0.0)
    return out


def code_training_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, eps: torch.Tensor,
                       loss: str = "ce", kappa: float = 10.0) -> torch.Tensor:
    """The released code's θ-loss: mean soft CE, plus (mix) ``Σ_i ε_i·max(max_{j≠y} z_j − z_y + κ, 0)``.

    The hinge term is summed over the batch, not averaged, as in that code.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    out = soft_ce(logits, soft).mean()
    if loss == "mix":
        out = out + (eps.to(logits.dtype) * code_hinge(logits, y, kappa)).sum()
    return out
