"""The ``trades`` objective (Zhang et al., ICML 2019)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from robustzoo.attacks import attack_bn_mode, pgd
from robustzoo.objectives import Objective, StepResult
from robustzoo.settings import Setting

from .losses import REDUCTIONS, kl_attack_loss, trades_loss


def clean_target(model: nn.Module, x: torch.Tensor, bn_mode: str | None) -> torch.Tensor:
    """Clean logits f(x) without autograd, in the attack's BatchNorm mode: the KL attack's fixed target.

    One forward (1F) per batch; the reference code recomputes it at every attack step.
    """
    with attack_bn_mode(model, bn_mode), torch.no_grad():
        return model(x)


class TRADES(Objective):
    """TRADES: ``CE(f(x), y) + β · batchmean KL(p(x) ‖ p(x'))``, x' from a KL attack.

    Per batch with PGD-K: the clean target p(x) (1F, eval mode, no autograd), K attack steps
    on ``KL(p(x) ‖ p(x'))`` with input gradients only (K × 2F), then training forwards on x
    and x' (2F) and their backward (4F): 27F per image at K = 10 (tests/test_flops.py).
    """

    name = "trades"
    description = "TRADES: clean CE + β·KL(p(x)‖p(x')) with a KL attack (Zhang et al. 2019)"
    paper = ("Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan. Theoretically Principled Trade-off between "
             "Robustness and Accuracy. ICML 2019")
    defaults = {"beta": 6.0, "rand_init": "normal", "attack_bn": "eval", "kl_reduction": "batchmean",
                "clip_start": True}
    choices = {"rand_init": ("normal", "uniform", "none"), "attack_bn": ("eval", "train"),
               "kl_reduction": REDUCTIONS, "clip_start": (True, False)}
    ranges = {"beta": Setting(min=0.0, meaning="weight β of the KL term")}
    help = {"beta": "weight β of the KL term (β = 1/λ; paper: 6 on CIFAR-10)",
            "rand_init": "attack start: normal x+0.001·N (paper), uniform U(-ε,ε), none",
            "attack_bn": "BatchNorm mode while attacking and computing the clean target (paper: eval)",
            "kl_reduction": "batchmean (paper: KL summed, divided by B) or mean (divides by B·C: "
                            "shrinks β by the class count; only to reproduce that mistake)",
            "clip_start": "clip the random start to [0,1] before the first gradient (true); false = the "
                          "authors' code, which takes it at x + 0.001·N unclipped (every step is clipped)"}

    @classmethod
    def setting_warnings(cls, settings: dict[str, Any]) -> list[str]:
        """β = 0 leaves only the clean cross-entropy: allowed (an ablation), said once."""
        if settings["beta"] == 0:
            return ["beta=0 drops the KL term: this trains on clean images only (no robustness); "
                    "the paper uses beta=6"]
        return []

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> StepResult:
        s, c = self.settings, self.ctx
        if c.steps > 0:
            target = clean_target(model, x, s["attack_bn"])
            x_adv = pgd(model, x, target, eps=c.eps, alpha=c.alpha, steps=c.steps,
                        rand_init=s["rand_init"], loss=kl_attack_loss, bn_mode=s["attack_bn"],
                        clip_start=s["clip_start"])
        else:  # no attack steps: x' is the random start, no target needed
            x_adv = pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=0, rand_init=s["rand_init"])
        logits_nat = model(x)
        logits_adv = model(x_adv)
        loss = trades_loss(logits_nat, logits_adv, y, s["beta"], reduction=s["kl_reduction"])
        return StepResult(loss=loss, logits=logits_adv)
