"""The record of a run's evaluations: ``RUN_DIR/evals/`` (history) and ``RUN_DIR/eval.json``.

Every evaluation of a run directory is kept. ``RUN_DIR/evals/`` holds one report per
*protocol key* — everything that changes the numbers: the model's fingerprint, the examples
(their count, seed and a hash of their indices), ε, α, the attacks and each one's settings
(which include the options they use), standalone or cascaded, the ε sweep, the precision,
the dataset, split and checkpoint. Re-running the same key rewrites that key's own report
(the same protocol measured again); a different key never touches another report.

``RUN_DIR/eval.json`` is the *canonical* record: a copy of the strongest complete report of
the run's current model, chosen by :func:`canonical_rank` (never by recency) among the
*eligible* ones (:func:`canonical_problems`): a report whose health check failed (a
degenerate model, an attack that did not act) is never canonical, nor is a custom protocol
(an attack run with settings other than its registered standard, e.g. fewer Square queries)
unless it was evaluated with ``--allow-custom``. When no report is eligible there is no
eval.json. The order:

1. complete first: a report with the clean row (push needs clean accuracy);
2. the publishable size: the whole test set (the dataset's canonical test size), or at least
   1,000 examples;
3. the attack tier of its strongest attack: AutoAttack (5) > APGD-CE / APGD-DLR / APGD-T /
   FAB-T (4) > PGD-20 / PGD-100 / PGD-10 / CW∞ / Square (3) > FGSM and attacks robustzoo does
   not know (2) > clean only (1);
4. more examples;
5. more attacks;
6. measured by this version over migrated from an eval.json older than the history;
7. the record id (alphabetical), so ties always resolve the same way;

and health decides between the winner and the rest: when the winner is suspect, a passed
report of the same tier, on at least as many examples, that ran every health check the
suspect one ran is canonical instead. A passed report that skipped the check which flagged
the other (a PGD-20-only report cannot run the CE-versus-margin check) does not win by
skipping it, and a stronger tier wins even when suspect: its flags come from checks only it
could run, and they travel with it to the card.

A run evaluated before the history existed (eval.json, no evals/) is migrated on the next
write: its eval.json becomes a history entry, marked ``"migrated": true``.

:func:`publishable` says whether a record is a real protocol (what ``robustzoo push``
publishes by default) and :func:`headline` which of its numbers a model card leads with.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import RobustzooError, RunError
from ..runs import EVAL_FILE, check_eval_report, read_json, write_json

HISTORY_DIR = "evals"
#: Examples needed for a publishable number when the test set is larger (95% interval ±3 points).
PUBLISHABLE_N = 1000
#: Attack tiers of the canonical rule (higher is stronger); unknown attacks count as FGSM.
TIERS: dict[str, int] = {
    "autoattack": 5,
    "apgd-ce": 4, "apgd-dlr": 4, "apgd-t": 4, "fab-t": 4,
    "pgd20": 3, "pgd100": 3, "pgd": 3, "cw": 3, "square": 3,
    "fgsm": 2,
}
UNKNOWN_TIER = 2
#: The attacks a publishable record needs at least one of (next to clean).
PUBLISHABLE_ATTACKS = ("pgd20", "pgd100", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack")
#: How ``examples`` were chosen (robustzoo.data.select_examples), written into every report.
SAMPLE_RULE = ("positions = torch.randperm(of, generator=torch.Generator().manual_seed(seed))[:n].sort() "
               "in the test split (all, in order, when n >= of); index_sha256 = sha256 of the examples' rows "
               "in the dataset's test set as little-endian int64 (the positions themselves unless the run "
               "used --subset)")
RULE = ("eligible (health not failed; standard settings, or custom allowed with --allow-custom) > "
        "complete (has clean) > whole test set or n >= 1,000 > attack tier (AutoAttack > APGD/FAB > "
        "PGD/CW/Square > FGSM > clean only) > larger n > more attacks > not migrated > record id; a suspect "
        "winner gives way to a passed report of its tier and size that ran every check it ran")


# -- protocol keys ---------------------------------------------------------------------------

def protocol_key(report: dict[str, Any]) -> dict[str, Any]:
    """What the numbers of ``report`` depend on: two reports with equal keys measure the same thing."""
    rows = [r for r in report.get("results", []) if isinstance(r, dict)]
    cascade = report.get("mode") == "cascade"
    attacks = [r["attack"] for r in rows]
    examples = report.get("examples") or {}
    return {
        "model": report.get("model"),
        "dataset": report.get("dataset"),
        "split": report.get("split", "test"),
        "checkpoint": report.get("checkpoint"),
        "examples": examples.get("index_sha256"),
        "n": report.get("n"),
        "seed": report.get("seed"),
        "eps": report.get("eps"),
        "alpha": report.get("alpha"),
        "num_classes": report.get("num_classes"),
        "mode": report.get("mode", "standalone"),
        # Standalone rows do not depend on their order; cascaded ones do.
        "attacks": attacks if cascade else sorted(attacks),
        "settings": {r["attack"]: r.get("settings") or {} for r in rows},
        "options": report.get("options") or {},
        "precision": report.get("precision"),
        # the batches decide which examples share an attack's noise (robustzoo.eval._shard)
        "batch_size": report.get("batch_size"),
        "eps_sweep": [r["eps"] for r in report.get("eps_sweep") or []],
        "eps_sweep_attack": report.get("eps_sweep_attack"),
    }


def record_id(report: dict[str, Any]) -> str:
    """A readable, stable file name for a report's protocol key: ``clean+pgd20-n360-s0-<hash>``."""
    key = protocol_key(report)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    attacks = "+".join(key["attacks"]) or "none"
    slug = re.sub(r"[^A-Za-z0-9+.-]+", "-", f"{attacks}-n{key['n']}-s{key['seed']}")[:80]
    sweep = "-sweep" if key["eps_sweep"] else ""
    return f"{slug}{sweep}-{digest}"


