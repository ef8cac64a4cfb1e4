"""The RobustBench record of a run: ``robustbench.json``, in RobustBench's ``model_info`` format.

RobustBench keeps one JSON object per model at
``model_info/<dataset>/<Linf|L2>/<Name><Year><FirstWordOfTheTitle>.json`` in its repository
(its README, "Adding a new model"), with the fields of :data:`FIELDS`; its leaderboard and
LaTeX generators read every number as ``float(...)``, so the record has no nulls.
``robustzoo push`` writes this record into a published repository and ``robustzoo export
robustbench RUN`` prints it — both only for a run evaluated with standard AutoAttack, which
RobustBench ranks by. Percentages are strings with two decimals; ε is '8/255' for multiples of
1/255 and the shortest decimal otherwise, as RobustBench writes them.

What robustzoo fills in, and how:

* ``name``: the training method's paper title with "(robustzoo reproduction)", so that the
  row does not read as the authors' own entry; ``link``, ``authors``, ``venue``: the paper
  (:mod:`robustzoo.papers`), which RobustBench's bibtex and LaTeX generators cite.
* ``clean_acc`` and ``autoattack_acc``: the run's canonical record (eval.json), through
  :func:`robustzoo.eval.headline`.
* ``reported``: what RobustBench means by it, the robust accuracy the paper reported for the
  same setting and settings (:func:`robustzoo.papers.reported_accuracy`); left out when the
  paper has no number for it, as RobustBench's own records do.
* ``architecture``: RobustBench's label ('PreActResNet-18', 'WideResNet-34-10').
* ``unreliable``: true when the gradient-masking health report flagged the evaluation or an
  attack is marked suspect.
* ``footnote``: that the weights are a robustzoo reproduction; ε that differs from the
  leaderboard's (0.031 rather than 8/255); AutoAttack on fewer than all test images; a
  missing health report; a dataset RobustBench has no leaderboard for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cards import ARCH_LABELS, STANDARD_EPS, eps_note, eps_text
from .errors import RunError
from .papers import Paper, method_paper, reported_accuracy

#: RobustBench's model_info fields, in the order its own records have them.
FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "unreliable")
#: robustzoo norm -> RobustBench's threat-model folder.
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}
#: The datasets RobustBench has leaderboards for (its BenchmarkDataset values).
BOARDS = ("cifar10", "cifar100", "imagenet")
#: robustzoo architecture -> RobustBench's label for it (its model_info files spell them so).
ARCHITECTURES = {"preact_resnet18": "PreActResNet-18", "wrn34_10": "WideResNet-34-10",
                 "wrn28_10": "WideResNet-28-10"}
__all__ = ["ARCHITECTURES", "BOARDS", "FIELDS", "ROBUSTBENCH_FILE", "STANDARD_EPS", "board_note",
           "has_autoattack", "is_unreliable", "record_path", "robustbench_record"]
#: Test-set sizes, to say when an evaluation used fewer images.
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "mnist": 10_000, "fashion-mnist": 10_000}

ROBUSTBENCH_FILE = "robustbench.json"


def _pct(fraction: float) -> str:
    return f"{100.0 * float(fraction):.2f}"


def _results(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {r["attack"]: r for r in report.get("results", []) if isinstance(r, Mapping) and "attack" in r}


def is_unreliable(report: Mapping[str, Any]) -> bool:
    """True when the health report flagged the evaluation or any attack is marked suspect."""
    health = report.get("health")
    if isinstance(health, Mapping) and health.get("status") not in (None, "passed"):
        return True
    return any(r.get("suspect") for r in _results(report).values())


def board_note(dataset: str) -> str:
    """A sentence when RobustBench has no leaderboard for ``dataset``, else ''."""
    if dataset in BOARDS:
        return ""
    return (f"RobustBench has no {dataset} leaderboard (it has {', '.join(BOARDS)}): the record follows its "
            f"format but cannot be submitted there.")


def has_autoattack(report: Mapping[str, Any]) -> bool:
    """Whether a canonical record leads with standard AutoAttack (what RobustBench ranks by)."""
    from .eval import headline  # deferred: the evaluation package imports torch

    head = headline(dict(report))
    return head is not None and head["attack"] == "autoattack"


def _autoattack(report: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The canonical record's AutoAttack row, or a one-line refusal."""
    from .eval import headline  # deferred: the evaluation package imports torch

    head = headline(dict(report))
    if head is None or head["attack"] != "autoattack":
        why = _autoattack_not_canonical(where)
        raise RunError(f"{where} has no standard AutoAttack result, which RobustBench ranks by (its records "
                       f"have no nulls); " + (why or f"run `robustzoo eval {where} --suite autoattack` first"))
    return head


