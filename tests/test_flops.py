"""Forward-equivalents per image of one training step, counted with torch's FLOP counter.

F = FLOPs of one forward of the model on one image. One step of an objective at PGD-10
(``loss`` + ``backward`` + optimiser step + ``after_step``, as the trainer runs it) is
divided by B·F. The targets (docs/performance.md): Madry AT 23F, TRADES 27F, within 1%.

To add a method, add a row to ``CASES``: id -> (objective, settings, expected F per image).
Run: ``python -m pytest tests/test_flops.py -q``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from robustzoo.models import build_model
from robustzoo.objectives import ObjectiveContext
from robustzoo.plugins import registry

STEPS = 10
BATCH = 8

# id -> (objective, settings, forward-equivalents per image at PGD-10)
CASES: dict[str, tuple[str, dict, float]] = {
    # 10 attack steps × 2F + training forward F + its backward 2F
    "at": ("at", {}, 23.0),
    # clean target 1F + 10 × 2F + training forwards on x and x' 2F + backward 4F
    "trades": ("trades", {}, 27.0),
    # 10 × 2F (CE attack, no clean target) + 2F + 4F
    "mart": ("mart", {}, 26.0),
    # τ = K: the same work as TRADES; the early-stop bookkeeping costs no FLOPs
    "fat-trades": ("fat", {"variant": "trades", "tau": STEPS}, 27.0),
    # τ = 0: the untrained net misclassifies all 8 digits at the start, so each stops after
    # the first step's forward and backward (2F) and the search ends there: 1F + 2F + 6F
    "fat-trades-tau0": ("fat", {"variant": "trades", "tau": 0}, 9.0),
    # the same without compaction: finished examples ride along for all 10 steps
    "fat-trades-tau0-full": ("fat", {"variant": "trades", "tau": 0, "compact": "off"}, 27.0),
    "fat-at-tau0": ("fat", {"variant": "at", "tau": 0}, 5.0),
    "fat-at-tau0-full": ("fat", {"variant": "at", "tau": 0, "compact": "off"}, 23.0),
    "fat-at": ("fat", {"variant": "at", "tau": STEPS}, 23.0),
    "fat-mart": ("fat", {"variant": "mart", "tau": STEPS}, 26.0),
    # classifier: 10 × 2F + θ-step on x and x_cal 6F + φ-step (no-grad f(x') 1F, f(x_cal)
    # forward + input-only backward 2F) = 29F; plus one forward and one backward of g_φ,
    # 3G with G = 5.705F for the mnist mask net on 8×8 digits (17.1F) — 46.04F in all
    "calibrated": ("calibrated", {}, 46.04),
    "calibrated-cw": ("calibrated", {"attack": "cw"}, 46.04),
    # ablation without g_φ (x_cal = x', no φ-step): 10 × 2F + 6F (25.94F measured)
    "calibrated-nomask": ("calibrated", {"mask": False}, 25.94),
    # Customized AT: 10 × 2F + one train-mode forward (also decides success) + backward
    "customized": ("customized", {}, 23.0),
    "customized-mix": ("customized", {"loss": "mix"}, 23.0),
}


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks make
    ``torch.autograd.grad`` w.r.t. a leaf input (every attack here) raise; we only need the
    global count."""

    parents = {"Global"}

    def __enter__(self) -> _NoModuleTracking:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    return counter


@functools.lru_cache(maxsize=1)
def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    from robustzoo.data import sources

    x, y, _, _ = sources.load_digits(None, False)
    return x[:BATCH].float() / 255.0, y[:BATCH].long()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_mnist", num_classes=10, in_chans=1, input_size=(8, 8), mean=(0.0,), std=(1.0,))


def forward_equivalents(objective: str, settings: dict) -> float:
    """FLOPs of one training step per image, in units of one single-image forward."""
    x, y = _batch()
    model = _model()
    cls = registry("objectives").get(objective)
    ctx = ObjectiveContext(eps=0.1, alpha=0.02, steps=STEPS, num_classes=10, input_shape=(1, 8, 8),
                           num_train=BATCH, epochs=1)
    obj = cls(cls.resolve_settings(settings), ctx)
    extra = obj.extra_modules()
    obj.optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in extra.items()}
    obj.on_epoch_start(0)
    return step_cost(model, obj, x, y)


def step_cost(model: torch.nn.Module, obj, x: torch.Tensor, y: torch.Tensor) -> float:
    """One trainer step of ``obj`` on (x, y), as Trainer.train_epoch runs it, in forward-
    equivalents per image (the model's weights change: pass a copy to keep them)."""
    with flop_counter() as fc, torch.no_grad():
        model.eval()(x[:1])
    one_forward = fc.get_total_flops()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    torch.manual_seed(1)
    with flop_counter() as fc:
        res = obj.loss(model, x, y, torch.arange(len(y)))
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        obj.after_step(model, x, y, torch.arange(len(y)), res)
    return fc.get_total_flops() / len(y) / one_forward


