"""robustzoo plugin: Friendly Adversarial Training (Zhang et al., ICML 2020).

Registers the ``fat`` objective (variants at, trades, mart) and its recipes through the
``robustzoo`` entry point ``fat = "robustzoo_fat"``. :func:`early_stopped_pgd` is the
early-stopped PGD-K-τ search, usable on its own. Documentation: docs/methods/fat.md.
"""

from __future__ import annotations

from robustzoo import hookimpl
from robustzoo.lazy import lazy_exports
from robustzoo.recipes import Recipe

# The objective and the early-stopped search import torch: handed on lazily, so loading the
# plugin is free.
__getattr__ = lazy_exports(__name__, {"FAT": "objective", "VARIANTS": "objective", "Variant": "objective",
                                      "TauSchedule": "schedule", "early_stopped_pgd": "early_stop"})

__all__ = ["FAT", "VARIANTS", "Variant", "TauSchedule", "early_stopped_pgd"]

_CODE = "github.com/zjfheart/Friendly-Adversarial-Training"


@hookimpl
def register_objectives(register):
    from .objective import FAT  # deferred: imports torch

    register(FAT)


@hookimpl
def register_recipes(register):
    # All three scripts: batch 128, SGD m 0.9, wd 2e-4, lr 0.1, PGD-10 α=0.007 ε=0.031,
    # attack in eval mode, the dynamic τ schedule of the variant (variant='auto' defaults).
    common = dict(dataset="cifar10", arch="wrn34_10", batch_size=128, optimizer="sgd", lr=0.1,
                  momentum=0.9, weight_decay=2e-4, eps=0.031, alpha=0.007, steps=10, attack_bn="eval")
    register(Recipe(
        "fat-at-wrn34", "fat",
        dict(common, variant="at", epochs=120, milestones="60,90"),
        source=f"{_CODE} FAT.py: WRN-32-10 (the same blocks as WRN-34-10), 120 epochs, lr x0.1 from "
               "epoch 60, x0.01 from 90, x0.005 from 110 (our x0.1-per-milestone schedule cannot "
               "express the last step: epochs 110-120 stay at x0.01), τ 0/1/2, ω=0.001, uniform start; "
               "ours: CIFAR-10 mean/std normalisation inside the model (the code feeds raw pixels)",
        description="FAT (AT loss), WRN-34-10, CIFAR-10 (paper, WRN-32-10: 89.34 clean, 46.13 PGD-20)"))
    register(Recipe(
        "fat-trades-wrn34", "fat",
        dict(common, variant="trades", epochs=85, milestones="75", beta=6.0),
        source=f"{_CODE} FAT_for_TRADES.py: WRN-34-10, β=6, 85 epochs, lr x0.1 from epoch 75, "
               "τ 0/1/2/3 switching after epochs 30/50/70, ω=0, start x+0.001·N clipped; ours: CIFAR-10 "
               "mean/std normalisation inside the model (the code feeds raw pixels)",
        description="FAT for TRADES β=6, WRN-34-10, CIFAR-10 (RobustBench: 84.52 clean, 53.51 AutoAttack)"))
    register(Recipe(
        "fat-mart-wrn34", "fat",
        dict(common, variant="mart", epochs=90, milestones="60,90", lam=6.0),
        source=f"{_CODE} FAT_for_MART.py: WRN-34-10, λ (beta)=6, 90 epochs (its default since June 2020; "
               "85 before), lr x0.1 from epoch 60 and x0.01 from 90 (the last epoch), τ 0/1/2/3/4 switching "
               "after epochs 20/40/60/80, ω=0, start x+0.001·N clipped; ours: CIFAR-10 mean/std "
               "normalisation inside the model (the code feeds raw pixels)",
        description="FAT for MART λ=6, WRN-34-10, CIFAR-10"))
