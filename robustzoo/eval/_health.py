"""Gradient-masking health report: is a robust-accuracy number believable?

A defence that hides its gradients (saturated softmax, non-differentiable preprocessing,
randomness) makes gradient attacks fail without being robust; the number then measures the
attack, not the model. Each check below is a known signature of that (Athalye et al. 2018;
Carlini et al. 2019, "On evaluating adversarial robustness"; Croce & Hein 2020). The checks
are pure functions of an eval.json dictionary (plus, when given, the per-example flags and
three cheap probes from :func:`run_probes`); every check returns its name, a status
(``passed`` / ``flagged`` / ``skipped``), the numbers it used and a one-line explanation.
A flagged check marks the results it casts doubt on as ``"suspect": true``.

Thresholds (:data:`THRESHOLDS`; fractions of the evaluated examples, so 0.05 = 5 points):

* ``pgd_vs_apgd`` — the strongest iterative CE attack (pgd, pgd20, pgd100, apgd-ce) is more
  than 5 points above APGD-DLR / APGD-T / AutoAttack *and* the two 95% Wilson intervals do
  not overlap. Honest models show 2–5 points between PGD-20 and AutoAttack (TRADES
  WRN-34-10: 56.6 vs 53.1); CE-specific masking shows tens of points (Customized AT
  re-implemented: 68.1 under PGD-20, 23.9 under APGD-DLR). FGSM is not the comparison (it
  is weak by design) but is marked suspect with the others when it is as far above.
* ``blackbox_vs_whitebox`` — Square (no gradients) breaks more than 1% (and at least 3) of
  the examples that survived every gradient attack (paired, from the per-example flags), or
  AutoAttack's own Square component does so after APGD-CE, APGD-T and FAB-T. A black box
  should not beat white-box attacks that see the model; AutoAttack's own check warns at 0.2
  points, we ask for a bit more before calling a number suspect.
* ``more_steps`` — (i) an attack with more PGD steps leaves significantly *more* examples
  robust (> 1 point, non-overlapping intervals), or (ii) with at least 100 examples and a
  clean accuracy 10+ points above chance, the best multi-step CE attack lowers accuracy by
  less than 1 point from clean: iterating achieves nothing. Equal PGD-20 and PGD-100
  numbers are *not* flagged (a converged attack on an honest model gives exactly that), nor
  is PGD equal to FGSM (on a nearly linear model FGSM is already optimal).
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

from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..attacks import ce_loss, pgd
from ..plugins import registry
from ._stats import wilson_interval

THRESHOLDS: dict[str, float] = {
    "pgd_vs_apgd_gap": 0.05,
    "blackbox_share": 0.01,
    "blackbox_min_examples": 3,
    "more_steps_gap": 0.01,
    "more_steps_min_n": 100,
    "substantial_above_chance": 0.10,
    "large_eps_factor": 4.0,
    "large_eps_margin": 0.05,
    "eps0_share": 0.005,
    "eps0_min_examples": 2,
    "zero_grad_share": 0.05,
    "probe_n": 256,
}

#: Attacks that ascend the cross-entropy loss (the ones CE-specific masking fools).
CE_ATTACKS = ("fgsm", "pgd", "pgd20", "pgd100", "apgd-ce")
#: Attacks on scale-invariant / targeted losses that CE masking does not fool.
STRONG_ATTACKS = ("apgd-dlr", "apgd-t", "autoattack")
GRADIENT_KINDS = ("white-box", "ensemble")


def _check(name: str, status: str, explanation: str, evidence: dict[str, Any] | None = None,
           affects: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "evidence": evidence or {}, "explanation": explanation,
            "affects": affects or []}


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["attack"]: r for r in report.get("results", [])}


def _chance(report: dict[str, Any]) -> float:
    c = report.get("num_classes") or 10
    return 1.0 / float(c)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pts(v: float) -> str:
    return f"{100 * v:.1f} points"


def check_pgd_vs_apgd(report: dict[str, Any]) -> dict[str, Any]:
    """The strongest iterative CE attack well above a DLR / targeted / AutoAttack number."""
    t = THRESHOLDS["pgd_vs_apgd_gap"]
    rows = _rows(report)
    ce = [r for a, r in rows.items() if a in CE_ATTACKS]
    iterative = [r for r in ce if r["attack"] != "fgsm"]
    strong = [r for a, r in rows.items() if a in STRONG_ATTACKS]
    if not iterative or not strong:
        return _check("pgd_vs_apgd", "skipped", "needs an iterative CE attack (pgd20, ...) and apgd-dlr "
                      "or autoattack on the same examples (e.g. --suite quick)")
    ref = min(strong, key=lambda r: r["accuracy"])
    best_ce = min(iterative, key=lambda r: r["accuracy"])
    gap = best_ce["accuracy"] - ref["accuracy"]
    ev = {"ce_attack": best_ce["attack"], "ce_accuracy": best_ce["accuracy"], "ce_ci95": best_ce["ci95"],
          "reference": ref["attack"], "reference_accuracy": ref["accuracy"], "reference_ci95": ref["ci95"],
          "gap": round(gap, 6), "threshold": t,
          "cascaded": bool(ref.get("cascaded") or best_ce.get("cascaded"))}
    if gap > t and best_ce["ci95"][0] > ref["ci95"][1]:
        # Every CE row at least as far above the reference is suspect (FGSM included).
        affected = [r["attack"] for r in ce
                    if r["accuracy"] - ref["accuracy"] > t and r["ci95"][0] > ref["ci95"][1]]
        return _check("pgd_vs_apgd", "flagged", f"{best_ce['attack']} leaves {_pts(gap)} more examples "
                      f"robust than {ref['attack']}: the CE loss is likely masked", ev, affected)
    return _check("pgd_vs_apgd", "passed", f"{best_ce['attack']} is {_pts(gap)} above {ref['attack']} "
                  f"(flagged above {_pts(t)} with separate 95% intervals)", ev)


def check_blackbox(report: dict[str, Any], flags: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Square breaking examples that every gradient attack missed."""
    share_t, min_k = THRESHOLDS["blackbox_share"], int(THRESHOLDS["blackbox_min_examples"])
    rows = _rows(report)
    n = int(report.get("n", 0))
    ev: dict[str, Any] = {"threshold": share_t, "min_examples": min_k}
    affected: list[str] = []
    found = False
    black = [r for r in rows.values() if r.get("kind") == "black-box"]
    white = [r for r in rows.values() if r.get("kind") == "white-box"]
    for b in black:
        if not white:
            break
        found = True
        names = [w["attack"] for w in white]
        if flags is not None and b["attack"] in flags and all(a in flags for a in names):
            survived = torch.stack([flags[a] for a in names]).all(0)
            k = int((survived & ~flags[b["attack"]]).sum())
            ev[b["attack"]] = {"broken_only_by_blackbox": k, "whitebox": names, "n": n, "paired": True}
            if n and k >= min_k and k / n > share_t:
                affected += names
        else:  # no per-example flags (e.g. a merged eval.json): compare the accuracies
            best = min(white, key=lambda r: r["accuracy"])
            gap = best["accuracy"] - b["accuracy"]
            ev[b["attack"]] = {"gap_to_best_whitebox": round(gap, 6), "whitebox": best["attack"],
                               "paired": False}
            if gap > share_t and b["ci95"][1] < best["ci95"][0]:
                affected += names
    aa = rows.get("autoattack")
    comps = (aa or {}).get("components") or []
    names = [c["attack"] for c in comps]
    if aa and "square" in names and names.index("square") > 0:
        found = True
        i = names.index("square")
        k = comps[i - 1]["correct"] - comps[i]["correct"]
        ev["autoattack"] = {"broken_only_by_square": k, "n": aa["n"], "after": names[:i]}
        if aa["n"] and k >= min_k and k / aa["n"] > share_t:
            affected.append("autoattack")
    if not found:
        return _check("blackbox_vs_whitebox", "skipped", "needs square next to a gradient attack, or "
                      "autoattack (e.g. --suite paper or --suite autoattack)")
    if affected:
        return _check("blackbox_vs_whitebox", "flagged", "the black-box Square attack broke examples "
                      "that the gradient attacks could not: their gradients mislead them", ev,
                      sorted(set(affected)))
    return _check("blackbox_vs_whitebox", "passed", "Square found (almost) nothing the gradient "
                  "attacks missed", ev)


