"""The ``customized`` objective: Customized Adversarial Training (Cheng et al. 2020).

Every training example i owns a budget ε_i (``state_tensors()['eps']``, indexed by the
dataset index, starting at 0) and a soft label ỹ_i = (1 − cε_i)·onehot(y_i) + cε_i·u_i,
u_i ~ Dirichlet(β_D·1). Per batch:

1. draw ỹ with ε_i (Algorithm 1; ``attack_label=grown`` draws it with ε_i + η instead), then
   ε_i ← ε_i + η; δ = 0 (no random start); K steps of
   δ ← clip_{ε_i}(δ + α·sign ∇_δ ℓ(f(x+δ), ỹ)), BatchNorm in eval mode;
2. if the attack succeeded (argmax f(x+δ) ≠ y): ε_i ← ε_i − η ('keep') or ε_i ← 0
   ('reset'); then ε_i ← min(ε_i, ε_max);
3. re-draw ỹ with the new ε_i and return ℓ(f(x+δ), ỹ) for the θ-step.

The forward f(x+δ) of step 3 (train mode) also decides "attack succeeded", so the method
costs what Madry AT costs: K·2F for the attack plus 3F for the θ-step (23F at K = 10).

``rule=code`` follows the authors' released code instead (``main_adv_cus.py`` with
``attacker/pgd.py``, version 2 as ``train_adp.sh`` runs it), which differs from Algorithm 1:

1. ε_i ← min(ε_i + η, ε_max) *before* the attack; δ = 0; K sign steps of size α ascending
   :func:`code_attack_objective` (soft CE / B, minus ε_i·max(z_y − max_j z_j + κ, 0) for 'mix'),
   BatchNorm in eval mode;
2. "fooled" is decided by a separate eval-mode forward (+1F); where the model is still correct
   ε_i ← ε_i − η, so ε_i *grows where the attack succeeded* — the reverse of the paper;
3. θ-step on :func:`code_training_loss` (mean soft CE, plus the ε-weighted hinge summed over
   the batch for 'mix') with ỹ re-drawn from the new ε_i.

Its recipes set η = 0.0025, ε_max = 0.035 and α = 0.007 (docs/methods/customized.md).
"""

from __future__ import annotations

from typing import Any

import torch

from robustzoo.attacks import attack_bn_mode, pgd
from robustzoo.errors import UsageError
from robustzoo.objectives import Objective, StepResult
from robustzoo.settings import Setting

from .losses import (
    code_attack_objective,
    code_training_loss,
    customized_loss,
    customized_loss_per_example,
    soft_labels,
)

PAPER = ("Cheng, Lei, Chen, Dhillon, Hsieh, CAT: Customized Adversarial Training for Improved "
         "Robustness, arXiv 2002.06789 (2020)")


