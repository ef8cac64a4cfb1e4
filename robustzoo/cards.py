"""Model cards: rendered from a run's config.json and eval.json, or from a zoo entry.

A card is the template ``model_cards/template.md`` (shipped as package data
``robustzoo/zoo/card_template.md``) with ``${placeholders}`` filled by
:class:`string.Template`: plain substitution, nothing in a template or a run is executed.
The YAML front matter is built with ``huggingface_hub.ModelCardData`` and
``EvalResult`` so the Hub (and ``huggingface_hub.ModelCard``) read the results back as a
``model-index``. Every number on a card is copied from eval.json (accuracies shown in percent,
rounded to 2 decimals); a zoo entry with no published weights gets a card with no numbers.

Regenerate the cards of unpublished zoo entries with ``python -m robustzoo.cards model_cards``.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .zoo import ZooEntry

LIBRARY = "robustzoo"
DEFAULT_LICENSE = "apache-2.0"
OFFICIAL_ENDPOINT = "https://huggingface.co"
TEMPLATE_RESOURCE = "zoo/card_template.md"

# robustzoo dataset name -> (Hub dataset id or None, human name). Only real Hub ids go into the
# `datasets:` metadata; the embedded digits data has none.
DATASETS: dict[str, tuple[str | None, str]] = {
    "cifar10": ("uoft-cs/cifar10", "CIFAR-10"),
    "cifar100": ("uoft-cs/cifar100", "CIFAR-100"),
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "Fashion-MNIST"),
    "mnist": ("ylecun/mnist", "MNIST"),
    "digits": (None, "scikit-learn digits (8x8)"),
}

ATTACK_LABELS = {
    "clean": "Clean", "fgsm": "FGSM", "pgd": "PGD-10", "pgd20": "PGD-20", "pgd100": "PGD-100",
    "cw": "CW∞", "square": "Square", "autoattack": "AutoAttack", "apgd-ce": "APGD-CE",
    "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
}
NORM_LABELS = {"linf": "ℓ∞", "l2": "ℓ2"}

ARCH_LABELS = {"wrn34_10": "WideResNet-34-10", "wrn28_10": "WideResNet-28-10",
               "preact_resnet18": "PreAct ResNet-18", "cnn_mnist": "4-conv/2-FC CNN",
               "smallcnn": "TRADES' small CNN"}

# Config keys that describe the machine, not the recipe: left out of the retrain command.
_MACHINE_KEYS = ("device", "data_dir")


# -- small formatting helpers -------------------------------------------------------------

def eps_text(eps: float) -> str:
    """'8/255' for multiples of 1/255, else the shortest decimal ('0.1')."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


#: The ε each RobustBench leaderboard uses: (dataset, norm) -> ε on the [0,1] scale.
STANDARD_EPS = {("cifar10", "linf"): 8 / 255, ("cifar100", "linf"): 8 / 255, ("cifar10", "l2"): 0.5,
                ("cifar100", "l2"): 0.5, ("imagenet", "linf"): 4 / 255}


def eps_note(dataset: str, norm: str, eps: float) -> str:
    """A sentence when ε differs from the usual one of the benchmark, else ''.

    Example: 'Uses ℓ∞ ε = 0.031 ≈ 7.9/255 instead of 8/255.' (the TRADES and MART code use 0.031).
    """
    std = STANDARD_EPS.get((dataset, norm))
    if std is None or abs(eps - std) < 1e-9:
        return ""
    approx = f" ≈ {eps * 255:.1f}/255" if norm == "linf" else ""
    return f"Uses {NORM_LABELS.get(norm, norm)} ε = {eps_text(eps)}{approx} instead of {eps_text(std)}."


def _eps_both(eps: float) -> str:
    """'8/255 (0.0313725)', or just '0.1' when the fraction adds nothing."""
    text = eps_text(eps)
    return f"{text} ({eps:.6g})" if "/" in text else text


def attack_label(attack: str) -> str:
    """Human-readable attack name ('pgd20' -> 'PGD-20'); unknown names pass through."""
    return ATTACK_LABELS.get(attack, attack)


def metric_slug(attack: str, norm: str, eps: float, version: str | None = None) -> str:
    """Stable ``metric_config`` of one result: ``pgd20/linf/8-255``, ``clean``."""
    if attack == "clean":
        return "clean"
    name = f"{attack}-{version}" if version else attack
    return f"{name}/{norm}/{eps_text(eps).replace('/', '-')}"


def _pct(fraction: float) -> float:
    return round(100.0 * float(fraction), 2)


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return eps_text(v) if 0 < v < 1 and eps_text(v).endswith("/255") else f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v) or "—"
    if v is None:
        return "—"
    return str(v)


