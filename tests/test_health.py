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


def _check(report, name):
    return next(c for c in report["health"]["checks"] if c["name"] == name)


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
    assert _check(rep, "blackbox_vs_whitebox")["evidence"]["square"]["paired"] is True


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


def test_pgd_vs_apgd_flags_a_weak_fixed_step_attack_even_when_apgd_ce_is_fine():
    # Fashion-MNIST Calibrated AT (β 5, β1 0.05), 1,000 images: APGD-CE reaches APGD-DLR, so the
    # CE loss is not masked, but PGD-20 stays 7 points above them and overstates robustness.
    rep = _report(_r("clean", 813, kind="none"), _r("pgd20", 677, steps=20), _r("apgd-ce", 609),
                  _r("apgd-dlr", 607), _r("cw", 668, steps=30), _r("pgd100", 640, steps=100))
    check = next(c for c in rep["health"]["checks"] if c["name"] == "pgd_vs_apgd")
    assert check["status"] == "flagged" and check["affects"] == ["pgd20", "cw"]  # pgd100: intervals overlap
    assert "not masked" in check["explanation"] and "pgd20" in check["evidence"]["weak_attacks"]
    assert _row(rep, "pgd20")["suspect"] and not _row(rep, "apgd-ce").get("suspect")
    # 3 points of PGD-20 over APGD is what a plain AT model shows: nothing is flagged.
    ok = _report(_r("clean", 800, kind="none"), _r("pgd20", 670, steps=20), _r("apgd-ce", 645),
                 _r("apgd-dlr", 640))
    assert _status(ok)["pgd_vs_apgd"] == "passed"


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
    check = _check(rep, "blackbox_vs_whitebox")
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
        assert set(c) - {"needs"} == {"name", "status", "evidence", "explanation", "affects", "detectable"}
        assert c["status"] in ("passed", "flagged", "failed", "skipped")
        # A check that could not run names the attacks that would let it (nothing skipped silently).
        assert ("needs" in c) <= (c["status"] == "skipped")
    assert _check(rep, "ce_vs_margin")["needs"] == ["cw"]


# --- degenerate and randomised models -----------------------------------------------------------

def test_nan_weights_fail_the_report(test_set):
    from eval_helpers import nan_mlp

    from robustzoo.eval import publishable

    rep = _evaluate(nan_mlp(), test_set, ["clean", "pgd20"], n=100)
    check = next(c for c in rep["health"]["checks"] if c["name"] == "degenerate")
    assert rep["health"]["status"] == "failed" and rep["health"]["failed"] == ["degenerate"]
    assert check["status"] == "failed" and "non-finite weights" in check["explanation"]
    assert check["evidence"]["nonfinite_parameters"] == sum(p.numel() for p in nan_mlp().parameters())
    assert _row(rep, "pgd20")["suspect"] and "degenerate" in _row(rep, "pgd20")["suspect_because"]
    assert not publishable(dict(rep, examples={"of": 100}))[0]
    console = Console(record=True, width=200)
    console.print(results_table(rep))
    assert "health: FAILED" in console.export_text()


def test_constant_predictions_and_chance_accuracy_fail_an_otherwise_finite_model(test_set):
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():  # every image gets the logits of class 3
        constant[1].weight.zero_()
        constant[1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10).float())
    rep = _evaluate(constant, test_set, ["clean", "fgsm"], n=100)
    check = next(c for c in rep["health"]["checks"] if c["name"] == "degenerate")
    assert check["status"] == "failed"
    assert "the same class" in check["explanation"] and "not above chance" in check["explanation"]
    assert _status(_evaluate(trained_mlp(), test_set, ["clean"], n=100))["degenerate"] == "passed"


def test_randomised_model_is_flagged_and_autoattack_runs_its_rand_version(test_set):
    from eval_helpers import NoisyInput

    rep = _evaluate(NoisyInput(trained_mlp()), test_set, ["clean", "pgd20"], n=60)
    check = next(c for c in rep["health"]["checks"] if c["name"] == "randomised")
    assert check["status"] == "flagged" and "EoT" in check["explanation"]
    assert rep["health"]["probes"]["randomness"]["randomised"] is True
    assert _row(rep, "pgd20")["suspect"] and "randomised" in _row(rep, "pgd20")["suspect_because"]
    honest = _evaluate(trained_mlp(), test_set, ["clean", "pgd20"], n=60)
    assert _status(honest)["randomised"] == "passed"

    # AutoAttack's own advice for such a model is its rand version: APGD-CE and APGD-DLR with EoT.
    rep = _evaluate(NoisyInput(trained_mlp()), test_set, ["clean", "autoattack"], n=12, health=False)
    aa = _row(rep, "autoattack")
    assert aa["settings"]["version"] == "rand" and aa["settings"]["eot_iter"] == 20
    assert [c["attack"] for c in aa["components"]] == ["apgd-ce", "apgd-dlr"]


# --- paired tests: a planted gap, an honest one -----------------------------------------------

def _flags(n, robust):
    f = torch.zeros(n, dtype=torch.bool)
    f[list(robust)] = True
    return f


def _paired_report(n, clean, pgd, apgd):
    """Rows and per-example flags: ``pgd`` and ``apgd`` are the examples each leaves robust."""
    flags = {"clean": _flags(n, clean), "pgd20": _flags(n, pgd), "apgd-dlr": _flags(n, apgd)}
    rows = [_r("clean", len(clean), n, kind="none"), _r("pgd20", len(pgd), n, steps=20),
            _r("apgd-dlr", len(apgd), n)]
    rep = {"n": n, "num_classes": 10, "results": rows}
    return apply_health(rep, flags=flags, probes={}), rep


