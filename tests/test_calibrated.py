"""Calibrated AT (plugin robustzoo_calibrated): losses, mask network, the alternating steps,
the run contract, the CLI and ``robustzoo viz masks``."""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import assert_one_line_error, newest_record, run_cli
from robustzoo_calibrated import (
    CalibratedAT,
    CifarMaskNet,
    MnistMaskNet,
    build_mask_net,
    calibrated_classifier_loss,
    calibrated_mask_loss,
)

from robustzoo.models import build_model
from robustzoo.objectives import ObjectiveContext

LN = math.log

# Tiny logits with closed-form softmax: rows of 0 / ln2 / ln3 entries.
Z_NAT = [[0.0, LN(2), 0.0], [0.0, 0.0, 0.0]]  # p = [1/4, 1/2, 1/4], [1/3, 1/3, 1/3]
P_NAT = [[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]]
Z_CAL = [[0.0, 0.0, 0.0], [LN(9), 0.0, 0.0]]  # p = [1/3, 1/3, 1/3], [9/11, 1/11, 1/11]
P_CAL = [[1 / 3, 1 / 3, 1 / 3], [9 / 11, 1 / 11, 1 / 11]]
Z_ADV = [[LN(2), 0.0, 0.0], [0.0, 0.0, LN(2)]]  # p = [1/2, 1/4, 1/4], [1/4, 1/4, 1/2]
P_ADV = [[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]
Y = [1, 0]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * LN(a / b) for a, b in zip(p, q))


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# -- pure losses ---------------------------------------------------------------------------------
def test_classifier_loss_hand_values_code_direction():
    y = torch.tensor(Y)
    # CE·(1 − p_y): example 1: −ln(1/2)·(1 − 1/2); example 2: −ln(1/3)·(1 − 1/3)
    weighted = (LN(2) * 0.5 + LN(3) * (2 / 3)) / 2
    kl_code = (_kl(P_NAT[0], P_CAL[0]) + _kl(P_NAT[1], P_CAL[1])) / 2  # batchmean: / B, not / (B·C)
    got = calibrated_classifier_loss(_t(Z_NAT), _t(Z_CAL), y, beta=5.0)
    assert float(got) == pytest.approx(weighted + 5.0 * kl_code, rel=1e-10)


def test_classifier_loss_paper_direction_and_plain_ce():
    y = torch.tensor(Y)
    kl_code = (_kl(P_NAT[0], P_CAL[0]) + _kl(P_NAT[1], P_CAL[1])) / 2
    kl_paper = (_kl(P_CAL[0], P_NAT[0]) + _kl(P_CAL[1], P_NAT[1])) / 2
    assert abs(kl_code - kl_paper) > 0.02  # the two directions really differ on these logits
    plain = (LN(2) + LN(3)) / 2
    got = calibrated_classifier_loss(_t(Z_NAT), _t(Z_CAL), y, beta=2.0, weighted_ce=False,
                                     kl_direction="paper")
    assert float(got) == pytest.approx(plain + 2.0 * kl_paper, rel=1e-10)
    got_code = calibrated_classifier_loss(_t(Z_NAT), _t(Z_CAL), y, beta=2.0, weighted_ce=False)
    assert float(got_code) == pytest.approx(plain + 2.0 * kl_code, rel=1e-10)
    with pytest.raises(ValueError):
        calibrated_classifier_loss(_t(Z_NAT), _t(Z_CAL), y, beta=1.0, kl_direction="sideways")


def test_mask_loss_hand_values():
    y = torch.tensor(Y)
    kl = (_kl(P_ADV[0], P_CAL[0]) + _kl(P_ADV[1], P_CAL[1])) / 2
    ce_cal = (-LN(P_CAL[0][1]) - LN(P_CAL[1][0])) / 2
    got = calibrated_mask_loss(_t(Z_ADV), _t(Z_CAL), y, beta1=0.3)
    assert float(got) == pytest.approx(kl + 0.3 * ce_cal, rel=1e-10)
    # batchmean: the value does not change when the batch is duplicated
    got2 = calibrated_mask_loss(_t(Z_ADV + Z_ADV), _t(Z_CAL + Z_CAL), torch.tensor(Y + Y), beta1=0.3)
    assert float(got2) == pytest.approx(float(got), rel=1e-12)


def test_mask_loss_paper_direction_is_eq14():
    """mask_kl_direction=paper: eq. 14's KL(p(x_cal)‖p(x')); code (default): KL(p(x')‖p(x_cal))."""
    y = torch.tensor(Y)
    ce_cal = (-LN(P_CAL[0][1]) - LN(P_CAL[1][0])) / 2
    kl_code = (_kl(P_ADV[0], P_CAL[0]) + _kl(P_ADV[1], P_CAL[1])) / 2
    kl_paper = (_kl(P_CAL[0], P_ADV[0]) + _kl(P_CAL[1], P_ADV[1])) / 2
    assert abs(kl_code - kl_paper) > 0.02
    got = calibrated_mask_loss(_t(Z_ADV), _t(Z_CAL), y, beta1=0.3, kl_direction="paper")
    assert float(got) == pytest.approx(kl_paper + 0.3 * ce_cal, rel=1e-10)
    assert float(calibrated_mask_loss(_t(Z_ADV), _t(Z_CAL), y, 0.3, "code")) == pytest.approx(
        kl_code + 0.3 * ce_cal, rel=1e-10)
    with pytest.raises(ValueError):
        calibrated_mask_loss(_t(Z_ADV), _t(Z_CAL), y, 0.3, kl_direction="sideways")


