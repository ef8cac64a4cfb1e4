"""Every shipped recipe, pinned to the settings of its source.

One row per recipe: the resolved settings it must produce (training config and objective
settings) and where each comes from. "code" names a file of the authors' released repository as
read for issue 23 (TRADES github.com/yaodongyu/TRADES, MART github.com/YisenWang/MART, FAT
github.com/zjfheart/Friendly-Adversarial-Training, Rice et al. github.com/locuslab/robust_overfitting,
Calibrated AT github.com/TienjinHuang/Calibrated-adversarial-training, Customized AT
github.com/cmhcbb/CAT-Customized-Adversarial-Training); "paper" the publication; "ours" a choice
of robustzoo, also named in the recipe's ``source``. A change to a recipe must change its row.
Epoch milestones are 1-based: "55" = ×gamma from the 55th epoch on.
"""

from __future__ import annotations

import pytest

from robustzoo.plugins import registry
from robustzoo.train import build_config, resolve

SHIPPED = {"robustzoo.builtins", "trades", "mart", "fat", "calibrated", "customized"}

# Rice et al., train_cifar.py defaults; utils.pad(mode='reflect').
RICE = dict(dataset="cifar10", epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
            weight_decay=5e-4, milestones=[0.5, 0.75], eps=8 / 255, alpha=2 / 255, steps=10,
            rand_init="uniform", attack_bn="train", augment="crop_flip_reflect")
# The Calibrated AT paper's MNIST setting (Table 1) on cnn_mnist.
CAT_MNIST = dict(arch="cnn_mnist", epochs=40, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                 milestones=[30], steps=20)
# Calibrated AT, Codes/Train_CIFAR10.py: both nets on SGD 0.1 m 0.9 wd 5e-4, reflect-padded crop,
# every forward in train mode; β 5, β1 0.05, κ 50 (paper, Tables 2-3).
CAT_CIFAR = dict(dataset="cifar10", epochs=140, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                 weight_decay=5e-4, eps=8 / 255, alpha=2 / 255, steps=10, augment="crop_flip_reflect",
                 beta=5.0, beta1=0.05, kappa=50.0, mask_optimizer="sgd", mask_weight_decay=5e-4,
                 bn_updates="code")
CAT_MNIST_SETTINGS = dict(beta=1.0, beta1=0.3, kappa=150.0)
# Customized AT: paper (IJCAI 2022 / arXiv 2002.06789 v2, experiment setup) + our α and epochs.
CUS_WRN = dict(dataset="cifar10", arch="wrn34_10", epochs=200, batch_size=128, optimizer="sgd", lr=0.1,
               momentum=0.9, weight_decay=5e-4, milestones=[80, 140, 180], eps=8 / 255, alpha=2 / 255,
               steps=10, eta=0.005, eps_max=8 / 255, c=10.0, dirichlet=1.0, kappa=10.0, rule="paper",
               reset_optimizer=False)
# Customized AT's released code, main_adv_cus.py (version 2, CIFAR-10 stages [20, 20, 20, 20],
# lr /= 10 per stage, a new SGD per stage) run by train_adp.sh (lr 0.1, steps 10, no --resume);
# attacker/pgd.py: step 0.007; η 0.0025, ε_max 0.035.
CUS_CODE = dict(CUS_WRN, epochs=80, milestones=[21, 41, 61], reset_optimizer=True, rule="code", eta=0.0025,
                eps_max=0.035, alpha=0.007)
CUS_FMNIST = dict(dataset="fashion-mnist", arch="cnn_mnist", epochs=40, batch_size=128, optimizer="adam",
                  lr=1e-3, weight_decay=0.0, milestones=[30], eps=0.1, alpha=0.025, steps=10, eta=0.016,
                  eps_max=0.1, c=3.0, dirichlet=1.0, kappa=10.0, rule="paper")