@pytest.mark.parametrize("case", list(CASES))
def test_forward_equivalents_per_image(case):
    objective, settings, expected = CASES[case]
    measured = forward_equivalents(objective, settings)
    assert measured == pytest.approx(expected, rel=0.01), f"{case}: {measured:.3f}F, expected {expected}F"


def test_counter_sees_the_attack():
    """Guard against a counter that misses autograd.grad: fewer attack steps must cost less."""
    from robustzoo.attacks import pgd

    x, y = _batch()
    model = _model().eval()
    costs = []
    for steps in (1, 3):
        with flop_counter() as fc:
            pgd(model, x, y, eps=0.1, alpha=0.02, steps=steps)
        costs.append(fc.get_total_flops())
    assert costs[1] == pytest.approx(3 * costs[0], rel=1e-6)


def test_fat_compaction_pays_only_for_the_rows_still_attacking():
    """On a trained net whose examples stop at different steps, the compacted search costs
    2F per row it runs (rows left, padded to a multiple of 8) instead of 2F per row and step,
    and gives the same x'."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_helpers import digits, trained_mlp
    from robustzoo_fat import early_stopped_pgd

    model = trained_mlp().eval()
    x, y, _ = next(iter(digits().test.batches(64)))
    with flop_counter() as fc, torch.no_grad():
        model(x[:1])
    one = fc.get_total_flops()
    kw = dict(eps=0.3, alpha=0.1, steps=STEPS, tau=0, rand_init="none", bn_mode="eval")
    runs = {}
    for compact in (False, True):
        with flop_counter() as fc:
            runs[compact] = early_stopped_pgd(model, x, y, compact=compact, **kw)
        runs[compact] += (fc.get_total_flops() / len(y) / one,)
    (full_x, full_taken, full_f), (x_adv, taken, f) = runs[False], runs[True]
    assert torch.equal(x_adv, full_x) and torch.equal(taken, full_taken)
    left = [int((taken >= k).sum()) for k in range(STEPS)]  # rows in step k's forward
    assert len(set(left)) >= 4, f"the test needs examples stopping at different steps: {left}"
    rows = [min(64, -(-n // 8) * 8) for n in left if n]
    assert full_f == pytest.approx(2 * STEPS, rel=0.01)
    assert f == pytest.approx(2 * sum(rows) / 64, rel=0.01) and f < full_f / 2, (f, rows)


def test_a_compiled_attack_costs_what_the_eager_one_does():
    """torch.compile (AOT autograd, 'aot_eager' backend) adds no weight gradients to the
    attack's input-only backward: PGD stays at 2F per step."""
    import torch._dynamo

    from robustzoo.attacks import pgd
    from robustzoo.fast import FastModel

    x, y = _batch()
    model = _model().eval()
    torch._dynamo.reset()
    try:
        compiled = FastModel(model, compile_mode="default", backend="aot_eager").eval()
        pgd(compiled, x, y, eps=0.1, alpha=0.02, steps=1)  # compile outside the count
        costs = []
        for net in (model, compiled):
            with flop_counter() as fc:
                pgd(net, x, y, eps=0.1, alpha=0.02, steps=3)
            costs.append(fc.get_total_flops())
    finally:
        torch._dynamo.reset()
    assert costs[1] == costs[0] > 0


def test_fat_tau0_on_a_model_that_is_learning(tmp_path):
    """FAT's τ = 0 search as training sees it: on real labels, a few epochs in, the net gets
    most examples right at the start, so they keep attacking for several steps. The step
    costs far more than the best case of the table (5F: an untrained net, every example
    stops at step 1) and less than the full batch (23F), and exactly 2F per padded row the
    compacted search ran + 3F; the full-batch search still costs 23F. (Measured here, seed 0:
    6.0 steps per example on average, 17.22F compacted against 22.97F.)"""
    import copy

    from robustzoo.train import Trainer, build_config

    torch.set_num_threads(1)
    cfg = build_config("fat", None, {"variant": "at", "tau": 0}, dataset="digits", subset=400, epochs=4,
                       batch_size=64, steps=STEPS, eps=0.1, alpha=0.02, val_steps=1, seed=0, lr=0.005)
    trainer = Trainer(cfg, tmp_path / "run")
    for epoch in range(3):
        trainer.train_epoch(epoch)
    x, y, _ = next(iter(trainer.train_data.batches(64)))
    costs = {}
    for compact in ("on", "off"):
        trainer.objective.settings["compact"] = compact
        taken = []
        early = trainer.objective.loss

        def spy(model, xb, yb, idx, early=early, taken=taken):
            res = early(model, xb, yb, idx)
            taken.append(res.metrics["fat_steps"])
            return res

        trainer.objective.loss = spy
        costs[compact] = (step_cost(copy.deepcopy(trainer.model), trainer.objective, x, y), float(taken[0]))
        del trainer.objective.loss
    (on, steps_on), (off, steps_off) = costs["on"], costs["off"]
    assert steps_on == steps_off > 2, costs  # the same search: examples attack for several steps
    assert off == pytest.approx(23.0, rel=0.01)
    assert 2 * steps_on + 3 <= on * 1.01 and on < 22 and on > 2 * CASES["fat-at-tau0"][2], costs
