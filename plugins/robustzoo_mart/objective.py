"""The ``mart`` objective (Wang et al., ICLR 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from robustzoo.attacks import ce_loss, pgd
from robustzoo.objectives import Objective, StepResult
from robustzoo.settings import Setting

from .losses import mart_loss


class MART(Objective):
    """MART: boosted CE on x' plus a KL term weighted by how wrong the clean prediction is.

    Per batch with PGD-K: K attack steps on CE with input gradients only (K × 2F), then
    training forwards on x and x' (2F) and their backward (4F): 26F per image at K = 10
    (tests/test_flops.py). Unlike TRADES there is no clean target to compute for the attack.
    """

    name = "mart"
    description = "MART: boosted CE on x' + λ·KL(p(x)‖p(x'))·(1−p_y(x)) (Wang et al. 2020)"
    paper = ("Wang, Zou, Yi, Bailey, Ma, Gu. Improving Adversarial Robustness Requires Revisiting "
             "Misclassified Examples. ICLR 2020")
    defaults = {"lam": 6.0, "rand_init": "normal", "attack_bn": "eval", "clip_start": True}
    choices = {"rand_init": ("normal", "uniform", "none"), "attack_bn": ("eval", "train"),
               "clip_start": (True, False)}
    ranges = {"lam": Setting(min=0.0, meaning="weight λ of the KL term")}
    help = {"lam": "weight λ of the misclassification-aware KL term (paper: 6 WRN-34-10, 5 ResNet-18; "
                   "the authors' code calls it beta)",
            "rand_init": "attack start: normal x+0.001·N (paper), uniform U(-ε,ε), none",
            "attack_bn": "BatchNorm mode while attacking (paper: eval)",
            "clip_start": "clip the random start to [0,1] before the first gradient (true); false = the "
                          "authors' code, which takes it at x + 0.001·N unclipped (every step is clipped)"}

    @classmethod
    def setting_warnings(cls, settings: dict[str, Any]) -> list[str]:
        """λ = 0 leaves the boosted CE on x′ alone: allowed (the paper's ablation), said once."""
        if settings["lam"] == 0:
            return ["lam=0 drops the misclassification-aware KL term: this is adversarial training with "
                    "the boosted CE alone (an ablation), not MART; the paper uses lam=6 (WRN-34-10)"]
        return []

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> StepResult:
        s, c = self.settings, self.ctx
        x_adv = pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps, rand_init=s["rand_init"],
                    loss=ce_loss, bn_mode=s["attack_bn"], clip_start=s["clip_start"])
        logits_nat = model(x)
        logits_adv = model(x_adv)
        return StepResult(loss=mart_loss(logits_nat, logits_adv, y, s["lam"]), logits=logits_adv)
