"""TRADES and MART outer losses against values computed by hand (FAT reuses both).

Every case uses 2 examples × 3 classes whose logits are logs of small integers, so the
softmax is a fraction we can write down:

    clean  p(x):   row 0 = [1, 2, 1]/4      row 1 = [2, 1, 1]/4
    adv    p(x'):  row 0 = [1, 1, 2]/4      row 1 = [1, 1, 1]/3
    labels y:      [1, 1]
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from robustzoo_mart import boosted_ce, mart_loss, weighted_kl
from robustzoo_trades import kl_attack_loss, kl_per_example, trades_loss

LN2, LN3 = math.log(2), math.log(3)


def logits_of(*rows: list[float]) -> torch.Tensor:
    """Logits whose softmax is each row normalised (log of positive weights)."""
    return torch.log(torch.tensor(rows, dtype=torch.float64))


@pytest.fixture
def case():
    nat = logits_of([1, 2, 1], [2, 1, 1])
    adv = logits_of([1, 1, 2], [1, 1, 1])
    y = torch.tensor([1, 1])
    return nat, adv, y


# KL(p‖q) per row, by hand:
#   row 0: 1/4·ln(1) + 1/2·ln(2) + 1/4·ln(1/2)                 = ln2/4
#   row 1: 1/2·ln((1/2)/(1/3)) + 2·1/4·ln((1/4)/(1/3))          = ln(3/2)/2 + ln(3/4)/2 = ln(9/8)/2
KL0 = LN2 / 4
KL1 = math.log(9 / 8) / 2
# The other direction KL(q‖p) differs on row 1: 1/3·ln(2/3) + 2/3·ln(4/3) = ln(32/27)/3.
KL1_SWAPPED = math.log(32 / 27) / 3


def test_kl_per_example_by_hand_and_direction(case):
    nat, adv, _ = case
    kl = kl_per_example(nat, adv)
    assert kl.tolist() == pytest.approx([KL0, KL1], abs=1e-12)
    swapped = kl_per_example(adv, nat)
    assert swapped.tolist() == pytest.approx([KL0, KL1_SWAPPED], abs=1e-12)
    assert abs(swapped[1].item() - kl[1].item()) > 1e-3  # direction matters


def test_kl_attack_loss_targets_the_clean_prediction(case):
    nat, adv, _ = case
    assert kl_attack_loss(adv, nat).tolist() == pytest.approx([KL0, KL1], abs=1e-12)
    nat = nat.clone().requires_grad_(True)
    adv = adv.clone().requires_grad_(True)
    g_nat, g_adv = torch.autograd.grad(kl_attack_loss(adv, nat).sum(), [nat, adv], allow_unused=True)
    assert g_nat is None  # p(x) is a constant for the attack
    assert g_adv.abs().sum() > 0


def test_trades_loss_by_hand(case):
    nat, adv, y = case
    # CE(f(x), y): −ln p_y = −ln(1/2) and −ln(1/4) → mean (ln2 + 2·ln2)/2 = 1.5·ln2.
    ce = 1.5 * LN2
    beta = 6.0
    expected = ce + beta * (KL0 + KL1) / 2  # batchmean: KL summed over batch and classes / B
    assert trades_loss(nat, adv, y, beta).item() == pytest.approx(expected, abs=1e-12)
    # With the arguments' KL direction reversed the value would be this; it is not.
    wrong_direction = ce + beta * (KL0 + KL1_SWAPPED) / 2
    assert abs(trades_loss(nat, adv, y, beta).item() - wrong_direction) > 1e-3


def test_trades_reduction_batchmean_is_sum_over_batch_size(case):
    nat, adv, y = case
    beta, b, c = 6.0, 2, 3
    batchmean = trades_loss(nat, adv, y, beta, reduction="batchmean").item()
    mean = trades_loss(nat, adv, y, beta, reduction="mean").item()
    assert batchmean == pytest.approx(1.5 * LN2 + beta * (KL0 + KL1) / b, abs=1e-12)
    # 'mean' divides by B·C = 6: β shrinks by the class count (the pitfall it reproduces).
    assert mean == pytest.approx(1.5 * LN2 + beta * (KL0 + KL1) / (b * c), abs=1e-12)
    assert batchmean - 1.5 * LN2 == pytest.approx(c * (mean - 1.5 * LN2), abs=1e-12)
    with pytest.raises(ValueError, match="batchmean"):
        trades_loss(nat, adv, y, beta, reduction="sum")


def test_trades_gradient_flows_into_clean_logits_through_p(case):
    nat, adv, y = case
    nat = nat.clone().requires_grad_(True)
    beta, b = 6.0, 2
    (g_full,) = torch.autograd.grad(trades_loss(nat, adv, y, beta), [nat])
    (g_ce,) = torch.autograd.grad(F.cross_entropy(nat, y), [nat])
    # d KL(p‖q)/dz_j = p_j·(ln p_j − ln q_j − KL): the KL term moves the clean logits too.
    p = torch.tensor([[1, 2, 1], [2, 1, 1]], dtype=torch.float64) / 4
    q = torch.tensor([[1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    kl = torch.tensor([KL0, KL1], dtype=torch.float64)[:, None]
    analytic = beta / b * p * (p.log() - q.log() - kl)
    assert analytic.abs().max() > 1e-2
    assert torch.allclose(g_full - g_ce, analytic, atol=1e-12)


# MART by hand. Boosted CE per row: −ln p'_y − ln(1.0001 − max_{k≠y} p'_k + 1e-12)
#   row 0: p'_y = 1/4, max other = 1/2 → ln4 − ln(0.5001 + 1e-12)
#   row 1: p'_y = 1/3, max other = 1/3 → ln3 − ln(1.0001 − 1/3 + 1e-12)
BCE = [2 * LN2 - math.log(1.0001 - 0.5 + 1e-12), LN3 - math.log(1.0001 - 1 / 3 + 1e-12)]
# KL with the code's log(q + 1e-12), weighted by 1 − p_y(x): 1 − 1/2 and 1 − 1/4.
KL_EPS = [
    0.25 * (math.log(0.25) - math.log(0.25 + 1e-12)) + 0.5 * (math.log(0.5) - math.log(0.25 + 1e-12))
    + 0.25 * (math.log(0.25) - math.log(0.5 + 1e-12)),
    0.5 * (math.log(0.5) - math.log(1 / 3 + 1e-12)) + 2 * 0.25 * (math.log(0.25) - math.log(1 / 3 + 1e-12)),
]
WEIGHTS = [0.5, 0.75]


def test_mart_parts_by_hand(case):
    nat, adv, y = case
    assert KL_EPS == pytest.approx([KL0, KL1], abs=1e-10)  # the 1e-12 guard barely matters here
    assert boosted_ce(adv, y).tolist() == pytest.approx(BCE, abs=1e-12)
    assert weighted_kl(nat, adv, y).tolist() == pytest.approx(
        [KL_EPS[0] * WEIGHTS[0], KL_EPS[1] * WEIGHTS[1]], abs=1e-12)


def test_mart_loss_by_hand(case):
    nat, adv, y = case
    lam = 6.0
    expected = (BCE[0] + BCE[1]) / 2 + lam * (KL_EPS[0] * WEIGHTS[0] + KL_EPS[1] * WEIGHTS[1]) / 2
    assert mart_loss(nat, adv, y, lam).item() == pytest.approx(expected, abs=1e-12)
    # Swapping clean and adversarial logits gives another number (KL direction, weight, BCE).
    assert abs(mart_loss(adv, nat, y, lam).item() - expected) > 1e-3


def test_mart_gradient_flows_into_the_weight(case):
    nat, adv, y = case
    nat = nat.clone().requires_grad_(True)
    lam, b = 6.0, 2
    (g,) = torch.autograd.grad(mart_loss(nat, adv, y, lam), [nat])
    # d[KL·w]/dz = w·p⊙(ln p − ln q − KL) + KL·dw/dz, with w = 1 − p_y and dw/dz = −p_y(e_y − p).
    p = torch.tensor([[1, 2, 1], [2, 1, 1]], dtype=torch.float64) / 4
    q = torch.tensor([[1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    kl = torch.tensor(KL_EPS, dtype=torch.float64)[:, None]
    w = torch.tensor(WEIGHTS, dtype=torch.float64)[:, None]
    p_y = p.gather(1, y[:, None])
    e_y = F.one_hot(y, 3).double()
    through_kl = w * p * (p.log() - (q + 1e-12).log() - kl)
    through_weight = -kl * p_y * (e_y - p)
    assert through_weight.abs().max() > 1e-3  # the term a detached weight would drop
    assert torch.allclose(g, lam / b * (through_kl + through_weight), atol=1e-10)


def test_mart_stays_finite_when_a_wrong_class_takes_all_mass():
    nat = torch.tensor([[0.0, 0.0, 0.0]])
    adv = torch.tensor([[200.0, 0.0, 0.0]])  # p'(class 0) = 1 in float32, label 1
    y = torch.tensor([1])
    loss = mart_loss(nat, adv, y, 6.0)
    assert torch.isfinite(loss)
    # −ln p'_y = 200 (CE from logits, no log of 0); −ln(1.0001 − 1 + 1e-12) = −ln(1e-4) ≈ 9.21.
    assert boosted_ce(adv, y).item() == pytest.approx(200 - math.log(1.0001 - 1 + 1e-12), rel=1e-3)


# -- the attack's start: clipped (default) or as the authors' code (clip_start=false) ------------
class _Recorder(torch.nn.Module):
    """A linear classifier on 1×2×2 images that records every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(0))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_clip_start_false_takes_the_first_gradient_at_the_unclipped_start(name):
    """TRADES' and MART's code start at x + 0.001·N and take the first gradient there without
    clipping to [0,1] (saturated pixels step off the image); every step is then clipped. The
    default clips the start (unchanged); clip_start=false reproduces the code."""
    from robustzoo.objectives import ObjectiveContext
    from robustzoo.plugins import registry

    cls = registry("objectives").get(name)
    assert cls.defaults["clip_start"] is True
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]], [[[0.5, 0.0], [1.0, 0.3]]]])
    y = torch.tensor([0, 2])
    ctx = ObjectiveContext(eps=0.1, alpha=0.02, steps=2, num_classes=3, input_shape=(1, 2, 2), num_train=2, epochs=1)
    first: dict[bool, torch.Tensor] = {}
    for clip in (True, False):
        model = _Recorder()
        torch.manual_seed(3)
        out = cls(cls.resolve_settings({"clip_start": clip}), ctx).loss(model, x, y, torch.arange(2))
        attack_inputs = [t for t in model.seen if not torch.equal(t, x)]
        first[clip] = attack_inputs[0]
        assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in attack_inputs[1:])  # every step clipped
        assert torch.isfinite(out.loss)
    torch.manual_seed(3)
    start = x + 0.001 * torch.randn_like(x)
    assert torch.equal(first[False], start) and float(start.min()) < 0 and float(start.max()) > 1
    assert torch.equal(first[True], start.clamp(0, 1))
