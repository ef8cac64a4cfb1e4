"""robustzoo plugin: Customized Adversarial Training (Cheng et al. 2020).

Registers the ``customized`` objective (CAT-CE / CAT-MIX, per-example budgets ε_i saved as
``state.eps`` in aux.safetensors) and its recipes. The loss and the soft labels are pure
functions, exported for tests and reuse.
"""

from __future__ import annotations

from robustzoo import hookimpl
from robustzoo.lazy import lazy_exports
from robustzoo.recipes import Recipe

# The objective and the losses import torch: handed on lazily, so loading the plugin is free.
__getattr__ = lazy_exports(__name__, {"CustomizedAT": "objective", **dict.fromkeys(
    ("customized_loss", "customized_loss_per_example", "logit_margin", "soft_ce", "soft_labels"), "losses")})

__all__ = ["CustomizedAT", "customized_loss", "customized_loss_per_example", "soft_labels", "soft_ce",
           "logit_margin", "RECIPES"]

_WRN = dict(dataset="cifar10", arch="wrn34_10", epochs=200, batch_size=128, optimizer="sgd", lr=0.1,
            momentum=0.9, weight_decay=5e-4, milestones="80,140,180", eps=8 / 255, alpha=2 / 255,
            steps=10, eta=0.005, eps_max=8 / 255, c=10.0, dirichlet=1.0, kappa=10.0)
# Fashion-MNIST (not in the paper): ε_max = 0.1, and η, α and c scaled by ε_max / (8/255) = 3.19
# so the schedule matches CIFAR's: ε_i reaches ε_max after ~6 resisted visits (η = 0.016),
# the step is a quarter of ε_max (α = 0.025, K = 10), and the label weight at ε_max is
# c·ε_max ≈ 0.3 as on CIFAR (c = 3; c = 10 would give weight 1 = a pure-noise label).
_FMNIST = dict(dataset="fashion-mnist", arch="cnn_mnist", epochs=40, batch_size=128, optimizer="adam",
               lr=1e-3, weight_decay=0.0, milestones="30", eps=0.1, alpha=0.025, steps=10, eta=0.016,
               eps_max=0.1, c=3.0, dirichlet=1.0, kappa=10.0)


# The released code (main_adv_cus.py, version 2, as train_adp.sh runs it; rule=code) trains
# WRN-34-10 from scratch (no --resume) in four stages of 20 epochs at lr 0.1, 0.01, 0.001, 1e-4,
# each with a new SGD (m 0.9, wd 5e-4: reset_optimizer), batch 128, zero-padded crop + flip;
# per-example schedule η 0.0025, ε_max 0.035, attack step 0.007, c 10 (its dirilabel). Its first
# commit ran 80/60/40/20 = 200 epochs with version 1 of the ε rule, which rule=code does not
# implement. Fashion-MNIST: the rule with η and α scaled by 0.1 / 0.035, on the cnn_mnist schedule.
_WRN_CODE = dict(_WRN, rule="code", eta=0.0025, eps_max=0.035, alpha=0.007, epochs=80, milestones="21,41,61",
                 reset_optimizer=True)
_FMNIST_CODE = dict(_FMNIST, rule="code", eta=0.0025 * 0.1 / 0.035, alpha=0.007 * 0.1 / 0.035)
_NORMALISED = "CIFAR-10 mean/std normalisation inside the model (the code feeds raw [0,1] pixels)"


def _recipes() -> list[Recipe]:
    out = []
    for loss in ("ce", "mix"):
        tag = "CAT-CE" if loss == "ce" else "CAT-MIX"
        out.append(Recipe(
            f"customized-{loss}-wrn34", "customized", dict(_WRN, loss=loss),
            source=f"Cheng et al. (arXiv 2002.06789; IJCAI 2022), {tag} on WRN-34-10: η=0.005, ε_max=8/255, c=10, "
                   "β_D=1, K=10, SGD lr 0.1 m 0.9 wd 5e-4, ×0.1 at epochs 80/140/180; ours: α=2/255 and 200 "
                   f"epochs (the paper states neither), batch 128, {_NORMALISED.split(' (')[0]}",
            description=f"Customized AT ({tag}), WRN-34-10, CIFAR-10"))
        out.append(Recipe(
            f"customized-{loss}-cnn-fmnist", "customized", dict(_FMNIST, loss=loss),
            source="ours: customized-*-wrn34 scaled to Fashion-MNIST's ε_max=0.1 (η=0.016, α=0.025, c=3; "
                   "Adam 1e-3, 40 epochs, ×0.1 at 30 as the other cnn_mnist recipes); not in the paper",
            description=f"Customized AT ({tag}), cnn_mnist, Fashion-MNIST ε_max=0.1"))
        never = ("" if loss == "mix" else "; its main loop never calls this CE branch (train_soadp always runs "
                 "with cw=True, MIX): the CE variant of its functions, not a procedure it ran")
        out.append(Recipe(
            f"customized-{loss}-wrn34-code", "customized", dict(_WRN_CODE, loss=loss),
            source="the authors' released code (github.com/cmhcbb/CAT-Customized-Adversarial-Training, "
                   "main_adv_cus.py + attacker/pgd.py, version 2 as train_adp.sh runs it): trained from scratch, "
                   "80 epochs in 4 stages of 20 at lr 0.1/0.01/0.001/1e-4 with a new SGD per stage "
                   "(reset_optimizer), m 0.9 wd 5e-4, batch 128, η=0.0025, ε_max=0.035, step 0.007, K=10, its "
                   f"ε-rule, attack and loss{never}; ours: {_NORMALISED}",
            description=f"Customized AT ({tag}) as the authors' released code runs it, WRN-34-10, CIFAR-10"))
        out.append(Recipe(
            f"customized-{loss}-cnn-fmnist-code", "customized", dict(_FMNIST_CODE, loss=loss),
            source="ours: the released code's rule (rule=code) scaled to Fashion-MNIST's ε_max=0.1 (η and step "
                   "× 0.1/0.035, c=3) on the cnn_mnist schedule (Adam 1e-3, 40 epochs), not the script's SGD "
                   "stages; not in the paper",
            description=f"Customized AT ({tag}), released-code rule, cnn_mnist, Fashion-MNIST"))
    return out


RECIPES = _recipes()


@hookimpl
def register_objectives(register):
    from .objective import CustomizedAT  # deferred: imports torch

    register(CustomizedAT)


@hookimpl
def register_recipes(register):
    for recipe in RECIPES:
        register(recipe)