def test_classifier_loss_differentiates_the_weight_and_both_kl_sides():
    y = torch.tensor(Y)
    z_nat = _t(Z_NAT).requires_grad_(True)
    z_cal = _t(Z_CAL).requires_grad_(True)
    calibrated_classifier_loss(z_nat, z_cal, y, beta=0.0).backward()
    # d/dz of CE·(1 − p_y) with the weight differentiated, for example 2 (p = 1/3 each, y = 0):
    # CE = −log p_y; dCE/dz_k = p_k − [k=y]; d(1−p_y)/dz_k = −p_y([k=y] − p_k)
    p, py, ce = [1 / 3] * 3, 1 / 3, LN(3)
    expect = [((p[k] - (k == 0)) * (1 - py) + ce * (-py * ((k == 0) - p[k]))) / 2 for k in range(3)]
    assert z_nat.grad[1].tolist() == pytest.approx(expect, rel=1e-9)
    z_nat.grad = None
    calibrated_classifier_loss(z_nat, z_cal, y, beta=1.0, weighted_ce=False).backward()
    assert z_nat.grad.abs().sum() > 0 and z_cal.grad.abs().sum() > 0  # p(x) is not detached


# -- mask networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,arch,cls", [((1, 8, 8), "auto", MnistMaskNet), ((1, 28, 28), "auto", MnistMaskNet),
                                            ((3, 32, 32), "auto", CifarMaskNet), ((1, 8, 8), "cifar", CifarMaskNet),
                                            ((3, 32, 32), "mnist", MnistMaskNet)])
@torch.no_grad()
def test_mask_net_shapes_and_range(shape, arch, cls):
    torch.manual_seed(0)
    net = build_mask_net(arch, shape).eval()
    assert isinstance(net, cls)
    m = net(torch.rand(2, *shape))
    assert m.shape == (2, *shape)
    assert float(m.min()) > 0 and float(m.max()) < 1
    cat = build_mask_net(arch, shape, mask_input="concat").eval()
    assert cat(torch.rand(1, 2 * shape[0], *shape[1:])).shape == (1, *shape)


