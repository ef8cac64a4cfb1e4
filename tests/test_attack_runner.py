"""The attack runner (robustzoo.eval.run_attack) keeps outcomes on the device between batches.

Which examples of a batch to attack is decided on the host; the outcomes are read back once at
the end, or at a checkpoint. Checked against the boolean-mask computation it replaces.
"""

from __future__ import annotations

import pytest
import torch
from eval_helpers import ALPHA, EPS, digits, trained_mlp

from robustzoo.attacks import AttackContext
from robustzoo.data import select_examples
from robustzoo.eval import run_attack
from robustzoo.plugins import registry


def _masked_reference(model, data, spec, ctx, batch_size, only):
    """The per-batch boolean-mask computation: attack x[mask], copy the outcome to the host."""
    flags = torch.zeros(len(data), dtype=torch.bool)
    start = 0
    for x, y, _ in data.batches(batch_size):
        sl = slice(start, start + len(y))
        start += len(y)
        todo = only[sl]
        if todo.any():
            torch.manual_seed((ctx.seed * 1_000_003 + sl.start) % (2**63 - 1))
            x_adv = spec.run(model, x[todo], y[todo], ctx)
            with torch.no_grad():
                part = flags[sl].clone()
                part[todo] = (model(x_adv).argmax(1) == y[todo]).cpu()
                flags[sl] = part
    return flags


@pytest.mark.parametrize("attack", ["pgd20", "fgsm"])
def test_outcomes_equal_the_boolean_mask_computation(attack):
    model = trained_mlp().eval()
    data = select_examples(digits().test, 96, seed=3)
    spec = registry("attacks").get(attack)
    ctx = AttackContext(eps=EPS, alpha=ALPHA, num_classes=10, seed=5)
    only = torch.rand(96, generator=torch.Generator().manual_seed(1)) < 0.6
    only[:32] = True  # one batch attacked whole, two in part
    res = run_attack(model, data, spec, ctx, batch_size=32, only=only)
    assert torch.equal(res.flags, _masked_reference(model, data, spec, ctx, 32, only))
    assert res.flags.device.type == "cpu" and torch.equal(res.attacked, only)
    assert not (res.flags & ~only).any()


def test_checkpoints_read_back_only_as_often_as_asked():
    model = trained_mlp().eval()
    data = select_examples(digits().test, 64, seed=0)
    spec = registry("attacks").get("clean")
    ctx = AttackContext(eps=EPS, alpha=ALPHA, num_classes=10)
    calls: list[int] = []

    def checkpoint(flags, attacked, done):
        assert flags.device.type == "cpu"
        calls.append(int(done.sum()))

    every = run_attack(model, data, spec, ctx, batch_size=16, checkpoint=checkpoint)
    assert calls == [16, 32, 48, 64]
    calls.clear()
    rare = run_attack(model, data, spec, ctx, batch_size=16, checkpoint=checkpoint, checkpoint_interval=3600)
    assert calls == [] and torch.equal(rare.flags, every.flags)
    # resuming from saved outcomes: finished batches are skipped and keep their flags
    done = torch.zeros(64, dtype=torch.bool)
    done[:32] = True
    half = every.flags.clone()
    half[32:] = False
    resumed = run_attack(model, data, spec, ctx, batch_size=16, resume=(half, done))
    assert torch.equal(resumed.flags, every.flags)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_between_batches_on_a_gpu():
    import warnings

    model = trained_mlp().cuda().eval()
    data = select_examples(digits().test, 128, seed=0).to("cuda")
    spec = registry("attacks").get("pgd20")
    ctx = AttackContext(eps=EPS, alpha=ALPHA, num_classes=10, device="cuda")
    only = torch.arange(128) % 3 != 0
    run_attack(model, data, spec, ctx, batch_size=32, only=only)  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_attack(model, data, spec, ctx, batch_size=32, only=only)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]  # the final read-back