# -- the canonical rule ----------------------------------------------------------------------

def attack_tier(report: dict[str, Any]) -> int:
    """The tier of the strongest attack of a report (1: clean only; see :data:`TIERS`)."""
    robust = [r["attack"] for r in report.get("results", []) if r.get("attack") != "clean"]
    return max((TIERS.get(a, UNKNOWN_TIER) for a in robust), default=1)


def whole_test_set(report: dict[str, Any]) -> bool:
    """True when the report's examples are the whole test set.

    Known from ``examples.of`` (the size of the test split that was loaded) and, when the
    dataset declares one, ``examples.test_size`` (its canonical test size): a 16-image test
    split of a dataset whose test set has 10,000 images is not the whole test set.
    """
    examples = report.get("examples") or {}
    of = examples.get("of")
    canonical = examples.get("test_size")
    return (of is not None and report.get("n") == of and not examples.get("split_is_subset")
            and (canonical is None or int(of) == int(canonical)))


def publishable_size(report: dict[str, Any]) -> bool:
    """The whole test set, or at least :data:`PUBLISHABLE_N` examples."""
    return whole_test_set(report) or int(report.get("n") or 0) >= PUBLISHABLE_N


def _has_clean(report: dict[str, Any]) -> bool:
    return any(r.get("attack") == "clean" for r in report.get("results", []))


def custom_settings(settings: dict[str, Any], standard: dict[str, Any]) -> dict[str, Any]:
    """The settings of an attack that differ from its registered standard: ``{key: {value, standard}}``."""
    out = {}
    for k in sorted(set(settings) | set(standard)):
        if settings.get(k) != standard.get(k):
            out[k] = {"value": settings.get(k), "standard": standard.get(k)}
    return out


def health_status(report: dict[str, Any]) -> str | None:
    """'passed', 'suspect' or 'failed' (None when the report has no health block)."""
    health = report.get("health")
    return health.get("status") if isinstance(health, dict) else None


