"""robustzoo plugin: TRADES (Zhang et al., ICML 2019).

Registers the ``trades`` objective and its recipes through the ``robustzoo`` entry point
``trades = "robustzoo_trades"``. The pure loss :func:`trades_loss` is importable on its own.
Documentation: docs/methods/trades.md.
"""

from __future__ import annotations

from robustzoo import hookimpl
from robustzoo.lazy import lazy_exports
from robustzoo.recipes import Recipe

# The objective and the losses import torch: handed on lazily, so loading the plugin is free.
__getattr__ = lazy_exports(__name__, {"TRADES": "objective", "clean_target": "objective",
                                      "trades_loss": "losses", "kl_per_example": "losses",
                                      "kl_attack_loss": "losses"})

__all__ = ["TRADES", "trades_loss", "kl_per_example", "kl_attack_loss", "clean_target"]

_CODE = "github.com/yaodongyu/TRADES"


@hookimpl
def register_objectives(register):
    from .objective import TRADES  # deferred: imports torch

    register(TRADES)


@hookimpl
def register_recipes(register):
    # The code's attack (trades.py) starts at x + 0.001·N and takes its first gradient there,
    # unclipped (clip_start=false); it feeds the nets raw [0,1] pixels, where robustzoo's CIFAR
    # nets normalise with CIFAR-10's mean/std inside the model.
    register(Recipe(
        "trades-wrn34", "trades",
        dict(dataset="cifar10", arch="wrn34_10", epochs=76, batch_size=128, optimizer="sgd", lr=0.1,
             momentum=0.9, weight_decay=2e-4, milestones="75", eps=0.031, alpha=0.007, steps=10,
             beta=6.0, rand_init="normal", attack_bn="eval", clip_start=False),
        source=f"{_CODE} train_trades_cifar10.py and trades.py (the paper's CIFAR-10 setting): WRN-34-10, β=6, "
               "SGD lr 0.1 m 0.9 wd 2e-4, batch 128, 76 epochs, ×0.1 from epoch 75 (its ×0.01 / ×0.001 from 90 / "
               "100 are never reached), PGD-10 α=0.007 ε=0.031 from x+0.001·N unclipped, eval mode, zero-padded "
               "crop + flip; ours: CIFAR-10 mean/std normalisation inside the model (the code feeds raw pixels)",
        description="TRADES β=6, WRN-34-10, CIFAR-10 (paper: 84.92 clean, 56.61 PGD-20, 53.08 AutoAttack)"))
    # MNIST-like: SmallCNN, SGD lr 0.01 m 0.9, no weight decay, 100 epochs, PGD-40; since the
    # script's May-2019 fix its learning rate is ×0.1 from epoch 55, ×0.01 from 75, ×0.001 from 90.
    mnist = dict(arch="smallcnn", epochs=100, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9,
                 weight_decay=0.0, milestones="55,75,90", steps=40, beta=6.0, rand_init="normal",
                 attack_bn="eval", clip_start=False)
    register(Recipe(
        "trades-smallcnn-mnist", "trades", dict(mnist, dataset="mnist", eps=0.3, alpha=0.01),
        source=f"{_CODE} train_trades_mnist.py (as fixed in May 2019) and trades.py: SmallCNN, SGD lr 0.01 m 0.9, "
               "batch 128, 100 epochs, lr ×0.1 / ×0.01 / ×0.001 from epochs 55 / 75 / 90, PGD-40 α=0.01 ε=0.3 from "
               "x+0.001·N unclipped; ours: β=6 as on CIFAR-10 (the script defaults to β=1: --set beta=1)",
        description="TRADES β=6, SmallCNN, MNIST ε=0.3 (released checkpoint: 99.48 clean, 96.07 PGD-40)"))
    register(Recipe(
        "trades-smallcnn-fmnist", "trades",
        dict(mnist, dataset="fashion-mnist", eps=0.1, alpha=0.0033),
        source="ours: trades-smallcnn-mnist with ε=0.1 for Fashion-MNIST and α scaled with ε "
               "(0.01·0.1/0.3 ≈ ε/30, 40 steps cover 1.3ε); no published reference",
        description="TRADES β=6, SmallCNN, Fashion-MNIST ε=0.1"))
