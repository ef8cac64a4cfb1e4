from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustzoo.attacks import ce_loss, cw_loss, fgsm, pgd


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y


def in_ball(x_adv, x, eps, norm="linf"):
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    eps_t = eps if isinstance(eps, torch.Tensor) else torch.full((len(x),), eps)
    return bool((size <= eps_t + 1e-6).all()) and bool(((x_adv >= 0) & (x_adv <= 1)).all())


@pytest.mark.parametrize("rand_init", ["uniform", "normal", "none"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_stays_in_ball_and_box(batch, rand_init, norm, eps):
    x, y = batch
    x_adv = pgd(small_model(), x, y, eps=eps, alpha=eps / 4, steps=7, norm=norm, rand_init=rand_init)
    assert in_ball(x_adv, x, eps, norm)
    assert not x_adv.requires_grad


def test_fgsm_and_cw_stay_in_ball(batch):
    x, y = batch
    m = small_model()
    assert in_ball(fgsm(m, x, y, eps=0.05), x, 0.05)
    assert in_ball(pgd(m, x, y, eps=0.05, alpha=0.01, steps=5, loss=cw_loss(50.0)), x, 0.05)


def test_loss_rises_over_steps(batch):
    x, y = batch
    m = small_model()
    losses = []
    for steps in (0, 1, 3, 10):
        x_adv = pgd(m, x, y, eps=0.1, alpha=0.01, steps=steps, rand_init="none")
        with torch.no_grad():
            losses.append(float(ce_loss(m(x_adv), y).mean()))
    assert losses == sorted(losses) and losses[-1] > losses[0] + 0.05


def test_eps_zero_is_clean(batch):
    x, y = batch
    m = small_model()
    for rand_init in ("uniform", "normal", "none"):
        x_adv = pgd(m, x, y, eps=0.0, alpha=0.01, steps=5, rand_init=rand_init)
        assert torch.equal(x_adv, x)


def test_per_example_eps_is_respected(batch):
    x, y = batch
    eps = torch.linspace(0, 0.2, len(y))
    x_adv = pgd(small_model(), x, y, eps=eps, alpha=0.05, steps=5, rand_init="uniform")
    d = (x_adv - x).flatten(1).abs().amax(1)
    assert bool((d <= eps + 1e-6).all())
    assert torch.equal(x_adv[0], x[0])  # ε = 0 example untouched
    assert float(d[-1]) > 0.1  # the largest budget is used


def test_gradients_only_wrt_input_and_bn_mode_restored(batch):
    x, y = batch
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    m.eval()
    seen = []
    m[1].register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    pgd(m, x, y, eps=0.1, alpha=0.02, steps=2, bn_mode="train")
    assert seen == [True, True] and not m.training
    assert all(p.grad is None for p in m.parameters())