def _set_value(v: Any) -> str:
    """A value as ``--set key=VALUE`` parses it back exactly (floats in full precision)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_set_value(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _code(lang: str, text: str) -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def load_template() -> str:
    """The card template (``model_cards/template.md``, shipped as package data)."""
    return resources.files("robustzoo").joinpath(TEMPLATE_RESOURCE).read_text(encoding="utf-8")


def _render(sections: Mapping[str, str]) -> str:
    # substitute() (not safe_substitute) so that a renamed placeholder fails loudly.
    return string.Template(load_template()).substitute(sections)


def _paper(method: str) -> str:
    from .plugins import registry

    reg = registry("objectives")
    return str(getattr(reg.get(method), "paper", "") or "") if method in reg else ""


def _dataset_meta(dataset: str) -> tuple[str | None, str]:
    return DATASETS.get(dataset, (None, dataset))


def _tags(method: str, norm: str, dataset: str) -> list[str]:
    return [LIBRARY, "adversarial-robustness", "adversarial-training", method, norm, dataset,
            "image-classification"]


# -- the retraining command --------------------------------------------------------------

def retrain_command(config: Mapping[str, Any]) -> str:
    """The ``robustzoo train`` command line that reproduces a run's TrainConfig.

    Every setting is spelled out as ``--set key=value`` (full float precision), so the command
    does not depend on defaults that may change; machine settings (device, data dir) are left
    to the user.

    Args:
        config: the ``robustzoo.config`` block of a run's config.json.
    """
    parts = ["robustzoo", "train"]
    if config.get("recipe"):
        parts += ["--recipe", str(config["recipe"])]
    else:
        parts += ["--objective", str(config["objective"])]
    for key, value in config.items():
        if key in ("objective", "recipe", "objective_args", *_MACHINE_KEYS) or value is None:
            continue
        parts += ["--set", f"{key}={_set_value(value)}"]
    for key, value in (config.get("objective_args") or {}).items():
        if value is not None:
            parts += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _machine_text(machine: Any) -> str:
    """Where a run was trained, and what a bit-for-bit rerun needs (empty for older runs)."""
    if not isinstance(machine, Mapping) or not machine.get("device"):
        return ""
    threads = machine.get("torch_threads")
    if machine["device"] != "cpu" or not isinstance(threads, int):
        return f"Trained on {machine['device']}."
    return (f"Trained on the CPU with {threads} torch thread{'s' if threads != 1 else ''}: a seeded CPU run "
            f"repeats bit for bit with the same count (`OMP_NUM_THREADS={threads}`).")


# -- cards of runs ------------------------------------------------------------------------

def _results(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report.get("results", []) if isinstance(r, Mapping)]


def _attack_version(result: Mapping[str, Any], code_version: str) -> str:
    settings = result.get("settings") or {}
    return str(settings.get("version") or f"robustzoo-{code_version}")


#: model-index metric type of clean accuracy and of accuracy under attack. Robust accuracy
#: gets a type of its own so that no reader (or leaderboard) mistakes it for clean accuracy.
CLEAN_METRIC = "accuracy"
ROBUST_METRIC = "robust_accuracy"


def eval_results(config: Mapping[str, Any], report: Mapping[str, Any], *, source_url: str) -> list[Any]:
    """One ``EvalResult`` (percent) per attack in eval.json, plus the per-example worst case
    over the attacks when eval.json has it.

    Clean accuracy has metric type ``accuracy``; every attack has type ``robust_accuracy``
    with the attack and the threat model (norm, ε on the [0,1] scale) in ``args``. Every
    result names its ``source``: robustzoo and its version, at ``source_url``.
    """
    from huggingface_hub import EvalResult

    rz = config["robustzoo"]
    dataset = report.get("dataset", rz["dataset"])
    ds_id, ds_name = _dataset_meta(dataset)
    norm = rz.get("threat_model", {}).get("norm", "linf")
    eps = float(report["eps"])
    code_version = rz.get("versions", {}).get("robustzoo", "?")
    common = dict(task_type="image-classification", task_name="Image Classification",
                  dataset_type=ds_id or dataset, dataset_name=ds_name,
                  dataset_split=report.get("split", "test"),
                  source_name=f"{LIBRARY} {code_version}", source_url=source_url)
    threat = {"norm": norm, "eps": eps, "eps_text": eps_text(eps)}
    out = []
    for r in _results(report):
        attack = r["attack"]
        version = _attack_version(r, code_version)
        args: dict[str, Any] = {"attack": attack, "n": int(r["n"]), "seed": int(report.get("seed", 0)),
                                "correct": int(r["correct"]),
                                "ci95": [_pct(x) for x in r.get("ci95", [])]}
        if attack != "clean":
            args.update(threat, threat_model=dict(threat), version=version,
                        settings=dict(r.get("settings") or {}))
        if r.get("suspect"):
            args["suspect"] = True
            args["suspect_because"] = list(r.get("suspect_because") or [])
        name = "Clean accuracy" if attack == "clean" else f"Robust accuracy ({attack_label(attack)})"
        out.append(EvalResult(metric_value=_pct(r["accuracy"]), metric_name=name,
                              metric_type=CLEAN_METRIC if attack == "clean" else ROBUST_METRIC,
                              metric_config=metric_slug(attack, norm, eps,
                                                        (r.get("settings") or {}).get("version")),
                              metric_args=args, **common))
    wc = report.get("worst_case")
    if isinstance(wc, Mapping) and wc.get("attacks"):
        labels = ", ".join(attack_label(a) for a in wc["attacks"])
        out.append(EvalResult(
            metric_value=_pct(wc["accuracy"]), metric_name=f"Robust accuracy (worst case over {labels})",
            metric_type=ROBUST_METRIC, metric_config=metric_slug("worst-case", norm, eps),
            metric_args={"attack": "worst-case", "attacks": list(wc["attacks"]), **threat,
                         "threat_model": dict(threat), "n": int(wc["n"]),
                         "seed": int(report.get("seed", 0)), "correct": int(wc["correct"]),
                         "ci95": [_pct(x) for x in wc.get("ci95", [])],
                         "version": f"robustzoo-{code_version}"},
            **common))
    return out


def _robustzoo_block(config: Mapping[str, Any], report: Mapping[str, Any], *, alias: str | None,
                     files: Mapping[str, str], repo_id: str | None) -> dict[str, Any]:
    rz = config["robustzoo"]
    cfg = rz.get("config", {})
    margs = config.get("model_args", {})
    tm = rz.get("threat_model", {})
    results = {}
    for r in _results(report):
        item = {"accuracy": _pct(r["accuracy"]), "correct": int(r["correct"]), "n": int(r["n"]),
                "ci95": [_pct(x) for x in r.get("ci95", [])]}
        if r.get("suspect"):
            item["suspect"] = True
        results[r["attack"]] = item
    block: dict[str, Any] = {
        "alias": alias or "",
        # A run card says "published" only when it is the README of a Hub repo; a card of a
        # local run (e.g. model_cards/runs/) is "unpublished" and names no repo.
        "status": "published" if repo_id else "unpublished",
        "repo_id": repo_id or "",
        "architecture": config["architecture"],
        "dataset": rz["dataset"],
        "method": rz["objective"],
        "method_settings": dict(rz.get("objective_settings", {})),
        "recipe": cfg.get("recipe") or "",
        "threat_model": {"norm": tm.get("norm", "linf"), "eps": float(tm.get("eps", report["eps"])),
                         "eps_text": eps_text(float(tm.get("eps", report["eps"])))},
        "training": {k: v for k, v in cfg.items() if k not in _MACHINE_KEYS},
        "evaluation": {"eps": float(report["eps"]), "n": int(report.get("n", 0)),
                       "seed": int(report.get("seed", 0)), "split": report.get("split", "test"),
                       "checkpoint": report.get("checkpoint", "model.safetensors")},
        "clean_accuracy": results.get("clean", {}).get("accuracy"),
        "results": results,
        "extra_data": False,
        "input_range": [0, 1],
        "normalization": {"inside_model": True, "mean": list(margs.get("mean", [])),
                          "std": list(margs.get("std", []))},
        "paper": _paper(rz["objective"]),
        "code_version": rz.get("versions", {}).get("robustzoo", ""),
        "versions": dict(rz.get("versions", {})),
        "sha256": dict(files),
    }
    if report.get("suite"):
        block["evaluation"]["suite"] = report["suite"]
    block["evaluation"]["precision"] = report.get("precision") or "unrecorded"
    if report.get("precision_check"):
        block["evaluation"]["precision_check"] = dict(report["precision_check"])
    if report.get("autoattack_version"):
        block["evaluation"]["autoattack_version"] = dict(report["autoattack_version"])
    custom = _custom(report)
    block["evaluation"]["standard"] = not custom
    if custom:
        block["evaluation"]["custom_settings"] = custom
    partial = partial_reason(report)
    block["partial"] = bool(partial)
    if partial:
        block["partial_reason"] = partial
    from .eval import headline  # deferred: the evaluation package imports torch

    head = headline(dict(report))
    if head is not None:
        block["headline"] = {"attack": head["attack"], "attacks": list(head["label_attacks"]),
                             "accuracy": _pct(head["accuracy"]), "n": int(head["n"]),
                             "ci95": [_pct(x) for x in head["ci95"]]}
    wc = report.get("worst_case")
    if isinstance(wc, Mapping) and wc.get("attacks"):
        # The headline number: AutoAttack when present, else the worst case.
        block["robust_accuracy"] = _pct(head["accuracy"] if head is not None else wc["accuracy"])
        block["worst_case"] = {"accuracy": _pct(wc["accuracy"]), "attacks": list(wc["attacks"]),
                               "n": int(wc["n"]), "ci95": [_pct(x) for x in wc.get("ci95", [])]}
    suspects = [r["attack"] for r in _results(report) if r.get("suspect")]
    if suspects:
        block["suspect_attacks"] = suspects
    health = report.get("health")
    if isinstance(health, Mapping) and health.get("status"):
        block["health"] = {"status": health["status"], "flagged": list(health.get("flagged") or [])}
    return block


def run_card_data(config: Mapping[str, Any], report: Mapping[str, Any], *, repo_id: str | None,
                  files: Mapping[str, str], alias: str | None = None, license: str = DEFAULT_LICENSE,
                  source_url: str, name: str | None = None):
    """The ``ModelCardData`` (front matter) of a run's card (``repo_id`` None: not published)."""
    from huggingface_hub import ModelCardData

    rz = config["robustzoo"]
    ds_id, _ = _dataset_meta(rz["dataset"])
    norm = rz.get("threat_model", {}).get("norm", "linf")
    tags = _tags(rz["objective"], norm, rz["dataset"]) + (["partial-evaluation"] if partial_reason(report) else [])
    return ModelCardData(
        library_name=LIBRARY, license=license, pipeline_tag="image-classification",
        tags=tags, datasets=[ds_id] if ds_id else None,
        metrics=[CLEAN_METRIC, ROBUST_METRIC], model_name=name or alias or repo_id,
        eval_results=eval_results(config, report, source_url=source_url),
        robustzoo=_robustzoo_block(config, report, alias=alias, files=files, repo_id=repo_id))