# -- the objective on a tiny model -----------------------------------------------------------------------
class TinyBNNet(nn.Module):
    """Conv-BN-ReLU-FC on 1×8×8: a classifier with BatchNorm buffers."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(8 * 64, 10))

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def digits_batch():
    from robustzoo.data import sources

    x, y, _, _ = sources.load_digits(None, False)
    return x[:32].float() / 255.0, y[:32].long()


def make_objective(settings=None, eps=0.1, steps=3) -> CalibratedAT:
    torch.manual_seed(0)
    ctx = ObjectiveContext(eps=eps, alpha=eps / 4, steps=steps, num_classes=10, input_shape=(1, 8, 8),
                           num_train=32, epochs=1)
    obj = CalibratedAT(CalibratedAT.resolve_settings(settings or {}), ctx)
    obj.optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.1) for k, m in obj.extra_modules().items()}
    return obj


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mask_and_calibrated_example_stay_in_the_ball(digits_batch):
    x, y = digits_batch
    obj = make_objective({"attack": "cw"})
    model = TinyBNNet().train()
    res = obj.loss(model, x, y, torch.arange(len(y)))
    x_adv, m = res.cache["x_adv"], res.cache["mask"].detach()
    assert float(m.min()) > 0 and float(m.max()) < 1
    x_cal = obj.calibrate(x, x_adv, m)
    assert float((x_cal - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_cal.min()) >= 0 and float(x_cal.max()) <= 1
    assert float((x_adv - x).abs().max()) > 0.05  # the attack moved the images
    # |x_cal − x| = M·|δ| ≤ |δ| pixel by pixel
    assert bool(((x_cal - x).abs() <= (x_adv - x).abs() + 1e-7).all())
    assert 0 < float(res.metrics["mask_mean"]) < 1


def test_classifier_step_leaves_mask_net_unchanged(digits_batch):
    x, y = digits_batch
    obj = make_objective()
    model = TinyBNNet().train()
    before = _snapshot(obj.mask_net)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    clf_before = _snapshot(model)
    res = obj.loss(model, x, y, torch.arange(len(y)))
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    assert all(p.grad is None for p in obj.mask_net.parameters())
    assert _same(before, _snapshot(obj.mask_net))
    assert not _same(clf_before, _snapshot(model))  # θ did move


def test_mask_step_leaves_classifier_unchanged_and_moves_mask_net(digits_batch):
    x, y = digits_batch
    obj = make_objective()
    model = TinyBNNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = obj.loss(model, x, y, torch.arange(len(y)))
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    clf = _snapshot(model)  # parameters and BatchNorm buffers
    mask_before = _snapshot(obj.mask_net)
    out = obj.after_step(model, x, y, torch.arange(len(y)), res)
    assert _same(clf, _snapshot(model))
    assert all(torch.equal(grads[k], p.grad) for k, p in model.named_parameters())
    assert not _same(mask_before, _snapshot(obj.mask_net))
    assert float(out["mask_loss"]) > 0


def test_mask_step_equals_the_step_that_restored_every_buffer(digits_batch):
    """Batch statistics without a running-statistics update give the φ-step of the version that
    cloned and restored every BatchNorm buffer, bit for bit."""
    x, y = digits_batch
    runs = []
    for restore in (True, False):
        obj = make_objective()
        model = TinyBNNet().train()
        res = obj.loss(model, x, y, torch.arange(len(y)))
        if restore:  # the former after_step
            x_adv, m = res.cache["x_adv"], res.cache["mask"]
            buffers = {k: b.clone() for k, b in model.named_buffers()}
            with torch.no_grad():
                logits_adv = model(x_adv)
            loss = calibrated_mask_loss(logits_adv, model(obj.calibrate(x, x_adv, m)), y, 0.05)
            params = list(obj.mask_net.parameters())
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for k, b in model.named_buffers():
                    b.copy_(buffers[k])
            for p, g in zip(params, grads):
                p.grad = g
            obj.optimizers["mask_net"].step()
        else:
            loss = obj.after_step(model, x, y, torch.arange(len(y)), res)["mask_loss"]
        runs.append((float(loss.detach()), _snapshot(obj.mask_net), _snapshot(model)))
    assert runs[0][0] == runs[1][0]
    assert _same(runs[0][1], runs[1][1]) and _same(runs[0][2], runs[1][2])


class _Seen(nn.Module):
    """Wraps a classifier and records, for every forward, whether its running statistics moved
    and which image the input was (x, x', x_cal or an attack iterate)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.log: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x):
        bn = self.inner.body[1]
        before = int(bn.num_batches_tracked)
        out = self.inner(x)
        self.log.append((int(bn.num_batches_tracked) > before, x.detach().clone()))
        return out


def _one_batch(obj, model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = obj.loss(model, x, y, torch.arange(len(y)))
    opt.zero_grad()
    res.loss.backward()
    opt.step()
    obj.after_step(model, x, y, torch.arange(len(y)), res)
    return res


def test_bn_updates_code_moves_the_running_statistics_at_every_forward_of_the_authors_loop(digits_batch):
    """bn_updates=code: the forwards of the authors' CIFAR loop, each updating the running
    statistics: K attack steps, x' (their restart bookkeeping), θ-step on x_cal then x, φ-step on
    x' and x_cal, x (their logging): K + 6. The default (theta) updates K + 2 and the φ-step none."""
    x, y = digits_batch
    k = 3
    counts = {}
    for mode in ("theta", "code"):
        obj = make_objective({"bn_updates": mode}, steps=k)
        model = _Seen(TinyBNNet()).train()
        res = _one_batch(obj, model, x, y)
        x_adv = res.cache["x_adv"]
        x_cal = obj.calibrate(x, x_adv, res.cache["mask"].detach())
        moved = [m for m, _ in model.log]
        counts[mode] = sum(moved)
        after = [inp for _, inp in model.log[k:]]  # the forwards after the attack's K

        refs = (("x", x), ("x'", x_adv), ("x_cal", x_cal))
        names = [next(name for name, ref in refs if torch.equal(t, ref)) for t in after]
        if mode == "code":
            assert names == ["x'", "x_cal", "x", "x'", "x_cal", "x"] and all(moved)
        else:
            assert names == ["x", "x_cal", "x'", "x_cal"] and moved == [True] * (k + 2) + [False, False]
    assert counts == {"theta": k + 2, "code": k + 6}
    assert CalibratedAT.defaults["bn_updates"] == "theta"


def test_bn_updates_code_without_batchnorm_runs_no_extra_forward_and_changes_nothing(digits_batch):
    """cnn_mnist has no BatchNorm: bn_updates=code is then exactly the default, forward for forward."""
    x, y = digits_batch
    runs = []
    for mode in ("theta", "code"):
        obj = make_objective({"bn_updates": mode})
        torch.manual_seed(1)
        model = build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.0,),
                            std=(1.0,)).train()
        calls: list[int] = []
        model.register_forward_hook(lambda m, i, o, calls=calls: calls.append(1))
        torch.manual_seed(2)
        res = _one_batch(obj, model, x, y)
        runs.append((len(calls), float(res.loss.detach()), _snapshot(model), _snapshot(obj.mask_net)))
    assert runs[0][:2] == runs[1][:2]
    assert _same(runs[0][2], runs[1][2]) and _same(runs[0][3], runs[1][3])


def test_mask_kl_direction_reaches_the_mask_step(digits_batch):
    x, y = digits_batch
    masks = []
    for direction in ("code", "paper"):
        obj = make_objective({"mask_kl_direction": direction})
        model = TinyBNNet().train()
        torch.manual_seed(5)
        _one_batch(obj, model, x, y)
        masks.append(_snapshot(obj.mask_net))
    assert not _same(*masks)
    assert CalibratedAT.defaults["mask_kl_direction"] == "code"


