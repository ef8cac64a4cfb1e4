"""The ``calibrated`` objective: Calibrated Adversarial Training (Huang et al., ACML 2021).

Per batch (Algorithm 1 of the paper, alternating updates):

1. δ = PGD(x, y) on CE ('cent', CATcent) or the CW∞ margin ('cw', CATcw), BatchNorm in train
   mode, uniform random start;
2. M = g_φ(x + δ) (or g_φ([x, δ])), x_cal = clip(x + M ⊙ δ, 0, 1);
3. θ-step (:meth:`CalibratedAT.loss`, minimised by the trainer) on
   :func:`calibrated_classifier_loss` with M detached, so the θ-step never moves φ;
4. φ-step (:meth:`CalibratedAT.after_step`) with the UPDATED θ on
   :func:`calibrated_mask_loss`; gradients go to φ only and the classifier's parameters and
   BatchNorm buffers are left exactly as they were (``bn_updates=theta``, the default).

``bn_updates=code`` moves the classifier's BatchNorm running statistics as the authors'
CIFAR code does, with every forward of the batch in train mode: the attack's K, one more on
x' after the attack (their restart bookkeeping), the θ-step's two (x_cal first), the φ-step's
two and one on x after the step (their logging): K + 6 = 16 updates at K = 10 instead of
K + 2 = 12. The extra forwards run only for a classifier that tracks running statistics.

Cost per image at PGD-K (F = one classifier forward, backward ≈ 2F): attack K·2F, θ-step
2 forwards + 2 backwards (6F), φ-step one no-grad forward of x' plus a forward and an
input-only backward of x_cal (≈ 3F); plus one forward and one backward of g_φ. The measured
figures are in docs/methods/calibrated.md.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
import torch.nn as nn

from robustzoo.attacks import attack_bn_mode, pgd
from robustzoo.errors import RunError
from robustzoo.objectives import (
    Objective,
    OptimizerSpec,
    StepResult,
    frozen_bn_statistics,
    train_attack_loss,
)
from robustzoo.settings import Setting

from .losses import calibrated_classifier_loss, calibrated_mask_loss
from .masknet import build_mask_net, mask_net_input

PAPER = ("Huang, Menkovski, Pei, Pechenizkiy, Calibrated Adversarial Training, ACML 2021 "
         "(PMLR 157; arXiv 2110.00623)")


class CalibratedAT(Objective):
    """Calibrated Adversarial Training: a mask network g_φ scales the PGD perturbation per pixel."""

    name = "calibrated"
    description = "Calibrated AT: train on x + g_φ(x+δ)⊙δ, a soft-masked PGD example (Huang et al. 2021)"
    paper = PAPER
    defaults = {
        "attack": "cent",
        "beta": 5.0,
        "beta1": 0.05,
        "kappa": 50.0,
        "mask_input": "sum",
        "kl_direction": "code",
        "mask_kl_direction": "code",
        "bn_updates": "theta",
        "mask": True,
        "weighted_ce": True,
        "rand_init": "uniform",
        "attack_bn": "train",
        "mask_arch": "auto",
        "mask_warmup": 0,
        "mask_optimizer": "sgd",
        "mask_lr": 0.0,
        "mask_momentum": 0.9,
        "mask_weight_decay": 0.0,
        "start_eps": 0.0,
        "clip": True,
        "mask_check_every": 5,
    }
    choices = {
        "attack": ("cent", "cw"),
        "mask_input": ("sum", "concat"),
        "kl_direction": ("code", "paper"),
        "mask_kl_direction": ("code", "paper"),
        "bn_updates": ("theta", "code"),
        "rand_init": ("uniform", "normal", "none"),
        "attack_bn": ("train", "eval"),
        "mask_arch": ("auto", "mnist", "cifar"),
        "mask": (True, False),
        "weighted_ce": (True, False),
        "mask_optimizer": ("sgd", "adam"),
        "clip": (True, False),
    }
    ranges = {
        "beta": Setting(min=0.0, meaning="weight of the KL term"),
        "beta1": Setting(min=0.0, meaning="weight of CE in the mask loss"),
        "kappa": Setting(min=0.0, meaning="CW margin κ (≥ 0, as the eval attack's)"),
        "mask_warmup": Setting(min=0, meaning="epochs before the first φ-step"),
        "mask_lr": Setting(min=0.0, meaning="base lr of g_φ; 0 = auto"),
        "mask_momentum": Setting(min=0.0, max=1.0, max_open=True, meaning="SGD momentum of g_φ"),
        "mask_weight_decay": Setting(min=0.0, meaning="weight decay of g_φ"),
        "start_eps": Setting(min=0.0, max=1.0, meaning="random-start half-width on the [0,1] scale; 0 = ε"),
        "mask_check_every": Setting(min=0, meaning="steps between collapse checks; 0 = off"),
    }
    help = {
        "attack": "training attack: cent (PGD on CE, CATcent) or cw (PGD on the CW margin, CATcw)",
        "beta": "weight of KL(p(x)‖p(x_cal)) in the classifier loss (paper: 5 CIFAR, 1 MNIST)",
        "beta1": "weight of CE(f(x_cal), y) in the mask loss (paper: 0.05 CIFAR, 0.3 MNIST)",
        "kappa": "CW margin κ of the cw training attack (paper: 50 CIFAR, 150 MNIST)",
        "mask_input": "g_φ input: sum = x+δ (authors' code) or concat = [x, δ] (paper's g_φ(X, δ))",
        "kl_direction": "θ-step KL: code = KL(p(x)‖p(x_cal)) (authors' code) or paper = KL(p(x_cal)‖p(x)) "
                        "(eq. 13)",
        "mask_kl_direction": "φ-step KL: code = KL(p(x')‖p(x_cal)) (authors' code) or paper = "
                             "KL(p(x_cal)‖p(x')) (eq. 14)",
        "bn_updates": "classifier BatchNorm running statistics: theta = updated by the attack and the θ-step only "
                      "(K + 2 per batch; the φ-step leaves θ's buffers alone) or code = by every train-mode forward "
                      "of the authors' CIFAR code (K + 6: + x' after the attack, the φ-step's two, x after the "
                      "step); no effect without BatchNorm",
        "mask": "false: no mask network, x_cal = x' (ablation)",
        "weighted_ce": "false: plain CE on clean images instead of CE·(1 − p_y) (ablation)",
        "rand_init": "PGD start: uniform U(-ε,ε), normal x+0.001·N, none",
        "attack_bn": "BatchNorm mode while attacking (paper: train)",
        "mask_arch": "g_φ: auto (1 channel → mnist, else cifar), mnist (3 convs) or cifar (ResNet-18 trunk)",
        "mask_warmup": "epochs before the first φ-step (g_φ stays at its initial M ≈ 0.5); 0 = the paper",
        "mask_optimizer": "optimiser of g_φ: sgd (default; Adam collapses M early on MNIST-like data) or adam "
                          "(the authors' MNIST code)",
        "mask_lr": "base lr of g_φ, scaled by the run's schedule; 0 = auto: 0.01 for SGD on 1-channel data, "
                   "else the classifier's lr (the authors' CIFAR code)",
        "mask_momentum": "SGD momentum of g_φ",
        "mask_weight_decay": "weight decay of g_φ",
        "start_eps": "half-width of the uniform random start on the [0,1] scale; 0 = ε (the authors' MNIST "
                     "code: 0.1 whatever ε is)",
        "clip": "clip x' and x_cal to [0,1] (false: the authors' MNIST code)",
        "mask_check_every": "steps between checks of the mean of M for collapse (one host sync each); 0 = off",
    }

    def __init__(self, settings: dict[str, Any], ctx):
        super().__init__(settings, ctx)
        # Collapse watch: the mean of M summed on the device, read every mask_check_every steps.
        self._mask_sum: torch.Tensor | None = None
        self._mask_steps = 0
        self._low_checks = 0  # consecutive checks below COLLAPSED_MASK_MEAN
        self._epoch_checks: list[float] = []
        self._epoch_collapsed = False
        self.collapse: dict[str, Any] | None = None  # first detected collapse: epoch, step, mean
        self._tracks_bn: dict[int, bool] = {}  # id(classifier) -> whether it has running statistics
        self.mask_net: nn.Module | None = None
        if self.settings["mask"]:
            self.mask_net = build_mask_net(self.settings["mask_arch"], ctx.input_shape,
                                           self.settings["mask_input"]).to(ctx.device)

    #: Below this mean of M the calibration has collapsed: x_cal ≈ x, θ trains on clean images.
    COLLAPSED_MASK_MEAN = 0.01
    #: Consecutive low checks before the collapse is reported (one low batch is not a collapse).
    COLLAPSE_CHECKS = 2

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._epoch_checks = []
        self._epoch_collapsed = False
        self._mask_sum, self._mask_steps = None, 0

    def _watch_mask(self, m: torch.Tensor) -> None:
        """Add mean(M) of this batch; every ``mask_check_every`` steps read it once (one sync)."""
        every = int(self.settings["mask_check_every"])
        if every <= 0:
            return
        mean = m.detach().float().mean()
        self._mask_sum = mean if self._mask_sum is None else self._mask_sum + mean
        self._mask_steps += 1
        if self._mask_steps < every:
            return
        value = float(self._mask_sum) / self._mask_steps
        self._mask_sum, self._mask_steps = None, 0
        self._epoch_checks.append(round(value, 5))
        self._low_checks = self._low_checks + 1 if value < self.COLLAPSED_MASK_MEAN else 0
        if self._low_checks >= self.COLLAPSE_CHECKS:
            self._epoch_collapsed = True
            if self.collapse is None:
                step = len(self._epoch_checks) * every
                self.collapse = {"epoch": self.epoch + 1, "step": step, "mask_mean": value}
                warnings.warn(self._collapse_message(step, value), stacklevel=2)

    def _collapse_message(self, step: int, value: float) -> str:
        s = self.settings
        if s["mask_optimizer"] == "adam":
            advice = "train g_φ with SGD instead (--set mask_optimizer=sgd, the default)"
        else:
            opt = self.optimizers.get("mask_net")
            now = f", now {opt.param_groups[0]['lr']:g}" if opt is not None else ""
            advice = f"lower its learning rate (--set mask_lr=...{now}) or hold g_φ for an epoch (--set mask_warmup=1)"
        every = int(s["mask_check_every"])
        return (f"calibrated: the mask network has collapsed in epoch {self.epoch + 1} (mean M = {value:.2g} "
                f"below {self.COLLAPSED_MASK_MEAN} for {self.COLLAPSE_CHECKS} checks of {every} steps, "
                f"up to step {step}): x_cal ≈ x, so the classifier trains on clean images; {advice}")

    def epoch_metrics(self) -> dict[str, Any]:
        """The epoch's mask checks (mean M per ``mask_check_every`` steps) and whether M collapsed."""
        if self.mask_net is None or int(self.settings["mask_check_every"]) <= 0:
            return {}
        return {"mask_checks": list(self._epoch_checks), "mask_collapsed": self._epoch_collapsed}

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        """g_φ's own optimiser (mask_optimizer, mask_lr, mask_momentum, mask_weight_decay).

        With Adam, as in the authors' MNIST code, the mask collapses early on MNIST-like data:
        against a near-uniform classifier only β1·CE(f(x_cal), y) acts on M, a tiny gradient
        that Adam normalises into full lr-sized steps until the sigmoid saturates (mean M ≈ 1e-11
        within ~15 steps), after which M(1 − M) ≈ 0 keeps it there. SGD's steps stay
        proportional to that tiny gradient, so M stays near 0.5 until the KL term grows.
        """
        if self.mask_net is None:
            return {}
        s = self.settings
        lr = float(s["mask_lr"])
        auto = lr <= 0
        if auto and s["mask_optimizer"] == "sgd" and self.ctx.input_shape[0] == 1:
            lr, auto = 0.01, False
        return {"mask_net": OptimizerSpec(optimizer=s["mask_optimizer"], lr=None if auto else lr,
                                          momentum=float(s["mask_momentum"]),
                                          weight_decay=float(s["mask_weight_decay"]), nesterov=False)}

    def extra_modules(self) -> dict[str, nn.Module]:
        return {} if self.mask_net is None else {"mask_net": self.mask_net}

    # -- pieces, also used by `robustzoo viz masks` ---------------------------------------
    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bn_mode: str | None = None
               ) -> torch.Tensor:
        """x' = PGD(x, y) with the training attack (CE or CW margin); returns detached x'."""
        s, c = self.settings, self.ctx
        return pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps, rand_init=s["rand_init"],
                   loss=train_attack_loss(s["attack"], s["kappa"]),
                   bn_mode=s["attack_bn"] if bn_mode is None else bn_mode,
                   start_eps=float(s["start_eps"]) or None, clip=bool(s["clip"]))

    def mask(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """M = g_φ(x + δ) (or g_φ([x, δ])) with δ = x' − x; values in (0, 1), shape of x."""
        if self.mask_net is None:
            return torch.ones_like(x)
        return self.mask_net(mask_net_input(x, x_adv - x, self.settings["mask_input"]))

    def calibrate(self, x: torch.Tensor, x_adv: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x_cal = clip(x + M ⊙ δ, 0, 1): inside the ε-ball because 0 < M < 1 and |δ| ≤ ε.

        With ``clip=false`` (the authors' MNIST code) x_cal = x + M ⊙ δ is not clipped.
        """
        x_cal = x + m * (x_adv - x)
        return x_cal.clamp(0.0, 1.0) if self.settings["clip"] else x_cal

    # -- the two steps -------------------------------------------------------------------------
    def _code_bn_updates(self, model: nn.Module) -> bool:
        """Whether this batch moves BatchNorm statistics as the authors' code (bn_updates=code).

        Only for a classifier that tracks running statistics: elsewhere the code's extra
        forwards would change nothing, so they are not run.
        """
        if self.settings["bn_updates"] != "code":
            return False
        key = id(model)
        if key not in self._tracks_bn:
            self._tracks_bn[key] = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                                       for m in model.modules())
        return self._tracks_bn[key]

    def loss(self, model, x, y, index):
        s = self.settings
        x_adv = self.attack(model, x, y)
        code_bn = self._code_bn_updates(model)
        if code_bn:
            # The authors' attack ends with one more forward on x' (its restart bookkeeping), in
            # the attack's BatchNorm mode: one more update of the running statistics.
            with attack_bn_mode(model, s["attack_bn"]), torch.no_grad():
                model(x_adv)
        cache: dict[str, Any] = {"x_adv": x_adv}
        metrics: dict[str, Any] = {}
        if self.mask_net is None:
            x_cal = x_adv  # ablation: no calibration
        else:
            # M keeps its graph to φ for the φ-step (saves a second g_φ forward); θ sees it
            # detached, so the trainer's backward of this loss never reaches φ.
            m = self.mask(x, x_adv)
            cache["mask"] = m
            x_cal = self.calibrate(x, x_adv, m.detach())
            metrics["mask_mean"] = m.detach().mean()
            self._watch_mask(m)
        if code_bn:  # the authors' order: the running statistics see x_cal, then x
            logits_cal = model(x_cal)
            logits_nat = model(x)
        else:
            logits_nat = model(x)
            logits_cal = model(x_cal)
        loss = calibrated_classifier_loss(logits_nat, logits_cal, y, s["beta"],
                                          weighted_ce=s["weighted_ce"], kl_direction=s["kl_direction"])
        return StepResult(loss=loss, logits=logits_cal, metrics=metrics, cache=cache)

    def after_step(self, model, x, y, index, result):
        """φ-step with the updated θ: minimise L_g over φ only (none before epoch ``mask_warmup``).

        p(x') is recomputed with the updated θ (no gradient) so that both sides of
        KL(p(x')‖p(x_cal)) come from the same classifier, as in the authors' code where the
        generator step follows the classifier step. The classifier runs in its current
        (train) mode, so BatchNorm normalises with batch statistics as in the θ-step, but its
        running statistics are not updated (:func:`robustzoo.objectives.frozen_bn_statistics`),
        so the φ-step leaves θ and its buffers untouched. With ``bn_updates=code`` they are
        updated, as in the authors' code, and one more train-mode forward on x follows.

        During the warm-up φ is not trained: against a near-random classifier
        KL(p(x')‖p(x_cal)) is ≈ 0 and the CE term alone drives the sigmoid to M ≈ 0 within a
        few dozen steps, where its gradient is tiny (docs/methods/calibrated.md, "Mask collapse").
        """
        code_bn = self._code_bn_updates(model)
        out = {} if self.mask_net is None or self.epoch < self.settings["mask_warmup"] \
            else self._mask_step(model, x, y, result, code_bn)
        if code_bn:
            # The authors' loop ends each batch with a train-mode forward on x (for its log).
            with torch.no_grad():
                model(x)
        return out

    def _mask_step(self, model, x, y, result, code_bn: bool) -> dict[str, Any]:
        """The φ-step itself; the classifier's running statistics move only when ``code_bn``."""
        opt = self.optimizers.get("mask_net")
        if opt is None:
            raise RunError("calibrated: the mask network has no optimiser; the trainer gives one to "
                           "every module of extra_modules() as objective.optimizers['mask_net']")
        x_adv = result.cache["x_adv"]
        m = result.cache.get("mask")
        if m is None or not m.requires_grad:
            m = self.mask(x, x_adv)
        with contextlib.nullcontext() if code_bn else frozen_bn_statistics(model):
            with torch.no_grad():
                logits_adv = model(x_adv)
            logits_cal = model(self.calibrate(x, x_adv, m))
        loss = calibrated_mask_loss(logits_adv, logits_cal, y, self.settings["beta1"],
                                    kl_direction=self.settings["mask_kl_direction"])
        params = [p for p in self.mask_net.parameters() if p.requires_grad]
        # Gradients w.r.t. φ only: the classifier's .grad fields are not touched.
        grads = torch.autograd.grad(loss, params)
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        return {"mask_loss": loss.detach()}