class CustomizedAT(Objective):
    """Customized AT: per-example budgets ε_i that grow while the model resists, and soft labels."""

    name = "customized"
    description = "Customized AT: per-example ε_i and Dirichlet-smoothed labels (Cheng et al. 2020)"
    paper = PAPER
    defaults = {
        "loss": "ce",
        "eta": 0.005,
        "eps_max": 0.0,
        "c": 10.0,
        "dirichlet": 1.0,
        "kappa": 10.0,
        "update": "keep",
        "attack_bn": "eval",
        "rule": "paper",
        "attack_label": "start",
    }
    choices = {"loss": ("ce", "mix"), "update": ("keep", "reset"), "attack_bn": ("train", "eval"),
               "rule": ("paper", "code"), "attack_label": ("start", "grown")}
    ranges = {"eta": Setting(min=0.0, max=1.0, min_open=True, meaning="budget increment η on the [0,1] scale"),
              "eps_max": Setting(min=0.0, max=1.0, meaning="cap of ε_i on the [0,1] scale; 0 = the run's ε"),
              "c": Setting(min=0.0, meaning="label smoothing per unit of ε"),
              "dirichlet": Setting(min=0.0, min_open=True, meaning="Dirichlet concentration β_D"),
              "kappa": Setting(min=0.0, meaning="floor −κ of the mix loss's logit margin")}
    help = {
        "loss": "ce = soft-label CE (CAT-CE); mix = soft CE + logit margin (CAT-MIX)",
        "eta": "budget increment η per visit, on the [0,1] scale (paper: 0.005)",
        "eps_max": "cap of ε_i on the [0,1] scale; 0 = the run's ε (paper: 8/255)",
        "c": "label smoothing per unit of ε: weight c·ε_i on the Dirichlet noise (paper: 10)",
        "dirichlet": "Dirichlet concentration β_D of the label noise (paper: 1)",
        "kappa": "floor −κ of the mix loss's logit margin (paper: 10)",
        "update": "when the attack succeeds: keep = ε_i −= η (arXiv v1, default), reset = ε_i = 0 (later version)",
        "attack_bn": "BatchNorm mode while attacking (paper code: eval)",
        "rule": "paper = Algorithm 1 (default); code = the authors' released code (ε_i grows where the "
                "attack succeeds, its own attack and loss; its loop always runs mix, so loss=ce runs a branch "
                "it never calls; see docs/methods/customized.md)",
        "attack_label": "budget the attack's soft label ỹ is drawn with (rule=paper): start = ε_i before "
                        "the increment η (Algorithm 1, default), grown = ε_i + η (robustzoo 0.1)",
    }

    def __init__(self, settings: dict[str, Any], ctx):
        super().__init__(settings, ctx)
        if self.settings["rule"] == "code" and self.settings["update"] != "keep":
            raise UsageError("customized: update=reset belongs to the paper's rule; rule=code has its own "
                             "update (drop --set update=reset or use rule=paper)")
        if self.settings["rule"] == "code" and self.settings["attack_label"] != "start":
            raise UsageError("customized: attack_label=grown belongs to the paper's rule; rule=code draws ỹ "
                             "from its capped budget (drop --set attack_label or use rule=paper)")
        self.eps_table = torch.zeros(ctx.num_train, dtype=torch.float32, device=ctx.device)
        # For sync_state(): the table at the start of the epoch and the rows this rank touched.
        self._epoch_start: torch.Tensor | None = None
        self._touched = torch.zeros(ctx.num_train, dtype=torch.bool, device=ctx.device)

    @property
    def eps_max(self) -> float:
        """ε_max on the [0,1] scale: the setting, or the run's ε when it is 0."""
        return float(self.settings["eps_max"]) or float(self.ctx.eps)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"eps": self.eps_table}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._epoch_start = self.eps_table.clone()
        self._touched.zero_()

    def loss(self, model, x, y, index):
        if self.settings["rule"] == "code":
            return self._loss_code(model, x, y, index)
        s, ctx = self.settings, self.ctx
        idx = index.to(self.eps_table.device)
        eta = float(s["eta"])
        eps_start = self.eps_table[idx]
        eps_attack = eps_start + eta  # step 1: grow the budget of every example in the batch
        # Algorithm 1 draws the attack's ỹ before it adds η (line order: ỹ, then ε_i + η).
        eps_label = eps_start if s["attack_label"] == "start" else eps_attack
        soft = soft_labels(y, eps_label, s["c"], ctx.num_classes, s["dirichlet"])

        def attack_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return customized_loss_per_example(logits, y, targets, s["loss"], s["kappa"])

        x_adv = pgd(model, x, soft, eps=eps_attack.to(x.device), alpha=ctx.alpha, steps=ctx.steps,
                    rand_init="none", loss=attack_loss, bn_mode=s["attack_bn"])
        logits = model(x_adv)
        fooled = (logits.detach().argmax(1) != y).to(eps_attack.device)
        if s["update"] == "keep":
            eps_i = torch.where(fooled, eps_attack - eta, eps_attack)
        else:
            eps_i = torch.where(fooled, torch.zeros_like(eps_attack), eps_attack)
        eps_i = eps_i.clamp(min=0.0, max=self.eps_max)
        self.eps_table[idx] = eps_i
        self._touched[idx] = True
        soft = soft_labels(y, eps_i, s["c"], ctx.num_classes, s["dirichlet"])  # step 3: re-draw ỹ
        loss = customized_loss(logits, y, soft, s["loss"], s["kappa"])
        return StepResult(loss=loss, logits=logits,
                          metrics={"eps_mean": eps_i.mean(), "attack_success": fooled.float().mean()},
                          cache={"x_adv": x_adv, "eps_attack": eps_attack, "eps_label": eps_label,
                                 "soft_labels": soft})

    def _loss_code(self, model, x, y, index):
        """One batch under ``rule=code`` (the released code; see the module docstring)."""
        s, ctx = self.settings, self.ctx
        idx = index.to(self.eps_table.device)
        eta = float(s["eta"])
        eps_attack = (self.eps_table[idx] + eta).clamp(max=self.eps_max)  # grow and cap before the attack
        soft = soft_labels(y, eps_attack, s["c"], ctx.num_classes, s["dirichlet"])
        b = len(y)
        eps_dev = eps_attack.to(x.device)

        def attack_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return code_attack_objective(logits, y, targets, eps_dev, b, s["loss"], s["kappa"])

        x_adv = pgd(model, x, soft, eps=eps_dev, alpha=ctx.alpha, steps=ctx.steps, rand_init="none",
                    loss=attack_loss, bn_mode=s["attack_bn"])
        with attack_bn_mode(model, "eval"), torch.no_grad():  # the code decides "fooled" in eval mode
            fooled = (model(x_adv).argmax(1) != y).to(eps_attack.device)
        eps_i = torch.where(fooled, eps_attack, eps_attack - eta).clamp(min=0.0)
        self.eps_table[idx] = eps_i
        self._touched[idx] = True
        soft = soft_labels(y, eps_i, s["c"], ctx.num_classes, s["dirichlet"])
        logits = model(x_adv)
        loss = code_training_loss(logits, y, soft, eps_i.to(logits.device), s["loss"], s["kappa"])
        return StepResult(loss=loss, logits=logits,
                          metrics={"eps_mean": eps_i.mean(), "attack_success": fooled.float().mean()},
                          cache={"x_adv": x_adv, "eps_attack": eps_attack, "soft_labels": soft})

    def sync_state(self) -> None:
        """All-reduce the ε rows each rank changed this epoch (no-op without torch.distributed).

        Each rank trains on a disjoint shard, so it changes only its own rows. The change of
        every row (relative to the table at the start of the epoch) and a touched-mask are
        summed over ranks; a row touched by several ranks gets the mean of their changes.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        start = self._epoch_start if self._epoch_start is not None else torch.zeros_like(self.eps_table)
        touched = self._touched.to(self.eps_table.dtype)
        delta = (self.eps_table - start) * touched
        packed = torch.stack([delta, touched])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        delta_sum, count = packed[0], packed[1]
        with torch.no_grad():
            self.eps_table.copy_(torch.where(count > 0, start + delta_sum / count.clamp_min(1.0), start))
        self._epoch_start = self.eps_table.clone()
        self._touched.zero_()