def test_frozen_bn_statistics_uses_batch_statistics_and_keeps_the_running_ones():
    from robustzoo.objectives import frozen_bn_statistics

    torch.manual_seed(0)
    for bn in (nn.BatchNorm2d(4), nn.SyncBatchNorm(4)):  # SyncBatchNorm: no process group, no sync
        bn.train()
        x = torch.randn(8, 4, 3, 3)
        before = {k: v.clone() for k, v in bn.state_dict().items()}
        with frozen_bn_statistics(nn.Sequential(bn)):
            out = bn(x)
        assert _same(before, bn.state_dict()) and bn.track_running_stats
        assert torch.equal(out, bn(x))  # the training forward, which does update them
        assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, before["running_mean"])
        bn.eval()
        with frozen_bn_statistics(bn):
            assert torch.equal(bn(x), nn.functional.batch_norm(x, bn.running_mean, bn.running_var,
                                                               bn.weight, bn.bias, False, 0.0, bn.eps))


def test_mask_step_uses_beta1_and_the_updated_classifier(digits_batch):
    """The φ-step gradient follows L_g = KL(p(x')‖p(x_cal)) + β1·CE(f(x_cal), y) with the current θ."""
    from robustzoo_calibrated.masknet import mask_net_input

    x, y = digits_batch
    for beta1 in (0.05, 2.0):
        obj = make_objective({"beta1": beta1})
        model = TinyBNNet().train()
        res = obj.loss(model, x, y, torch.arange(len(y)))
        net = obj.mask_net
        expect_net = build_mask_net("auto", (1, 8, 8))
        expect_net.load_state_dict(net.state_dict())
        with torch.no_grad():  # "update" θ between the steps: the φ-step must see this change
            model.body[4].weight.mul_(1.5)
        x_adv = res.cache["x_adv"]
        m = expect_net(mask_net_input(x, x_adv - x, "sum"))
        buffers = {k: b.clone() for k, b in model.named_buffers()}
        with torch.no_grad():
            logits_adv = model(x_adv)
        loss = calibrated_mask_loss(logits_adv, model(obj.calibrate(x, x_adv, m)), y, beta1)
        expect = torch.autograd.grad(loss, list(expect_net.parameters()))
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        obj.optimizers["mask_net"] = torch.optim.SGD(net.parameters(), lr=1.0)
        before = [p.detach().clone() for p in net.parameters()]
        obj.after_step(model, x, y, torch.arange(len(y)), res)
        for b, p, g in zip(before, net.parameters(), expect):
            torch.testing.assert_close(b - p.detach(), g, rtol=1e-4, atol=1e-6)


def test_ablations_change_behaviour(digits_batch):
    x, y = digits_batch
    model = TinyBNNet().eval()  # eval: forwards are deterministic functions of the input
    idx = torch.arange(len(y))
    nomask = make_objective({"mask": "false"})
    assert nomask.extra_modules() == {} and nomask.mask_net is None
    res = nomask.loss(model, x, y, idx)
    with torch.no_grad():
        assert torch.equal(res.logits, model(res.cache["x_adv"]))  # x_cal == x'
    assert nomask.after_step(model, x, y, idx, res) == {}
    # weighted CE, KL direction and mask input each change the loss of the same batch
    losses = {}
    for name, settings in {"default": {}, "plain_ce": {"weighted_ce": False},
                           "paper_kl": {"kl_direction": "paper"}, "concat": {"mask_input": "concat"}}.items():
        obj = make_objective(settings)
        torch.manual_seed(3)
        losses[name] = float(obj.loss(model, x, y, idx).loss.detach())
    assert len({round(v, 6) for v in losses.values()}) == 4, losses
    assert make_objective({"mask_input": "concat"}).mask_net.features[0].in_channels == 2


def test_mask_warmup_skips_the_mask_step_until_its_epoch(digits_batch):
    """mask_warmup=E: no φ-step in epochs 0..E-1 (g_φ keeps its initial weights), then as usual."""
    x, y = digits_batch
    idx = torch.arange(len(y))
    obj = make_objective({"mask_warmup": "2"})
    model = TinyBNNet().train()
    start = _snapshot(obj.mask_net)
    for epoch in (0, 1):
        obj.on_epoch_start(epoch)
        assert obj.after_step(model, x, y, idx, obj.loss(model, x, y, idx)) == {}
        assert _same(start, _snapshot(obj.mask_net))
    obj.on_epoch_start(2)
    out = obj.after_step(model, x, y, idx, obj.loss(model, x, y, idx))
    assert "mask_loss" in out and not _same(start, _snapshot(obj.mask_net))