def _autoattack_not_canonical(where: str) -> str | None:
    """Why an AutoAttack evaluation in the run's history is not its record (running the same
    evaluation again would not help), or None when there is none."""
    from .eval import history_problems  # deferred: imports torch

    for rid, problems in history_problems(where, "autoattack", partial=True) if Path(where).is_dir() else []:
        if problems:
            return (f"its AutoAttack evaluation (evals/{rid}.json) cannot be the record: {'; '.join(problems)}"
                    f"; see `robustzoo eval {where} --suite autoattack` and docs/evaluation.md")
    return None


def robustbench_record(config: Mapping[str, Any], report: Mapping[str, Any], *,
                       where: str = "RUN_DIR") -> dict[str, Any]:
    """The RobustBench model_info record of a run (its config.json and eval.json).

    Args:
        config: the run's config.json.
        report: the run's canonical evaluation record (eval.json).
        where: the run, for the error message.

    Raises:
        RunError: the record has no standard AutoAttack result (or no clean accuracy).
    """
    rz = config["robustzoo"]
    dataset = str(report.get("dataset") or rz["dataset"])
    norm = str(rz.get("threat_model", {}).get("norm", "linf"))
    eps = float(report["eps"])
    aa = _autoattack(report, where)
    clean = _results(report).get("clean")
    if clean is None:
        raise RunError(f"{where}/eval.json has no clean accuracy; run `robustzoo eval {where} --suite autoattack`")
    paper = method_paper(str(rz["objective"]))
    arch = str(config["architecture"])
    version = rz.get("versions", {}).get("robustzoo", "?")
    recipe = rz.get("config", {}).get("recipe")
    notes = [f"A robustzoo {version} reproduction (objective `{rz['objective']}`"
             + (f", recipe `{recipe}`" if recipe else "") + "), not the authors' weights."]
    if note := eps_note(dataset, norm, eps):
        notes.append(note)
    full = TEST_SIZES.get(dataset)
    if full is not None and int(aa["n"]) < full:
        notes.append(f"AutoAttack on {int(aa['n'])} of the {full:,} test images.")
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
            a for a, r in _results(report).items() if r.get("suspect")]
        notes.append("robustzoo's health checks flagged: " + ", ".join(flagged) + ".")
    if note := board_note(dataset):
        notes.append(note)
    reported = reported_accuracy(str(rz["objective"]), dataset=dataset, architecture=arch, norm=norm,
                                 eps=eps_text(eps), settings=dict(rz.get("objective_settings") or {}))
    record = {
        "link": paper.link,
        "name": f"{paper.title or rz['objective']} (robustzoo reproduction)",
        "authors": paper.authors,
        "additional_data": False,  # robustzoo trains on the dataset's training split only
        "number_forward_passes": 1,  # deterministic, one forward pass per prediction
        "dataset": dataset,
        "venue": paper.venue,
        "architecture": ARCHITECTURES.get(arch, ARCH_LABELS.get(arch, arch)),
        "eps": eps_text(eps),
        "clean_acc": _pct(clean["accuracy"]),
        "reported": reported,
        "autoattack_acc": _pct(aa["accuracy"]),
        "footnote": " ".join(notes),
        "unreliable": is_unreliable(report),
    }
    return {k: record[k] for k in FIELDS if record[k] is not None}


def _file_stem(paper: Paper, objective: str, arch: str) -> str:
    """RobustBench's ``<Name><Year><FirstWordOfTheTitle>`` (first author's surname, the year of
    the venue, the title's first word), then ``_robustzoo_<arch>``: its generators cite the part
    before the first '_', and the rest keeps a reproduction apart from the authors' entry."""
    surname = paper.authors.split(",")[0].split()[-1] if paper.authors.strip() else ""
    year = (re.findall(r"\b(?:19|20)\d\d\b", paper.venue) or [""])[-1]
    word = re.sub(r"\W", "", (paper.title.split() or [""])[0])
    head = objective
    if surname and year and word:
        head = re.sub(r"\W", "", surname) + year + word[:1].upper() + word[1:]
    return f"{head}_robustzoo_{arch}"


def record_path(config: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """Where the record goes in RobustBench's repository:
    ``model_info/<dataset>/<Linf|L2>/<Name><Year><FirstWord>_robustzoo_<arch>.json``."""
    rz = config["robustzoo"]
    norm = str(rz.get("threat_model", {}).get("norm", "linf"))
    dataset = str(report.get("dataset") or rz["dataset"])
    stem = _file_stem(method_paper(str(rz["objective"])), str(rz["objective"]), str(config["architecture"]))
    return f"model_info/{dataset}/{THREAT_MODELS.get(norm, norm)}/{stem}.json"