# TRADES train_trades_mnist.py (adjust_learning_rate as fixed in May 2019) + trades.py.
TRADES_MNIST = dict(arch="smallcnn", epochs=100, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9,
                    weight_decay=0.0, milestones=[55, 75, 90], steps=40, beta=6.0, rand_init="normal",
                    attack_bn="eval", clip_start=False)
# MART train_wideresnet.py / train_resnet.py + mart.py.
MART = dict(dataset="cifar10", batch_size=128, optimizer="sgd", momentum=0.9, milestones=[75, 90, 100],
            eps=0.031, alpha=0.007, steps=10, rand_init="normal", attack_bn="eval", clip_start=False,
            augment="crop_flip")
# FAT.py / FAT_for_TRADES.py / FAT_for_MART.py defaults.
FAT = dict(dataset="cifar10", arch="wrn34_10", batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
           weight_decay=2e-4, eps=0.031, alpha=0.007, steps=10, attack_bn="eval", augment="crop_flip")

TABLE: dict[str, tuple[dict, str]] = {
    "at-prn18": (dict(RICE, arch="preact_resnet18"),
                 "code: robust_overfitting train_cifar.py defaults (PreActResNet18), utils.pad reflect"),
    "at-wrn34": (dict(RICE, arch="wrn34_10"),
                 "code: robust_overfitting train_cifar.py --model WideResNet (34, widen 10)"),
    "at-cnn-mnist": (dict(CAT_MNIST, dataset="mnist", eps=0.3, alpha=0.015),
                     "ours: the Calibrated AT paper's MNIST setting applied to Madry AT"),
    "at-cnn-fmnist": (dict(CAT_MNIST, dataset="fashion-mnist", eps=0.1, alpha=0.005),
                      "ours: at-cnn-mnist at ε 0.1, α ε/20"),
    "trades-wrn34": (dict(dataset="cifar10", arch="wrn34_10", epochs=76, batch_size=128, optimizer="sgd", lr=0.1,
                          momentum=0.9, weight_decay=2e-4, milestones=[75], eps=0.031, alpha=0.007, steps=10,
                          beta=6.0, rand_init="normal", attack_bn="eval", clip_start=False, augment="crop_flip"),
                     "code: TRADES train_trades_cifar10.py (epochs 76, wd 2e-4, lr ×0.1 from 75) + trades.py "
                     "(x + 0.001·N unclipped, eval mode); paper: β 6"),
    "trades-smallcnn-mnist": (dict(TRADES_MNIST, dataset="mnist", eps=0.3, alpha=0.01),
                              "code: TRADES train_trades_mnist.py since its May-2019 fix (55/75/90) + trades.py; "
                              "ours: β 6 (the script: 1)"),
    "trades-smallcnn-fmnist": (dict(TRADES_MNIST, dataset="fashion-mnist", eps=0.1, alpha=0.0033),
                               "ours: trades-smallcnn-mnist at ε 0.1, α scaled with ε"),
    "mart-wrn34": (dict(MART, arch="wrn34_10", epochs=90, lr=0.1, weight_decay=7e-4, lam=6.0),
                   "code: MART train_wideresnet.py defaults + mart.py (x + 0.001·N unclipped)"),
    "mart-prn18": (dict(MART, arch="preact_resnet18", epochs=120, lr=0.01, weight_decay=3.5e-3, lam=5.0),
                   "code: MART train_resnet.py defaults + mart.py; ours: PreAct ResNet-18 for its ResNet-18"),
    "fat-at-wrn34": (dict(FAT, variant="at", epochs=120, milestones=[60, 90], tau_schedule="0@50,1@90,2",
                          omega=0.001, rand_init="uniform"),
                     "code: FAT.py defaults (its ×0.005 from 110 is not expressible: stays ×0.01)"),
    "fat-trades-wrn34": (dict(FAT, variant="trades", epochs=85, milestones=[75], beta=6.0,
                              tau_schedule="0@30,1@50,2@70,3", omega=0.0, rand_init="normal"),
                         "code: FAT_for_TRADES.py defaults"),
    "fat-mart-wrn34": (dict(FAT, variant="mart", epochs=90, milestones=[60, 90], lam=6.0,
                            tau_schedule="0@20,1@40,2@60,3@80,4", omega=0.0, rand_init="normal"),
                       "code: FAT_for_MART.py defaults since June 2020 (90 epochs; 85 before)"),
    "cat-cw-cnn-fmnist": (dict(CAT_MNIST, dataset="fashion-mnist", eps=0.1, alpha=0.005, attack="cw",
                               **CAT_MNIST_SETTINGS), "ours: cat-cw-cnn-mnist at ε 0.1"),
    "cat-cent-cnn-fmnist": (dict(CAT_MNIST, dataset="fashion-mnist", eps=0.1, alpha=0.005, attack="cent",
                                 **CAT_MNIST_SETTINGS), "ours: cat-cent-cnn-mnist at ε 0.1"),
    "cat-cw-cnn-mnist": (dict(CAT_MNIST, dataset="mnist", eps=0.3, alpha=0.015, attack="cw", **CAT_MNIST_SETTINGS,
                              mask_optimizer="sgd", mask_lr=0.0),
                         "paper: Table 1 CATcw(0.3); ours: g_φ on SGD (mask_lr 0 = 0.01 on 1 channel)"),
    "cat-cent-cnn-mnist": (dict(CAT_MNIST, dataset="mnist", eps=0.3, alpha=0.015, attack="cent",
                                **CAT_MNIST_SETTINGS, mask_optimizer="sgd", mask_lr=0.0),
                           "paper: Table 1 CATcent(0.3); ours: g_φ on SGD"),
    "cat-cw-cnn-mnist-code": (dict(CAT_MNIST, dataset="mnist", eps=0.3, attack="cw", **CAT_MNIST_SETTINGS,
                                   batch_size=100, milestones=[32], train_eps_factor=4 / 3, alpha=0.02,
                                   start_eps=0.1, clip=False, mask_optimizer="adam", mask_lr=1e-3),
                              "code: Codes/Train_MNIST.py --attacktrain cw (lr 1e-4 after t == 30)"),
    "cat-cent-cnn-mnist-code": (dict(CAT_MNIST, dataset="mnist", eps=0.3, attack="cent", **CAT_MNIST_SETTINGS,
                                     batch_size=100, milestones=[32], train_eps_factor=4 / 3, alpha=0.02,
                                     start_eps=0.1, clip=False, mask_optimizer="adam", mask_lr=1e-3),
                                "code: Codes/Train_MNIST.py --attacktrain cent"),
    "cat-cw-wrn34": (dict(CAT_CIFAR, arch="wrn34_10", attack="cw", milestones=[101, 111]),
                     "paper: Table 3; code: Train_CIFAR10.py WideResNet branch (t < 100, t < 110)"),
    "cat-cent-wrn34": (dict(CAT_CIFAR, arch="wrn34_10", attack="cent", milestones=[101, 111]),
                       "paper: Table 3; code: Train_CIFAR10.py WideResNet branch"),
    "cat-cw-prn18": (dict(CAT_CIFAR, arch="preact_resnet18", attack="cw", milestones=[101, 121]),
                     "paper: Table 2; code: Train_CIFAR10.py PreActResNet18 branch (t < 100, t < 120)"),
    "cat-cent-prn18": (dict(CAT_CIFAR, arch="preact_resnet18", attack="cent", milestones=[101, 121]),
                       "paper: Table 2; code: Train_CIFAR10.py PreActResNet18 branch"),
    "cat-cw-prn18-cifar100": (dict(CAT_CIFAR, dataset="cifar100", arch="preact_resnet18", attack="cw", epochs=120,
                                   milestones=[101, 111]),
                              "paper: CIFAR-100 table; code: Train_CIFAR100.py (120 epochs, t < 100, t < 110, "
                              "cifar100_mean/std)"),
    "customized-ce-wrn34": (dict(CUS_WRN, loss="ce"), "paper: experiment setup; ours: α 2/255, 200 epochs"),
    "customized-mix-wrn34": (dict(CUS_WRN, loss="mix"), "paper: experiment setup; ours: α 2/255, 200 epochs"),
    "customized-ce-wrn34-code": (dict(CUS_CODE, loss="ce"),
                                 "code: main_adv_cus.py v2 + train_adp.sh; its loop never runs CE (cw=True)"),
    "customized-mix-wrn34-code": (dict(CUS_CODE, loss="mix"), "code: main_adv_cus.py v2 + train_adp.sh"),
    "customized-ce-cnn-fmnist": (dict(CUS_FMNIST, loss="ce"), "ours: the CIFAR schedule scaled to ε_max 0.1"),
    "customized-mix-cnn-fmnist": (dict(CUS_FMNIST, loss="mix"), "ours: the CIFAR schedule scaled to ε_max 0.1"),
    "customized-ce-cnn-fmnist-code": (dict(CUS_FMNIST, loss="ce", rule="code", eta=0.0025 * 0.1 / 0.035,
                                           alpha=0.007 * 0.1 / 0.035),
                                      "ours: the released code's rule scaled by 0.1 / 0.035"),
    "customized-mix-cnn-fmnist-code": (dict(CUS_FMNIST, loss="mix", rule="code", eta=0.0025 * 0.1 / 0.035,
                                            alpha=0.007 * 0.1 / 0.035),
                                       "ours: the released code's rule scaled by 0.1 / 0.035"),
}


