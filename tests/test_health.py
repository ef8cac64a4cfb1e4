"""The gradient-masking health report flags masked models and leaves an honest one alone."""

from __future__ import annotations

import pytest
import torch
from eval_helpers import ALPHA, EPS, NoisyLogits, Quantised, ScaledLogits, digits, trained_mlp
from rich.console import Console

from robustzoo.eval import apply_health, evaluate_model, flagged_checks, wilson_interval
from robustzoo.ui import results_table


@pytest.fixture(scope="module")
def test_set():
    return digits().test


def _evaluate(model, data, attacks, n=150, **kw):
    return evaluate_model(model, data, attacks, eps=EPS, alpha=ALPHA, num_classes=10, n=n, seed=0, **kw)


def _status(report):
    return {c["name"]: c["status"] for c in report["health"]["checks"]}


def _row(report, attack):
    return next(r for r in report["results"] if r["attack"] == attack)


# --- deliberately masked models ------------------------------------------------------------

def test_saturated_softmax_is_flagged(test_set):
    """Logits × 10^4: CE gradients vanish, so PGD-CE sees nothing while APGD-DLR still works."""
    rep = _evaluate(ScaledLogits(trained_mlp()), test_set, ["clean", "pgd20", "pgd100", "apgd-dlr"])
    st = _status(rep)
    assert rep["health"]["status"] == "suspect"
    assert st["pgd_vs_apgd"] == "flagged"
    assert st["zero_grad"] == "flagged"
    assert st["large_eps"] == "flagged"
    assert _row(rep, "pgd20")["suspect"] and _row(rep, "pgd100")["suspect"]
    assert "pgd_vs_apgd" in _row(rep, "pgd20")["suspect_because"]
    assert not _row(rep, "apgd-dlr").get("suspect"), "the scale-invariant attack is the honest number"
    assert not rep["worst_case"]["suspect"]
    zg = rep["health"]["probes"]["zero_grad"]
    assert zg["ce"]["share"] > 0.9 and zg["dlr"]["share"] < 0.05
    console = Console(record=True, width=200)
    console.print(results_table(rep))
    text = console.export_text()
    assert "pgd20 (suspect)" in text and "apgd-dlr (suspect)" not in text and "health: suspect" in text


def test_non_differentiable_quantiser_is_flagged(test_set, capfd):
    """Rounding the input to 4 levels inside the forward: every input gradient is zero."""
    rep = _evaluate(Quantised(trained_mlp()), test_set, ["clean", "pgd20", "apgd-dlr"])
    out, err = capfd.readouterr()
    assert out == "" and err == "", "pyautoattack must stay quiet"
    assert any("zero gradient" in m for m in _row(rep, "apgd-dlr")["notes"])  # its warning, kept
    st = _status(rep)
    assert rep["health"]["status"] == "suspect"
    assert st["zero_grad"] == "flagged" and st["large_eps"] == "flagged" and st["more_steps"] == "flagged"
    assert _row(rep, "pgd20")["suspect"] and _row(rep, "apgd-dlr")["suspect"]
    assert rep["worst_case"]["suspect"]
    assert rep["health"]["probes"]["zero_grad"]["dlr"]["share"] == 1.0


def test_randomised_model_fails_the_eps_zero_check(test_set):
    rep = _evaluate(NoisyLogits(trained_mlp()), test_set, ["clean", "pgd20"], n=100)
    assert _status(rep)["eps0"] == "flagged"
    assert _row(rep, "pgd20")["suspect"]


def test_plainly_adversarially_trained_model_is_not_flagged(test_set):
    rep = _evaluate(trained_mlp(), test_set, ["clean", "fgsm", "pgd20", "pgd100", "apgd-dlr", "square"],
                    n=200, options={"square_queries": 300})
    assert _row(rep, "clean")["accuracy"] > 0.9
    assert 0.5 < _row(rep, "pgd20")["accuracy"] < _row(rep, "clean")["accuracy"] - 0.1
    assert rep["health"]["status"] == "passed", [c for c in rep["health"]["checks"] if c["status"] == "flagged"]
    assert not any(r.get("suspect") for r in rep["results"])
    assert all(c["status"] in ("passed", "skipped") for c in rep["health"]["checks"])
    assert _status(rep)["blackbox_vs_whitebox"] == "passed"  # it ran, with paired flags
    assert rep["health"]["checks"][1]["evidence"]["square"]["paired"] is True


def test_health_can_be_switched_off(test_set):
    rep = _evaluate(trained_mlp(), test_set, ["clean", "pgd20"], n=30, health=False)
    assert "health" not in rep


# --- the checks as pure functions of a report ------------------------------------------------

def _r(attack, correct, n=1000, kind="white-box", **settings):
    lo, hi = wilson_interval(correct, n)
    return {"attack": attack, "accuracy": correct / n, "correct": correct, "n": n, "ci95": [lo, hi],
            "settings": settings, "kind": kind}


def _report(*rows, probes=None):
    rep = {"n": rows[0]["n"], "num_classes": 10, "results": list(rows)}
    return apply_health(rep, probes=probes or {})


