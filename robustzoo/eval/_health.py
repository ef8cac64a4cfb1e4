"""Gradient-masking health report: is a robust-accuracy number believable?

A defence that hides its gradients (saturated softmax, non-differentiable preprocessing,
randomness) makes gradient attacks fail without being robust; the number then measures the
attack, not the model. Each check below is a known signature of that (Athalye et al. 2018;
Carlini et al. 2019, "On evaluating adversarial robustness"; Croce & Hein 2020). The checks
are pure functions of an eval.json dictionary (plus, when given, the per-example flags and
the cheap probes of :func:`run_probes`, :func:`randomness_probe` and
:func:`degenerate_probe`); every check returns its name, a status (``passed`` /
``flagged`` / ``failed`` / ``skipped``), the numbers it used, a one-line explanation and
``detectable``: the smallest gap it could have detected at the n used. A flagged check marks
the results it casts doubt on as ``"suspect": true``; a failed one (a degenerate model) fails
the whole report (status ``failed``, stronger than ``suspect``).

Thresholds (:data:`THRESHOLDS`; fractions of the evaluated examples, so 0.05 = 5 points).
Where two attacks ran on the same examples the comparison is *paired*: it counts the
discordant examples (robust under one attack, broken by the other) and asks an exact
one-sided McNemar test whether they lean one way more than chance explains, at
p < ``p_value`` (0.01). Without per-example flags (a report read back from disk) the older
unpaired rule applies: the two 95% Wilson intervals must not overlap.

* ``degenerate`` (fails) — non-finite weights or outputs, one predicted class for every
  probe image, or a clean accuracy whose 95% interval reaches down to chance (1/C): there is
  no model to attack, and every robust number is meaningless.
* ``randomised`` — five forward passes of the same probe images, in exact fp32 with
  deterministic kernels (:func:`exact_forwards`), give logits (normalised) more than 1e-4
  apart (AutoAttack's own ``check_randomized`` rule), or more than 8 units of the logits'
  dtype resolution when the model returns a coarser dtype: rounding is not randomness. The
  attacks then see a moving target: evaluate with Expectation over Transformation
  (AutoAttack's ``rand`` version, which the evaluation then runs itself and records;
  ``--set eot_iter=20`` for APGD).
* ``noop`` (fails) — an attack with ε > 0 breaks none of the correctly classified examples
  while another attack of the report, or a PGD-10 probe on the logit margin at ε, breaks at
  least 7 of them, and the probes do not find that attack's loss masked: it did not act (a
  setting or a bug), and its "robust" accuracy is the clean one.
* ``ce_vs_margin`` — an iterative CE attack leaves more examples robust than the strongest
  margin-loss attack (CW∞, APGD-DLR, APGD-T) on the same examples by more than 1 point
  beyond chance (McNemar's exact test shifted by that tolerance, p < 0.01): a saturated or
  rescaled softmax stalls CE attacks and not margin ones.
* ``pgd_vs_apgd`` — the strongest iterative CE attack (pgd, pgd20, pgd100, apgd-ce) leaves
  at least 5 points more examples robust than APGD-DLR / APGD-T / AutoAttack, and (paired)
  McNemar's p < 0.01. Honest models show 2–5 points between PGD-20 and AutoAttack (TRADES
  WRN-34-10: 56.6 vs 53.1); CE-specific masking shows 3 points to tens of points
  (Customized AT re-implemented: 68.1 under PGD-20, 23.9 under APGD-DLR). FGSM is not the
  comparison (it is weak by design) but is marked suspect with the others when it is as far
  above.
* ``blackbox_vs_whitebox`` — Square (no gradients) scores below the strongest white-box
  attack on the same examples (paired McNemar, p < 0.01), or breaks more than 1% of the
  examples that survived every gradient attack (paired, from the per-example flags), or
  AutoAttack's own Square component does so after APGD-CE, APGD-T and FAB-T, and an exact
  binomial test says that share is above AutoAttack's own tolerance of 0.2 points
  (p < 0.01). A black box should not beat white-box attacks that see the model.
* ``more_steps`` — (i) an attack with more PGD steps leaves at least 1 point more examples
  robust (paired: McNemar's p < 0.01), or (ii) with at least 100 examples and a clean
  accuracy 10+ points above chance, the best multi-step CE attack lowers accuracy by less
  than 1 point from clean: iterating achieves nothing. Equal PGD-20 and PGD-100 numbers are
  *not* flagged (a converged attack on an honest model gives exactly that), nor is PGD equal
  to FGSM (on a nearly linear model FGSM is already optimal).
* ``large_eps`` — PGD-20 (random start, α = 2.5·ε'/20) at ε' = 4ε on a sample still leaves
  accuracy whose Wilson lower bound is more than 5 points above chance (1/C). Run with CE
  and with DLR: CE alone failing marks the CE attacks, both failing every gradient attack.
  With a budget that large an honest model loses nearly everything.
* ``eps0`` — the attack run with ε = 0 changes the prediction of at least 2 examples and more
  than 0.5% of the sample: a randomised or stateful model, or an attack that leaves the ball.
* ``zero_grad`` — more than 5% of correctly classified sample examples have an input
  gradient that is exactly zero in every pixel, for CE (saturated softmax) or for CE and DLR
  (quantisation, hard thresholds): gradient attacks have nothing to follow there.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..attacks import ce_loss, cw_margin, pgd
from ..fast import tf32_disabled
from ..plugins import registry
from ._stats import (
    binomial_tail,
    mcnemar_exact,
    paired_counts,
    smallest_sign_count,
    wilson_interval,
)

THRESHOLDS: dict[str, float] = {
    "p_value": 0.01,
    "pgd_vs_apgd_gap": 0.05,
    "blackbox_share": 0.01,
    "blackbox_tolerance": 0.002,
    "more_steps_gap": 0.01,
    "more_steps_min_n": 100,
    "substantial_above_chance": 0.10,
    "large_eps_factor": 4.0,
    "large_eps_margin": 0.05,
    "eps0_share": 0.005,
    "eps0_min_examples": 2,
    "zero_grad_share": 0.05,
    "randomness_passes": 5,
    "randomness_logit_diff": 1e-4,
    "randomness_ulps": 8.0,
    "ce_margin_tolerance": 0.01,
    "probe_n": 256,
}

#: Attacks that ascend the cross-entropy loss (the ones CE-specific masking fools).
CE_ATTACKS = ("fgsm", "pgd", "pgd20", "pgd100", "apgd-ce")
#: Attacks on scale-invariant / targeted losses that CE masking does not fool.
STRONG_ATTACKS = ("apgd-dlr", "apgd-t", "autoattack")
#: Attacks that ascend a logit margin instead of the cross-entropy (CW∞, DLR, targeted DLR):
#: a saturated softmax, which stalls every CE attack, does not stall them.
MARGIN_ATTACKS = ("cw", "apgd-dlr", "apgd-t")
GRADIENT_KINDS = ("white-box", "ensemble")
#: Overall status by strength: a failed check beats a flagged one.
STATUSES = ("passed", "suspect", "failed")


def _check(name: str, status: str, explanation: str, evidence: dict[str, Any] | None = None,
           affects: list[str] | None = None, detectable: dict[str, Any] | None = None,
           needs: list[str] | None = None) -> dict[str, Any]:
    out = {"name": name, "status": status, "evidence": evidence or {}, "explanation": explanation,
           "affects": affects or [], "detectable": detectable}
    if needs:
        # A skipped check names the attacks that would let it run (the CLI turns them into the
        # command that runs them): nothing is skipped silently.
        out["needs"] = list(needs)
    return out


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["attack"]: r for r in report.get("results", [])}


def _chance(report: dict[str, Any]) -> float:
    c = report.get("num_classes") or 10
    return 1.0 / float(c)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pts(v: float) -> str:
    return f"{100 * v:.1f} points"


def _at_least(share: float, n: int) -> int:
    """Fewest examples of ``n`` that make up at least ``share`` of them."""
    return max(1, math.ceil(share * n - 1e-9))


def _paired(flags: dict[str, torch.Tensor] | None, *names: str) -> bool:
    return flags is not None and all(a in flags and flags[a] is not None for a in names)


def _paired_gap(name: str, gap_t: float, n: int) -> dict[str, Any]:
    """Smallest gap a paired test can flag at n: the points threshold or McNemar's minimum."""
    k = max(_at_least(gap_t, n), smallest_sign_count(THRESHOLDS["p_value"]))
    return {"gap": round(k / n, 6) if n else None, "n": n, "paired": True,
            "note": f"{k} discordant examples of {n}, all one way ({name})"}