def check_more_steps(report: dict[str, Any]) -> dict[str, Any]:
    """More PGD steps must not leave more examples robust, and iterating must achieve something."""
    gap_t = THRESHOLDS["more_steps_gap"]
    rows = _rows(report)
    steps = {a: int(r["settings"]["steps"]) for a, r in rows.items()
             if a in CE_ATTACKS and isinstance(r.get("settings", {}).get("steps"), (int, float))}
    multi = [a for a in steps if steps[a] > 1]
    if not multi:
        return _check("more_steps", "skipped", "needs a multi-step CE attack (pgd20, pgd100, ...)")
    ev: dict[str, Any] = {"steps": steps, "accuracy": {a: rows[a]["accuracy"] for a in steps}}
    affected: list[str] = []
    reasons = []
    for a in steps:  # (i) significantly more robust examples under the longer attack
        for b in steps:
            ra, rb = rows[a], rows[b]
            if steps[a] < steps[b] and rb["accuracy"] - ra["accuracy"] > gap_t and rb["ci95"][0] > ra["ci95"][1]:
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
    if affected:
        return _check("more_steps", "flagged", "; ".join(reasons) + ": iterating does not help, so "
                      "the gradients do not lead to adversarial examples", ev, sorted(set(affected)))
    if len(steps) < 2 and clean is None:
        return _check("more_steps", "skipped", "needs two CE attacks with different step counts or "
                      "the clean accuracy")
    return _check("more_steps", "passed", "more steps never left significantly more examples robust, "
                  f"and {best} lowers accuracy", ev)