def test_pgd_vs_apgd_threshold_and_interval_rule():
    ok = _report(_r("clean", 850, kind="none"), _r("pgd20", 560, steps=20), _r("apgd-dlr", 525))
    assert _status(ok)["pgd_vs_apgd"] == "passed"  # 3.5 points: an honest model (TRADES)
    bad = _report(_r("clean", 900, kind="none"), _r("pgd20", 681, steps=20), _r("apgd-dlr", 239))
    assert _status(bad)["pgd_vs_apgd"] == "flagged"  # Customized AT re-implemented: 68.1 vs 23.9
    small = _report(_r("clean", 90, 100, kind="none"), _r("pgd20", 60, 100, steps=20), _r("apgd-dlr", 52, 100))
    assert _status(small)["pgd_vs_apgd"] == "passed"  # 8 points on 100 examples is within noise
    skipped = _report(_r("clean", 850, kind="none"), _r("pgd20", 560, steps=20))
    assert _status(skipped)["pgd_vs_apgd"] == "skipped"


def test_more_steps_flags_only_a_significant_increase_or_no_effect():
    same = _report(_r("clean", 850, kind="none"), _r("pgd20", 560, steps=20), _r("pgd100", 560, steps=100))
    assert _status(same)["more_steps"] == "passed"  # converged attack: equal is fine
    lower = _report(_r("clean", 850, kind="none"), _r("fgsm", 600, steps=1), _r("pgd20", 600, steps=20))
    assert _status(lower)["more_steps"] == "passed"  # PGD = FGSM happens on nearly linear models
    up = _report(_r("clean", 850, kind="none"), _r("pgd20", 500, steps=20), _r("pgd100", 600, steps=100))
    assert _status(up)["more_steps"] == "flagged" and up["results"][2]["suspect"]
    flat = _report(_r("clean", 850, kind="none"), _r("pgd20", 848, steps=20))
    assert _status(flat)["more_steps"] == "flagged"
    chance = _report(_r("clean", 120, kind="none"), _r("pgd20", 119, steps=20))
    assert _status(chance)["more_steps"] == "passed"  # nothing to lose at chance level


def test_blackbox_without_flags_compares_accuracies():
    bad = _report(_r("clean", 850, kind="none"), _r("pgd20", 600, steps=20), _r("square", 300, kind="black-box"))
    assert _status(bad)["blackbox_vs_whitebox"] == "flagged"
    assert bad["results"][1]["suspect"] and not bad["results"][2].get("suspect")
    ok = _report(_r("clean", 850, kind="none"), _r("pgd20", 600, steps=20), _r("square", 640, kind="black-box"))
    assert _status(ok)["blackbox_vs_whitebox"] == "passed"


def test_blackbox_with_paired_flags_counts_examples_only_square_breaks():
    rows = [_r("clean", 100, 100, kind="none"), _r("pgd20", 60, 100, steps=20), _r("square", 70, 100, kind="black-box")]
    rep = {"n": 100, "num_classes": 10, "results": rows}
    pgd = torch.zeros(100, dtype=torch.bool)
    pgd[:60] = True
    sq = torch.zeros(100, dtype=torch.bool)
    sq[:50] = True
    sq[60:80] = True  # square holds 20 that PGD broke but breaks 10 that PGD could not
    apply_health(rep, flags={"clean": torch.ones(100, dtype=torch.bool), "pgd20": pgd, "square": sq}, probes={})
    check = rep["health"]["checks"][1]
    assert check["status"] == "flagged" and check["evidence"]["square"]["broken_only_by_blackbox"] == 10


def test_autoattack_square_component_is_checked():
    aa = _r("autoattack", 520, kind="ensemble")
    aa["components"] = [dict(attack="apgd-ce", correct=560), dict(attack="apgd-t", correct=545),
                        dict(attack="fab-t", correct=544), dict(attack="square", correct=520)]
    rep = _report(_r("clean", 850, kind="none"), aa)
    assert _status(rep)["blackbox_vs_whitebox"] == "flagged" and rep["results"][1]["suspect"]
    aa["components"][-1]["correct"] = 543
    assert _status(_report(_r("clean", 850, kind="none"), aa))["blackbox_vs_whitebox"] == "passed"


def test_probe_checks_and_flagged_checks_helper():
    probes = {"eps0": {"attack": "pgd20", "n": 256, "differ": 9},
              "zero_grad": {"n": 200, "ce": {"share": 0.0}, "dlr": {"share": 0.0}},
              "large_eps": {"eps": 0.4, "n": 256, "correct": 3, "accuracy": 3 / 256, "ci95": [0.004, 0.034],
                            "by_loss": {"ce": {"accuracy": 0.02, "ci95": [0.008, 0.045]}}}}
    rep = _report(_r("clean", 850, kind="none"), _r("pgd20", 600, steps=20), probes=probes)
    st = _status(rep)
    assert st["eps0"] == "flagged" and st["zero_grad"] == "passed" and st["large_eps"] == "passed"
    flagged = flagged_checks(rep)
    assert [c["name"] for c in flagged] == ["eps0"] and flagged[0]["explanation"]
    for c in rep["health"]["checks"]:
        assert set(c) == {"name", "status", "evidence", "explanation", "affects"}
        assert c["status"] in ("passed", "flagged", "skipped")
