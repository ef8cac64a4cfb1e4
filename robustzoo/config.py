"""Training configuration: one flat set of keys, filled from dataset, recipe and ``--set``.

Precedence (later wins): dataset defaults < recipe < explicit options and ``--set``.
Objective settings share the namespace (``--set beta=6``), checked against the objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError, did_you_mean
from .objectives import coerce, parse_number


@dataclass
class TrainConfig:
    """Every setting of a training run (None = take the dataset's or recipe's default).

    Epsilon and step sizes are on the [0,1] pixel scale.
    """

    objective: str = "at"
    dataset: str = "digits"
    arch: str | None = None
    eps: float | None = None
    # The training attack's budget is train_eps_factor·eps; eps stays the threat model that
    # validation and evaluation use (Calibrated AT's MNIST code trains at 0.4 for ε = 0.3: 4/3).
    train_eps_factor: float = 1.0
    alpha: float | None = None
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None  # sgd | adam
    momentum: float = 0.9
    weight_decay: float | None = None
    nesterov: bool = False
    schedule: str = "piecewise"  # piecewise | cosine | constant
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # <1: fraction of epochs
    gamma: float = 0.1
    # Clear every optimiser's state (SGD momentum, Adam moments) when a piecewise milestone
    # starts a new lr stage, as a new optimiser per stage would: the released Customized AT
    # script builds a fresh SGD for each of its four stages.
    reset_optimizer: bool = False
    warmup_epochs: float = 0.0
    seed: int = 0
    subset: int | None = None
    val_size: int | None = None
    val_steps: int = 10  # PGD steps for validation-based checkpoint selection
    val_every: int = 1
    # The resume state (state/resume.pt: weights, optimisers, objective state; ~90 MB for a
    # PreAct ResNet-18) is written every resume_every epochs (0 = by time only), and when
    # resume_every_minutes (> 0) have passed since it was last written, and after the last
    # epoch. A resume restarts from the last state written, replaying the epochs after it.
    resume_every: int = 1
    resume_every_minutes: float = 0.0
    augment: str | None = None  # none | crop_flip (zero padding) | crop_flip_reflect
    data_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | bf16 | fp32 (exact: TF32 off)
    compile: str = "off"  # off | default | reduce-overhead (CUDA graphs) | max-autotune
    compile_backend: str = "inductor"  # torch.compile backend ('aot_eager'/'eager' to debug)
    channels_last: bool = True  # on CUDA; false = NCHW (to measure what the layout brings)
    # Under DDP, BatchNorm normalises over the global batch (SyncBatchNorm: one all-reduce
    # per BN layer and forward) instead of each process's share. CUDA only.
    sync_bn: bool = False
    # The final evaluation: PGD-20 on the cross-entropy and CW∞ on the logit margin (30 steps,
    # about one more PGD-20), so a masked CE loss shows in the first table a user sees (the
    # health check ce_vs_margin compares them example by example; docs/evaluation.md).
    eval_attacks: list[str] = field(default_factory=lambda: ["clean", "pgd20", "cw"])
    eval_n: int | None = None
    recipe: str | None = None
    objective_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in data if k not in names]
        if bad:
            raise UsageError(f"unknown config key {bad[0]!r}{did_you_mean(bad[0], names)}")
        return cls(**data)


FIELD_TYPES: dict[str, Any] = {
    "eps": 0.0, "train_eps_factor": 0.0, "alpha": 0.0, "steps": 0, "epochs": 0, "batch_size": 0, "lr": 0.0, "momentum": 0.0,
    "weight_decay": 0.0, "nesterov": False, "gamma": 0.0, "reset_optimizer": False, "warmup_epochs": 0.0, "seed": 0,
    "subset": 0, "val_size": 0, "val_steps": 0, "val_every": 0, "eval_n": 0, "milestones": [0.0],
    "resume_every": 0, "resume_every_minutes": 0.0, "sync_bn": False, "channels_last": False,
    "eval_attacks": ["clean"],
}


def apply_sets(config: TrainConfig, pairs: dict[str, Any], objective_defaults: dict[str, Any]) -> None:
    """Apply ``key=value`` overrides to the config or, failing that, to the objective's settings."""
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"objective_args"}
    for key, value in pairs.items():
        key = key.replace("-", "_")
        if key in names:
            default = FIELD_TYPES.get(key, "")
            if key == "eval_attacks" and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            elif key in ("eps", "alpha", "lr", "train_eps_factor") and isinstance(value, str):
                value = parse_number(value, key)
            elif isinstance(value, str) and value.lower() in ("none", "null") and key in (
                    "subset", "val_size", "eval_n", "arch", "augment"):
                value = None
            else:
                value = coerce(value, default, key)
            setattr(config, key, value)
        elif key in objective_defaults:
            config.objective_args[key] = value
        else:
            choices = sorted(names | set(objective_defaults))
            raise UsageError(
                f"unknown setting {key!r}{did_you_mean(key, choices)} for objective "
                f"{config.objective!r}; see `robustzoo train --help` and `robustzoo list objectives {config.objective}`")


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Turn ``("beta=6", "lr=0.01")`` into a dict; a missing '=' is an error."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def check_threat_model(eps: float, alpha: float, steps: int) -> None:
    """Reject budgets outside the [0,1] pixel scale with a one-line hint."""
    if not 0.0 <= eps <= 1.0:
        raise UsageError(f"epsilon {eps} is outside [0, 1]; it is on the [0,1] pixel scale "
                         f"(for 8/255 pass --eps 8/255)")
    if not 0.0 <= alpha <= 1.0:  # also NaN
        raise UsageError(f"step size alpha {alpha} is outside [0, 1] (pixel scale)")
    if steps < 0:
        raise UsageError(f"attack steps must be >= 0, got {steps}")