def test_adam_on_the_mask_net_collapses_m_and_sgd_does_not(digits_batch):
    """Why g_φ trains on SGD by default: against a near-random classifier KL(p(x')‖p(x_cal)) ≈ 0,
    so only β1·CE(f(x_cal), y) acts on M, a tiny gradient towards smaller M. Adam turns it into
    lr-sized steps and saturates the sigmoid (M → 0, x_cal → x) within 15 steps; SGD's steps stay
    as small as the gradient; the warm-up (g_φ held for an epoch) also avoids it."""
    x, y = digits_batch
    idx = torch.arange(len(y))
    means = {}
    for name, optim, warmup in (("adam", "adam", 0), ("adam+warmup", "adam", 1), ("sgd", "sgd", 0)):
        obj = make_objective({"attack": "cw", "mask_warmup": str(warmup), "mask_optimizer": optim})
        spec = obj.optimizer_specs()["mask_net"]
        assert spec.optimizer == optim
        from robustzoo.train import build_optimizer

        # The optimiser the trainer would build (Adam at the classifier's 1e-3, SGD at 0.01).
        base = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False}
        obj.optimizers = {"mask_net": build_optimizer(obj.mask_net.parameters(), spec.resolve(base))}
        torch.manual_seed(1)
        model = build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.5,),
                            std=(0.5,)).train()  # the classifier the MNIST recipes train, at init
        obj.on_epoch_start(0)
        for _ in range(15):
            res = obj.loss(model, x, y, idx)  # θ is never stepped: it stays near-random
            obj.after_step(model, x, y, idx, res)
        means[name] = float(res.metrics["mask_mean"])
    assert means["adam"] < 0.01, means
    assert 0.45 < means["adam+warmup"] < 0.55 and 0.45 < means["sgd"] < 0.55, means


def _calibrated_run(out, **sets):
    """A short real run (digits, batch 32, PGD-3): enough steps for the collapse to show."""
    from robustzoo.train import Trainer, build_config

    cfg = build_config("calibrated", None, {k: str(v) for k, v in sets.items()}, subset=800, epochs=1,
                       batch_size=32, steps=3, val_steps=1, eval_n=32)
    trainer = Trainer(cfg, out)
    trainer.fit()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return trainer, rows


def test_collapse_is_caught_inside_the_first_epoch_with_adam_and_never_with_the_default(tmp_path):
    """The trainer's run: Adam on g_φ collapses M within the first epoch and the watch says so
    (warning, metrics.jsonl); the default (SGD) keeps M near 0.5 and stays silent."""
    with pytest.warns(UserWarning, match=r"collapsed in epoch 1 .*mask_optimizer=sgd"):
        adam, rows = _calibrated_run(tmp_path / "adam", mask_optimizer="adam")
    assert rows[0]["mask_collapsed"] is True and min(rows[0]["mask_checks"]) < 0.01
    assert adam.objective.collapse["epoch"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (a collapse report) fails the test
        sgd, rows = _calibrated_run(tmp_path / "sgd")
    assert rows[0]["mask_collapsed"] is False and sgd.objective.collapse is None
    checks = rows[0]["mask_checks"]
    assert len(checks) == 650 // 32 // 5 and all(0.4 < m < 0.6 for m in checks), checks
    assert rows[0]["mask_mean"] == pytest.approx(sum(checks) / len(checks), abs=0.01)


def test_mask_net_optimiser_defaults_and_record(tmp_path):
    """g_φ gets its own optimiser: SGD 0.01 (m 0.9, no decay) on 1-channel data; recorded in config.json."""
    trainer, _ = _calibrated_run(tmp_path / "r")
    opt = trainer.objective.optimizers["mask_net"]
    assert isinstance(opt, torch.optim.SGD) and isinstance(trainer.optimizer, torch.optim.Adam)
    rec = json.loads((tmp_path / "r" / "config.json").read_text())["robustzoo"]["optimizers"]
    assert rec["model"] == {"optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
                            "nesterov": False}
    assert rec["mask_net"] == {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
                               "nesterov": False}
    # 3-channel data (the authors' CIFAR code): auto lr = the classifier's; explicit settings win.
    ctx = ObjectiveContext(eps=8 / 255, alpha=2 / 255, steps=1, num_classes=10, input_shape=(3, 8, 8),
                           num_train=4, epochs=1)
    cifar = CalibratedAT(CalibratedAT.resolve_settings({}), ctx).optimizer_specs()["mask_net"]
    base = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}
    assert cifar.resolve(base) == dict(base, weight_decay=0.0)
    mine = CalibratedAT(CalibratedAT.resolve_settings({"mask_optimizer": "adam", "mask_lr": "3e-4",
                                                       "mask_weight_decay": "1e-5"}), ctx)
    assert mine.optimizer_specs()["mask_net"].resolve(base) == {
        "optimizer": "adam", "lr": 3e-4, "momentum": 0.9, "weight_decay": 1e-5, "nesterov": False}


def test_each_optimiser_keeps_its_own_lr_through_the_schedule_and_resume(tmp_path):
    """The schedule scales each optimiser's own base lr (not the classifier's lr everywhere), and
    --resume restores g_φ's SGD state so the resumed run ends bit-identical."""
    from robustzoo.runs import AUX_FILE, LAST_FILE, read_weights
    from robustzoo.train import Trainer, build_config

    cfg = build_config("calibrated", None, {}, subset=300, epochs=2, batch_size=64, steps=1, val_steps=1,
                       eval_n=16, milestones=[0.5])
    full = Trainer(cfg, tmp_path / "full")
    full.fit()
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["lr"], r["lr_mask_net"]) for r in rows] == [pytest.approx((1e-3, 1e-2)),
                                                            pytest.approx((1e-4, 1e-3))]
    assert full.objective.optimizers["mask_net"].param_groups[0]["lr"] == pytest.approx(1e-3)
    assert full.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    part = Trainer(cfg, tmp_path / "part")
    part.fit(until_epoch=1)
    resumed = Trainer(cfg, tmp_path / "part", resume=True)
    resumed.fit()
    assert isinstance(resumed.objective.optimizers["mask_net"], torch.optim.SGD)
    # Bit-identical weights of θ and φ after the resume: g_φ's momentum buffers were restored
    # (with fresh ones its epoch-2 steps would differ).
    for f in (LAST_FILE, AUX_FILE):
        a, _ = read_weights(tmp_path / "full" / f)
        b, _ = read_weights(tmp_path / "part" / f)
        assert all(torch.equal(a[k], b[k]) for k in a), f
    # A run whose g_φ state was made by another optimiser is refused, not silently mixed.
    from robustzoo.errors import RunError

    other = build_config("calibrated", None, {"mask_optimizer": "adam"}, subset=300, epochs=2,
                         batch_size=64, steps=1, val_steps=1, eval_n=16, milestones=[0.5])
    with pytest.raises(RunError, match="mask_net was trained with sgd"):
        Trainer(other, tmp_path / "part", resume=True).fit()


