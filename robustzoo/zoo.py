"""Zoo entries: alias -> Hub repo pinned to a commit, with the sha256 of every file.

An entry is registered through the ``register_zoo`` hook (the built-ins come from the
package data file ``robustzoo/zoo/index.json``). :func:`validate_entry` checks an entry
against :data:`SCHEMA` by hand (no jsonschema dependency); ``robustzoo pull`` runs it before
it trusts an entry, and the test suite runs it on every registered entry.

An entry tells the truth about itself: ``published`` only with a repo, a 40-hex commit and
the sha256 of every file (``robustzoo zoo publish`` writes them); every other entry is
``unpublished`` and carries no results of its own, only the recipe (or training command) that
makes it and, under ``measured``, the numbers of a real run recorded in the repository (e.g.
the reduced CPU protocol of docs/results.md), stated as such with the commands that produced
them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Files a zoo entry may pin; ``robustzoo pull`` never asks a repo for any other name.
PUBLISHABLE_FILES = ("config.json", "model.safetensors", "aux.safetensors", "README.md",
                     "robustbench.json")
#: Files every published entry must pin.
REQUIRED_FILES = ("config.json", "model.safetensors")
STATUSES = ("published", "unpublished")
NORMS = ("linf", "l2")

ALIAS_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

#: key -> (JSON type(s), required, what it holds). Checked by :func:`validate_entry`.
SCHEMA: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "name": ((str,), True, "alias, <method>[-<variant>]-<arch>[-<dataset>] in lower case"),
    "status": ((str,), True, "'published' once weights are on the Hub, else 'unpublished'"),
    "repo_id": ((str,), True, "Hub repo org/name ('' while unpublished)"),
    "revision": ((str,), True, "40-hex commit sha the entry is pinned to ('' while unpublished)"),
    "files": ((dict,), True, "filename -> sha256 (64 hex) of every pinned file ({} while unpublished)"),
    "architecture": ((str,), True, "a registered robustzoo architecture"),
    "dataset": ((str,), True, "a registered dataset"),
    "threat_model": ((dict,), True, "{'norm': 'linf'|'l2', 'eps': float on the [0,1] scale}"),
    "method": ((str,), True, "the training objective's name"),
    "settings": ((dict,), True, "the objective settings that define the variant"),
    "results": ((dict,), True, "attack -> accuracy fraction from eval.json ({} while unpublished)"),
    "recipe": ((str,), True, "the recipe that reproduces the entry (`robustzoo train --recipe NAME`), "
                             "or the full `robustzoo train ...` command of a run trained without one"),
    "card": ((str,), True, "model card path, model_cards/<name>.md"),
    "description": ((str,), False, "one line"),
    "paper": ((str,), False, "the method's paper"),
    "license": ((str,), False, "licence of the weights (SPDX id, lower case)"),
    "evaluation": ((dict,), False, "published: how the results were measured: {'suite', 'seed', "
                                   "'health', 'counts': {attack: [correct, n]}}"),
    "measured": ((dict,), False, "unpublished: numbers of a real run recorded in the repo, not of this "
                                 "recipe: {'protocol', 'results', 'counts', 'train', 'eval', 'source', "
                                 "'health' (optional)}"),
}
#: Keys of :data:`SCHEMA` left out of :meth:`ZooEntry.to_dict` while empty.
OPTIONAL_BLOCKS = ("evaluation", "measured")
MEASURED_KEYS = ("protocol", "results", "counts", "train", "eval", "source")
MEASURED_OPTIONAL = ("health",)
TRAIN_PREFIX = "robustzoo train "


@dataclass(frozen=True)
class ZooEntry:
    """A model in the zoo (published or still to be trained).

    Attributes:
        name: alias, ``<method>[-<variant>]-<arch>[-<dataset>]``.
        status: ``published`` or ``unpublished``.
        repo_id: Hub repo ``org/name`` (empty when no weights are published yet).
        revision: 40-hex commit sha the entry is pinned to.
        files: filename -> sha256 of each file to download.
        architecture, dataset, threat_model, method, settings, recipe: what it is and how to
            reproduce it.
        results: headline accuracies as fractions from eval.json, e.g.
            {"clean": 0.86, "autoattack": 0.55} (empty while unpublished: never invented).
        card: path of its model card under model_cards/.
        description: one line.
        paper: the method's paper (for the card's citation).
        license: licence of the published weights.
        evaluation: published entries: suite, seed, health verdict and ``counts``
            (attack -> [correct, n]) of the results, for intervals and leaderboards.
        measured: unpublished entries: numbers of a real run recorded in the repository
            (``protocol`` says how it differs from the recipe; ``train`` and ``eval`` are the
            commands that produced it; ``source`` the file that records it).
    """

    name: str
    repo_id: str = ""
    revision: str = ""
    files: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    dataset: str = ""
    threat_model: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    results: dict[str, float] = field(default_factory=dict)
    recipe: str = ""
    card: str = ""
    description: str = ""
    status: str = "unpublished"
    paper: str = ""
    license: str = "apache-2.0"
    evaluation: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooEntry:
        """Build an entry from an index.json object (unknown keys are dropped; see validate_entry)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy in :data:`SCHEMA` order (empty optional blocks left out)."""
        d = dataclasses.asdict(self)
        return {k: d[k] for k in SCHEMA if d[k] or k not in OPTIONAL_BLOCKS}

    @property
    def train_command(self) -> str:
        """The command that trains this entry: ``robustzoo train --recipe NAME`` or the full command."""
        if self.recipe.startswith(TRAIN_PREFIX):
            return self.recipe
        return f"robustzoo train --recipe {self.recipe or self.name}"

    @property
    def published(self) -> bool:
        """True when the entry points at pinned weights (``status`` must agree: validate_entry)."""
        return bool(self.repo_id and self.revision and self.files)

    @property
    def eps(self) -> float | None:
        """The threat model's ε on the [0,1] scale (None when missing)."""
        eps = self.threat_model.get("eps")
        return float(eps) if isinstance(eps, (int, float)) else None


def repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a Hub model id ``org/name`` (None when it is one).

    The Hub's own rules (:func:`huggingface_hub.utils.validate_repo_id`: characters, length,
    no ``--`` or ``..``, no ``.git`` ending) plus the shape every robustzoo repo has: one
    organisation or user, one name.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        return f"{repo_id!r} is not org/name"
    # Local import: huggingface_hub takes a while to load; only Hub ids need it.
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return f"{repo_id!r} is not a Hub repo id: {str(exc).split(': ' + repr(repo_id))[0].rstrip('.')}"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_entry(entry: ZooEntry | Mapping[str, Any],
                   known: Mapping[str, Collection[str]] | None = None) -> list[str]:
    """Check an entry against :data:`SCHEMA`; returns the problems found (empty when valid).

    Args:
        entry: a registered entry or the raw index.json object (raw objects are also checked
            for unknown keys, which :meth:`ZooEntry.from_dict` would silently drop).
        known: optional registry names to check references against, e.g.
            ``{"architectures": [...], "datasets": [...], "recipes": [...], "objectives": [...]}``;
            a kind that is absent is not checked.
    """
    raw = dict(entry) if isinstance(entry, Mapping) else entry.to_dict()
    name = raw.get("name", "?")
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(f"zoo entry {name!r}: {msg}")

    if isinstance(entry, Mapping):
        for key in raw:
            if key not in SCHEMA:
                bad(f"unknown key {key!r}")
    for key, (types, required, what) in SCHEMA.items():
        if key not in raw:
            if required:
                bad(f"missing {key!r} ({what})")
            continue
        if not isinstance(raw[key], types):
            bad(f"{key!r} must be a {types[0].__name__} ({what})")
    if problems:
        return problems

    if not ALIAS_RE.match(raw["name"]):
        bad("name must be lower-case words joined by '-', e.g. cat-cw-wrn34")
    status = raw["status"]
    if status not in STATUSES:
        bad(f"status {status!r} is not one of {', '.join(STATUSES)}")
    tm = raw["threat_model"]
    if tm.get("norm") not in NORMS:
        bad(f"threat_model.norm must be one of {', '.join(NORMS)}")
    if not _is_number(tm.get("eps")) or not 0 < tm["eps"] <= 1:
        bad("threat_model.eps must be a number in (0, 1] (the [0,1] pixel scale)")
    for key in ("architecture", "dataset", "method", "recipe"):
        if not raw[key]:
            bad(f"{key!r} is empty")
    recipe_is_command = raw["recipe"].startswith(TRAIN_PREFIX)
    if raw["recipe"] and not recipe_is_command and not ALIAS_RE.match(raw["recipe"]):
        bad(f"recipe {raw['recipe']!r} is neither a recipe name nor a `robustzoo train ...` command")
    if raw["card"] != f"model_cards/{raw['name']}.md":
        bad(f"card must be 'model_cards/{raw['name']}.md'")

    if status == "published":
        why = repo_id_problem(raw["repo_id"])
        if why:
            bad(f"repo_id {why}")
        if not COMMIT_RE.match(raw["revision"]):
            bad(f"revision {raw['revision']!r} is not a 40-hex commit sha (branches move; pin a commit)")
        files = raw["files"]
        for f in REQUIRED_FILES:
            if f not in files:
                bad(f"files must pin {f}")
        for f, digest in files.items():
            if f not in PUBLISHABLE_FILES:
                bad(f"file {f!r} is not one of {', '.join(PUBLISHABLE_FILES)}")
            if not isinstance(digest, str) or not SHA256_RE.match(digest):
                bad(f"sha256 of {f!r} must be 64 lower-case hex digits")
        results = raw["results"]
        if "clean" not in results:
            bad("results must include 'clean'")
        if not any(k != "clean" for k in results):
            bad("results must include at least one attack besides 'clean'")
        for k, v in results.items():
            if not _is_number(v) or not 0 <= v <= 1:
                bad(f"results[{k!r}] must be an accuracy fraction in [0, 1]")
        if raw.get("measured"):
            bad("a published entry has results of its own: drop 'measured'")
        if raw.get("evaluation"):
            problems.extend(f"zoo entry {name!r}: evaluation: {p}"
                            for p in _check_counts(raw["evaluation"].get("counts"), results))
    elif status == "unpublished":
        for key in ("repo_id", "revision", "files", "results"):
            if raw[key]:
                bad(f"an unpublished entry must leave {key!r} empty (no weights, no numbers yet)")
        if raw.get("evaluation"):
            bad("an unpublished entry has no evaluation of its own; a real run's numbers go under 'measured'")
        if raw.get("measured"):
            problems.extend(f"zoo entry {name!r}: measured: {p}" for p in _check_measured(raw["measured"]))

    if known:
        for key, kind in (("architecture", "architectures"), ("dataset", "datasets"),
                          ("method", "objectives"), ("recipe", "recipes")):
            names = known.get(kind)
            if key == "recipe" and recipe_is_command:
                continue  # a full training command names no recipe
            if names is not None and raw[key] and raw[key] not in names:
                bad(f"{key} {raw[key]!r} is not a registered {kind[:-1]}")
    return problems


