"""Early-stopped PGD-K-τ (FAT): τ=K is plain PGD, τ=0 stops at the first mistake, rows stay aligned."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn
from robustzoo_fat import FAT, TauSchedule, early_stopped_pgd
from robustzoo_trades import kl_attack_loss

from robustzoo.attacks import pgd
from robustzoo.errors import UsageError
from robustzoo.objectives import ObjectiveContext


def conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10))


def linear_net() -> nn.Module:
    """float64 linear model: no rounding ties, per-row results independent of the batch."""
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double().eval()


@functools.lru_cache(maxsize=1)
def _digit_images() -> torch.Tensor:
    from robustzoo.data import sources

    return sources.load_digits(None, False)[0]


def digits(n: int, dtype=torch.float32) -> torch.Tensor:
    """The first n embedded 8x8 digits in [0,1]."""
    return _digit_images()[:n].to(dtype) / 255.0


@pytest.mark.parametrize("rand_init", ["uniform", "normal", "none"])
def test_tau_equal_to_k_is_plain_pgd(rand_init):
    model = conv_bn_net().train()
    x = digits(16)
    y = torch.arange(16) % 10
    kw = dict(eps=0.1, alpha=0.02, steps=5, rand_init=rand_init, bn_mode="eval")
    torch.manual_seed(11)
    ref = pgd(model, x, y, **kw)
    for tau in (5, 50):
        torch.manual_seed(11)
        out, taken = early_stopped_pgd(model, x, y, tau=tau, omega=0.0, **kw)
        assert torch.equal(out, ref)
        assert taken.tolist() == [5] * 16
    assert model.training  # the attack's BatchNorm mode was restored


def test_tau_equal_to_k_is_plain_pgd_with_the_trades_kl_loss():
    model = conv_bn_net().eval()
    x = digits(8)
    y = torch.arange(8)
    with torch.no_grad():
        target = model(x)
    kw = dict(eps=0.1, alpha=0.02, steps=4, rand_init="normal", bn_mode="eval", loss=kl_attack_loss)
    torch.manual_seed(5)
    ref = pgd(model, x, target, **kw)
    torch.manual_seed(5)
    out, _ = early_stopped_pgd(model, x, y, tau=4, loss_target=target, **kw)
    assert torch.equal(out, ref)


def trajectory(model, x, y, steps, alpha, eps):
    """x_k of plain PGD without random start for k = 0..steps (deterministic)."""
    return [pgd(model, x, y, eps=eps, alpha=alpha, steps=k, rand_init="none") for k in range(steps + 1)]


def test_tau_zero_stops_each_example_at_its_first_misclassified_point():
    model = linear_net()
    x = digits(40, torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example starts correctly classified
    steps, alpha, eps = 12, 0.01, 0.5
    traj = trajectory(model, x, y, steps, alpha, eps)
    with torch.no_grad():
        wrong = torch.stack([model(xk).argmax(1) != y for xk in traj[:steps]])  # checked before steps 1..K
    first = torch.where(wrong.any(0), wrong.float().argmax(0), torch.full_like(y, steps))
    assert len(set(first.tolist())) >= 4, "test needs examples stopping at different steps"
    out, taken = early_stopped_pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, tau=0,
                                   rand_init="none", bn_mode=None)
    assert taken.tolist() == first.tolist()
    expected = torch.stack([traj[k][i] for i, k in enumerate(first.tolist())])
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)  # row i is x_{first_i} of row i
    with torch.no_grad():
        stopped = first < steps
        assert (model(out).argmax(1)[stopped] != y[stopped]).all()


def reference_one_by_one(model, x, y, *, eps, alpha, steps, tau):
    """FAT's rule written per example, one image at a time (no batching, no freezing masks)."""
    outs, taken = [], []
    for i in range(len(x)):
        xi, yi, xa, budget, n = x[i:i + 1], y[i:i + 1], x[i:i + 1].clone(), tau, 0
        for _ in range(steps):
            xa.requires_grad_(True)
            logits = model(xa)
            if logits.argmax(1).item() != yi.item():
                if budget == 0:
                    break
                budget -= 1
            loss = nn.functional.cross_entropy(logits, yi)
            (g,) = torch.autograd.grad(loss, [xa])
            xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), xi - eps), xi + eps).clamp(0, 1)
            n += 1
        outs.append(xa.detach())
        taken.append(n)
    return torch.cat(outs), taken


