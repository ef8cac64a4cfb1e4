"""Customized AT (plugin robustzoo_customized): soft labels, losses, the ε_i table and its
update rules, the run contract (resume, aux.safetensors) and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn
from helpers import run_cli
from robustzoo_customized import CustomizedAT, customized_loss, soft_labels

from robustzoo.objectives import ObjectiveContext

LN = math.log


# -- pure functions ------------------------------------------------------------------------------------
def test_customized_loss_hand_values():
    # rows with closed-form softmax: [0, ln2, 0] -> [1/4, 1/2, 1/4]; [0, 0, 0] -> 1/3 each
    logits = torch.tensor([[0.0, LN(2), 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    soft = torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.25, 0.25]], dtype=torch.float64)
    ce1 = -(0.1 * LN(0.25) + 0.8 * LN(0.5) + 0.1 * LN(0.25))
    ce2 = LN(3)  # any probability vector against the uniform softmax
    assert float(customized_loss(logits, y, soft, "ce")) == pytest.approx((ce1 + ce2) / 2, rel=1e-12)
    # mix: + max(max_{j≠y} z_j − z_y, −κ): row 1 margin 0 − ln2 = −0.693 (clamped to −0.5 at κ=0.5), row 2: 0
    got = customized_loss(logits, y, soft, "mix", kappa=0.5)
    assert float(got) == pytest.approx((ce1 + ce2 + (-0.5) + 0.0) / 2, rel=1e-12)
    got = customized_loss(logits, y, soft, "mix", kappa=10.0)
    assert float(got) == pytest.approx((ce1 + ce2 - LN(2)) / 2, rel=1e-12)
    with pytest.raises(ValueError):
        customized_loss(logits, y, soft, "focal")


def test_released_code_losses_hand_values():
    """rule=code's attack objective and θ-loss (main_adv_cus.py / attacker/pgd.py, version 2)."""
    from robustzoo_customized.losses import code_attack_objective, code_hinge, code_training_loss

    # row 1: z = [0, ln2, 0], y = 1: margin z_y − max_{j≠y} z_j = ln2; row 2: z = 0, y = 0: margin 0
    logits = torch.tensor([[0.0, LN(2), 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    soft = torch.tensor([[0.1, 0.8, 0.1], [0.5, 0.25, 0.25]], dtype=torch.float64)
    eps = torch.tensor([0.02, 0.03], dtype=torch.float64)
    ce1 = -(0.1 * LN(0.25) + 0.8 * LN(0.5) + 0.1 * LN(0.25))
    ce2 = LN(3)
    # hinge of the θ-loss: max(max_{j≠y} z_j − z_y + κ, 0) = max(κ − margin, 0)
    assert code_hinge(logits, y, 10.0).tolist() == pytest.approx([10 - LN(2), 10.0])
    assert code_hinge(logits, y, 0.5).tolist() == pytest.approx([0.0, 0.5])
    # the attack ascends softCE_i / B − ε_i·max(margin_i + κ, 0), B = 4 here
    got = code_attack_objective(logits, y, soft, eps, batch_size=4, loss="mix", kappa=10.0)
    assert got.tolist() == pytest.approx([ce1 / 4 - 0.02 * (LN(2) + 10), ce2 / 4 - 0.03 * 10])
    assert code_attack_objective(logits, y, soft, eps, 4, "ce").tolist() == pytest.approx([ce1 / 4, ce2 / 4])
    # θ-loss: mean soft CE + Σ_i ε_i·max(κ − margin_i, 0) (summed over the batch, not averaged)
    got = code_training_loss(logits, y, soft, eps, "mix", kappa=10.0)
    assert float(got) == pytest.approx((ce1 + ce2) / 2 + 0.02 * (10 - LN(2)) + 0.03 * 10, rel=1e-12)
    assert float(code_training_loss(logits, y, soft, eps, "ce")) == pytest.approx((ce1 + ce2) / 2)
    with pytest.raises(ValueError):
        code_training_loss(logits, y, soft, eps, "focal")


def test_soft_labels_are_distributions_weighted_by_c_eps():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 3, 9, 5] * 50)
    eps = torch.linspace(0, 0.2, len(y))
    soft = soft_labels(y, eps, c=10.0, num_classes=10, generator=g)
    assert soft.shape == (200, 10) and bool((soft >= 0).all())
    torch.testing.assert_close(soft.sum(1), torch.ones(200))
    w = (10 * eps).clamp(max=1.0)  # c·ε, clamped to 1
    on_y = soft.gather(1, y[:, None]).squeeze(1)
    # the true class keeps at least 1 − cε and the other classes share at most cε (not 1 − cε: the typo)
    assert bool((on_y >= 1 - w - 1e-6).all())
    assert bool(((1 - on_y) <= w + 1e-6).all())
    assert torch.equal(soft[0], torch.nn.functional.one_hot(y[:1], 10).float()[0])  # ε = 0: one-hot
    # the same generator state gives the same draw
    a = soft_labels(y, eps, 10.0, 10, generator=torch.Generator().manual_seed(5))
    b = soft_labels(y, eps, 10.0, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_soft_label_noise_is_dirichlet():
    g = torch.Generator().manual_seed(1)
    n, k = 20000, 4
    u = soft_labels(torch.zeros(n, dtype=torch.long), 1.0, c=1.0, num_classes=k, concentration=2.0,
                    generator=g)  # c·ε = 1: the label is all noise
    # Dirichlet(2·1) on 4 classes: mean 1/4, variance (1/4)(3/4)/(8 + 1) = 0.02083
    assert u.mean(0).tolist() == pytest.approx([0.25] * k, abs=0.01)
    assert u.var(0).tolist() == pytest.approx([0.25 * 0.75 / 9] * k, rel=0.08)


# -- the ε_i table -------------------------------------------------------------------------------------------
class ConstantModel(nn.Module):
    """Predicts class ``k`` with a large margin whatever the input (gradient w.r.t. x is 0)."""

    def __init__(self, k: int, num_classes: int = 10):
        super().__init__()
        self.bias = nn.Parameter(torch.full((num_classes,), -5.0))
        with torch.no_grad():
            self.bias[k] = 5.0

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


def make(settings=None, eps=0.1, num_train=16, steps=2) -> CustomizedAT:
    ctx = ObjectiveContext(eps=eps, alpha=eps / 4, steps=steps, num_classes=10, input_shape=(1, 8, 8),
                           num_train=num_train, epochs=1)
    obj = CustomizedAT(CustomizedAT.resolve_settings(settings or {}), ctx)
    obj.on_epoch_start(0)
    return obj


def _batch(n: int = 8, label: int = 3):
    torch.manual_seed(0)
    return torch.rand(n, 1, 8, 8), torch.full((n,), label, dtype=torch.long), torch.arange(2, 2 + n)


def test_eps_grows_by_eta_while_the_model_resists_and_stops_at_eps_max():
    obj = make({"eta": 0.005, "eps_max": 0.012})
    x, y, idx = _batch(label=3)
    model = ConstantModel(3)  # always right: every attack fails
    seen = []
    for _ in range(5):
        res = obj.loss(model, x, y, idx)
        seen.append(round(float(obj.eps_table[idx[0]]), 6))
        assert float(res.metrics["attack_success"]) == 0.0
        assert float(obj.eps_table.max()) <= 0.012 + 1e-9
    assert seen == [0.005, 0.01, 0.012, 0.012, 0.012]
    assert torch.equal(obj.eps_table[:2], torch.zeros(2)) and torch.equal(obj.eps_table[10:], torch.zeros(6))


def test_eps_max_defaults_to_the_run_eps():
    obj = make({"eta": 0.05}, eps=0.08)
    assert obj.eps_max == 0.08
    x, y, idx = _batch(label=3)
    for _ in range(3):
        obj.loss(ConstantModel(3), x, y, idx)
    assert float(obj.eps_table.max()) == pytest.approx(0.08)


@pytest.mark.parametrize("update,expected", [("keep", 0.03), ("reset", 0.0)])
def test_successful_attacks_follow_the_update_rule(update, expected):
    obj = make({"eta": 0.005, "update": update})
    x, y, idx = _batch(label=3)
    obj.eps_table[idx] = 0.03
    res = obj.loss(ConstantModel(7), x, y, idx)  # always wrong: every attack "succeeds"
    assert float(res.metrics["attack_success"]) == 1.0
    assert obj.eps_table[idx].tolist() == pytest.approx([expected] * len(idx))
    assert res.cache["eps_attack"].tolist() == pytest.approx([0.035] * len(idx))  # attacked at ε_i + η


def test_attack_uses_the_per_example_radius_and_no_random_start():
    from robustzoo.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.0,), std=(1.0,))
    obj = make({"eta": 0.01}, steps=3)
    x, y, idx = _batch(label=3)
    y = torch.arange(len(y)) % 10
    obj.eps_table[idx] = torch.linspace(0.0, 0.05, len(idx))
    res = obj.loss(model.train(), x, y, idx)
    radius = res.cache["eps_attack"]
    moved = (res.cache["x_adv"] - x).abs().flatten(1).amax(1)
    assert bool((moved <= radius + 1e-6).all())
    assert bool((moved >= radius - 1e-6).any())  # sign steps reach the boundary of the ball
    assert bool(((res.cache["soft_labels"].sum(1) - 1).abs() < 1e-5).all())
    # no random start: with a zero input gradient the attack leaves x unchanged
    res0 = make().loss(ConstantModel(3), x, torch.full_like(y, 3), idx)
    assert torch.equal(res0.cache["x_adv"], x)