def test_a_planted_five_point_pgd_versus_apgd_gap_at_n_1000_is_flagged_by_the_paired_test():
    n = 1000
    # APGD breaks 50 examples PGD-20 leaves robust (5 points) and nothing the other way.
    rep, _ = _paired_report(n, range(850), range(550), range(500))
    check = _check(rep, "pgd_vs_apgd")
    assert check["status"] == "flagged" and check["evidence"]["paired"] is True
    assert (check["evidence"]["ce_only"], check["evidence"]["reference_only"]) == (50, 0)
    assert check["evidence"]["p_value"] < 1e-10 and check["evidence"]["p_threshold"] == 0.01
    assert check["detectable"]["gap"] == 0.05 and check["detectable"]["n"] == n
    assert _row(rep, "pgd20")["suspect"] and not _row(rep, "apgd-dlr").get("suspect")
    # The same accuracies without per-example flags: the two intervals overlap, nothing is seen.
    unpaired = _report(_r("clean", 850, kind="none"), _r("pgd20", 550, steps=20), _r("apgd-dlr", 500))
    assert _status(unpaired)["pgd_vs_apgd"] == "passed"
    assert _check(unpaired, "pgd_vs_apgd")["detectable"]["gap"] > 0.06


def test_an_honest_gap_and_noise_are_not_flagged_by_the_paired_test():
    # 3.5 points at n = 1,000, all one way: APGD is simply stronger (TRADES: 56.6 vs 53.1).
    rep, _ = _paired_report(1000, range(850), range(560), range(525))
    assert _status(rep)["pgd_vs_apgd"] == "passed"
    # 5 and 6 points at n = 100, all one way: p = 1/32 and 1/64, not below 0.01; 7 is.
    for k, status in ((5, "passed"), (6, "passed"), (7, "flagged")):
        rep, _ = _paired_report(100, range(90), range(60), range(60 - k))
        check = _check(rep, "pgd_vs_apgd")
        assert check["status"] == status, (k, check)
        assert check["evidence"]["p_value"] == pytest.approx(0.5 ** k, rel=1e-2)
    # 5 points net, but 255 examples one way and 205 the other: p = 0.011, an unstable
    # attack pair rather than a masked loss.
    pgd = list(range(100)) + list(range(100, 355))
    apgd = list(range(100)) + list(range(355, 560))
    rep, _ = _paired_report(1000, range(850), pgd, apgd)
    ev = _check(rep, "pgd_vs_apgd")["evidence"]
    assert (ev["ce_only"], ev["reference_only"]) == (255, 205) and ev["gap"] == pytest.approx(0.05)
    assert ev["p_value"] == pytest.approx(0.0111, abs=1e-4) and _status(rep)["pgd_vs_apgd"] == "passed"


def test_paired_tests_see_small_gaps_at_small_n():
    """At n = 150 the interval rule needed a gap of about 16 points; the paired test needs 5.3."""
    n = 150
    rep, _ = _paired_report(n, range(130), range(80), range(72))  # 8 examples = 5.3 points
    check = _check(rep, "pgd_vs_apgd")
    assert check["status"] == "flagged" and check["detectable"]["gap"] == round(8 / 150, 6)
    unpaired = _report(_r("clean", 130, n, kind="none"), _r("pgd20", 80, n, steps=20), _r("apgd-dlr", 72, n))
    assert _check(unpaired, "pgd_vs_apgd")["detectable"]["gap"] > 0.15


def test_more_steps_is_paired_too():
    n = 1000
    flags = {"clean": _flags(n, range(850)), "pgd20": _flags(n, range(500)),
             "pgd100": _flags(n, list(range(500)) + list(range(800, 815)))}  # PGD-100 "unbreaks" 15
    rows = [_r("clean", 850, kind="none"), _r("pgd20", 500, steps=20), _r("pgd100", 515, steps=100)]
    rep = apply_health({"n": n, "num_classes": 10, "results": rows}, flags=flags, probes={})
    check = _check(rep, "more_steps")
    assert check["status"] == "flagged" and check["evidence"]["paired"]["pgd100>pgd20"]["longer_only"] == 15
    assert _row(rep, "pgd100")["suspect"]


def test_every_check_reports_the_smallest_gap_it_could_detect(test_set):
    rep = _evaluate(trained_mlp(), test_set, ["clean", "pgd20", "apgd-dlr", "square"], n=100,
                    options={"square_queries": 50})
    for c in rep["health"]["checks"]:
        if c["status"] != "skipped":
            assert c["detectable"] and c["detectable"]["n"], c["name"]
    by = {c["name"]: c for c in rep["health"]["checks"]}
    assert by["pgd_vs_apgd"]["detectable"]["gap"] == 0.07  # 7 discordant examples of 100 for p < 0.01
    assert by["blackbox_vs_whitebox"]["detectable"]["gap"] == 0.03  # 3 of 100: > 1 point and p < 0.01
    console = Console(record=True, width=220)
    from robustzoo.ui import health_table

    console.print(health_table(rep))
    assert "≥ 7.0 pts at n=100" in console.export_text()


def test_exact_tests_match_hand_computed_values():
    from robustzoo.eval import binomial_tail, mcnemar_exact

    assert mcnemar_exact(7, 0) == pytest.approx(1 / 128)
    assert mcnemar_exact(3, 1) == pytest.approx(5 / 16)  # P(X >= 3), X ~ Bin(4, 1/2)
    assert mcnemar_exact(0, 5) == 1.0
    assert binomial_tail(1, 2, 0.5) == pytest.approx(0.75)
    assert binomial_tail(2, 3, 0.1) == pytest.approx(3 * 0.01 * 0.9 + 0.001)