def test_released_mnist_code_options(digits_batch):
    """start_eps, clip=false and train_eps_factor reproduce the authors' MNIST code."""
    x, y = digits_batch
    obj = make_objective({"start_eps": "0.1", "clip": "false", "rand_init": "uniform"})
    model = TinyBNNet().train()
    from robustzoo.attacks import pgd

    torch.manual_seed(0)
    x0 = pgd(model, x, y, eps=0.02, alpha=0.0, steps=0, rand_init="uniform", start_eps=0.1, clip=False)
    assert (x0 - x).abs().max() <= 0.02 + 1e-6  # a 0-step attack still returns a point in the ball
    torch.manual_seed(0)
    x1 = pgd(model, x, y, eps=0.3, alpha=0.01, steps=1, rand_init="uniform", start_eps=0.1, clip=False)
    d = (x1 - x).abs().max()
    assert 0.1 < d <= 0.11 + 1e-6  # start U(−0.1, 0.1) (not ε = 0.3) plus one step of 0.01
    assert x1.min() < 0 or x1.max() > 1  # not clipped to [0,1]
    torch.manual_seed(0)
    x2 = pgd(model, x, y, eps=0.3, alpha=0.01, steps=1, rand_init="uniform", start_eps=0.1)
    assert x2.min() >= 0 and x2.max() <= 1
    m = torch.full_like(x, 0.5)
    assert torch.equal(obj.calibrate(x, x1, m), x + 0.5 * (x1 - x))  # no clip
    x_adv = obj.attack(model, x, y)  # the objective passes both options to its attack
    assert x_adv.min() < 0 or x_adv.max() > 1
    from robustzoo.train import build_config, resolve

    r = resolve(build_config(recipe="cat-cw-cnn-mnist-code"))
    c = r.config
    assert c.eps == 0.3 and c.eps * c.train_eps_factor == pytest.approx(0.4) and c.alpha == pytest.approx(0.02)
    assert (r.settings["start_eps"], r.settings["clip"], r.settings["mask_optimizer"]) == (0.1, False, "adam")
    assert c.batch_size == 100 and c.milestones == [32.0]


def test_train_eps_factor_scales_the_training_attack_only(tmp_path):
    from robustzoo.errors import UsageError
    from robustzoo.train import Trainer, build_config, resolve

    cfg = build_config("at", None, {}, subset=200, epochs=1, steps=1, val_steps=1, eval_n=16,
                       train_eps_factor="4/3")
    t = Trainer(cfg, tmp_path / "r")
    assert t.objective.ctx.eps == pytest.approx(0.1 * 4 / 3) and t.cfg.eps == pytest.approx(0.1)
    t.fit()
    tm = json.loads((tmp_path / "r" / "config.json").read_text())["robustzoo"]["threat_model"]
    assert tm["eps"] == pytest.approx(0.1) and tm["train_eps"] == pytest.approx(0.4 / 3)
    with pytest.raises(UsageError, match="train_eps_factor"):
        resolve(build_config("at", None, {}, train_eps_factor="20"))


def test_settings_are_validated():
    from robustzoo.errors import UsageError

    with pytest.raises(UsageError, match="attack"):
        CalibratedAT.resolve_settings({"attack": "pgd"})
    with pytest.raises(UsageError, match="kl_direction"):
        CalibratedAT.resolve_settings({"kl_direction": "both"})
    with pytest.raises(UsageError, match="mask_warmup"):
        make_objective({"mask_warmup": "-1"})
    with pytest.raises(UsageError, match="mask_optimizer"):
        CalibratedAT.resolve_settings({"mask_optimizer": "rmsprop"})
    for key in ("mask_lr", "start_eps", "mask_check_every"):
        with pytest.raises(UsageError, match=key):
            make_objective({key: "-1"})
    s = CalibratedAT.resolve_settings({"mask": "off", "beta": "1", "attack": "cw"})
    assert s["mask"] is False and s["beta"] == 1.0 and s["attack"] == "cw"


