"""The core's own plugin: datasets, architectures, attacks, the erm/at objectives, their
recipes and the zoo index. Registered through the same plugin manager as third-party
plugins, so the core never special-cases them.

Each hook imports the pieces it registers (torch and all) when it runs: loading the plugin
costs nothing, and a registry is built only when a command asks for it, so ``robustzoo
--help``, ``list recipes`` and ``list zoo`` never import torch."""

from __future__ import annotations

import json
from importlib import resources

from .hookspecs import hookimpl
from .recipes import Recipe

MNIST_LIKE = dict(mean=(0.0,), std=(1.0,), default_arch="cnn_mnist", optimizer="adam", lr=1e-3,
                  eval_alpha=0.015, val_size=1000, augment="none")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
# CIFAR-100's own training-set statistics (the values Calibrated AT's CIFAR-100 code normalises
# with, utils.py cifar100_mean/std), not CIFAR-10's.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


@hookimpl
def register_datasets(register):
    from .data import DatasetSpec  # deferred, as every piece here: imports torch
    from .data import sources as src

    register(DatasetSpec(
        name="digits", num_classes=10, shape=(1, 8, 8), load=src.load_digits,
        eps=0.1, alpha=0.02, steps=10, epochs=15, batch_size=64,
        classes=tuple(str(i) for i in range(10)),
        description="scikit-learn's bundled 8x8 digits (1,797 images); embedded, no download",
        source="sklearn.datasets.load_digits", test_size=360, **dict(MNIST_LIKE, val_size=150)))
    register(DatasetSpec(
        name="fashion-mnist", num_classes=10, shape=(1, 28, 28), load=src.load_fashion_mnist,
        eps=0.1, alpha=0.025, steps=10, epochs=20, batch_size=128, classes=FMNIST_CLASSES,
        description="Fashion-MNIST 28x28 (60k/10k); Debian package dataset-fashion-mnist",
        source="Xiao et al. 2017", test_size=10_000, **MNIST_LIKE))
    register(DatasetSpec(
        name="mnist", num_classes=10, shape=(1, 28, 28), load=src.load_mnist,
        eps=0.3, alpha=0.015, steps=20, epochs=40, batch_size=128,
        classes=tuple(str(i) for i in range(10)),
        description="MNIST 28x28 (60k/10k) in torchvision's layout under --data-dir",
        source="LeCun et al. 1998", test_size=10_000, **MNIST_LIKE))
    cifar = dict(shape=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD, default_arch="preact_resnet18",
                 eps=8 / 255, alpha=2 / 255, steps=10, eval_alpha=0.003, epochs=200, batch_size=128,
                 lr=0.1, optimizer="sgd", augment="crop_flip", val_size=1000, test_size=10_000)
    register(DatasetSpec(name="cifar10", num_classes=10, load=src.load_cifar10, classes=CIFAR10_CLASSES,
                         description="CIFAR-10 32x32 (50k/10k) in torchvision's layout under --data-dir",
                         source="Krizhevsky 2009", **cifar))
    register(DatasetSpec(name="cifar100", num_classes=100, load=src.load_cifar100,
                         description="CIFAR-100 32x32 (50k/10k) in torchvision's layout under --data-dir",
                         source="Krizhevsky 2009", **dict(cifar, mean=CIFAR100_MEAN, std=CIFAR100_STD)))


@hookimpl
def register_architectures(register):
    from .models import ArchitectureSpec  # deferred: imports torch
    from .models.nets import CNNMnist, PreActResNet18, SmallCNN, WideResNet

    register(ArchitectureSpec("preact_resnet18", PreActResNet18, "PreAct ResNet-18 for 32x32 (Rice et al.)",
                              input_size="32x32", params="11.17M"))
    register(ArchitectureSpec("wrn34_10", lambda **kw: WideResNet(depth=34, widen=10, **kw),
                              "WideResNet-34-10 (TRADES/MART/Calibrated AT)", input_size="32x32",
                              params="46.16M"))
    register(ArchitectureSpec("wrn28_10", lambda **kw: WideResNet(depth=28, widen=10, **kw),
                              "WideResNet-28-10", input_size="32x32", params="36.48M"))
    register(ArchitectureSpec("cnn_mnist", CNNMnist, "Calibrated AT's MNIST CNN (4 conv, 2 FC)",
                              input_size="any"))
    register(ArchitectureSpec("smallcnn", SmallCNN, "TRADES' MNIST CNN", input_size=">=16x16"))


def _pgd_eval(steps: int, rand_init: str = "none"):
    from .attacks import ce_loss, pgd  # deferred: imports torch (called by register_attacks)

    def run(model, x, y, ctx):
        return pgd(model, x, y, eps=ctx.eps, alpha=ctx.alpha, steps=steps, norm=ctx.norm,
                   rand_init=rand_init, loss=ce_loss)
    return run


def _cw_eval():
    from .attacks import cw_loss, pgd  # deferred: imports torch (called by register_attacks)

    def run(model, x, y, ctx):
        # No random start by default, as pgd20 / pgd100 (the Calibrated AT protocol evaluates
        # without one); --set cw_rand_init=uniform starts from U(-ε, ε).
        kappa = ctx.options.get("kappa", 50.0)
        return pgd(model, x, y, eps=ctx.eps, alpha=ctx.alpha, steps=30, norm=ctx.norm,
                   rand_init=ctx.options.get("cw_rand_init", "none"), loss=cw_loss(kappa))
    return run


