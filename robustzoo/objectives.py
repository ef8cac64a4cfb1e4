"""The Objective protocol, and the two objectives the core ships: ``erm`` and ``at``.

An objective turns a batch ``(x, y, index)`` into the loss the trainer minimises for the
classifier θ. It may also own:

* extra trainable modules (:meth:`Objective.extra_modules`), each given its own optimiser
  (``self.optimizers[name]``) as declared by :meth:`Objective.optimizer_specs` (default: the
  classifier's optimiser, lr, momentum and weight decay), updated in
  :meth:`Objective.after_step`, e.g. Calibrated AT's mask network g_φ. The lr schedule scales
  each optimiser's own base lr;
* per-example state tensors (:meth:`Objective.state_tensors`) indexed by the dataset index,
  e.g. Customized AT's ε table.

Both are saved with the run (``aux.safetensors``), restored by ``--resume`` and published.
Objectives never call pluggy: batch-level behaviour lives here, outside the plugin layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import ce_loss, cw_loss, pgd
from .errors import UsageError, did_you_mean
from .plugins import declare_entry_check
from .settings import Setting, coerce, kind_of, parse_number

__all__ = ["Objective", "ObjectiveContext", "OptimizerSpec", "StepResult", "Setting", "coerce", "parse_number",
           "frozen_bn_statistics", "ERM", "MadryAT", "train_attack_loss"]


@dataclass(frozen=True)
class ObjectiveContext:
    """Facts an objective needs about the run.

    Attributes:
        eps: L-inf training budget on the [0,1] scale.
        alpha: PGD step size on the same scale.
        steps: PGD steps of the training attack.
        num_classes: number of labels.
        input_shape: (C, H, W) of one image.
        num_train: training-set size (length of per-example state tables).
        epochs: total epochs of the run.
        device: where tensors live.
        dataset: dataset name.
        seed: run seed.
        fixed_shapes: the model is compiled, so batches keep one shape (each new shape would
            be another graph); an objective then never shrinks a batch mid-step.
    """

    eps: float
    alpha: float
    steps: int
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    epochs: int
    device: torch.device = torch.device("cpu")
    dataset: str = ""
    seed: int = 0
    fixed_shapes: bool = False


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimiser an objective asks the trainer to build for one of its extra modules.

    A field left at None takes the classifier's value (``--optimizer``, ``--lr``,
    ``momentum``, ``weight_decay``, ``nesterov``). The trainer resolves the spec against the
    run's config (:meth:`resolve`), records the result in config.json, builds the optimiser,
    scales its own lr with the schedule and restores its state on ``--resume``.

    Attributes:
        optimizer: 'sgd' or 'adam'.
        lr: base learning rate (before the schedule's factor).
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay.
        nesterov: Nesterov momentum (SGD only).
    """

    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None

    def resolve(self, base: dict[str, Any]) -> dict[str, Any]:
        """Fill the None fields from ``base`` (the classifier's resolved optimiser settings)."""
        out = dict(base)
        for k in ("optimizer", "lr", "momentum", "weight_decay", "nesterov"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if out["optimizer"] not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {out['optimizer']!r}; use {' or '.join(OPTIMIZERS)}")
        if not (out["lr"] > 0 and out["lr"] < float("inf")):
            raise UsageError(f"learning rate {out['lr']} must be a positive number")
        if out["weight_decay"] < 0 or out["momentum"] < 0:
            raise UsageError("momentum and weight decay must be >= 0")
        return out


OPTIMIZERS = ("sgd", "adam")


@dataclass
class StepResult:
    """What :meth:`Objective.loss` returns.

    Attributes:
        loss: scalar to minimise for θ.
        logits: logits whose argmax counts as training accuracy (usually adversarial).
        y: labels matching ``logits`` (when the objective drops or reorders examples).
        metrics: extra scalars (tensors are fine; the trainer averages them per epoch).
        cache: anything :meth:`Objective.after_step` wants to reuse (e.g. δ).
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    y: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class of training objectives.

    Subclasses set ``name``, ``defaults`` (every setting with its default; values from
    ``--set`` are coerced to the default's type), ``choices`` (allowed values of string
    settings), ``ranges`` (a :class:`robustzoo.settings.Setting` with the bounds of a
    numeric setting: ``{"beta": Setting(min=0.0)}``; every number must also be finite) and
    implement :meth:`loss`. :meth:`setting_warnings` names settings that are allowed but
    make the method something else (TRADES with β = 0 is clean training).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    ranges: ClassVar[dict[str, Setting]] = {}
    help: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: dict[str, Any], ctx: ObjectiveContext):
        self.settings = dict(settings)
        self.ctx = ctx
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.epoch = 0

    # -- settings -------------------------------------------------------------------------
    @classmethod
    def resolve_settings(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``overrides`` (strings coerced), checked against the type of
        each default, ``ranges`` and ``choices``: one UsageError naming the setting, its value,
        what is allowed and an example."""
        out = dict(cls.defaults)
        for key, value in overrides.items():
            if key not in cls.defaults:
                raise UsageError(
                    f"objective {cls.name!r} has no setting {key!r}{did_you_mean(key, cls.defaults)}; "
                    f"its settings: {', '.join(sorted(cls.defaults)) or 'none'}")
            out[key] = coerce(value, cls.defaults[key], key)
        for key, default in cls.defaults.items():
            if key in cls.choices or isinstance(default, str):
                continue  # names: checked against choices (or by the objective, e.g. 'auto' or a number)
            rule = cls.ranges.get(key, Setting())
            rule = replace(rule, kind=rule.kind or kind_of(default), example=rule.example or _example(default))
            out[key] = rule.check(key, out[key], who=f"{cls.name}: ")
        for key, allowed in cls.choices.items():
            if out.get(key) not in allowed:
                raise UsageError(f"{cls.name}: {key}={out.get(key)!r} is not one of "
                                 f"{', '.join(map(str, allowed))}{did_you_mean(str(out.get(key)), map(str, allowed))}"
                                 f"; e.g. --set {key}={allowed[0]}")
        return out

    @classmethod
    def setting_warnings(cls, settings: dict[str, Any]) -> list[str]:
        """One line per allowed setting that turns the method into something else (none by default).

        The trainer shows each as a warning before anything is loaded, e.g. TRADES' "beta=0:
        the loss is clean cross-entropy only".
        """
        return []

    # -- hooks the trainer calls ------------------------------------------------------------
    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules besides the classifier (each gets its own optimiser)."""
        return {}

    def optimizer_specs(self) -> dict[str, OptimizerSpec]:
        """How to build the optimiser of each extra module (missing: the classifier's settings)."""
        return {}

    def epoch_metrics(self) -> dict[str, Any]:
        """JSON-ready facts about the epoch that just ended, added to its metrics.jsonl row.

        Called once per epoch after the last step (e.g. Calibrated AT's mask-collapse checks);
        the per-step ``StepResult.metrics`` are averaged by the trainer instead.
        """
        return {}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Per-example or other state to save, resume and publish."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""
        mine = self.state_tensors()
        for k, v in tensors.items():
            if k in mine:
                mine[k].copy_(v.to(mine[k].device, mine[k].dtype))

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (0-based), e.g. for per-epoch schedules."""
        self.epoch = epoch

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> StepResult:
        """The θ-loss of one batch; the model is in train mode."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                   result: StepResult) -> dict[str, Any]:
        """Called after the classifier's optimiser step (e.g. to update g_φ). Returns metrics."""
        return {}

    def sync_state(self) -> None:
        """Make per-example state identical across distributed ranks (default: nothing)."""


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Inside the block BatchNorm keeps its running statistics: nothing is copied or restored.

    A module in train mode still normalises each batch with that batch's statistics, exactly
    as a training forward does, but neither its running mean and variance nor its
    ``num_batches_tracked`` move (its ``track_running_stats`` is off for the block). In eval
    mode nothing changes: the running statistics normalise, as always.
    """
    tracked = [m for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in tracked:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in tracked:
            m.track_running_stats = True


def _is_objective(entry: Any) -> str | None:
    ok = isinstance(entry, type) and issubclass(entry, Objective) and isinstance(entry.name, str) and entry.name
    return None if ok else "an Objective subclass with a name (robustzoo.objectives.Objective)"


declare_entry_check("objectives", _is_objective)


def _example(default: Any) -> str:
    """A default as a user would type it (the example of a setting's error message)."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return f"{default:g}" if isinstance(default, float) else str(default)


def train_attack_loss(name: str, kappa: float) -> Any:
    """The per-example loss behind a training attack name ('pgd'/'fgsm': CE, 'cw': CW margin)."""
    return cw_loss(kappa) if name == "cw" else ce_loss


class ERM(Objective):
    """Plain empirical risk minimisation: mean CE on clean images (the non-robust baseline)."""

    name = "erm"
    description = "plain training on clean images (non-robust baseline)"

    def loss(self, model, x, y, index):
        logits = model(x)
        return StepResult(loss=F.cross_entropy(logits, y), logits=logits)


class MadryAT(Objective):
    """Madry et al. PGD adversarial training: mean CE on x' = PGD(x, y).

    Cost per image with PGD-K: K × 2F for the attack (input gradients only) + F + 2F for the
    training forward and backward = 23F at K = 10.
    """

    name = "at"
    description = "standard PGD adversarial training (Madry et al. 2018; Rice et al. settings)"
    paper = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    defaults = {"attack": "pgd", "rand_init": "uniform", "attack_bn": "train", "kappa": 50.0}
    choices = {"attack": ("pgd", "fgsm", "cw"), "rand_init": ("uniform", "normal", "none"),
               "attack_bn": ("train", "eval")}
    ranges = {"kappa": Setting(min=0.0, meaning="CW margin κ (attack=cw); ≥ 0 as the eval attack's")}
    help = {"attack": "inner maximisation: pgd (CE), fgsm (one step of ε), cw (CW margin)",
            "rand_init": "PGD start: uniform U(-ε,ε), normal x+0.001·N, none",
            "attack_bn": "BatchNorm mode while attacking",
            "kappa": "CW margin κ (attack=cw)"}

    def loss(self, model, x, y, index):
        s, c = self.settings, self.ctx
        if s["attack"] == "fgsm":
            x_adv = pgd(model, x, y, eps=c.eps, alpha=c.eps, steps=1, rand_init="none",
                        bn_mode=s["attack_bn"])
        else:
            x_adv = pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps, rand_init=s["rand_init"],
                        loss=train_attack_loss(s["attack"], s["kappa"]), bn_mode=s["attack_bn"])
        logits = model(x_adv)
        return StepResult(loss=F.cross_entropy(logits, y), logits=logits)