def test_recipes_carry_the_paper_settings():
    from robustzoo.plugins import registry

    reg = registry("recipes")
    names = set(reg.list("cat-*"))
    assert {"cat-cw-wrn34", "cat-cent-wrn34", "cat-cw-prn18", "cat-cent-prn18", "cat-cw-prn18-cifar100",
            "cat-cw-cnn-mnist", "cat-cent-cnn-mnist", "cat-cw-cnn-fmnist", "cat-cent-cnn-fmnist"} <= names
    wrn = reg.get("cat-cw-wrn34")
    assert wrn.objective == "calibrated" and wrn.source
    assert wrn.settings["attack"] == "cw" and wrn.settings["beta"] == 5.0 and wrn.settings["beta1"] == 0.05
    assert wrn.settings["epochs"] == 140 and wrn.settings["milestones"] == "101,111"  # the code's WRN branch
    mn = reg.get("cat-cent-cnn-mnist").settings
    assert (mn["eps"], mn["alpha"], mn["beta"], mn["beta1"], mn["kappa"]) == (0.3, 0.015, 1.0, 0.3, 150.0)
    fm = reg.get("cat-cw-cnn-fmnist").settings
    assert fm["dataset"] == "fashion-mnist" and fm["eps"] == 0.1 and fm["alpha"] == pytest.approx(0.005)
    c100 = reg.get("cat-cw-prn18-cifar100").settings
    assert c100["dataset"] == "cifar100" and c100["epochs"] == 120 and c100["milestones"] == "101,111"
    from robustzoo.train import build_config, resolve

    for name in names:  # every recipe resolves to a valid configuration
        r = resolve(build_config(recipe=name))
        assert r.settings["attack"] in ("cw", "cent")


# -- end to end ---------------------------------------------------------------------------------------------
def test_objective_contract_resume_is_exact(tmp_path):
    from robustzoo.runs import AUX_FILE, read_weights
    from robustzoo.testing import check_objective

    check_objective("calibrated", tmp_path, subset=120, steps=1, val_steps=1, eval_n=32, attack="cw")
    tensors, _ = read_weights(tmp_path / "full" / AUX_FILE)
    assert tensors and all(k.startswith("module.mask_net.") for k in tensors)


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def cat_run(tmp_path_factory):
    """A calibrated run trained through the CLI (CATcw, 300 digits, 1 epoch, PGD-2)."""
    out = tmp_path_factory.mktemp("cat") / "run"
    from robustzoo.cli import main

    try:
        main(["train", "--objective", "calibrated", "--attack", "cw", "--subset", "300", "--epochs", "1",
              "--steps", "2", "--out", str(out), "--set", "eval_n=50", "--json"])
    except SystemExit as exc:  # main() exits only on an error
        raise AssertionError(f"robustzoo train failed with exit code {exc.code}") from None
    return out


def test_cli_train_eval_and_mask_figure(cat_run, tmp_path, capsys):
    cfg = json.loads((cat_run / "config.json").read_text())
    assert cfg["robustzoo"]["objective"] == "calibrated"
    assert cfg["robustzoo"]["objective_settings"]["attack"] == "cw"
    assert cfg["robustzoo"]["extra_modules"] == ["mask_net"]
    code, out, err = run_cli(["eval", cat_run, "--attacks", "clean,pgd20", "--n", "50"], capsys)
    assert code == 0 and "pgd20" in out, err
    png = tmp_path / "masks.png"
    code, out, err = run_cli(["viz", "masks", cat_run, "--out", png, "--n", "5"], capsys)
    assert code == 0, err
    assert png.is_file() and _png_size(png) == (600, 480)
    assert "wrote" in out
    code, out, err = run_cli(["viz", "masks", cat_run, "--out", tmp_path / "m8.png"], capsys)
    assert code == 0 and _png_size(tmp_path / "m8.png") == (960, 480)


def test_viz_masks_summary_matches_the_run(cat_run, tmp_path):
    from robustzoo_calibrated.viz import load_calibrated_run, mask_figure

    info = mask_figure(cat_run, tmp_path / "m.png", n=3)
    assert info["size_px"] == [360, 480] and len(info["labels"]) == 3
    assert 0 < info["mask_mean"] < 1
    _, obj, _ = load_calibrated_run(cat_run)
    assert obj.settings["attack"] == "cw" and not obj.mask_net.training


def test_viz_masks_errors_are_one_line(at_run, cat_run, tmp_path, capsys):
    code, _, err = run_cli(["viz", "masks", at_run, "--out", tmp_path / "x.png"], capsys)
    assert_one_line_error(code, err, "'at'", "calibrated")
    assert not (tmp_path / "x.png").exists()
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(cat_run, broken)
    (broken / "aux.safetensors").unlink()
    code, _, err = run_cli(["viz", "masks", broken, "--out", tmp_path / "y.png"], capsys)
    assert_one_line_error(code, err, "aux.safetensors")
    cfg_path = broken / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["robustzoo"]["objective_settings"]["mask"] = False
    cfg_path.write_text(json.dumps(cfg))
    code, _, err = run_cli(["viz", "masks", broken, "--out", tmp_path / "y.png"], capsys)
    assert_one_line_error(code, err, "mask=false")
    code, _, err = run_cli(["viz", "masks", tmp_path / "nowhere", "--out", tmp_path / "z.png"], capsys)
    assert_one_line_error(code, err, "nowhere")