def test_loss_choice_changes_the_step():
    model = ConstantModel(3)
    x, y, idx = _batch(label=3)
    torch.manual_seed(0)
    ce = float(make({"loss": "ce"}).loss(model, x, y, idx).loss.detach())
    torch.manual_seed(0)
    mix = float(make({"loss": "mix", "kappa": 4.0}).loss(model, x, y, idx).loss.detach())
    assert mix == pytest.approx(ce - 4.0, abs=1e-5)  # margin −10 clamped at −κ


@pytest.mark.parametrize("label,expected", [(3, 0.010), (7, 0.015)])
def test_released_code_rule_grows_eps_where_the_attack_succeeds(label, expected):
    """rule=code: ε_i ← min(ε_i + η, ε_max) before the attack; then −η where the model is still
    correct, so the budget grows only where the attack succeeded (the reverse of the paper)."""
    obj = make({"rule": "code", "eta": 0.005, "eps_max": 0.05})
    x, y, idx = _batch(label=3)
    obj.eps_table[idx] = 0.01
    res = obj.loss(ConstantModel(label), x, y, idx)  # label 3: always right; 7: always fooled
    assert res.cache["eps_attack"].tolist() == pytest.approx([0.015] * len(idx))
    assert obj.eps_table[idx].tolist() == pytest.approx([expected] * len(idx))
    assert float(res.metrics["attack_success"]) == (0.0 if label == 3 else 1.0)
    # the cap applies before the attack: at ε_max the budget comes back to ε_max − η when resisted
    obj.eps_table[idx] = 0.05
    res = obj.loss(ConstantModel(3), x, y, idx)
    assert res.cache["eps_attack"].tolist() == pytest.approx([0.05] * len(idx))
    assert obj.eps_table[idx].tolist() == pytest.approx([0.045] * len(idx))


