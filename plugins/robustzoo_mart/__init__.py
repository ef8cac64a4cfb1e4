"""robustzoo plugin: MART (Wang et al., ICLR 2020).

Registers the ``mart`` objective and its recipes through the ``robustzoo`` entry point
``mart = "robustzoo_mart"``. The pure loss :func:`mart_loss` is importable on its own.
Documentation: docs/methods/mart.md.
"""

from __future__ import annotations

from robustzoo import hookimpl
from robustzoo.lazy import lazy_exports
from robustzoo.recipes import Recipe

# The objective and the losses import torch: handed on lazily, so loading the plugin is free.
__getattr__ = lazy_exports(__name__, {"MART": "objective", "mart_loss": "losses", "boosted_ce": "losses",
                                      "weighted_kl": "losses"})

__all__ = ["MART", "mart_loss", "boosted_ce", "weighted_kl"]

_CODE = "github.com/YisenWang/MART"


@hookimpl
def register_objectives(register):
    from .objective import MART  # deferred: imports torch

    register(MART)


@hookimpl
def register_recipes(register):
    # Both scripts decay the lr x0.1 from epoch 75, x0.01 from 90, x0.001 from 100 (1-based);
    # PGD-10, α=0.007, ε=0.031, start x+0.001·N not clipped before the first gradient (mart.py),
    # attack in eval mode, zero-padded crop + flip, raw [0,1] pixels into the net.
    common = dict(dataset="cifar10", batch_size=128, optimizer="sgd", momentum=0.9,
                  milestones="75,90,100", eps=0.031, alpha=0.007, steps=10, rand_init="normal",
                  attack_bn="eval", clip_start=False)
    ours = "; ours: CIFAR-10 mean/std normalisation inside the model (the code feeds raw pixels)"
    register(Recipe(
        "mart-wrn34", "mart",
        dict(common, arch="wrn34_10", epochs=90, lr=0.1, weight_decay=7e-4, lam=6.0),
        source=f"{_CODE} train_wideresnet.py and mart.py: WRN-34-10, λ (beta)=6, SGD lr 0.1 m 0.9 wd 7e-4, "
               "batch 128, 90 epochs, lr x0.1 from epoch 75 and x0.01 from 90, PGD-10 α=0.007 ε=0.031 from "
               "x+0.001·N unclipped" + ours,
        description="MART λ=6, WRN-34-10, CIFAR-10 (rank it by AutoAttack, not PGD)"))
    register(Recipe(
        "mart-prn18", "mart",
        dict(common, arch="preact_resnet18", epochs=120, lr=0.01, weight_decay=3.5e-3, lam=5.0),
        source=f"{_CODE} train_resnet.py and mart.py: λ (beta)=5, SGD lr 0.01 m 0.9 wd 3.5e-3, 120 epochs, lr "
               "x0.1/x0.01/x0.001 from epochs 75/90/100, PGD-10 from x+0.001·N unclipped; ours: the zoo's PreAct "
               "ResNet-18 where the script trains a standard ResNet-18, and CIFAR-10 mean/std normalisation",
        description="MART λ=5, PreAct ResNet-18, CIFAR-10 (rank it by AutoAttack, not PGD)"))
