"""The ``fat`` objective: Friendly Adversarial Training (Zhang et al., ICML 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from robustzoo_mart import mart_loss
from robustzoo_trades import clean_target, kl_attack_loss, trades_loss

from robustzoo.attacks import ce_loss
from robustzoo.errors import UsageError
from robustzoo.objectives import Objective, StepResult, parse_number
from robustzoo.settings import Setting

from .early_stop import early_stopped_pgd
from .schedule import TauSchedule


@dataclass(frozen=True)
class Variant:
    """What a FAT variant changes: the τ schedule, the ω noise and the random start.

    The attack loss and the outer loss follow from the variant name (see :class:`FAT`).
    """

    tau_schedule: str
    omega: float
    rand_init: str


# From the authors' scripts FAT.py, FAT_for_TRADES.py and FAT_for_MART.py (dynamic τ).
VARIANTS: dict[str, Variant] = {
    "at": Variant("0@50,1@90,2", 0.001, "uniform"),
    "trades": Variant("0@30,1@50,2@70,3", 0.0, "normal"),
    "mart": Variant("0@20,1@40,2@60,3@80,4", 0.0, "normal"),
}
AUTO = "auto"


class FAT(Objective):
    """Friendly Adversarial Training: train on early-stopped PGD-K-τ examples.

    Variants: ``at`` (CE attack, CE on x'), ``trades`` (KL attack against the clean
    prediction, TRADES loss on (x, x')), ``mart`` (CE attack, MART loss on (x, x')). τ follows
    a per-epoch schedule (``tau_schedule``) unless ``tau`` fixes it.

    Cost per image at K = 10 and τ = K: ``at`` 23F, ``trades`` 27F, ``mart`` 26F, the same as
    the methods they modify. A smaller τ costs less: the early-stopped search runs each step
    only on the examples still attacking (``compact``; tests/test_flops.py), with the same
    x' for every example as the full batch would give.
    """

    name = "fat"
    description = "Friendly AT: early-stopped PGD-K-τ with AT, TRADES or MART losses (Zhang et al. 2020)"
    paper = ("Zhang, Xu, Han, Niu, Cui, Sugiyama, Kankanhalli. Attacks Which Do Not Kill Training Make "
             "Adversarial Learning Stronger. ICML 2020")
    defaults = {"variant": "at", "tau_schedule": AUTO, "tau": -1, "omega": AUTO, "rand_init": AUTO,
                "attack_bn": "eval", "beta": 6.0, "lam": 6.0, "compact": AUTO}
    choices = {"variant": tuple(VARIANTS), "rand_init": (AUTO, "uniform", "normal", "none"),
               "attack_bn": ("eval", "train"), "compact": (AUTO, "on", "off")}
    ranges = {"beta": Setting(min=0.0, meaning="TRADES β"), "lam": Setting(min=0.0, meaning="MART λ"),
              "tau": Setting(min=-1, meaning="constant τ; -1 = follow tau_schedule")}
    help = {"variant": "at (CE), trades (KL attack + TRADES loss) or mart (CE attack + MART loss)",
            "tau_schedule": "τ per epoch as τ@last_epoch,...,τ; auto = the paper's: at 0@50,1@90,2; "
                            "trades 0@30,1@50,2@70,3; mart 0@20,1@40,2@60,3@80,4",
            "tau": "constant τ for every epoch (overrides tau_schedule); -1 = follow tau_schedule",
            "omega": "std ω of the noise added at every attack step; auto = 0.001 (at) or 0",
            "rand_init": "attack start; auto = uniform U(-ε,ε) (at) or normal x+0.001·N (trades, mart)",
            "attack_bn": "BatchNorm mode during the early-stopped attack (paper: eval)",
            "beta": "TRADES β (variant trades; paper: 6)",
            "lam": "MART λ (variant mart; paper: 6)",
            "compact": "attack only the examples still attacking at each step (same x', fewer FLOPs at small τ; "
                       "one host sync per step); auto = on unless the model is compiled (fixed shapes); "
                       "the search must run in eval mode (attack_bn=eval)"}

    @classmethod
    def resolve_settings(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Fill the variant's 'auto' values so config.json records the numbers actually used."""
        out = super().resolve_settings(overrides)
        v = VARIANTS[out["variant"]]
        if out["tau_schedule"] == AUTO:
            out["tau_schedule"] = v.tau_schedule
        out["tau_schedule"] = str(TauSchedule.parse(out["tau_schedule"]))
        if out["rand_init"] == AUTO:
            out["rand_init"] = v.rand_init
        if out["omega"] == AUTO:
            out["omega"] = v.omega
        try:
            out["omega"] = float(parse_number(out["omega"]) if isinstance(out["omega"], str) else out["omega"])
        except ValueError:
            raise UsageError(f"fat: omega={out['omega']!r} is not a number (e.g. 0.001, or auto)") from None
        if out["omega"] < 0:
            raise UsageError(f"fat: omega={out['omega']} must be >= 0 (it is a noise std)")
        return out

    def __init__(self, settings: dict[str, Any], ctx: Any):
        super().__init__(settings, ctx)
        self.schedule = TauSchedule.parse(self.settings["tau_schedule"])
        self.tau = self.tau_for_epoch(0)

    @property
    def compacts(self) -> bool:
        """Whether the search runs on the examples still attacking only (setting ``compact``)."""
        mode = self.settings["compact"]
        return mode == "on" or (mode == AUTO and not self.ctx.fixed_shapes)

    def tau_for_epoch(self, epoch: int) -> int:
        """τ used in 0-based ``epoch``."""
        fixed = int(self.settings["tau"])
        return fixed if fixed >= 0 else self.schedule.at(epoch + 1, self.ctx.epochs)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.tau = self.tau_for_epoch(epoch)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> StepResult:
        s, c = self.settings, self.ctx
        variant = s["variant"]
        attack_loss, target = ce_loss, y
        if variant == "trades" and c.steps > 0:
            attack_loss, target = kl_attack_loss, clean_target(model, x, s["attack_bn"])
        x_adv, taken = early_stopped_pgd(
            model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps, tau=self.tau, loss=attack_loss,
            loss_target=target, rand_init=s["rand_init"], omega=s["omega"], bn_mode=s["attack_bn"],
            compact=self.compacts)
        if variant == "at":
            logits_adv = model(x_adv)
            loss = F.cross_entropy(logits_adv, y)
        else:
            logits_nat = model(x)
            logits_adv = model(x_adv)
            loss = (trades_loss(logits_nat, logits_adv, y, s["beta"]) if variant == "trades"
                    else mart_loss(logits_nat, logits_adv, y, s["lam"]))
        # Mean attack steps per example (the authors log it as the 'BP average').
        return StepResult(loss=loss, logits=logits_adv,
                          metrics={"fat_steps": taken.float().mean(), "fat_tau": float(self.tau)})