def test_released_code_rule_decides_fooled_in_eval_mode():
    """The released code asks an eval-mode forward whether the attack worked (BatchNorm running
    statistics, not the batch's): a model right only in eval mode counts as not fooled."""

    class ModeModel(nn.Module):
        def forward(self, x):
            z = torch.zeros(x.shape[0], 10) + 0.0 * x.flatten(1).sum(1, keepdim=True)
            z[:, 3 if not self.training else 7] = 5.0
            return z

    obj = make({"rule": "code", "eta": 0.005})
    x, y, idx = _batch(label=3)
    res = obj.loss(ModeModel().train(), x, y, idx)
    assert float(res.metrics["attack_success"]) == 0.0  # eval mode: class 3 = correct
    assert obj.eps_table[idx].tolist() == pytest.approx([0.0] * len(idx))
    paper = make({"eta": 0.005})
    res = paper.loss(ModeModel().train(), x, y, idx)  # the paper's rule uses the train-mode forward
    assert float(res.metrics["attack_success"]) == 1.0


def test_released_code_rule_is_its_own_update():
    from robustzoo.errors import UsageError

    with pytest.raises(UsageError, match="rule=code"):
        make({"rule": "code", "update": "reset"})


def test_sync_state_without_distributed_is_a_no_op():
    obj = make()
    x, y, idx = _batch(label=3)
    obj.loss(ConstantModel(3), x, y, idx)
    before = obj.eps_table.clone()
    obj.sync_state()
    assert torch.equal(before, obj.eps_table)


