"""Training configuration: one flat set of keys, filled from dataset, recipe and ``--set``.

Precedence (later wins): dataset defaults < recipe < explicit options and ``--set``.
Objective settings share the namespace (``--set beta=6``), checked against the objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import RunError, UsageError, did_you_mean
from .settings import Setting


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
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys and values outside :data:`SCHEMA` are errors.

        Args:
            data: the settings (``robustzoo.config`` of a run's config.json).
            source: the file they were read from: errors are then :class:`RunError` naming
                it and the field (``robustzoo.config.KEY``), since the file, not the user's
                input, is wrong.
        """
        def fail(key: str, why: str) -> None:
            if source is None:
                raise UsageError(why)
            field = "robustzoo.config" + (f".{key}" if key else "")
            raise RunError(f"{source}: {field}: {why}; restore the file as `robustzoo train` "
                           f"wrote it, or start a new run") from None

        if not isinstance(data, dict):
            fail("", f"is a {type(data).__name__}, expected an object of settings")
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in data if k not in names]
        if bad:
            fail(str(bad[0]), f"unknown config key {bad[0]!r}{did_you_mean(str(bad[0]), names)}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key == "objective_args":
                if not isinstance(value, dict):
                    fail(key, f"is {value!r}, expected an object of objective settings")
                out[key] = dict(value)
                continue
            rule = SCHEMA[key]
            # A file holds typed JSON values: a number written as a string is damage, not input.
            why = rule.problem(value)
            if why is not None:
                fail(key, f"{key}={value!r} {why}; expected {rule.describe()}")
            out[key] = rule.check(key, value)
        return cls(**out)


#: Type and range of every config key: checked where a value enters (``--set``, CLI options,
#: the Python API's keywords, a run's config.json) and again once defaults are filled in.
#: Budgets and step sizes are on the [0,1] pixel scale; the rules of ε, α and steps are the
#: evaluation's (ε in (0, 1], α > 0, steps >= 1).
MAX_STEPS = 10_000
MAX_EPOCHS = 10_000

SCHEMA: dict[str, Setting] = {
    "objective": Setting("str", nonempty=True, meaning="training objective", example="trades",
                         option="--objective"),
    "dataset": Setting("str", nonempty=True, meaning="dataset name", example="digits", option="--dataset"),
    "arch": Setting("str", optional=True, none_means="the dataset's default", nonempty=True,
                    meaning="architecture", example="cnn_mnist", option="--arch"),
    "eps": Setting("float", min=0.0, max=1.0, min_open=True, optional=True,
                   meaning="L-inf budget ε on the [0,1] pixel scale", example="8/255", option="--eps"),
    "train_eps_factor": Setting("float", min=0.0, min_open=True,
                                meaning="training ε = factor·ε", example="4/3"),
    "alpha": Setting("float", min=0.0, max=1.0, min_open=True, optional=True,
                     meaning="PGD step size on the [0,1] pixel scale", example="2/255", option="--alpha"),
    # Upper bounds catch typos (an extra zero runs for weeks); the papers' largest are 200 epochs
    # and PGD-40 in training, two orders of magnitude below.
    "steps": Setting("int", min=1, max=MAX_STEPS, optional=True, meaning="PGD steps of the training attack",
                     example="10", option="--steps"),
    "epochs": Setting("int", min=1, max=MAX_EPOCHS, optional=True, meaning="training epochs", example="10",
                      option="--epochs"),
    "batch_size": Setting("int", min=1, optional=True, meaning="images per step", example="128",
                          option="--batch-size"),
    "lr": Setting("float", min=0.0, min_open=True, optional=True, meaning="learning rate", example="0.1",
                  option="--lr"),
    "optimizer": Setting("str", choices=("sgd", "adam"), optional=True, meaning="optimiser"),
    "momentum": Setting("float", min=0.0, max=1.0, max_open=True, meaning="SGD momentum", example="0.9"),
    "weight_decay": Setting("float", min=0.0, optional=True, meaning="L2 weight decay", example="5e-4"),
    "nesterov": Setting("bool", meaning="Nesterov momentum", example="true"),
    "schedule": Setting("str", choices=("piecewise", "cosine", "constant"), meaning="learning-rate schedule"),
    "milestones": Setting("floats", min=0.0, meaning="piecewise decay points: < 1 a fraction of the run, "
                                                     "else a 1-based epoch", example="0.5,0.75"),
    "gamma": Setting("float", min=0.0, min_open=True, meaning="lr factor at each milestone", example="0.1"),
    "warmup_epochs": Setting("float", min=0.0, meaning="epochs of linear lr warm-up", example="1"),
    "reset_optimizer": Setting("bool", meaning="clear the optimisers' state at each piecewise lr stage",
                               example="true"),
    # 2**32 - 1: the largest seed every generator takes (numpy's), and seed·100003 stays in int64.
    "seed": Setting("int", min=0, max=2**32 - 1, meaning="random seed", example="1", option="--seed"),
    "subset": Setting("int", min=1, optional=True, none_means="all", meaning="train on N images (and test on at most N)",
                      example="1000", option="--subset"),
    "val_size": Setting("int", min=1, optional=True, none_means="the dataset's default", meaning="training images held out for checkpoint "
                                                            "selection", example="100"),
    "val_steps": Setting("int", min=1, max=MAX_STEPS, meaning="PGD steps of the validation attack", example="10"),
    "val_every": Setting("int", min=1, meaning="epochs between validations", example="1"),
    "resume_every": Setting("int", min=0, meaning="epochs between resume states (0 = by time only)",
                            example="5"),
    "resume_every_minutes": Setting("float", min=0.0, meaning="minutes between resume states (0 = off)",
                                    example="30"),
    "augment": Setting("str", choices=("none", "crop_flip", "crop_flip_reflect"), optional=True,
                       meaning="augmentation"),
    "data_dir": Setting("str", optional=True, nonempty=True, meaning="folder with the dataset files",
                        example="data", option="--data-dir"),
    "device": Setting("str", nonempty=True, meaning="auto, cpu, cuda or cuda:N", example="cpu",
                      option="--device"),
    "precision": Setting("str", choices=("auto", "bf16", "fp32"), meaning="autocast precision",
                         option="--precision"),
    "compile": Setting("str", nonempty=True, meaning="torch.compile mode: off, default, reduce-overhead or "
                                                     "max-autotune", example="off", option="--compile"),
    "compile_backend": Setting("str", nonempty=True, meaning="torch.compile backend", example="inductor"),
    "channels_last": Setting("bool", meaning="NHWC layout on CUDA", example="true"),
    "sync_bn": Setting("bool", meaning="SyncBatchNorm under DDP", example="false"),
    "eval_attacks": Setting("names", nonempty=True, meaning="attacks of the final evaluation",
                            example="clean,pgd20"),
    "eval_n": Setting("int", min=1, optional=True, none_means="all", meaning="test images of the final evaluation",
                      example="1000"),
    "recipe": Setting("str", optional=True, nonempty=True, meaning="recipe name", example="at-prn18",
                      option="--recipe"),
}


def setting_keys() -> list[str]:
    """The keys ``--set`` takes besides an objective's own (for help texts)."""
    return list(SCHEMA)


def apply_sets(config: TrainConfig, pairs: dict[str, Any], objective_defaults: dict[str, Any]) -> None:
    """Apply ``key=value`` overrides to the config or, failing that, to the objective's settings.

    Every config value is parsed and range-checked here (:data:`SCHEMA`); objective settings
    are checked by the objective (``Objective.resolve_settings``) before anything is loaded.
    """
    names = set(SCHEMA)
    for key, value in pairs.items():
        key = key.replace("-", "_")
        if key in names:
            setattr(config, key, SCHEMA[key].check(key, value))
        elif key in objective_defaults:
            config.objective_args[key] = value
        else:
            choices = sorted(names | set(objective_defaults))
            raise UsageError(
                f"unknown setting {key!r}{did_you_mean(key, choices)} for objective "
                f"{config.objective!r}; see `robustzoo train --help` and `robustzoo list objectives {config.objective}`")


def check_config(config: TrainConfig) -> None:
    """Check every value of a config against :data:`SCHEMA` (UsageError naming the first bad one)."""
    for key, rule in SCHEMA.items():
        rule.check(key, getattr(config, key))
    if not isinstance(config.objective_args, dict):
        raise UsageError(f"objective_args must be a mapping of setting -> value, not "
                         f"{type(config.objective_args).__name__}")


def parse_set_options(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Turn ``("beta=6", "lr=0.01")`` into a dict; a missing '=' is an error."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