@hookimpl
def register_attacks(register):
    from .attacks import AttackSpec  # deferred: imports torch
    from .attacks.autoattack import register_autoattack
    from .attacks.core import fgsm

    register(AttackSpec("clean", lambda m, x, y, c: x, "no attack: accuracy on clean images",
                        kind="none", any_layout=True))
    register(AttackSpec("fgsm", lambda m, x, y, c: fgsm(m, x, y, eps=c.eps),
                        "one signed-gradient step of size ε on CE, no random start",
                        settings=lambda c: {"eps": c.eps, "steps": 1}, any_layout=True))
    register(AttackSpec("pgd", _pgd_eval(10, "uniform"), "PGD-10 on CE, random start",
                        settings=lambda c: {"eps": c.eps, "alpha": c.alpha, "steps": 10, "rand_init": "uniform"},
                        any_layout=True))
    for steps in (20, 100):
        register(AttackSpec(f"pgd{steps}", _pgd_eval(steps), f"PGD-{steps} on CE, no random start "
                            "(Calibrated AT protocol)",
                            settings=lambda c, s=steps: {"eps": c.eps, "alpha": c.alpha, "steps": s,
                                                         "rand_init": "none"}, any_layout=True))
    register(AttackSpec("cw", _cw_eval(), "PGD on the CW margin (CW∞), 30 steps, κ=50, no random start",
                        settings=lambda c: {"eps": c.eps, "alpha": c.alpha, "steps": 30,
                                            "kappa": c.options.get("kappa", 50.0),
                                            "rand_init": c.options.get("cw_rand_init", "none")},
                        any_layout=True))
    register_autoattack(register)  # apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack


@hookimpl
def register_objectives(register):
    from .objectives import ERM, MadryAT  # deferred: imports torch

    register(ERM)
    register(MadryAT)


@hookimpl
def register_recipes(register):
    # Rice et al.'s train_cifar.py: SGD lr 0.1 m 0.9 wd 5e-4, batch 128, 200 epochs, lr ×0.1 at
    # 50% and ×0.01 at 75%, PGD-10 ε 8/255 α 2/255 from U(−ε, ε), attack in train mode, crops
    # of a reflect-padded image (utils.pad) and flips, CIFAR-10 mean/std.
    rice = dict(dataset="cifar10", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                weight_decay=5e-4, milestones="0.5,0.75", eps=8 / 255, alpha=2 / 255, steps=10,
                rand_init="uniform", attack_bn="train", augment="crop_flip_reflect")
    rice_ours = ("; ours: the lr drops at the start of epochs 101 and 151 (the code's per-step schedule "
                 "drops it at the last batch of epochs 100 and 150), and the attack ends without the code's "
                 "extra train-mode forward on x' (one BatchNorm update fewer per batch)")
    register(Recipe(
        "at-prn18", "at", dict(rice, arch="preact_resnet18"),
        source="Rice et al. 2020 (github.com/locuslab/robust_overfitting train_cifar.py, its defaults): "
               "PreAct ResNet-18, 200 epochs, batch 128, SGD lr 0.1 m 0.9 wd 5e-4, ×0.1 at 50% and 75%, "
               "PGD-10 ε 8/255 α 2/255 uniform start in train mode, reflect-padded crop + flip" + rice_ours,
        description="Madry PGD-10 AT, PreAct ResNet-18, CIFAR-10"))
    register(Recipe(
        "at-wrn34", "at", dict(rice, arch="wrn34_10"),
        source="Rice et al. 2020 (train_cifar.py --model WideResNet: WRN-34-10), otherwise as at-prn18" + rice_ours,
        description="Madry PGD-10 AT, WRN-34-10, CIFAR-10"))
    mnist = dict(arch="cnn_mnist", epochs=40, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                 milestones="30", steps=20)
    register(Recipe("at-cnn-mnist", "at", dict(mnist, dataset="mnist", eps=0.3, alpha=0.015),
                    source="ours: the Calibrated AT paper's MNIST setting (cnn_mnist, Adam 1e-3, batch 128, 40 "
                           "epochs, ×0.1 at 30, PGD-20 ε 0.3 α ε/20) applied to Madry AT; the paper's AT(0.3) "
                           "baseline (Table 1) does not state how it was trained",
                    description="Madry AT, cnn_mnist, MNIST ε=0.3"))
    register(Recipe("at-cnn-fmnist", "at", dict(mnist, dataset="fashion-mnist", eps=0.1, alpha=0.005),
                    source="ours: at-cnn-mnist with ε=0.1 and α=ε/20 for Fashion-MNIST",
                    description="Madry AT, cnn_mnist, Fashion-MNIST ε=0.1"))


@hookimpl
def register_zoo(register):
    try:
        text = resources.files("robustzoo").joinpath("zoo/index.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for entry in json.loads(text).get("entries", []):
        register(entry)