def _shipped() -> list[str]:
    reg = registry("recipes")
    return [n for n in reg.list() if reg.owner(n) in SHIPPED]


def test_every_shipped_recipe_has_a_row():
    assert sorted(_shipped()) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_resolves_to_the_settings_of_its_source(name):
    expected, citation = TABLE[name]
    assert citation.split(":")[0] in ("code", "paper", "ours")
    recipe = registry("recipes").get(name)
    # Every setting the recipe writes is pinned here (and so cited).
    unpinned = {k.replace("-", "_") for k in recipe.settings} - set(expected)
    assert not unpinned, f"{name} sets {sorted(unpinned)} without a row entry"
    r = resolve(build_config(recipe=name))
    got = {**r.config.to_dict(), **r.settings}
    for key, want in expected.items():
        assert key in got, f"{name}: {key} is neither a config key nor a setting of {recipe.objective}"
        value = got[key]
        if isinstance(want, float):
            assert value == pytest.approx(want, rel=1e-12), (name, key)
        elif isinstance(want, list):
            assert [float(v) for v in value] == pytest.approx(want), (name, key)
        else:
            assert value == want, (name, key)
    assert recipe.source, f"{name} has no source"
    if citation.startswith("ours"):
        assert "ours" in recipe.source, f"{name}'s source must say what is ours"


def test_sources_name_what_is_ours():
    """The source strings say exactly what comes from where (issue 23)."""
    reg = registry("recipes")
    assert "states neither" in reg.get("customized-mix-wrn34").source  # α 2/255, 200 epochs
    code = reg.get("customized-mix-wrn34-code").source
    assert "from scratch" in code and "fine-tun" not in code and "new SGD per stage" in code
    assert "never calls this CE branch" in reg.get("customized-ce-wrn34-code").source
    assert "since June 2020" in reg.get("fat-mart-wrn34").source
    assert reg.get("at-cnn-mnist").source.startswith("ours")
    assert "×0.1 / ×0.01 / ×0.001 from epochs 55 / 75 / 90" in reg.get("trades-smallcnn-mnist").source


def test_cifar100_normalises_with_its_own_statistics():
    """Calibrated AT's CIFAR-100 code (utils.cifar100_mean/std), not CIFAR-10's."""
    c100, c10 = registry("datasets").get("cifar100"), registry("datasets").get("cifar10")
    assert c100.mean == pytest.approx((0.5071, 0.4865, 0.4409)) and c100.std == pytest.approx((0.2673, 0.2564, 0.2762))
    assert c10.mean == pytest.approx((0.4914, 0.4822, 0.4465))