def test_settings_and_recipes():
    from robustzoo.errors import UsageError
    from robustzoo.plugins import registry
    from robustzoo.train import build_config, resolve

    assert CustomizedAT.resolve_settings({"eps_max": "8/255"})["eps_max"] == pytest.approx(8 / 255)
    with pytest.raises(UsageError, match="update"):
        CustomizedAT.resolve_settings({"update": "grow"})
    reg = registry("recipes")
    for name in ("customized-ce-wrn34", "customized-mix-wrn34", "customized-ce-cnn-fmnist",
                 "customized-mix-cnn-fmnist"):
        r = resolve(build_config(recipe=name))
        assert r.config.objective == "customized" and reg.get(name).source
        assert r.settings["loss"] == name.split("-")[1]
    wrn = resolve(build_config(recipe="customized-mix-wrn34"))
    assert wrn.settings["eta"] == 0.005 and wrn.settings["eps_max"] == pytest.approx(8 / 255)
    assert wrn.config.milestones == [80, 140, 180] and wrn.config.epochs == 200 and wrn.config.steps == 10
    fm = resolve(build_config(recipe="customized-ce-cnn-fmnist"))
    assert fm.settings["eps_max"] == 0.1 and fm.settings["c"] * fm.settings["eps_max"] <= 1.0
    code = resolve(build_config(recipe="customized-mix-wrn34-code"))  # the released code's values
    assert code.settings["rule"] == "code" and code.settings["eta"] == 0.0025
    assert code.settings["eps_max"] == 0.035 and code.config.alpha == 0.007 and code.settings["c"] == 10
    assert resolve(build_config(recipe="customized-ce-cnn-fmnist-code")).settings["rule"] == "code"


# -- end to end -------------------------------------------------------------------------------------------------
def test_objective_contract_resume_is_exact_and_eps_is_saved(tmp_path):
    from robustzoo.runs import AUX_FILE, read_weights
    from robustzoo.testing import check_objective

    check_objective("customized", tmp_path, subset=120, steps=2, val_steps=1, eval_n=32, loss="mix")
    tensors, _ = read_weights(tmp_path / "full" / AUX_FILE)
    eps = tensors["state.eps"]
    part, _ = read_weights(tmp_path / "part" / AUX_FILE)
    assert torch.equal(eps, part["state.eps"])
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())["robustzoo"]
    assert eps.shape == (cfg["num_train"],)
    assert float(eps.max()) > 0 and float(eps.max()) <= cfg["threat_model"]["eps"] + 1e-7


def test_cli_train_with_mix_loss_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(["train", "--objective", "customized", "--loss", "mix", "--subset", "300",
                                 "--epochs", "1", "--steps", "2", "--out", out, "--set", "eval_n=50"], capsys)
    assert code == 0, err
    rz = json.loads((out / "config.json").read_text())["robustzoo"]
    assert rz["objective_settings"]["loss"] == "mix" and rz["state_tensors"] == ["eps"]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < row["eps_mean"] <= 0.005 + 1e-7 and 0 <= row["attack_success"] <= 1
    code, stdout, err = run_cli(["eval", out, "--attacks", "clean,pgd20", "--n", "50"], capsys)
    assert code == 0 and "pgd20" in stdout, err


@pytest.mark.parametrize("order,first", [("start", 0.03), ("grown", 0.035)])
def test_attack_label_is_drawn_before_the_increment_as_algorithm_1(monkeypatch, order, first):
    import robustzoo_customized.objective as mod

    drawn = []
    real = mod.soft_labels

    def spy(y, eps, *a, **k):
        drawn.append(torch.as_tensor(eps).flatten().tolist())
        return real(y, eps, *a, **k)

    monkeypatch.setattr(mod, "soft_labels", spy)
    obj = make({"eta": 0.005, "attack_label": order})
    x, y, idx = _batch(label=3)
    obj.eps_table[idx] = 0.03
    res = obj.loss(ConstantModel(3), x, y, idx)  # always right: ε_i grows to 0.035
    assert drawn[0] == pytest.approx([first] * len(idx))  # the attack's ỹ
    assert drawn[1] == pytest.approx([0.035] * len(idx))  # the θ-step's ỹ, re-drawn with the new ε_i
    assert res.cache["eps_label"].tolist() == pytest.approx([first] * len(idx))


def test_attack_label_grown_is_refused_under_the_code_rule():
    from robustzoo.errors import UsageError

    with pytest.raises(UsageError, match="attack_label=grown"):
        make({"rule": "code", "attack_label": "grown"})