@pytest.mark.parametrize("tau", [0, 1, 2, 3])
def test_rows_stay_aligned_when_examples_stop_at_different_steps(tau):
    model = linear_net()
    x = digits(40, torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 10  # a few start misclassified: they stop at once when τ = 0
    kw = dict(eps=0.5, alpha=0.01, steps=12)
    ref, ref_taken = reference_one_by_one(model, x, y, tau=tau, **kw)
    out, taken = early_stopped_pgd(model, x, y, tau=tau, rand_init="none", bn_mode=None, **kw)
    assert len(set(ref_taken)) >= 3
    assert taken.tolist() == ref_taken
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)


def test_per_example_tau_tensor():
    model = linear_net()
    x = digits(20, torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(eps=0.5, alpha=0.01, steps=12, rand_init="none", bn_mode=None)
    taus = torch.tensor([0, 12] * 10)
    out, taken = early_stopped_pgd(model, x, y, tau=taus, **kw)
    zero, _ = early_stopped_pgd(model, x, y, tau=0, **kw)
    full = pgd(model, x, y, eps=0.5, alpha=0.01, steps=12, rand_init="none")
    assert torch.allclose(out[0::2], zero[0::2], atol=1e-12)
    assert torch.allclose(out[1::2], full[1::2], atol=1e-12)
    assert (taken[1::2] == 12).all()


@pytest.mark.parametrize("rand_init,omega", [("uniform", 0.001), ("normal", 0.05), ("none", 0.0)])
def test_output_in_eps_ball_and_unit_box(rand_init, omega):
    model = conv_bn_net()
    x = digits(32)  # digits sit on 0 and 1 a lot: clipping matters
    y = torch.arange(32) % 10
    eps = 0.08
    torch.manual_seed(2)
    out, taken = early_stopped_pgd(model, x, y, eps=eps, alpha=0.03, steps=6, tau=1, rand_init=rand_init,
                                   omega=omega)
    assert (out - x).abs().max() <= eps + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    assert not out.requires_grad
    assert ((taken >= 0) & (taken <= 6)).all()
    zero, zero_taken = early_stopped_pgd(model, x, y, eps=eps, alpha=0.03, steps=0, tau=0, rand_init=rand_init)
    assert (zero - x).abs().max() <= eps + 1e-6 and (zero_taken == 0).all()


def test_omega_noise_changes_the_path_but_not_the_budget():
    model = conv_bn_net().eval()
    x = digits(8)
    y = torch.arange(8)
    kw = dict(eps=0.1, alpha=0.02, steps=3, tau=3, rand_init="none")
    torch.manual_seed(0)
    a, _ = early_stopped_pgd(model, x, y, omega=0.0, **kw)
    torch.manual_seed(0)
    b, _ = early_stopped_pgd(model, x, y, omega=0.01, **kw)
    assert not torch.equal(a, b)
    assert (b - x).abs().max() <= 0.1 + 1e-6


def cnn_net() -> nn.Module:
    """The digits' default net (float32, no BatchNorm)."""
    from robustzoo.models import build_model

    torch.manual_seed(1)
    return build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.0,), std=(1.0,))


@pytest.mark.parametrize("net", [cnn_net, conv_bn_net], ids=["no-bn", "bn"])
@pytest.mark.parametrize("tau", [0, 1, 3])
@pytest.mark.parametrize("rand_init,omega,kl", [("uniform", 0.01, False), ("normal", 0.0, True),
                                                ("none", 0.0, False)])
def test_compaction_gives_every_example_the_same_x_adv(net, tau, rand_init, omega, kl):
    """Attacking only the rows still attacking changes nothing an example sees: the same x',
    the same steps, the same noise, and the random stream ends where it did."""
    model = net().eval()  # FAT attacks in eval mode
    x = digits(64)
    y = torch.arange(64) % 10
    eps = torch.full((64,), 0.3)
    eps[::5] = 0.1  # per-example budgets are gathered with their rows
    kw = dict(eps=eps, alpha=0.03, steps=10, tau=tau, rand_init=rand_init, omega=omega, bn_mode="eval")
    if kl:
        with torch.no_grad():
            kw.update(loss=kl_attack_loss, loss_target=model(x))
    out = []
    for compact in (False, True):
        torch.manual_seed(7)
        x_adv, taken = early_stopped_pgd(model, x, y, compact=compact, **kw)
        out.append((x_adv, taken, torch.rand(4)))
    (a, ta, ra), (b, tb, rb) = out
    assert torch.equal(a, b) and torch.equal(ta, tb) and torch.equal(ra, rb)
    assert len(set(ta.tolist())) >= 2 or tau == 3