def _check_counts(counts: Any, results: Mapping[str, Any]) -> list[str]:
    """``counts`` (attack -> [correct, n]) must be whole numbers that give exactly ``results``."""
    if not isinstance(counts, Mapping) or not counts:
        return ["'counts' must map each attack to [correct, n]"]
    problems = []
    for attack, pair in counts.items():
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in pair) and 0 <= pair[0] <= pair[1]
            and pair[1] > 0)
        if not ok:
            problems.append(f"counts[{attack!r}] must be [correct, n] with 0 <= correct <= n, n > 0")
        elif attack not in results:
            problems.append(f"counts[{attack!r}] has no result")
        elif abs(results[attack] - pair[0] / pair[1]) > 1e-6:  # eval.json rounds to 6 digits
            problems.append(f"results[{attack!r}] = {results[attack]} is not {pair[0]}/{pair[1]}")
    missing = [a for a in results if a not in counts]
    if missing:
        problems.append(f"no counts for {', '.join(missing)}")
    return problems


def _check_measured(measured: Mapping[str, Any]) -> list[str]:
    problems = [f"missing {k!r}" for k in MEASURED_KEYS if k not in measured]
    problems += [f"unknown key {k!r}" for k in measured if k not in MEASURED_KEYS + MEASURED_OPTIONAL]
    if problems:
        return problems
    for key in ("protocol", "train", "eval", "source"):
        if not isinstance(measured[key], str) or not measured[key].strip():
            problems.append(f"{key!r} must be a non-empty string")
    results = measured["results"]
    if not isinstance(results, Mapping) or "clean" not in results or len(results) < 2:
        return problems + ["'results' must hold 'clean' and at least one attack"]
    for k, v in results.items():
        if not _is_number(v) or not 0 <= v <= 1:
            problems.append(f"results[{k!r}] must be an accuracy fraction in [0, 1]")
    return problems + _check_counts(measured["counts"], results)
