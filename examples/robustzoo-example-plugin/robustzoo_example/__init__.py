"""Example robustzoo plugin: PGD adversarial training with label smoothing, and a
random-noise 'attack' that is a useful sanity baseline (it should barely hurt accuracy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import robustzoo
from robustzoo.attacks import AttackSpec, pgd
from robustzoo.objectives import Objective, StepResult


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against labels smoothed uniformly by ``smoothing``."""
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


class SmoothAT(Objective):
    """Madry PGD adversarial training with a label-smoothed outer loss."""

    name = "at-ls"
    description = "PGD adversarial training with label smoothing (example plugin)"
    defaults = {"smoothing": 0.1, "rand_init": "uniform"}
    choices = {"rand_init": ("uniform", "normal", "none")}

    def loss(self, model, x, y, index):
        c = self.ctx
        x_adv = pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps,
                    rand_init=self.settings["rand_init"], bn_mode="train")
        logits = model(x_adv)
        return StepResult(loss=smoothed_ce(logits, y, self.settings["smoothing"]), logits=logits)


def _noise(model, x, y, ctx):
    # Uniform noise of the full budget: a black-box floor, not a real attack.
    g = torch.Generator(device=x.device).manual_seed(ctx.seed)
    noise = (torch.rand(x.shape, generator=g, device=x.device) * 2 - 1) * ctx.eps
    return (x + noise).clamp(0, 1)


@robustzoo.hookimpl
def register_objectives(register):
    register(SmoothAT)


@robustzoo.hookimpl
def register_attacks(register):
    register(AttackSpec("uniform-noise", _noise, "uniform noise in the ε-ball (sanity baseline)",
                        kind="black-box", settings=lambda ctx: {"eps": ctx.eps}))