def _unpaired_gap(ref_correct: int, n: int, gap_t: float) -> dict[str, Any]:
    """Smallest gap above the reference accuracy that separates the two 95% intervals."""
    hi = wilson_interval(ref_correct, n)[1]
    for k in range(_at_least(gap_t, n), n - ref_correct + 1):
        if k / n > gap_t and wilson_interval(ref_correct + k, n)[0] > hi:
            return {"gap": round(k / n, 6), "n": n, "paired": False,
                    "note": "separate 95% intervals (no per-example flags)"}
    return {"gap": None, "n": n, "paired": False, "note": "no gap is detectable at this n"}


def check_degenerate(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """No finite, non-constant model above chance: fail the report."""
    p = (probes or {}).get("degenerate")
    rows = _rows(report)
    clean = rows.get("clean")
    chance = _chance(report)
    if not p and clean is None:
        return _check("degenerate", "skipped", "needs the clean row or the degenerate-model probe",
                      needs=["clean"])
    ev: dict[str, Any] = dict(p or {}, chance=round(chance, 6))
    problems = []
    if p:
        if p.get("nonfinite_parameters"):
            problems.append(f"{p['nonfinite_parameters']} non-finite weights")
        if p.get("nonfinite_outputs"):
            problems.append(f"non-finite logits on {p['nonfinite_outputs']} of {p['n']} probe images")
        if p.get("distinct_predictions") == 1 and p.get("distinct_labels", 0) > 1:
            problems.append(f"the same class for all {p['n']} probe images")
    detectable = None
    if clean is not None:
        lo = clean["ci95"][0]
        ev.update(clean_accuracy=clean["accuracy"], clean_ci95=clean["ci95"])
        if lo <= chance:
            problems.append(f"clean accuracy {_pct(clean['accuracy'])} is not above chance ({_pct(chance)}) "
                            f"on {clean['n']} images")
        n = int(clean["n"])
        k = next((k for k in range(n + 1) if wilson_interval(k, n)[0] > chance), None)
        detectable = {"gap": round(k / n - chance, 6) if k is not None and n else None, "n": n,
                      "note": "clean accuracy above chance needed to pass"}
    if problems:
        return _check("degenerate", "failed", "degenerate model: " + "; ".join(problems) + ": its robust "
                      "numbers mean nothing", ev, [a for a in rows if a != "clean"], detectable)
    return _check("degenerate", "passed", "finite weights and outputs, varied predictions, clean accuracy "
                  "above chance", ev, detectable=detectable)


def check_randomised(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """Repeated forward passes on the same inputs must give the same logits."""
    p = (probes or {}).get("randomness")
    if not p:
        return _check("randomised", "skipped", "no randomness probe was run")
    detectable = {"gap": round(1 / p["n"], 6) if p.get("n") else None, "n": p.get("n"),
                  "note": f"one changed prediction, or normalised logits {p['threshold']:g} apart"}
    if p["randomised"]:
        affected = [r["attack"] for r in report.get("results", [])
                    if r["attack"] != "clean" and not _uses_eot(r)]
        return _check("randomised", "flagged", f"{p['passes']} forward passes of the same {p['n']} images gave "
                      f"different logits (max difference {p['max_logit_diff']:.3g}, {p['changed']} predictions "
                      "changed): a randomised model; evaluate with EoT (AutoAttack's rand version, "
                      "--set eot_iter=20 for APGD)", p, affected, detectable)
    return _check("randomised", "passed", f"{p['passes']} forward passes gave identical logits", p,
                  detectable=detectable)


def _uses_eot(row: dict[str, Any]) -> bool:
    s = row.get("settings") or {}
    return int(s.get("eot_iter", 1) or 1) > 1


def check_pgd_vs_apgd(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The strongest iterative CE attack well above a DLR / targeted / AutoAttack number."""
    t, alpha = THRESHOLDS["pgd_vs_apgd_gap"], THRESHOLDS["p_value"]
    rows = _rows(report)
    ce = [r for a, r in rows.items() if a in CE_ATTACKS]
    iterative = [r for r in ce if r["attack"] != "fgsm"]
    strong = [r for a, r in rows.items() if a in STRONG_ATTACKS]
    if not iterative or not strong:
        need = ([] if iterative else ["pgd20"]) + ([] if strong else ["apgd-dlr"])
        return _check("pgd_vs_apgd", "skipped", "needs an iterative CE attack (pgd20, ...) and apgd-dlr "
                      "or autoattack on the same examples (e.g. --suite quick)", needs=need)
    ref = min(strong, key=lambda r: r["accuracy"])
    best_ce = min(iterative, key=lambda r: r["accuracy"])
    n = int(ref["n"])
    gap = best_ce["accuracy"] - ref["accuracy"]
    ev: dict[str, Any] = {
        "ce_attack": best_ce["attack"], "ce_accuracy": best_ce["accuracy"], "ce_ci95": best_ce["ci95"],
        "reference": ref["attack"], "reference_accuracy": ref["accuracy"], "reference_ci95": ref["ci95"],
        "gap": round(gap, 6), "threshold": t,
        "cascaded": bool(ref.get("cascaded") or best_ce.get("cascaded"))}
    paired = _paired(flags, best_ce["attack"], ref["attack"]) and best_ce["n"] == n

    def fires(r: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        if paired and _paired(flags, r["attack"]):
            b, c = paired_counts(flags[r["attack"]], flags[ref["attack"]])
            p = mcnemar_exact(b, c)
            return (b - c >= _at_least(t, n) and p < alpha,
                    {"ce_only": b, "reference_only": c, "p_value": float(f"{p:.3g}")})
        return (r["accuracy"] - ref["accuracy"] > t and r["ci95"][0] > ref["ci95"][1], {})

    hit, stats = fires(best_ce)
    if paired:
        ev.update(stats, paired=True, p_threshold=alpha)
        detectable = _paired_gap("CE attack robust, reference broken", t, n)
        rule = f"flagged at {_pts(t)} or more with McNemar's p < {alpha:g}"
    else:
        ev["paired"] = False
        detectable = _unpaired_gap(int(ref["correct"]), n, t)
        rule = f"flagged above {_pts(t)} with separate 95% intervals"
    if hit:
        # Every CE row at least as far above the reference is suspect (FGSM included).
        affected = [r["attack"] for r in ce if fires(r)[0]]
        return _check("pgd_vs_apgd", "flagged", f"{best_ce['attack']} leaves {_pts(gap)} more examples "
                      f"robust than {ref['attack']}" + (f" (p = {stats['p_value']:.2g})" if paired else "")
                      + ": the CE loss is likely masked", ev, affected, detectable)
    # The CE loss itself is fine (its strongest attack reaches the reference), but a weaker
    # iterative CE attack may still sit far above it: fixed-step PGD stalls where APGD's
    # adaptive step does not, and a PGD-20 number then overstates robustness.
    # PGD on the CW margin is the same fixed-step search on another loss: checked alike.
    fixed_step = [r for r in iterative if r is not best_ce] + ([rows["cw"]] if "cw" in rows else [])
    weak = [(r, fires(r)[1]) for r in fixed_step if fires(r)[0]]
    if weak:
        worst, wstats = max(weak, key=lambda x: x[0]["accuracy"])
        wgap = worst["accuracy"] - ref["accuracy"]
        ev["weak_attacks"] = {r["attack"]: {"gap": round(r["accuracy"] - ref["accuracy"], 6), **st}
                              for r, st in weak}
        return _check("pgd_vs_apgd", "flagged", f"{worst['attack']} leaves {_pts(wgap)} more examples robust "
                      f"than {ref['attack']}" + (f" (p = {wstats['p_value']:.2g})" if wstats else "")
                      + f", while {best_ce['attack']} is only {_pts(gap)} above it: the CE loss is not masked, "
                      f"but {', '.join(r['attack'] for r, _ in weak)} overstate robustness on this model",
                      ev, [r["attack"] for r, _ in weak], detectable)
    return _check("pgd_vs_apgd", "passed", f"{best_ce['attack']} is {_pts(gap)} above {ref['attack']} "
                  f"({rule})", ev, detectable=detectable)


def _blackbox_fires(k: int, n: int) -> tuple[bool, float]:
    """k black-box-only breaks of n: more than 1 point, and above AutoAttack's tolerance (p)."""
    p = binomial_tail(k, n, THRESHOLDS["blackbox_tolerance"])
    return bool(n) and k / n > THRESHOLDS["blackbox_share"] and p < THRESHOLDS["p_value"], p


def _blackbox_detectable(n: int) -> dict[str, Any]:
    k = next((k for k in range(1, n + 1) if _blackbox_fires(k, n)[0]), None)
    return {"gap": round(k / n, 6) if k else None, "n": n, "paired": True,
            "note": f"{k} examples broken only by the black box" if k else "not detectable at this n"}


def check_blackbox(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Square breaking examples that every gradient attack missed."""
    share_t, alpha = THRESHOLDS["blackbox_share"], THRESHOLDS["p_value"]
    rows = _rows(report)
    n = int(report.get("n", 0))
    ev: dict[str, Any] = {"threshold": share_t, "tolerance": THRESHOLDS["blackbox_tolerance"],
                          "p_threshold": alpha}
    affected: list[str] = []
    reasons: list[str] = []
    found = False
    detectable = None
    black = [r for r in rows.values() if r.get("kind") == "black-box"]
    white = [r for r in rows.values() if r.get("kind") == "white-box"]
    for b in black:
        if not white:
            break
        found = True
        names = [w["attack"] for w in white]
        if _paired(flags, b["attack"], *names):
            survived = torch.stack([flags[a] for a in names]).all(0)
            # k: survived every gradient attack, broken by the black box; c: the reverse.
            c, k = paired_counts(flags[b["attack"]], survived)
            hit, p = _blackbox_fires(k, n)
            # The paper's own argument against masking: a black box scoring below the strongest
            # white-box attack on the same examples (paired, McNemar).
            best = min(white, key=lambda r: r["accuracy"])
            wb_only, bb_only = paired_counts(flags[best["attack"]], flags[b["attack"]])
            p_best = mcnemar_exact(wb_only, bb_only)
            below = b["accuracy"] < best["accuracy"] and p_best < alpha
            ev[b["attack"]] = {"broken_only_by_blackbox": k, "broken_only_by_whitebox": c, "whitebox": names,
                               "n": n, "paired": True, "p_value": float(f"{p:.3g}"),
                               "vs_best_whitebox": {"attack": best["attack"], "whitebox_accuracy": best["accuracy"],
                                                    "blackbox_accuracy": b["accuracy"],
                                                    "whitebox_only_robust": wb_only, "blackbox_only_robust": bb_only,
                                                    "p_value": float(f"{p_best:.3g}")}}
            detectable = _blackbox_detectable(n)
            if hit or below:
                affected += names
            if below:
                reasons.append(f"{b['attack']} leaves {_pct(b['accuracy'])} robust, below {best['attack']}'s "
                               f"{_pct(best['accuracy'])} on the same examples (p = {p_best:.2g})")
            elif hit:
                reasons.append(f"{b['attack']} broke {k} examples that survived every gradient attack")
        else:  # no per-example flags (e.g. a report read back from disk): compare the accuracies
            best = min(white, key=lambda r: r["accuracy"])
            gap = best["accuracy"] - b["accuracy"]
            ev[b["attack"]] = {"gap_to_best_whitebox": round(gap, 6), "whitebox": best["attack"],
                               "paired": False}
            detectable = detectable or _unpaired_gap(int(b["correct"]), n, share_t)
            if gap > share_t and b["ci95"][1] < best["ci95"][0]:
                affected += names
    aa = rows.get("autoattack")
    comps = (aa or {}).get("components") or []
    names = [c["attack"] for c in comps]
    if aa and "square" in names and names.index("square") > 0:
        found = True
        i = names.index("square")
        k = comps[i - 1]["correct"] - comps[i]["correct"]
        hit, p = _blackbox_fires(k, int(aa["n"]))
        ev["autoattack"] = {"broken_only_by_square": k, "n": aa["n"], "after": names[:i],
                            "p_value": float(f"{p:.3g}")}
        detectable = detectable or _blackbox_detectable(int(aa["n"]))
        if hit:
            affected.append("autoattack")
            reasons.append(f"AutoAttack's Square broke {k} examples after {', '.join(names[:i])}")
    if not found:
        need = ([] if black or aa else ["square"]) + ([] if white or aa else ["pgd20"])
        return _check("blackbox_vs_whitebox", "skipped", "needs square next to a gradient attack, or "
                      "autoattack (e.g. --suite paper or --suite autoattack)", needs=need)
    if affected:
        return _check("blackbox_vs_whitebox", "flagged", "; ".join(reasons or ["the black-box Square attack "
                      "broke examples that the gradient attacks could not"]) + ": a black box that sees no "
                      "gradients should not beat attacks that do; their gradients mislead them", ev,
                      sorted(set(affected)), detectable)
    return _check("blackbox_vs_whitebox", "passed", f"Square found (almost) nothing the gradient attacks "
                  f"missed (flagged above {_pts(share_t)} with p < {alpha:g})", ev, detectable=detectable)


def check_more_steps(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """More PGD steps must not leave more examples robust, and iterating must achieve something."""
    gap_t, alpha = THRESHOLDS["more_steps_gap"], THRESHOLDS["p_value"]
    rows = _rows(report)
    steps = {a: int(r["settings"]["steps"]) for a, r in rows.items()
             if a in CE_ATTACKS and isinstance(r.get("settings", {}).get("steps"), (int, float))}
    multi = [a for a in steps if steps[a] > 1]
    if not multi:
        return _check("more_steps", "skipped", "needs a multi-step CE attack (pgd20, pgd100, ...)",
                      needs=["pgd20"])
    ev: dict[str, Any] = {"steps": steps, "accuracy": {a: rows[a]["accuracy"] for a in steps}}
    affected: list[str] = []
    reasons = []
    detectable = None
    for a in steps:  # (i) significantly more robust examples under the longer attack
        for b in steps:
            ra, rb = rows[a], rows[b]
            if steps[a] >= steps[b]:
                continue
            n = int(rb["n"])
            if _paired(flags, a, b) and ra["n"] == rb["n"]:
                more, fewer = paired_counts(flags[b], flags[a])  # b robust where a broke, and back
                p = mcnemar_exact(more, fewer)
                ev.setdefault("paired", {})[f"{b}>{a}"] = {"longer_only": more, "shorter_only": fewer,
                                                          "p_value": float(f"{p:.3g}")}
                hit = more - fewer >= _at_least(gap_t, n) and p < alpha
                detectable = _paired_gap("longer attack robust, shorter broke", gap_t, n)
            else:
                hit = rb["accuracy"] - ra["accuracy"] > gap_t and rb["ci95"][0] > ra["ci95"][1]
                detectable = detectable or _unpaired_gap(int(ra["correct"]), n, gap_t)
            if hit:
                affected.append(b)
                reasons.append(f"{b} ({steps[b]} steps) {_pct(rb['accuracy'])} > {a} ({steps[a]}) "
                               f"{_pct(ra['accuracy'])}")
    clean = rows.get("clean")
    best = min(multi, key=lambda a: rows[a]["accuracy"])
    if clean is not None:  # (ii) the iterative attack changes (almost) nothing at all
        drop = clean["accuracy"] - rows[best]["accuracy"]
        substantial = clean["accuracy"] >= _chance(report) + THRESHOLDS["substantial_above_chance"]
        big_enough = rows[best]["n"] >= THRESHOLDS["more_steps_min_n"]
        ev["clean_minus_best"] = {"attack": best, "drop": round(drop, 6), "substantial": substantial,
                                  "n": rows[best]["n"]}
        if substantial and big_enough and drop < gap_t and not rows[best].get("cascaded"):
            affected += multi
            reasons.append(f"{best} lowers accuracy by only {_pts(drop)} from clean")
        detectable = detectable or {"gap": round(gap_t, 6), "n": int(rows[best]["n"]), "paired": True,
                                    "note": "a drop from clean below this is flagged"}
    if affected:
        return _check("more_steps", "flagged", "; ".join(reasons) + ": iterating does not help, so "
                      "the gradients do not lead to adversarial examples", ev, sorted(set(affected)), detectable)
    if len(steps) < 2 and clean is None:
        return _check("more_steps", "skipped", "needs two CE attacks with different step counts or "
                      "the clean accuracy", needs=["clean"])
    return _check("more_steps", "passed", "more steps never left significantly more examples robust, "
                  f"and {best} lowers accuracy", ev, detectable=detectable)


def _shifted_mcnemar(b: int, c: int, n: int, tolerance: float) -> float:
    """p-value of "the first attack leaves more than ``tolerance`` of n more examples robust".

    The null hypothesis is the boundary E[b − c] = tolerance·n: given the d = b + c discordant
    examples, b ~ Binomial(d, ½ + tolerance·n / 2d). With tolerance 0 this is McNemar's exact
    test (:func:`robustzoo.eval.mcnemar_exact`).
    """
    d = int(b) + int(c)
    if d == 0:
        return 1.0
    p0 = min(1.0, 0.5 + tolerance * n / (2 * d))
    return binomial_tail(int(b), d, p0)


def _shifted_detectable(n: int, tolerance: float) -> dict[str, Any]:
    """Smallest gap the tolerance-shifted paired test can flag at n (all discordant examples one way)."""
    alpha = THRESHOLDS["p_value"]
    k = next((k for k in range(1, n + 1) if k > tolerance * n and _shifted_mcnemar(k, 0, n, tolerance) < alpha),
             None)
    return {"gap": round(k / n, 6) if k else None, "n": n, "paired": True,
            "note": f"{k} examples robust only under the CE attack, none the other way" if k else
                    "not detectable at this n"}


def check_ce_vs_margin(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None
                       ) -> dict[str, Any]:
    """An iterative CE attack must not leave clearly more examples robust than a margin-loss attack.

    Saturating or rescaling the softmax (label smoothing, logit scaling, calibrated or soft
    targets) stalls the cross-entropy's gradient but not a logit margin's (CW∞, DLR). On honest
    models the two agree within about a point; the check flags a CE attack whose surplus of
    robust examples over the strongest margin attack on the same examples exceeds
    ``ce_margin_tolerance`` (1 point) by more than chance explains (paired, exact test at
    p < 0.01), and marks that CE attack suspect.
    """
    tol, alpha = THRESHOLDS["ce_margin_tolerance"], THRESHOLDS["p_value"]
    rows = _rows(report)
    ce = [r for a, r in rows.items() if a in CE_ATTACKS and a != "fgsm"]
    margin = [r for a, r in rows.items() if a in MARGIN_ATTACKS]
    if not ce or not margin:
        need = ([] if ce else ["pgd20"]) + ([] if margin else ["cw"])
        return _check("ce_vs_margin", "skipped", "needs an iterative CE attack (pgd20, ...) and a margin-loss "
                      "attack (cw, apgd-dlr) on the same examples", needs=need)
    ref = min(margin, key=lambda r: r["accuracy"])
    n = int(ref["n"])
    ev: dict[str, Any] = {"reference": ref["attack"], "reference_accuracy": ref["accuracy"],
                          "tolerance": tol, "p_threshold": alpha, "by_attack": {}}
    fired = []
    for r in ce:
        gap = r["accuracy"] - ref["accuracy"]
        if _paired(flags, r["attack"], ref["attack"]) and int(r["n"]) == n:
            b, c = paired_counts(flags[r["attack"]], flags[ref["attack"]])
            p = _shifted_mcnemar(b, c, n, tol)
            hit = (b - c) > tol * n and p < alpha
            ev["by_attack"][r["attack"]] = {"gap": round(gap, 6), "ce_only": b, "margin_only": c,
                                            "p_value": float(f"{p:.3g}"), "paired": True}
        else:
            hit = gap > tol and r["ci95"][0] > ref["ci95"][1]
            ev["by_attack"][r["attack"]] = {"gap": round(gap, 6), "paired": False}
        if hit:
            fired.append((r, gap))
    paired = all(v.get("paired") for v in ev["by_attack"].values())
    detectable = (_shifted_detectable(n, tol) if paired else _unpaired_gap(int(ref["correct"]), n, tol))
    if fired:
        worst, gap = max(fired, key=lambda x: x[1])
        p = ev["by_attack"][worst["attack"]].get("p_value")
        return _check("ce_vs_margin", "flagged", f"{worst['attack']} leaves {_pts(gap)} more examples robust "
                      f"than {ref['attack']} on the same examples" + (f" (p = {p:.2g} against a "
                      f"{_pts(tol)} tolerance)" if p is not None else "") + ": the CE loss overstates "
                      "robustness on this model (saturated or rescaled softmax); trust the margin-loss "
                      "number", ev, [r["attack"] for r, _ in fired], detectable)
    best = min(ce, key=lambda r: r["accuracy"])
    return _check("ce_vs_margin", "passed", f"{best['attack']} is within {_pts(tol)} of {ref['attack']} or "
                  "the difference is within chance", ev, detectable=detectable)


def _loss_family(attack: str) -> str | None:
    """'ce' or 'dlr' (a logit margin): the loss an attack's gradients come from."""
    if attack in CE_ATTACKS:
        return "ce"
    if attack in MARGIN_ATTACKS:
        return "dlr"
    return None


def _masked_losses(report: dict[str, Any], probes: dict[str, Any] | None) -> set[str]:
    """The losses the probes find masked: many exactly-zero input gradients, or no progress at 4ε."""
    p = probes or {}
    out = set()
    zg = p.get("zero_grad") or {}
    limit = _chance(report) + THRESHOLDS["large_eps_margin"]
    by_loss = (p.get("large_eps") or {}).get("by_loss") or {}
    for loss in ("ce", "dlr"):
        if float((zg.get(loss) or {}).get("share", 0.0)) > THRESHOLDS["zero_grad_share"]:
            out.add(loss)
        lo = (by_loss.get(loss) or {}).get("ci95")
        if lo and lo[0] > limit:
            out.add(loss)
    return out


def check_noop(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None,
               probes: dict[str, Any] | None = None) -> dict[str, Any]:
    """An attack with ε > 0 that breaks nothing while others break the same model did not run.

    Its accuracy equals clean accuracy on every example, so as a robust number it is the clean
    number. When another attack of the report, or the probe's PGD-10 at ε on a sample of the
    same examples, breaks enough of them that the difference cannot be chance (McNemar, all
    discordant examples one way), the report fails: a no-op must never be published.
    """
    rows = _rows(report)
    clean = rows.get("clean")
    eps = float(report.get("eps") or 0.0)
    attacked = [r for a, r in rows.items() if a != "clean" and r.get("kind") != "none"]
    if eps <= 0:
        return _check("noop", "skipped", "ε = 0: every attack equals clean accuracy by definition")
    if clean is None or not attacked:
        return _check("noop", "skipped", "needs the clean row and an attack",
                      needs=([] if clean else ["clean"]) + ([] if attacked else ["pgd20"]))
    need = smallest_sign_count(THRESHOLDS["p_value"])

    def broken(r: dict[str, Any]) -> int:
        if _paired(flags, "clean", r["attack"]):
            return int((flags["clean"].bool() & ~flags[r["attack"]].bool()).sum())
        return int(clean["correct"]) - int(r["correct"])

    counts = {r["attack"]: broken(r) for r in attacked}
    masked = _masked_losses(report, probes)
    probe = (probes or {}).get("at_eps") or {}
    ev: dict[str, Any] = {"broken": counts, "needed": need,
                          "probe": {k: probe[k] for k in ("attack", "n", "broken") if k in probe}}
    detectable = {"gap": None, "n": int(clean["n"]), "paired": True,
                  "note": f"an attack that breaks none of what another breaks {need}+ of"}
    failed, excused = [], []
    for r in attacked:
        if counts[r["attack"]] != 0 or r.get("cascaded"):
            continue
        if _loss_family(r["attack"]) in masked:
            # Its loss is measurably masked on this model (zero gradients, no progress at 4ε):
            # gradient masking, which the masking checks flag, not an attack that did not act.
            excused.append(r["attack"])
            continue
        others = {a: k for a, k in counts.items() if a != r["attack"] and k >= need}
        ref = max(others.items(), key=lambda kv: kv[1]) if others else None
        if ref is None and int(probe.get("broken", 0)) >= need:
            ref = (f"PGD-10 at ε on {probe['n']} of the same examples", int(probe["broken"]))
        if ref is not None:
            failed.append((r["attack"], ref))
    if failed:
        names = [a for a, _ in failed]
        a, (ref, k) = failed[0]
        return _check("noop", "failed", f"{a} broke none of the {clean['correct']} correctly classified "
                      f"examples while {ref} broke {k} of them: the attack did not act (a setting or a bug "
                      "made it a no-op); its number is clean accuracy, not robustness", ev, names, detectable)
    if excused:
        ev["masked_losses"] = sorted(masked)
        return _check("noop", "passed", f"{', '.join(excused)} broke nothing, but the probes show its loss "
                      f"masked on this model ({', '.join(sorted(masked))}): gradient masking, flagged by the "
                      "checks above, not an attack that did not act", ev, detectable=detectable)
    zero = [a for a, k in counts.items() if k == 0]
    if zero:
        return _check("noop", "passed", f"{', '.join(zero)} broke nothing, and nothing else breaks these "
                      "examples either", ev, detectable=detectable)
    return _check("noop", "passed", "every attack broke some examples", ev, detectable=detectable)


def _large_eps_detectable(n: int, limit: float) -> dict[str, Any]:
    k = next((k for k in range(n + 1) if wilson_interval(k, n)[0] > limit), None)
    return {"gap": round(k / n - limit + THRESHOLDS["large_eps_margin"], 6) if k is not None and n else None,
            "n": n, "note": "accuracy above chance at 4ε needed to flag"}


def check_large_eps(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """Accuracy at 4ε should fall to about chance or below (PGD-20 on CE and on DLR)."""
    p = (probes or {}).get("large_eps")
    if not p:
        return _check("large_eps", "skipped", "no large-ε probe was run (health probes off or ε = 0)")
    chance = _chance(report)
    limit = chance + THRESHOLDS["large_eps_margin"]
    ev = dict(p, chance=round(chance, 6), limit=round(limit, 6))
    ce = p.get("by_loss", {}).get("ce", p)
    detectable = _large_eps_detectable(int(p["n"]), limit)
    if p["ci95"][0] > limit:  # neither loss gets anywhere: every gradient attack is in doubt
        return _check("large_eps", "flagged", f"PGD-20 at ε={p['eps']:.4g} (4× the budget) still leaves "
                      f"{_pct(p['accuracy'])} correct under both CE and DLR, well above chance "
                      f"({_pct(chance)})", ev, _gradient_rows(report), detectable)
    if ce["ci95"][0] > limit:
        return _check("large_eps", "flagged", f"PGD-20 on CE at ε={p['eps']:.4g} (4× the budget) still "
                      f"leaves {_pct(ce['accuracy'])} correct (DLR: {_pct(p['accuracy'])}): the CE loss is "
                      "masked", ev, _ce_rows(report), detectable)
    return _check("large_eps", "passed", f"accuracy at 4ε is {_pct(p['accuracy'])} (chance {_pct(chance)})",
                  ev, detectable=detectable)


def check_eps0(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """An attack with ε = 0 must reproduce the clean predictions."""
    p = (probes or {}).get("eps0")
    if not p:
        return _check("eps0", "skipped", "no ε = 0 probe was run")
    k, n = p["differ"], p["n"]
    need = max(int(THRESHOLDS["eps0_min_examples"]), math.floor(THRESHOLDS["eps0_share"] * n) + 1)
    detectable = {"gap": round(need / n, 6) if n else None, "n": n, "note": f"{need} changed predictions"}
    if k >= THRESHOLDS["eps0_min_examples"] and n and k / n > THRESHOLDS["eps0_share"]:
        randomised = bool(((probes or {}).get("randomness") or {}).get("randomised"))
        # A randomised model explains the change; rows measured with EoT handle it.
        affected = [r["attack"] for r in report.get("results", [])
                    if r["attack"] != "clean" and not (randomised and _uses_eot(r))]
        return _check("eps0", "flagged", f"{p['attack']} with ε = 0 changed {k} of {n} predictions: the "
                      "model is randomised or stateful, or the attack leaves the ε-ball", p, affected, detectable)
    return _check("eps0", "passed", f"{p['attack']} with ε = 0 changed {k} of {n} predictions", p,
                  detectable=detectable)


def check_zero_grad(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """Share of correctly classified examples whose input gradient is exactly zero."""
    p = (probes or {}).get("zero_grad")
    if not p or not p.get("n"):
        return _check("zero_grad", "skipped", "no gradient probe was run (or no correct examples)")
    t = THRESHOLDS["zero_grad_share"]
    ce = p.get("ce", {}).get("share", 0.0)
    dlr = p.get("dlr", {}).get("share", ce)
    need = math.floor(t * p["n"]) + 1
    detectable = {"gap": round(need / p["n"], 6), "n": p["n"], "note": f"{need} examples with zero gradient"}
    if dlr > t and ce > t:
        return _check("zero_grad", "flagged", f"{_pct(min(ce, dlr))} of correctly classified examples have "
                      "an exactly-zero input gradient for CE and DLR: gradient attacks cannot move them",
                      p, _gradient_rows(report), detectable)
    if ce > t:
        return _check("zero_grad", "flagged", f"{_pct(ce)} of correctly classified examples have an "
                      f"exactly-zero CE input gradient (DLR: {_pct(dlr)}): CE attacks cannot move them",
                      p, _ce_rows(report), detectable)
    return _check("zero_grad", "passed", f"{_pct(ce)} of examples have an all-zero CE gradient", p,
                  detectable=detectable)


def _ce_rows(report: dict[str, Any]) -> list[str]:
    return [r["attack"] for r in report.get("results", []) if r["attack"] in CE_ATTACKS]


def _gradient_rows(report: dict[str, Any]) -> list[str]:
    return [r["attack"] for r in report.get("results", []) if r.get("kind") in GRADIENT_KINDS]


def assess(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None,
           probes: dict[str, Any] | None = None) -> dict[str, Any]:
    """All checks on an eval.json dictionary; returns the ``health`` block (nothing is changed).

    Args:
        report: the evaluation dictionary (``results`` rows with accuracy, ci95, n, kind, settings).
        flags: optional per-example "still correct" flags by attack name (paired comparisons).
        probes: the probes (:func:`run_probes` plus ``degenerate`` and ``randomness``;
            defaults to ``report['health']['probes']``).

    Returns:
        ``{"status", "flagged", "failed", "checks", "probes", "thresholds"}``; status is
        ``failed`` when a check failed, else ``suspect`` when one is flagged, else ``passed``.
    """
    if probes is None:
        probes = (report.get("health") or {}).get("probes")
    checks = [check_pgd_vs_apgd(report, flags), check_ce_vs_margin(report, flags), check_blackbox(report, flags),
              check_more_steps(report, flags), check_large_eps(report, probes), check_eps0(report, probes),
              check_zero_grad(report, probes), check_randomised(report, probes), check_noop(report, flags, probes),
              check_degenerate(report, probes)]
    flagged = [c["name"] for c in checks if c["status"] == "flagged"]
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    status = "failed" if failed else "suspect" if flagged else "passed"
    return {"status": status, "flagged": flagged, "failed": failed, "checks": checks,
            "probes": probes or {}, "thresholds": dict(THRESHOLDS)}


def apply(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None,
          probes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`assess`, store it as ``report['health']`` and mark affected rows suspect."""
    health = assess(report, flags, probes)
    report["health"] = health
    for r in report.get("results", []):
        r.pop("suspect", None)
        r.pop("suspect_because", None)
    rows = _rows(report)
    for c in health["checks"]:
        if c["status"] not in ("flagged", "failed"):
            continue
        for a in c["affects"]:
            if a in rows:
                rows[a]["suspect"] = True
                rows[a].setdefault("suspect_because", []).append(c["name"])
    w = report.get("worst_case")
    if w is not None:
        w["suspect"] = bool(w["attacks"]) and all(rows.get(a, {}).get("suspect") for a in w["attacks"])
    return report


def flagged_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The flagged and failed checks of an evaluated report (for model cards)."""
    return [c for c in (report.get("health") or {}).get("checks", []) if c["status"] in ("flagged", "failed")]


# --- probes -----------------------------------------------------------------------------------

def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example DLR loss of Croce & Hein (2020), as APGD-DLR ascends it (scale-invariant)."""
    srt, idx = logits.sort(dim=1)
    top_is_y = (idx[:, -1] == y).float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = srt[:, -2] * top_is_y + srt[:, -1] * (1.0 - top_is_y)
    return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def _neg_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−(z_y − max_{k≠y} z_k): ascending it lowers the margin; scale-free in its sign steps."""
    return -cw_margin(logits, y)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        logits = model(xg)
        (g,) = torch.autograd.grad(loss(logits, y).sum(), [xg])
    return g, logits.detach()


def run_probes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: Any, attack: Any = None,
               batch_size: int = 256) -> dict[str, Any]:
    """Three cheap measurements on a small sample (about 60 forward-backward passes per image).

    Args:
        model: in eval mode, [0,1] images to logits.
        x, y: the sample (e.g. 256 examples of the evaluation set), on the model's device.
        ctx: the evaluation's AttackContext (ε, α, seed, number of classes).
        attack: AttackSpec run with ε = 0 (default: pgd20 from the registry).

    Returns:
        ``{"zero_grad": {...}, "eps0": {...}, "large_eps": {...}}`` (``large_eps`` only when
        ε > 0). ``zero_grad`` and ``large_eps`` are measured for the CE loss and for the
        scale-invariant DLR loss, so CE-only masking (saturated softmax) is told apart from
        masking every gradient attack suffers (quantisation).
    """
    if attack is None:
        attack = registry("attacks").get("pgd20")
    model.eval()
    n = len(y)
    use_dlr = ctx.num_classes >= 3  # DLR divides by z_(1) - z_(3)
    losses = {"ce": ce_loss, **({"dlr": dlr_loss} if use_dlr else {})}
    zero = {k: 0 for k in losses}
    zero_entries = {k: 0 for k in losses}
    total_entries = counted = differ = 0
    large = {k: torch.zeros(0, dtype=torch.bool) for k in losses}
    big = min(THRESHOLDS["large_eps_factor"] * float(ctx.eps), 1.0)
    big_alpha = 2.5 * big / 20  # Madry et al.'s rule: 2.5·ε / steps
    at_eps_broken = 0  # the no-op check's reference: PGD-10 on the logit margin at the real ε
    for s in range(0, n, batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        torch.manual_seed(int(ctx.seed) * 7919 + s)
        ok = None
        for name, loss in losses.items():
            g, logits = _input_grad(model, xb, yb, loss)
            ok = logits.argmax(1) == yb if ok is None else ok
            gz = (g == 0).flatten(1)
            zero[name] += int(gz.all(1)[ok].sum())
            zero_entries[name] += int(gz[ok].sum())
        total_entries += int(ok.sum()) * xb[0].numel()
        counted += int(ok.sum())
        with torch.no_grad():
            pred = model(xb).argmax(1)
        x0 = attack.run(model, xb, yb, replace(ctx, eps=0.0, alpha=0.0))
        with torch.no_grad():
            differ += int((model(x0).argmax(1) != pred).sum())
        if ctx.eps > 0:
            xm = pgd(model, xb, yb, eps=float(ctx.eps), alpha=2.5 * float(ctx.eps) / 10, steps=10, norm=ctx.norm,
                     rand_init="uniform", loss=_neg_margin)
            with torch.no_grad():
                at_eps_broken += int((ok & (model(xm).argmax(1) != yb)).sum())
        if big > 0:
            for name, loss in losses.items():
                xl = pgd(model, xb, yb, eps=big, alpha=big_alpha, steps=20, norm=ctx.norm,
                         rand_init="uniform", loss=loss)
                with torch.no_grad():
                    large[name] = torch.cat([large[name], (model(xl).argmax(1) == yb).cpu()])
    out: dict[str, Any] = {"zero_grad": {"n": counted}}
    for name in losses:
        out["zero_grad"][name] = {
            "zero_examples": zero[name], "share": round(zero[name] / counted, 6) if counted else 0.0,
            "zero_entries_share": round(zero_entries[name] / total_entries, 6) if total_entries else 0.0}
    out["eps0"] = {"attack": attack.name, "n": n, "differ": differ}
    if ctx.eps > 0:
        out["at_eps"] = {"attack": "pgd10-margin", "eps": float(ctx.eps), "steps": 10, "n": n,
                         "correct": counted, "broken": at_eps_broken}
    if big > 0:
        per_loss = {}
        for name, flags in large.items():
            lo, hi = wilson_interval(int(flags.sum()), n)
            per_loss[name] = {"correct": int(flags.sum()), "accuracy": round(float(flags.float().mean()), 6),
                              "ci95": [round(lo, 6), round(hi, 6)]}
        both = torch.stack(list(large.values())).all(0)
        lo, hi = wilson_interval(int(both.sum()), n)
        out["large_eps"] = {"eps": round(big, 6), "steps": 20, "alpha": round(big_alpha, 6), "n": n,
                            "correct": int(both.sum()), "accuracy": round(float(both.float().mean()), 6),
                            "ci95": [round(lo, 6), round(hi, 6)], "by_loss": per_loss}
    return out


@contextlib.contextmanager
def exact_forwards(device: torch.device | str) -> Iterator[None]:
    """Forwards in true fp32: autocast off, TF32 off, deterministic algorithms where PyTorch has them.

    Restores every switch on exit. Deterministic algorithms are asked for with ``warn_only``
    (an op without a deterministic version still runs) and their warnings are silenced.
    """
    kind = torch.device(device).type
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_cudnn = torch.backends.cudnn.deterministic
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        with warnings.catch_warnings(), tf32_disabled(kind == "cuda"), \
                torch.autocast(device_type=kind, enabled=False):
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.deterministic = old_cudnn


def randomness_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0,
                     batch_size: int = 256, passes: int | None = None) -> dict[str, Any]:
    """Forward the same images several times: does the model itself draw random numbers?

    The forwards run in exact fp32 (:func:`exact_forwards`: no autocast, no TF32,
    deterministic kernels where available), so rounding noise of reduced precision or of
    nondeterministic kernels is not mistaken for randomness. The model is randomised when
    logits normalised to unit L2 norm differ between two passes by more than the threshold:
    AutoAttack's ``check_randomized`` 1e-4, or ``randomness_ulps`` (8) units of the logits'
    dtype resolution when the model returns a coarser dtype (bf16: 8 × 2⁻⁷ ≈ 0.06), whichever
    is larger. Prediction changes are counted and reported; alone they do not decide (a tie
    broken by rounding is not randomness). Run under ``torch.manual_seed(seed)`` so a
    randomised model's result is reproducible.
    """
    passes = int(passes or THRESHOLDS["randomness_passes"])
    model.eval()
    torch.manual_seed(int(seed) * 7919 + 17)
    max_diff, changed = 0.0, 0
    dtype = None
    with torch.no_grad(), exact_forwards(x.device):
        for s in range(0, len(y), batch_size):
            xb = x[s:s + batch_size]
            outs = []
            for _ in range(passes):
                raw = model(xb)
                dtype = raw.dtype
                o = raw.float()
                outs.append(o / (o.flatten(1).norm(dim=1, keepdim=True) + 1e-10))
            preds = torch.stack([o.argmax(1) for o in outs])
            changed += int((preds != preds[0]).any(0).sum())
            for i in range(passes - 1):
                for j in range(i + 1, passes):
                    d = (outs[i] - outs[j]).flatten(1).norm(dim=1)
                    d = torch.nan_to_num(d, nan=0.0)  # NaN logits are the degenerate check's job
                    max_diff = max(max_diff, float(d.max()) if len(d) else 0.0)
    resolution = float(torch.finfo(dtype).eps) if dtype is not None and dtype.is_floating_point else 0.0
    thr = max(float(THRESHOLDS["randomness_logit_diff"]), THRESHOLDS["randomness_ulps"] * resolution)
    return {"n": len(y), "passes": passes, "max_logit_diff": float(f"{max_diff:.4g}"), "changed": changed,
            "threshold": float(f"{thr:.4g}"), "dtype": str(dtype).replace("torch.", "") if dtype else None,
            "resolution": float(f"{resolution:.4g}"), "exact_fp32": True, "randomised": bool(max_diff > thr)}


def degenerate_probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
                     ) -> dict[str, Any]:
    """Non-finite weights and outputs, and how many classes the model predicts on (x, y)."""
    bad_params = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            bad_params += int((~torch.isfinite(t.detach())).sum())
    bad_out = 0
    preds = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(y), batch_size):
            o = model(x[s:s + batch_size]).float()
            bad_out += int((~torch.isfinite(o)).flatten(1).any(1).sum())
            preds.append(o.argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return {"n": len(y), "nonfinite_parameters": bad_params, "nonfinite_outputs": bad_out,
            "distinct_predictions": int(pred.unique().numel()), "distinct_labels": int(y.unique().numel())}