def _evidence(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_evidence(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return _fmt_value(value)


def _health_section(report: Mapping[str, Any]) -> str:
    """The health report of eval.json (robustzoo.health: status, flagged, checks) as text."""
    lines: list[str] = []
    for r in _results(report):
        if r.get("suspect"):
            because = ", ".join(r.get("suspect_because") or []) or "a flagged check"
            lines.append(f"- **{attack_label(r['attack'])} is suspect** ({because}): its accuracy may be "
                         f"inflated by gradient masking; do not rank the model by it.")
    health = report.get("health")
    checks = []
    if isinstance(health, Mapping):
        checks = health.get("checks") or []
    elif isinstance(health, list):
        checks = health
    rows = []
    for c in checks:
        if not isinstance(c, Mapping):
            continue
        name = c.get("name") or c.get("check") or "?"
        status = c.get("status")
        if status is None and isinstance(c.get("passed"), bool):
            status = "passed" if c["passed"] else "flagged"
        text = c.get("explanation") or c.get("message") or ""
        rows.append((name, status or "?", text, _evidence(c.get("evidence") or {}) or "—"))
    if not lines and not rows:
        return ("eval.json carries no gradient-masking health report for this model. Run "
                "`robustzoo eval MODEL --suite paper` (or `--suite autoattack`) to produce one.")
    parts = []
    if isinstance(health, Mapping) and health.get("status"):
        flagged = ", ".join(health.get("flagged") or [])
        parts.append(f"Overall: **{health['status']}**" + (f" (flagged: {flagged})." if flagged else "."))
    parts.append("Automatic checks for signs of gradient masking, from eval.json (robustzoo.health):")
    if lines:
        parts.append("\n".join(lines))
    if rows:
        parts.append(_table(["check", "status", "explanation", "evidence"], rows))
    return "\n\n".join(parts)


def _optimizers_section(optimizers: Mapping[str, Any] | None) -> str:
    """One row per trained module: its optimiser and base lr (the schedule scales each one)."""
    if not optimizers:
        return ""
    rows = [(f"`{name}`" if name != "model" else "classifier", o.get("optimizer", "?"), _fmt_value(o.get("lr")),
             _fmt_value(o.get("momentum")), _fmt_value(o.get("weight_decay")))
            for name, o in optimizers.items()]
    return ("Optimisers (the lr schedule scales each one's own base lr):\n\n"
            + _table(["module", "optimiser", "base lr", "momentum", "weight decay"], rows))


# Keys of metrics.jsonl rows the training log leaves out (they are in the settings above).
_LOG_SKIP = ("epoch", "lr", "seconds", "best")


def _training_log(metrics: list[Mapping[str, Any]] | None) -> str:
    """metrics.jsonl as a table: every scalar an epoch recorded (lists, e.g. per-check values,
    are summarised by their minimum; true flags, e.g. a collapse, are shown as 'yes')."""
    if not metrics:
        return ""
    keys: list[str] = []
    for row in metrics:
        for k, v in row.items():
            if k in _LOG_SKIP or k.startswith("lr_") or k in keys:
                continue
            if isinstance(v, (bool, int, float)) or (isinstance(v, list) and v and all(
                    isinstance(x, (int, float)) for x in v)):
                keys.append(k)

    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            return f"min {min(v):.3g}" if v else "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return "—" if v is None else str(v)

    rows = [[str(r.get("epoch", i + 1))] + [cell(r.get(k)) for k in keys]
            + ["yes" if r.get("best") else ""] for i, r in enumerate(metrics)]
    return ("Training log (`metrics.jsonl`; `best` marks the epochs chosen on validation):\n\n"
            + _table(["epoch", *keys, "best"], rows))


def _custom(report: Mapping[str, Any]) -> dict[str, Any]:
    """The attacks run with settings other than their standard (``robustzoo.eval.custom_rows``)."""
    from .eval import custom_rows  # deferred: the evaluation package imports torch

    return custom_rows(dict(report))


def protocol_notes(report: Mapping[str, Any]) -> list[str]:
    """Sentences a card must carry about how its numbers were made: precision, custom settings,
    AutoAttack's version (never silent)."""
    notes = []
    prec = report.get("precision")
    check = report.get("precision_check")
    if prec == "bf16" and isinstance(check, Mapping):
        notes.append(f"Every number was measured in bf16, allowed by a precision check on {check.get('n')} "
                     f"images that found at most {check.get('max_abs_drift_points')} points of drift from fp32 "
                     f"(tolerance {check.get('tolerance_points')}).")
    elif prec:
        notes.append(f"Every number was measured in {prec}" + (" (exact: no autocast, TF32 off)." if prec == "fp32"
                                                                else "."))
    else:
        notes.append("The precision these numbers were measured in was not recorded (an older evaluation).")
    custom = _custom(report)
    if custom:
        what = "; ".join(f"{attack_label(a)}: " + ", ".join(f"{k} = {_fmt_value(d.get('value'))} (standard "
                                                               f"{_fmt_value(d.get('standard'))})"
                                                               for k, d in diff.items())
                         for a, diff in custom.items())
        notes.append(f"**Custom protocol**: {what}. These numbers are not the standard attacks' and are not "
                     f"comparable with numbers measured by them.")
    aa = report.get("autoattack_version")
    if isinstance(aa, Mapping) and aa.get("version") == "rand":
        notes.append(f"AutoAttack ran its **rand** version (APGD-CE and APGD-DLR with EoT over 20 samples), "
                     f"{aa.get('reason', '')}.")
    return notes


def partial_reason(report: Mapping[str, Any]) -> str | None:
    """Why a report is not a real protocol (``robustzoo.eval.partial_problems``), or None.

    Also for a report that ``push --allow-partial`` marked ``partial``. No local paths: the
    text goes on a public card.
    """
    from .eval import describe, partial_problems  # deferred: the evaluation package imports torch

    problems = partial_problems(dict(report))
    if not problems and not report.get("partial"):
        return None
    return f"the evaluation is {describe(dict(report))}" + (f" ({'; '.join(problems)})" if problems else "")


def headline_text(report: Mapping[str, Any]) -> str | None:
    """'53.10% robust accuracy (AutoAttack) on 1000 images (95% CI 50.00–56.18%)', or None.

    AutoAttack when the report has it, otherwise the worst case over the attacks (named), or
    the single attack; always with its n and 95% interval.
    """
    from .eval import headline  # deferred: the evaluation package imports torch

    h = headline(dict(report))
    if h is None:
        return None
    if h["attack"] == "worst-case":
        label = "worst case over " + ", ".join(attack_label(a) for a in h["label_attacks"])
    else:
        label = attack_label(h["attack"])
    lo, hi = (h["ci95"] or [0.0, 0.0])[:2]
    return (f"{_pct(h['accuracy']):.2f}% robust accuracy ({label}) on {h['n']} images "
            f"(95% CI {_pct(lo):.2f}–{_pct(hi):.2f}%)")


def render_run_card(config: Mapping[str, Any], report: Mapping[str, Any], *, repo_id: str | None,
                    files: Mapping[str, str], alias: str | None = None,
                    license: str = DEFAULT_LICENSE, endpoint: str = OFFICIAL_ENDPOINT,
                    name: str | None = None, source_url: str | None = None,
                    metrics: list[Mapping[str, Any]] | None = None) -> str:
    """The model card of a run: the README.md of a repo about to be published, or (with
    ``repo_id=None``) the card of a local run that is not published.

    An unpublished card says so, names no repo and no ``robustzoo pull`` command, and tells
    how to make the weights again (the training command) and how the numbers were measured
    (the evaluation commands, on a run directory).

    Args:
        config: the run's config.json.
        report: the run's eval.json.
        repo_id: Hub repo ``org/name`` it is published to; None for a run that is not.
        files: filename -> sha256 of the files published with it (weights, config, aux,
            robustbench.json) or, unpublished, of the run's files the numbers belong to.
        alias: zoo alias, when the run is published as a zoo entry.
        license: licence of the weights.
        endpoint: the Hub the repo is on (the model-index ``source`` links to the repo there).
        name: title of an unpublished card (default: the alias, else 'robustzoo run').
        source_url: the model-index ``source`` URL (default: the repo on ``endpoint``; required
            for an unpublished card, e.g. the page that documents the run).
        metrics: the run's metrics.jsonl rows (:func:`robustzoo.runs.read_metrics`): the card
            shows them as a per-epoch training log.
    """
    published = bool(repo_id)
    if source_url is None:
        if not published:
            raise ValueError("an unpublished run card needs source_url (where its numbers are documented)")
        source_url = f"{endpoint.rstrip('/')}/{repo_id}"
    rz = config["robustzoo"]
    cfg = rz.get("config", {})
    title = (alias or repo_id) if published else (name or alias or "robustzoo run")
    data = run_card_data(config, report, repo_id=repo_id, files=files, alias=alias, license=license,
                         source_url=source_url, name=title)
    method, dataset, arch = rz["objective"], rz["dataset"], config["architecture"]
    tm = rz.get("threat_model", {})
    norm = tm.get("norm", "linf")
    train_eps = float(tm.get("eps", report["eps"]))
    eval_eps = float(report["eps"])
    _, ds_name = _dataset_meta(dataset)
    margs = config.get("model_args", {})
    by_attack = {r["attack"]: r for r in _results(report)}
    clean = by_attack.get("clean")
    robust = [r for r in _results(report) if r["attack"] != "clean"]

    # A merged report (e.g. gradient attacks on 1,000 images, AutoAttack on the first 200 of
    # the same seeded choice) names each attack's own sample size instead of one n.
    sizes = sorted({int(r["n"]) for r in _results(report)}) or [int(report.get("n") or 0)]
    mixed = len(sizes) > 1
    split = report.get("split", "test")
    headline = []
    wc = report.get("worst_case")
    if clean:
        lo, hi = (clean.get("ci95") or [0.0, 0.0])[:2]
        headline.append(f"{_pct(clean['accuracy']):.2f}% clean accuracy on {clean['n']} images "
                        f"(95% CI {_pct(lo):.2f}–{_pct(hi):.2f}%)")
    robust_text = headline_text(report)
    if robust_text:
        headline.append(robust_text)
    summary = (f"A {ARCH_LABELS.get(arch, arch)} (`{arch}`) image classifier for {ds_name}, trained with "
               f"robustzoo's `{method}` objective against {NORM_LABELS.get(norm, norm)} perturbations of "
               f"size ε = {eps_text(train_eps)}"
               + (f"; {' and '.join(headline)} of the {split} set." if headline else "."))
    if published and alias:
        summary += f" Zoo alias: `{alias}`."
    partial = partial_reason(report)
    if partial:
        summary = (f"**Partial evaluation.** {partial[0].upper() + partial[1:]}. The numbers below are not a "
                   f"complete robustness evaluation; do not rank this model by them.\n\n" + summary)
    if not published:
        summary = ("**Not published.** These weights are a local run: they are not on the Hugging Face "
                   "Hub and `robustzoo pull` cannot fetch them. The card records what the run scored and "
                   "the commands that trained and evaluated it, so the run can be made again.\n\n" + summary)

    pull_name = alias or f"hf-hub:{repo_id}"
    model_ref = pull_name if published else "RUN_DIR"
    retrain = retrain_command(cfg)
    if published:
        usage = "\n\n".join([
            "Command line (downloads into the Hugging Face cache, checks every file against the sha256 "
            "list of this card, prints the folder):",
            _code("bash", f"robustzoo pull {pull_name}\nrobustzoo eval {pull_name} --suite autoattack"),
            "Python:",
            _code("python", f'import robustzoo\n\nmodel = robustzoo.load("{pull_name}")  '
                            f"# eval mode, takes images in [0, 1]"),
            "timm: `import robustzoo` is the one line timm needs — it registers the architecture "
            "(without it timm says \"Unknown model\") and checks the download as `robustzoo pull` does; no "
            "code is downloaded from the repo. Fine-tune it with a new head by passing `num_classes`; a "
            "`save_for_hf` folder or `push_to_hf_hub` repo of the fine-tune loads back in timm and in "
            "`robustzoo eval ... --dataset NAME`:",
            _code("python", f'import robustzoo  # noqa: F401\nimport timm\n\n'
                            f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True).eval()\n'
                            f'backbone = timm.create_model("hf-hub:{repo_id}", pretrained=True, num_classes=5)'),
            f"Inputs are float tensors of shape (N, {margs.get('in_chans', '?')}, "
            f"{', '.join(map(str, margs.get('input_size', [])))}) with values in [0, 1]. Do not normalise "
            f"them: the model's first layer subtracts mean {_fmt_value(margs.get('mean'))} and divides by "
            f"std {_fmt_value(margs.get('std'))} (the timm data config has mean 0 and std 1). Pin a version "
            f"with `hf-hub:{repo_id}@<commit sha>`.",
        ])
    else:
        usage = "\n\n".join([
            "Make the weights again with the training command of the run (add `--data-dir DIR` where the "
            "dataset lives), then load the run directory:",
            _code("bash", f"{retrain} --out RUN_DIR"),
            _code("python", 'import robustzoo\n\nmodel = robustzoo.load("RUN_DIR")  '
                            "# eval mode, takes images in [0, 1]"),
            "Publish it with `robustzoo push RUN_DIR --repo-id ORG/NAME` once it is evaluated.",
        ])

    note = eps_note(dataset, norm, train_eps)
    threat = "\n".join(x for x in [
        f"- Norm: {NORM_LABELS.get(norm, norm)} (`{norm}`)",
        f"- ε at training: {_eps_both(train_eps)} on the [0, 1] pixel scale",
        f"- ε at evaluation: {_eps_both(eval_eps)}",
        f"- Note: {note}" if note else "",
        "- Input range: [0, 1]; normalisation is inside the model",
        "- Extra training data: none",
    ] if x)

    settings_rows = [(k, _fmt_value(v)) for k, v in cfg.items()
                     if k not in ("objective_args", *_MACHINE_KEYS)]
    obj_rows = [(k, _fmt_value(v)) for k, v in rz.get("objective_settings", {}).items()]
    aux_where = "published in aux.safetensors" if published else "saved in the run's aux.safetensors"
    training = "\n\n".join(x for x in [
        f"Objective `{method}`" + (f" ({_paper(method)})" if _paper(method) else "") +
        (f", recipe `{cfg['recipe']}`" if cfg.get("recipe") else "") +
        f"; {rz.get('num_train', '?')} training images, seed {cfg.get('seed', '?')}.",
        "Every setting of the run:",
        _table(["setting", "value"], settings_rows),
        ("Objective settings:\n\n" + _table(["setting", "value"], obj_rows)) if obj_rows else "",
        (f"Extra trained modules ({aux_where}): "
         + ", ".join(f"`{m}`" for m in rz["extra_modules"])) if rz.get("extra_modules") else "",
        (f"Per-example state ({aux_where}): "
         + ", ".join(f"`{s}`" for s in rz["state_tensors"])) if rz.get("state_tensors") else "",
        _optimizers_section(rz.get("optimizers")),
        _training_log(metrics),
        "Retrain it (add `--data-dir DIR` where the dataset lives):",
        _code("bash", retrain),
        "Package versions: " + ", ".join(f"{k} {v}" for k, v in rz.get("versions", {}).items()) + ".",
        _machine_text(rz.get("machine")),
    ] if x)

    rows = []
    for r in _results(report):
        lo, hi = (r.get("ci95") or [None, None])[:2]
        ci = f"{_pct(lo):.2f}–{_pct(hi):.2f}" if lo is not None else "—"
        label = (attack_label(r["attack"]) + (" ⚠ suspect" if r.get("suspect") else "")
                 + (" (custom settings)" if r.get("standard") is False else ""))
        sett = ", ".join(f"{k}={_fmt_value(v)}" for k, v in (r.get("settings") or {}).items()) or "—"
        rows.append((label, f"{_pct(r['accuracy']):.2f}", ci, f"{r['correct']}/{r['n']}", sett))
    if isinstance(wc, Mapping) and wc.get("attacks"):
        lo, hi = wc.get("ci95", [0, 0])
        rows.append(("**worst case**", f"**{_pct(wc['accuracy']):.2f}**", f"{_pct(lo):.2f}–{_pct(hi):.2f}",
                     f"{wc['correct']}/{wc['n']}", "per example, over " + ", ".join(wc["attacks"])))
    suite = f" (suite `{report['suite']}`)" if report.get("suite") else ""
    sample = (f"{' or '.join(map(str, sizes))} {ds_name} {split} images per attack (the `correct` column; a "
              f"smaller sample is the first images of the same seeded choice, seed {report.get('seed', 0)})"
              if mixed else f"{report.get('n')} {ds_name} {split} images (seeded choice, seed "
              f"{report.get('seed', 0)})")
    by_n: dict[int, list[str]] = {}
    for r in _results(report):
        by_n.setdefault(int(r["n"]), []).append(r["attack"])
    reproduce = [f"`robustzoo eval {model_ref} --attacks {','.join(a)} --n {n} --seed {report.get('seed', 0)}`"
                 for n, a in (by_n.items() if mixed else [(report.get("n"), list(by_attack))])]
    evaluation = "\n\n".join([
        f"{sample}, checkpoint `{report.get('checkpoint', 'model.safetensors')}`, ε = "
        f"{eps_text(eval_eps)}{suite}. Accuracy in percent with a 95% Wilson interval; the worst case counts "
        f"an image as robust only if every attack failed on it.",
        _table(["attack", "accuracy (%)", "95% CI (%)", "correct", "settings"], rows),
        " ".join(protocol_notes(report)),
        f"Reproduce: {' and '.join(reproduce)}.",
    ])

    limitations = "\n\n" + "\n".join(x for x in [
        "This card was published with `--allow-partial`: its evaluation is not a real protocol "
        "(docs/zoo.md)." if partial else "",
        f"Robust accuracy was measured on {' or '.join(map(str, sizes))} images; the 95% intervals above show how "
        f"much it can move with the sample." if robust else
        "No attack was run on this model: it has no measured robustness.",
        "An attack flagged as suspect above should not be used to rank this model." if any(
            r.get("suspect") for r in robust) else "",
    ] if x)

    paper = _paper(method)
    citation = "\n\n".join(x for x in [
        f"Training method: {paper}." if paper else f"Training method: robustzoo objective `{method}`.",
        "Cite the method's paper when you use this model; the evaluation attacks are those of the "
        "table above.",
    ] if x)

    file_rows = [(f"`{f}`", f"`{h}`") for f, h in files.items()]
    if published:
        lead = ("sha256 of the published files. `robustzoo pull` (and `timm.create_model(\"hf-hub:...\")` "
                "once robustzoo is imported) checks every download against this list, and a zoo alias "
                "also against the zoo index:")
    else:
        lead = "sha256 of the run's files these numbers were measured on (not published):"
    files_section = lead + "\n\n" + _table(["file", "sha256"], file_rows)

    front = data.to_yaml().strip()
    return _render({
        "front_matter": front, "title": title, "summary": summary, "usage": usage,
        "threat_model": threat, "training": training, "evaluation": evaluation,
        "health": _health_section(report), "limitations": limitations, "citation": citation,
        "files": files_section, "source": "config.json + eval.json",
    })


# -- cards of zoo entries -----------------------------------------------------------------

def entry_card_data(entry: ZooEntry):
    """Front matter of an unpublished zoo entry's card (no model-index: nothing of this recipe
    is measured yet; a related real run's numbers, if any, are under ``robustzoo.measured``)."""
    from huggingface_hub import ModelCardData

    ds_id, _ = _dataset_meta(entry.dataset)
    norm = entry.threat_model.get("norm", "linf")
    eps = float(entry.threat_model.get("eps", 0.0))
    block: dict[str, Any] = {
        "alias": entry.name, "status": entry.status, "architecture": entry.architecture,
        "dataset": entry.dataset, "method": entry.method, "method_settings": dict(entry.settings),
        "recipe": entry.recipe, "threat_model": {"norm": norm, "eps": eps, "eps_text": eps_text(eps)},
        "extra_data": False, "input_range": [0, 1], "paper": entry.paper,
    }
    if entry.measured:
        m = entry.measured
        block["measured"] = {"protocol": m["protocol"], "source": m["source"],
                             "results": {a: _pct(v) for a, v in m["results"].items()},
                             "counts": {a: list(c) for a, c in m["counts"].items()}}
    return ModelCardData(
        library_name=LIBRARY, license=entry.license or DEFAULT_LICENSE, pipeline_tag="image-classification",
        tags=_tags(entry.method, norm, entry.dataset), datasets=[ds_id] if ds_id else None, robustzoo=block)


def _measured_section(entry: ZooEntry) -> str:
    """What a related real run recorded in the repository scored, said as such."""
    if not entry.measured:
        return ("Nothing measured yet: no run of this recipe (or of a shorter protocol with the same "
                "method settings) is recorded in the repository. The numbers will come from the eval.json "
                "of the published run: standard AutoAttack on the whole test set, with clean accuracy and "
                "the gradient-masking health checks.")
    m = entry.measured
    rows = []
    for attack, frac in m["results"].items():
        correct, n = m["counts"][attack]
        rows.append((attack_label(attack), f"{_pct(frac):.2f}", f"{correct}/{n}"))
    return "\n\n".join([
        f"**Not this recipe's numbers.** A real run with the same method settings under a different "
        f"protocol — {m['protocol']} — scored (recorded in `{m['source']}`):",
        _table(["attack", "accuracy (%)", "correct"], rows),
        "Trained with:",
        _code("bash", m["train"]),
        "Evaluated with:",
        _code("bash", m["eval"]),
        "The published entry will carry its own numbers from the eval.json of its run (standard "
        "AutoAttack on the whole test set).",
    ])


def render_entry_card(entry: ZooEntry) -> str:
    """The card of a zoo entry with no published weights: how to train it, what (if anything)
    a related recorded run scored and with which commands, and the one command that publishes it.

    Published entries keep the card that ``robustzoo push`` rendered from their run.
    """
    if entry.published:
        raise ValueError(f"{entry.name} is published: its card is the README.md that `robustzoo push` "
                         f"uploaded (copy it to {entry.card})")
    norm = entry.threat_model.get("norm", "linf")
    eps = float(entry.threat_model.get("eps", 0.0))
    _, ds_name = _dataset_meta(entry.dataset)
    settings = ", ".join(f"{k}={_fmt_value(v)}" for k, v in entry.settings.items())
    summary = "\n\n".join(x for x in [
        f"**Not yet published.** This zoo entry names a model robustzoo can train — a "
        f"{ARCH_LABELS.get(entry.architecture, entry.architecture)} (`{entry.architecture}`) on {ds_name}, "
        f"trained with the `{entry.method}` objective" + (f" ({settings})" if settings else "") +
        f" against {NORM_LABELS.get(norm, norm)} perturbations of size ε = {eps_text(eps)} — but no "
        f"weights have been published for it yet, so this card reports no results of its own.",
        entry.description,
    ] if x)
    train = entry.train_command
    usage = "\n\n".join([
        f"`robustzoo pull {entry.name}` and `robustzoo.load(\"{entry.name}\")` refuse this entry until it "
        f"is published. Train and evaluate it yourself instead:",
        _code("bash", f"{train} --data-dir DATA --out runs/{entry.name}\n"
                      f"robustzoo eval runs/{entry.name} --suite autoattack"),
        "and load the run directory:",
        _code("python", f'import robustzoo\n\nmodel = robustzoo.load("runs/{entry.name}")'),
    ])
    note = eps_note(entry.dataset, norm, eps)
    threat = "\n".join(x for x in [
        f"- Norm: {NORM_LABELS.get(norm, norm)} (`{norm}`)",
        f"- ε: {_eps_both(eps)} on the [0, 1] pixel scale",
        f"- Note: {note}" if note else "",
        "- Input range: [0, 1]; normalisation is inside the model",
        "- Extra training data: none",
    ] if x)
    recipe_text = (f"Recipe `{entry.recipe}` holds every training setting (`{train}` uses them; it is "
                   f"provided by the plugin of the `{entry.method}` objective, and `robustzoo list recipes "
                   f"{entry.recipe}` names its source)." if not entry.recipe.startswith("robustzoo train ")
                   else "The training command above holds every setting.")
    training = "\n\n".join([
        recipe_text,
        "To publish it as this zoo entry — train the recipe (resumable), evaluate it with standard "
        "AutoAttack on the whole test set, push the run with its card and robustbench.json, and pin "
        "the commit and sha256s in robustzoo/zoo/index.json — run (docs/zoo.md):",
        _code("bash", f"robustzoo zoo publish {entry.name} --org ORG --data-dir DATA"),
    ])
    return _render({
        "front_matter": entry_card_data(entry).to_yaml().strip(),
        "title": f"{entry.name} (not yet published)", "summary": summary, "usage": usage,
        "threat_model": threat, "training": training,
        "evaluation": _measured_section(entry),
        "health": "None yet for this recipe (they are part of its evaluation).", "limitations": "",
        "citation": (f"Training method: {entry.paper}." if entry.paper else
                     f"Training method: robustzoo objective `{entry.method}`."),
        "files": "None published yet.", "source": f"zoo entry {entry.name}",
    })


def front_matter(text: str) -> dict[str, Any]:
    """The parsed YAML front matter of a card (via ``huggingface_hub.ModelCard``)."""
    from huggingface_hub import ModelCard

    return ModelCard(text, ignore_metadata_errors=False).data.to_dict()


def write_zoo_cards(directory: str | Path, entries: Iterable[ZooEntry] | None = None) -> list[Path]:
    """(Re)write the cards of unpublished zoo entries into ``directory``; returns their paths."""
    from .plugins import registry
    from .runs import write_text

    directory = Path(directory)
    if entries is None:
        entries = [e for _, e in registry("zoo").items()]
    written = []
    for entry in entries:
        if entry.published:
            continue
        path = directory / Path(entry.card).name
        write_text(path, render_entry_card(entry))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m robustzoo.cards DIR``: rewrite the cards of unpublished zoo entries in DIR."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    directory = args[0] if args else "model_cards"
    for path in write_zoo_cards(directory):
        print(path)


if __name__ == "__main__":
    main()