def custom_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Attacks of ``report`` run with settings other than their registered standard: ``{attack: diff}``.

    Read from the rows' ``standard`` / ``custom`` fields; a report older than those fields is
    judged by comparing each row's settings with what the attack registered today would use
    at the report's ε, α and number of classes (an attack no longer registered is not judged).
    """
    if "standard" in report:
        return dict(report.get("custom_settings") or {})
    from ..attacks import (
        AttackContext,  # deferred (startup time): only old reports need the registry
    )
    from ..plugins import registry

    reg = registry("attacks")
    out = {}
    for r in report.get("results", []):
        name = r.get("attack") if isinstance(r, dict) else None
        if not name or name == "clean" or name not in reg:
            continue
        try:
            ctx = AttackContext(eps=float(report["eps"]), alpha=float(report.get("alpha") or 0.0),
                                num_classes=int(report.get("num_classes") or 10))
            diff = custom_settings(dict(r.get("settings") or {}), reg.get(name).settings(ctx))
        except (KeyError, TypeError, ValueError):
            continue
        if diff:
            out[name] = diff
    return out


def custom_text(custom: dict[str, dict[str, Any]]) -> str:
    """'cw: kappa=10.0 (standard 50.0)': the custom settings of :func:`custom_rows`, as messages name them."""
    return "; ".join(f"{a}: " + ", ".join(f"{k}={d['value']} (standard {d['standard']})" for k, d in diff.items())
                     for a, diff in custom.items())


def canonical_problems(report: dict[str, Any]) -> list[str]:
    """Why ``report`` may not be the canonical record (empty when it may)."""
    problems = []
    if health_status(report) == "failed":
        failed = [c["name"] for c in (report.get("health") or {}).get("checks", []) if c.get("status") == "failed"]
        problems.append(f"its health report failed ({', '.join(failed) or 'failed'})")
    custom = custom_rows(report)
    if custom and not report.get("allow_custom"):
        problems.append(f"custom attack settings ({custom_text(custom)}) without --allow-custom")
    return problems


def canonical_rank(report: dict[str, Any], rid: str) -> tuple:
    """Sort key of the canonical rule among eligible records (smallest first wins); see the module
    docstring (:func:`choose_canonical` adds the health rule)."""
    return (not _has_clean(report), not publishable_size(report), -attack_tier(report),
            -int(report.get("n") or 0), -len(report.get("results", [])), bool(report.get("migrated")), rid)


def checks_ran(report: dict[str, Any]) -> set[str]:
    """The health checks a report ran (not skipped)."""
    return {c.get("name") for c in (report.get("health") or {}).get("checks", [])
            if isinstance(c, dict) and c.get("status") not in (None, "skipped")}


def choose_canonical(records: dict[str, dict[str, Any]], model: str | None = None) -> str | None:
    """The id of the canonical record among ``records`` (id -> report) of the model ``model``.

    Records of another model fingerprint (the run's weights changed since) are never chosen,
    nor are ineligible ones (:func:`canonical_problems`); None when nothing is left. With
    ``model=None`` every record of any fingerprint is a candidate.

    The order is :func:`canonical_rank`. When the winner is suspect, a passed record of the
    same attack tier, on at least as many examples, that ran every health check the suspect
    one ran (so it could have seen the same problem) is chosen instead: a report does not win
    by skipping the check that flagged the other.
    """
    ids = [i for i, r in records.items() if (model is None or r.get("model") in (model, None))
           and not canonical_problems(r)]
    if not ids:
        return None
    checked = [i for i in ids if health_status(records[i]) is not None]
    ids = checked or ids  # a report made with --no-health never replaces one whose checks ran
    best = min(ids, key=lambda i: canonical_rank(records[i], i))
    top = records[best]
    if health_status(top) != "suspect":
        return best
    cleaner = [i for i in ids if health_status(records[i]) == "passed" and _has_clean(records[i])
               and attack_tier(records[i]) == attack_tier(top)
               and int(records[i].get("n") or 0) >= int(top.get("n") or 0)
               and checks_ran(records[i]) >= checks_ran(top)]
    return min(cleaner, key=lambda i: canonical_rank(records[i], i)) if cleaner else best


def history_problems(run_dir: str | Path, attack: str | None = None, *,
                     partial: bool = False) -> list[tuple[str, list[str]]]:
    """(record id, what keeps it from being the record) for each record of ``RUN_DIR/evals/``
    (only those with ``attack`` when given): :func:`canonical_problems`, and with ``partial``
    :func:`partial_problems` where there are none. Empty when the history is empty or unreadable."""
    try:
        records = history(run_dir)
    except RobustzooError:
        return []
    return [(rid, canonical_problems(r) or (partial_problems(r) if partial else [])) for rid, r in sorted(records.items())
            if attack is None or any(x.get("attack") == attack for x in r.get("results", []))]


def why_no_record(run_dir: str | Path) -> str | None:
    """Why a run with evaluations in its history has no eval.json (each record's first problem),
    or None when the history is empty or unreadable."""
    found = history_problems(run_dir)
    if not found:
        return None
    # A record with no problem is of other weights (the run was retrained since), or eval.json
    # was deleted; which, only the weights can say, and a new evaluation settles both.
    eligible = "eligible, but eval.json is missing (deleted, or the record is of other weights)"
    why = [f"evals/{rid}.json: {(problems or [eligible])[0]}" for rid, problems in found]
    if len(found) == 1:
        return f"its only evaluation cannot be the record ({why[0]})"
    return f"none of its {len(found)} evaluations can be the record ({'; '.join(why[:3])}" + (
        f"; {len(why) - 3} more)" if len(why) > 3 else ")")


# -- reading and writing ---------------------------------------------------------------------

def history(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every report of ``RUN_DIR/evals/`` by record id.

    Raises:
        RunError: a record that is not JSON or lacks a field (named, with the file).
    """
    out: dict[str, dict[str, Any]] = {}
    d = Path(run_dir) / HISTORY_DIR
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        # A damaged record is an error naming it, not skipped: the canonical choice needs them all.
        fix = (f"restore it, or move it out of {d} (the evaluation it records can be run again with "
               f"`robustzoo eval {run_dir}`)")
        out[p.stem] = check_eval_report(read_json(p, fix), p, fix)
    return out


def migrate(run_dir: str | Path, model: str | None = None, test_size: int | None = None) -> str | None:
    """Turn the eval.json of a run evaluated before the history into its first history entry.

    Args:
        model: fingerprint of the weights the eval.json belongs to (the run's model.safetensors
            when it is migrated), so the canonical rule keeps considering it.
        test_size: size of the test split, so a whole-test-set report is recognised as one.

    Returns:
        The new record's id, or None when there was nothing to migrate (evals/ exists, or no
        readable eval.json).
    """
    run_dir = Path(run_dir)
    path = run_dir / EVAL_FILE
    if (run_dir / HISTORY_DIR).is_dir() or not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(old, dict) or not isinstance(old.get("results"), list):
        return None
    old = dict(old, migrated=True)
    old.pop("record", None)
    if model is not None and not old.get("model"):
        old["model"] = model
    if test_size is not None and "examples" not in old and old.get("n") is not None:
        old["examples"] = {"n": old["n"], "of": int(test_size), "seed": old.get("seed", 0),
                           "rule": SAMPLE_RULE}
    rid = record_id(old)
    write_json(run_dir / HISTORY_DIR / f"{rid}.json", dict(old, record_id=rid, protocol=protocol_key(old)))
    return rid


def write_record(run_dir: str | Path, report: dict[str, Any], *, source: str = "eval",
                 test_size: int | None = None) -> dict[str, Any]:
    """Add ``report`` to the run's history and rewrite eval.json with the canonical record.

    Args:
        report: a finished evaluation (``evaluate_model``'s dictionary with dataset, split,
            checkpoint and precision filled in).
        source: what made it ('eval', 'train'), kept in the history entry.
        test_size: size of the test split (used when migrating an older eval.json).

    Returns:
        ``{"id", "path", "canonical", "canonical_path", "is_canonical", "records", "rule",
        "migrated"}`` — also stored as ``report["record"]``.
    """
    run_dir = Path(run_dir)
    migrated = migrate(run_dir, report.get("model"), test_size)
    rid = record_id(report)
    entry = {k: v for k, v in report.items() if k != "record"}
    entry.update(record_id=rid, source=source, protocol=protocol_key(report))
    write_json(run_dir / HISTORY_DIR / f"{rid}.json", entry)
    records = history(run_dir)
    canonical = choose_canonical(records, report.get("model"))
    info = {"id": rid, "path": f"{HISTORY_DIR}/{rid}.json", "canonical": canonical,
            "canonical_path": f"{HISTORY_DIR}/{canonical}.json" if canonical else None,
            "is_canonical": canonical == rid, "records": len(records), "rule": RULE, "migrated": migrated}
    if canonical is None:
        # Nothing may be canonical (every record of these weights failed health or is custom):
        # no eval.json, so nothing downstream reads a no-op or a custom number as the run's.
        # Every report stays in the history.
        info["not_canonical"] = canonical_problems(entry)
        (run_dir / EVAL_FILE).unlink(missing_ok=True)
    else:
        if canonical != rid:
            info["not_canonical"] = canonical_problems(entry)
        best = dict(records[canonical])
        best.pop("protocol", None)
        best["record"] = {"id": canonical, "canonical": True, "history": HISTORY_DIR, "records": len(records),
                          "rule": RULE}
        write_json(run_dir / EVAL_FILE, best)
    report["record"] = dict(info)
    return info


def read_canonical(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/eval.json`` as a dictionary (RunError when it is missing or not JSON)."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        if history(run_dir):
            raise RunError(f"{run_dir} has no canonical evaluation: every record in {run_dir}/{HISTORY_DIR} "
                           f"failed its health checks or used custom attack settings; run a standard "
                           f"protocol: `robustzoo eval {run_dir} --suite quick`")
        raise RunError(f"{run_dir} has no {EVAL_FILE}; evaluate it first: `robustzoo eval {run_dir} "
                       f"--suite quick`")
    fix = f"re-run `robustzoo eval {run_dir} --suite quick`"
    return check_eval_report(read_json(path, fix), path, fix)


# -- what may be published, and what a card leads with ----------------------------------------

#: What :func:`partial_problems` says of a record made with ``--no-health``.
NO_HEALTH = "no health checks (evaluated with --no-health)"


def partial_problems(report: dict[str, Any] | None) -> list[str]:
    """What keeps a record from being a real protocol (empty when it is one); no paths, no commands.

    A real protocol: the health report did not fail, and the record has the clean row and at
    least one of PGD-20, PGD-100, APGD-CE, APGD-DLR, APGD-T or AutoAttack, on the whole test
    set or at least :data:`PUBLISHABLE_N` examples. (Custom settings are judged separately:
    :func:`custom_rows`.)
    """
    if not report or not isinstance(report.get("results"), list):
        return ["no evaluation"]
    attacks = {r.get("attack") for r in report["results"]}
    problems = []
    health = report.get("health") or {}
    if not isinstance(report.get("health"), dict):
        # No check ran, so nothing says the attacks acted (a no-op attack reads as robustness).
        problems.append(NO_HEALTH)
    if health.get("status") == "failed":
        failed = [c["name"] for c in health.get("checks", []) if c.get("status") == "failed"]
        what = {"degenerate": "a degenerate model", "noop": "an attack that did not act"}
        problems.append(f"the health report failed ({', '.join(failed)}): "
                        + "; ".join(what.get(f, f) for f in failed))
    if "clean" not in attacks:
        problems.append("no clean accuracy")
    if not attacks & set(PUBLISHABLE_ATTACKS):
        problems.append("no PGD-20/100, APGD or AutoAttack")
    if not publishable_size(report):
        problems.append(f"fewer than {PUBLISHABLE_N:,} examples and not the whole test set")
    return problems


def describe(report: dict[str, Any]) -> str:
    """'fgsm on 40 of 360 test images': the attacks and examples of a record."""
    robust = [r["attack"] for r in report.get("results", []) if r.get("attack") != "clean"]
    examples = report.get("examples") or {}
    of = examples.get("test_size") or examples.get("of")
    size = f"{report.get('n')} of {of:,}" if of and of != report.get("n") else f"{report.get('n')}"
    return f"{', '.join(robust) or 'clean only'} on {size} test images"


def publishable(report: dict[str, Any] | None, run_dir: str | Path | None = None, *,
                allow_custom: bool = False) -> tuple[bool, str]:
    """Whether a canonical record is a real, standard protocol, and if not, one line saying what to run.

    See :func:`partial_problems` for the rule; a record with custom attack settings
    (:func:`custom_rows`) is refused unless ``allow_custom``.
    """
    target = str(run_dir) if run_dir is not None else "RUN_DIR"
    problems = partial_problems(report)
    custom = custom_rows(report) if report and not problems[:1] == ["no evaluation"] else {}
    if custom and not allow_custom:
        what = custom_text(custom)
        return False, (f"{target}/eval.json used custom attack settings ({what}), not the standard protocol; "
                       f"evaluate with the standard settings (`robustzoo eval {target} --suite autoattack`), "
                       f"or pass --allow-custom to publish it marked custom")
    if not problems:
        return True, ""
    if problems == ["no evaluation"]:
        return False, f"{target} has no evaluation; run `robustzoo eval {target} --suite quick`"
    if problems == [NO_HEALTH]:
        return False, (f"{target}/eval.json was evaluated without its health checks (--no-health), so nothing "
                       f"shows its attacks acted; run `robustzoo eval {target} --suite quick` without --no-health")
    if any(p.startswith("the health report failed") for p in problems):
        return False, (f"{target}/eval.json: {problems[0]}; its robust numbers mean nothing: see the "
                       f"health table of `robustzoo eval {target} --suite quick`")
    return False, (f"{target}/eval.json holds only a partial protocol ({describe(report)}: "
                   f"{'; '.join(problems)}); run `robustzoo eval {target} --suite quick` (or --suite autoattack)")


def headline(report: dict[str, Any]) -> dict[str, Any] | None:
    """The robust number a model card leads with: AutoAttack when present, else the worst case.

    Returns:
        ``{"attack", "label_attacks", "accuracy", "correct", "n", "ci95"}`` (``attack`` is
        'autoattack', 'worst-case' or the single attack's name; ``label_attacks`` the attacks
        it covers), or None when no attack was run.
    """
    rows = {r["attack"]: r for r in report.get("results", []) if isinstance(r, dict)}
    if "autoattack" in rows:
        r = rows["autoattack"]
        return {"attack": "autoattack", "label_attacks": ["autoattack"], "accuracy": r["accuracy"],
                "correct": r["correct"], "n": r["n"], "ci95": list(r.get("ci95") or [])}
    robust = [a for a in rows if a != "clean"]
    if not robust:
        return None
    wc = report.get("worst_case")
    if len(robust) > 1 and isinstance(wc, dict) and wc.get("attacks"):
        return {"attack": "worst-case", "label_attacks": list(wc["attacks"]), "accuracy": wc["accuracy"],
                "correct": wc["correct"], "n": wc["n"], "ci95": list(wc.get("ci95") or [])}
    r = rows[robust[0]]
    return {"attack": r["attack"], "label_attacks": [r["attack"]], "accuracy": r["accuracy"],
            "correct": r["correct"], "n": r["n"], "ci95": list(r.get("ci95") or [])}
