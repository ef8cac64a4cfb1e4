"""The RobustBench record of a run: ``robustbench.json``, in RobustBench's ``model_info`` format.

RobustBench keeps one JSON object per model (``model_info/<dataset>/<threat model>/<name>.json``
in its repository) with the fields of :data:`FIELDS`. ``robustzoo push`` writes this record
into every published repository and ``robustzoo export robustbench RUN`` prints it, so a model
can be submitted there. Percentages are strings with two decimals, ε is '8/255' for multiples
of 1/255 and the shortest decimal otherwise — as RobustBench writes them.

What robustzoo fills in, and how:

* ``link``, ``name``, ``authors``, ``venue``: the training method's paper
  (:mod:`robustzoo.papers`); the footnote says the weights are a robustzoo reproduction.
* ``clean_acc``, ``autoattack_acc``: from eval.json; ``autoattack_acc`` is null when standard
  AutoAttack was not run (RobustBench ranks by it: run ``robustzoo eval RUN --suite autoattack``).
* ``reported``: the lowest robust accuracy robustzoo measured (the per-example worst case over
  the attacks when eval.json has it), i.e. what the model card headlines.
* ``unreliable``: true when the gradient-masking health report flagged the evaluation or an
  attack is marked suspect.
* ``footnote``: ε that differs from the leaderboard's (0.031 rather than 8/255), evaluations
  on fewer than all test images, a missing health report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cards import ARCH_LABELS, STANDARD_EPS, eps_note, eps_text
from .papers import method_paper

#: RobustBench's model_info fields, in its order.
FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable",
          "threat_model")
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}
__all__ = ["FIELDS", "ROBUSTBENCH_FILE", "STANDARD_EPS", "robustbench_record", "robust_accuracy",
           "is_unreliable"]
#: Test-set sizes, to say when an evaluation used fewer images.
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "mnist": 10_000, "fashion-mnist": 10_000}

ROBUSTBENCH_FILE = "robustbench.json"


def _pct(fraction: float) -> str:
    return f"{100.0 * float(fraction):.2f}"


def _results(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {r["attack"]: r for r in report.get("results", []) if isinstance(r, Mapping) and "attack" in r}


def robust_accuracy(report: Mapping[str, Any]) -> tuple[float, str] | None:
    """The lowest robust accuracy of a report and what it is: (fraction, description)."""
    wc = report.get("worst_case")
    if isinstance(wc, Mapping) and wc.get("attacks"):
        return float(wc["accuracy"]), "worst case over " + ", ".join(wc["attacks"])
    robust = [r for a, r in _results(report).items() if a != "clean"]
    if not robust:
        return None
    low = min(robust, key=lambda r: float(r["accuracy"]))
    return float(low["accuracy"]), str(low["attack"])


def is_unreliable(report: Mapping[str, Any]) -> bool:
    """True when the health report flagged the evaluation or any attack is marked suspect."""
    health = report.get("health")
    if isinstance(health, Mapping) and health.get("status") not in (None, "passed"):
        return True
    return any(r.get("suspect") for r in _results(report).values())


def robustbench_record(config: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """The RobustBench model_info record of a run (its config.json and eval.json).

    Args:
        config: the run's config.json.
        report: the run's evaluation record (eval.json).
    """
    rz = config["robustzoo"]
    dataset = str(report.get("dataset") or rz["dataset"])
    norm = str(rz.get("threat_model", {}).get("norm", "linf"))
    eps = float(report["eps"])
    by_attack = _results(report)
    paper = method_paper(str(rz["objective"]))
    version = rz.get("versions", {}).get("robustzoo", "?")
    recipe = rz.get("config", {}).get("recipe")

    notes = [f"Weights trained and evaluated with robustzoo {version} (objective `{rz['objective']}`"
             + (f", recipe `{recipe}`" if recipe else "") + "); a reproduction of the method, not the "
             "authors' weights."]
    if note := eps_note(dataset, norm, eps):
        notes.append(note)
    aa = by_attack.get("autoattack")
    full = TEST_SIZES.get(dataset)
    if aa is None:
        notes.append("Not evaluated with standard AutoAttack (autoattack_acc is null).")
    elif full is not None and int(aa["n"]) < full:
        notes.append(f"AutoAttack on {int(aa['n'])} of the {full:,} test images.")
    robust = robust_accuracy(report)
    if robust is not None:
        notes.append(f"'reported' is robustzoo's lowest robust accuracy ({robust[1]}).")
    custom = report.get("custom") or {}
    if custom:  # only with --allow-custom (robustzoo.hub.check_publishable)
        notes.append("Custom attack settings (not the standard protocol): " + "; ".join(
            f"{a} " + ", ".join(f"{k}={d.get('value')} (standard {d.get('standard')})" for k, d in diff.items())
            for a, diff in custom.items()) + ".")
    if report.get("precision") and report.get("precision") != "fp32":
        notes.append(f"Evaluated in {report['precision']} (RobustBench's protocol is fp32).")
    if not isinstance(report.get("health"), Mapping):
        notes.append("No gradient-masking health report.")
    elif is_unreliable(report):
        flagged = list((report.get("health") or {}).get("flagged") or []) or [
            a for a, r in by_attack.items() if r.get("suspect")]
        notes.append("robustzoo's health checks flagged: " + ", ".join(flagged) + ".")
    clean = by_attack.get("clean")
    record = {
        "link": paper.link,
        "name": paper.title or str(rz["objective"]),
        "authors": paper.authors,
        "additional_data": False,  # robustzoo trains on the dataset's training split only
        "number_forward_passes": 1,  # deterministic, one forward pass per prediction
        "dataset": dataset,
        "venue": paper.venue,
        "architecture": ARCH_LABELS.get(config["architecture"], config["architecture"]),
        "eps": eps_text(eps),
        "clean_acc": _pct(clean["accuracy"]) if clean else None,
        "reported": _pct(robust[0]) if robust else None,
        "autoattack_acc": _pct(aa["accuracy"]) if aa else None,
        "footnote": " ".join(notes),
        "unreliable": is_unreliable(report),
        "threat_model": THREAT_MODELS.get(norm, norm),
    }
    return {k: record[k] for k in FIELDS}