def check_large_eps(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """Accuracy at 4ε should fall to about chance or below (PGD-20 on CE and on DLR)."""
    p = (probes or {}).get("large_eps")
    if not p:
        return _check("large_eps", "skipped", "no large-ε probe was run (health probes off or ε = 0)")
    chance = _chance(report)
    limit = chance + THRESHOLDS["large_eps_margin"]
    ev = dict(p, chance=round(chance, 6), limit=round(limit, 6))
    ce = p.get("by_loss", {}).get("ce", p)
    if p["ci95"][0] > limit:  # neither loss gets anywhere: every gradient attack is in doubt
        return _check("large_eps", "flagged", f"PGD-20 at ε={p['eps']:.4g} (4× the budget) still leaves "
                      f"{_pct(p['accuracy'])} correct under both CE and DLR, well above chance "
                      f"({_pct(chance)})", ev, _gradient_rows(report))
    if ce["ci95"][0] > limit:
        return _check("large_eps", "flagged", f"PGD-20 on CE at ε={p['eps']:.4g} (4× the budget) still "
                      f"leaves {_pct(ce['accuracy'])} correct (DLR: {_pct(p['accuracy'])}): the CE loss is "
                      "masked", ev, _ce_rows(report))
    return _check("large_eps", "passed", f"accuracy at 4ε is {_pct(p['accuracy'])} (chance {_pct(chance)})",
                  ev)


def check_eps0(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """An attack with ε = 0 must reproduce the clean predictions."""
    p = (probes or {}).get("eps0")
    if not p:
        return _check("eps0", "skipped", "no ε = 0 probe was run")
    k, n = p["differ"], p["n"]
    if k >= THRESHOLDS["eps0_min_examples"] and n and k / n > THRESHOLDS["eps0_share"]:
        affected = [r["attack"] for r in report.get("results", []) if r["attack"] != "clean"]
        return _check("eps0", "flagged", f"{p['attack']} with ε = 0 changed {k} of {n} predictions: the "
                      "model is randomised or stateful, or the attack leaves the ε-ball", p, affected)
    return _check("eps0", "passed", f"{p['attack']} with ε = 0 changed {k} of {n} predictions", p)


def check_zero_grad(report: dict[str, Any], probes: dict[str, Any] | None) -> dict[str, Any]:
    """Share of correctly classified examples whose input gradient is exactly zero."""
    p = (probes or {}).get("zero_grad")
    if not p or not p.get("n"):
        return _check("zero_grad", "skipped", "no gradient probe was run (or no correct examples)")
    t = THRESHOLDS["zero_grad_share"]
    ce = p.get("ce", {}).get("share", 0.0)
    dlr = p.get("dlr", {}).get("share", ce)
    if dlr > t and ce > t:
        return _check("zero_grad", "flagged", f"{_pct(min(ce, dlr))} of correctly classified examples have "
                      "an exactly-zero input gradient for CE and DLR: gradient attacks cannot move them",
                      p, _gradient_rows(report))
    if ce > t:
        return _check("zero_grad", "flagged", f"{_pct(ce)} of correctly classified examples have an "
                      f"exactly-zero CE input gradient (DLR: {_pct(dlr)}): CE attacks cannot move them",
                      p, _ce_rows(report))
    return _check("zero_grad", "passed", f"{_pct(ce)} of examples have an all-zero CE gradient", p)


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
        probes: output of :func:`run_probes` (defaults to ``report['health']['probes']``).
    """
    if probes is None:
        probes = (report.get("health") or {}).get("probes")
    checks = [check_pgd_vs_apgd(report), check_blackbox(report, flags), check_more_steps(report),
              check_large_eps(report, probes), check_eps0(report, probes), check_zero_grad(report, probes)]
    flagged = [c["name"] for c in checks if c["status"] == "flagged"]
    return {"status": "suspect" if flagged else "passed", "flagged": flagged, "checks": checks,
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
        if c["status"] != "flagged":
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
    """The flagged checks of an evaluated report (for model cards): name, explanation, evidence."""
    return [c for c in (report.get("health") or {}).get("checks", []) if c["status"] == "flagged"]


# --- probes -----------------------------------------------------------------------------------

def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example DLR loss of Croce & Hein (2020), as APGD-DLR ascends it (scale-invariant)."""
    srt, idx = logits.sort(dim=1)
    top_is_y = (idx[:, -1] == y).float()
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = srt[:, -2] * top_is_y + srt[:, -1] * (1.0 - top_is_y)
    return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


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