# -- cost ----------------------------------------------------------------------------------------------------
def calibrated_cost(arch: str, shape: tuple[int, int, int], steps: int = 10, batch: int = 4,
                    device: str = "cpu", settings: dict | None = None) -> dict[str, float]:
    """FLOPs of one calibrated training step per image, split into classifier and g_φ.

    Units: F = one classifier forward on one image; G = one g_φ forward on one image. The
    step runs g_φ forward once and backward once, so its share is measured on its own.
    """
    from test_flops import flop_counter

    dev = torch.device(device)
    torch.manual_seed(0)
    c = shape[0]
    model = build_model(arch, num_classes=10, in_chans=c, input_size=shape[1:], mean=(0.5,) * c,
                        std=(0.25,) * c).to(dev)
    ctx = ObjectiveContext(eps=8 / 255, alpha=2 / 255, steps=steps, num_classes=10, input_shape=shape,
                           num_train=batch, epochs=1, device=dev)
    obj = CalibratedAT(CalibratedAT.resolve_settings(settings or {}), ctx)
    obj.optimizers = {"mask_net": torch.optim.SGD(obj.mask_net.parameters(), lr=0.01)}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, *shape, device=dev)
    y = torch.arange(batch, device=dev) % 10
    with flop_counter() as fc, torch.no_grad():
        model.eval()(x[:1])
    f_one = fc.get_total_flops()
    with flop_counter() as fc, torch.no_grad():
        obj.mask_net.eval()(x[:1])
    g_one = fc.get_total_flops()
    model.train()
    obj.mask_net.train()
    with flop_counter() as fc:
        obj.mask_net(x).sum().backward()
    g_step = fc.get_total_flops() / batch
    obj.mask_net.zero_grad(set_to_none=True)
    with flop_counter() as fc:
        res = obj.loss(model, x, y, torch.arange(batch))
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        obj.after_step(model, x, y, torch.arange(batch), res)
    total = fc.get_total_flops() / batch
    return {"F": f_one, "G": g_one, "total_F": total / f_one, "mask_F": g_step / f_one,
            "mask_G": g_step / g_one, "classifier_F": (total - g_step) / f_one}


def test_cost_split_classifier_29F_plus_three_mask_passes():
    cost = calibrated_cost("cnn_mnist", (1, 28, 28))
    assert cost["classifier_F"] == pytest.approx(29.0, abs=0.3)
    assert cost["mask_G"] == pytest.approx(3.0, abs=0.05)


@pytest.mark.slow
def test_cost_split_prn18_cifar():
    """The CIFAR figure of docs/methods/calibrated.md (PreAct ResNet-18, ResNet-18 g_φ), on 'meta'."""
    cost = calibrated_cost("preact_resnet18", (3, 32, 32), batch=2, device="meta")
    assert cost["classifier_F"] == pytest.approx(29.0, abs=0.3)
    assert cost["mask_G"] == pytest.approx(3.0, abs=0.05)
    # bn_updates=code (the CIFAR recipes): the authors' bookkeeping forward on x' and logging
    # forward on x, no-grad, 1F each
    code = calibrated_cost("preact_resnet18", (3, 32, 32), batch=2, device="meta", settings={"bn_updates": "code"})
    assert code["classifier_F"] == pytest.approx(cost["classifier_F"] + 2.0, abs=0.01)


def test_run_card_records_the_mask_optimiser_and_the_collapse_watch(cat_run):
    """The card carries g_φ's optimiser and the per-epoch mask checks, as config.json and metrics.jsonl do."""
    from robustzoo import cards, runs

    cfg = json.loads((cat_run / "config.json").read_text())
    report = newest_record(cat_run)
    text = cards.render_run_card(cfg, report, repo_id="org/cat", files={"model.safetensors": "0" * 64},
                                 metrics=runs.read_metrics(cat_run))
    assert "| `mask_net` | sgd | 0.01 | 0.9 | 0 |" in text and "| classifier | adam | 0.001 |" in text
    log = text[text.index("Training log"):]
    header = log.splitlines()[2]
    assert "mask_mean" in header and "mask_collapsed" in header and "mask_checks" in header
    assert "| no |" in log.splitlines()[4]  # epoch 1: no collapse


def test_the_final_table_has_a_margin_loss_attack_and_health_compares_it(cat_run):
    """issue 26: training's own evaluation runs CW∞ beside PGD-20 and reports the worst case, and
    the health report compares them example by example (never skipped silently)."""
    from rich.console import Console

    from robustzoo.eval import history
    from robustzoo.ui import results_table

    report = next(r for r in history(cat_run).values() if r.get("source") == "train")
    assert [r["attack"] for r in report["results"]] == ["clean", "pgd20", "cw"]
    assert report["worst_case"]["attacks"] == ["pgd20", "cw"]
    check = next(c for c in report["health"]["checks"] if c["name"] == "ce_vs_margin")
    assert check["status"] in ("passed", "flagged") and check["evidence"]["reference"] == "cw"
    pgd = check["evidence"]["by_attack"]["pgd20"]
    assert pgd["paired"] and pgd["ce_only"] + pgd["margin_only"] >= 0
    if check["status"] == "flagged":  # CE overstating beyond the test's tolerance is never a pass
        assert report["health"]["status"] != "passed" and "pgd20" in check["affects"]
    console = Console(record=True, width=160)
    console.print(results_table(report))
    text = console.export_text()
    assert "cw" in text and "worst case" in text and "precision: fp32" in text