def test_compaction_leaves_a_train_mode_search_whole():
    """BatchNorm's batch statistics tie the rows of a train-mode search together: it keeps the batch."""
    model = conv_bn_net().train()
    x, y = digits(16), torch.arange(16) % 10
    kw = dict(eps=0.1, alpha=0.02, steps=4, tau=0, rand_init="none", bn_mode="train")
    a, ta = early_stopped_pgd(model, x, y, **kw)
    b, tb = early_stopped_pgd(model, x, y, compact=True, **kw)
    assert torch.equal(a, b) and torch.equal(ta, tb)


def test_fat_compacts_unless_the_model_is_compiled():
    def fat(fixed_shapes: bool, **settings):
        ctx = ObjectiveContext(eps=0.1, alpha=0.02, steps=10, num_classes=10, input_shape=(1, 8, 8),
                               num_train=10, epochs=1, fixed_shapes=fixed_shapes)
        return FAT(FAT.resolve_settings(settings), ctx)

    assert fat(False).compacts and not fat(True).compacts
    assert fat(True, compact="on").compacts and not fat(False, compact="off").compacts
    with pytest.raises(UsageError, match="compact"):
        FAT.resolve_settings({"compact": "sometimes"})


def test_fat_training_with_and_without_compaction_is_identical(tmp_path):
    from robustzoo.testing import train_tiny

    runs = []
    for compact in ("on", "off"):
        run, _ = train_tiny(tmp_path / compact, "fat", tau=0, compact=compact, eval_attacks=["clean"],
                            eval_n=16, subset=300)
        runs.append(run)
    from robustzoo.runs import read_weights

    a, b = (read_weights(r / "last.safetensors")[0] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- τ schedule and settings ----------------------------------------------------------------

def test_tau_schedule_parse_and_lookup():
    s = TauSchedule.parse("0@50,1@90,2")
    assert [s.at(e, 120) for e in (1, 50, 51, 90, 91, 120)] == [0, 0, 1, 1, 2, 2]
    assert str(s) == "0@50,1@90,2"
    assert TauSchedule.parse("3").at(1, 10) == 3
    frac = TauSchedule.parse("0@0.25,1@0.5,2")
    assert [frac.at(e, 40) for e in (10, 11, 20, 21)] == [0, 1, 1, 2]


@pytest.mark.parametrize("text,needle", [("0@50,1@40,2", "increasing"), ("0@50,x", "not valid"),
                                         ("0@50,1@90", "not valid"), ("-1", "negative"),
                                         ("0@0.5,1@60,2", "mixes")])
def test_tau_schedule_errors(text, needle):
    with pytest.raises(UsageError, match=needle):
        TauSchedule.parse(text)


def test_fat_settings_follow_the_variant():
    at = FAT.resolve_settings({})
    assert (at["variant"], at["tau_schedule"], at["omega"], at["rand_init"]) == ("at", "0@50,1@90,2", 0.001, "uniform")
    tr = FAT.resolve_settings({"variant": "trades"})
    assert (tr["tau_schedule"], tr["omega"], tr["rand_init"]) == ("0@30,1@50,2@70,3", 0.0, "normal")
    ma = FAT.resolve_settings({"variant": "mart", "omega": "0.002", "rand_init": "uniform"})
    assert (ma["tau_schedule"], ma["omega"], ma["rand_init"]) == ("0@20,1@40,2@60,3@80,4", 0.002, "uniform")
    assert FAT.resolve_settings(ma) == ma  # resolving twice (on --resume) changes nothing
    with pytest.raises(UsageError, match="omega"):
        FAT.resolve_settings({"omega": "-1"})
    with pytest.raises(UsageError, match="tau"):
        FAT.resolve_settings({"tau": "-2"})
    with pytest.raises(UsageError, match="variant"):
        FAT.resolve_settings({"variant": "madry"})


def test_fat_tau_per_epoch():
    ctx = ObjectiveContext(eps=0.1, alpha=0.02, steps=10, num_classes=10, input_shape=(1, 8, 8),
                           num_train=10, epochs=90)
    obj = FAT(FAT.resolve_settings({"variant": "mart"}), ctx)
    taus = []
    for epoch in (0, 19, 20, 39, 40, 79, 80, 89):
        obj.on_epoch_start(epoch)
        taus.append(obj.tau)
    assert taus == [0, 0, 1, 1, 2, 3, 4, 4]
    fixed = FAT(FAT.resolve_settings({"variant": "mart", "tau": 7}), ctx)
    fixed.on_epoch_start(0)
    assert fixed.tau == 7
