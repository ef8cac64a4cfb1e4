"""Leaderboards: runs (or zoo entries) ranked by robust accuracy, one board per threat model.

What RobustBench users look at first. A board holds the models of one dataset, norm and ε;
each row has clean accuracy, every attack that was run (accuracy, correct/n, 95% interval),
the health verdict of the gradient-masking checks, and what it is ranked by:

* standard AutoAttack where it was run — those rows come first, best first;
* else the strongest attack that was run (the lowest accuracy over the attacks, or the
  per-example worst case when eval.json has it), with a note: an accuracy under weaker attacks
  is an upper bound, so these rows are ranked after every AutoAttack row.

This module returns data (:class:`Board`, :class:`Row`, ``to_dict``); the command line draws
it (a rich table, JSON, a static HTML page).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .errors import NotFoundError, RobustzooError
from .zoo import ZooEntry

#: Attack columns in this order; attacks not listed follow in name order.
ATTACK_ORDER = ("fgsm", "pgd", "pgd20", "pgd100", "cw", "square", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
                "autoattack")
RANK_ATTACK = "autoattack"


@dataclass
class Cell:
    """One accuracy: fraction, correct out of n, and its 95% Wilson interval (fractions)."""

    accuracy: float
    correct: int | None = None
    n: int | None = None
    ci95: tuple[float, float] | None = None


@dataclass
class Row:
    """One model on a board.

    Attributes:
        name: run directory name or zoo alias.
        source: 'run' or 'zoo'.
        location: the run directory, or ``repo@commit`` of a published zoo entry.
        status: 'local' (a run), 'published' or 'measured' (an unpublished zoo entry's
            recorded run, see ``ZooEntry.measured``).
        ranked_by: 'autoattack', an attack name, or 'worst-case'.
        rank_cell: the accuracy the row is ranked by.
        health: 'passed', 'suspect' (a check flagged or an attack is marked suspect) or '—'.
        note: why the row is ranked the way it is, or what its numbers are.
        upper_bound: ranked by attacks weaker than AutoAttack: the ranking value is an upper
            bound on robust accuracy.
        links: where to read more: 'paper' (the method's paper), 'card' (the model card),
            'repo' (the Hub repo at the published commit), 'run' (the run directory, or the
            record of an unpublished entry's run); URLs, or absolute local paths.
    """

    name: str
    source: str
    location: str
    status: str
    method: str
    architecture: str
    clean: Cell | None
    attacks: dict[str, Cell]
    ranked_by: str
    rank_cell: Cell
    health: str
    note: str = ""
    rank: int = 0
    upper_bound: bool = False
    links: dict[str, str] = field(default_factory=dict)


@dataclass
class Board:
    """The rows of one threat model, ranked."""

    dataset: str
    norm: str
    eps: float
    attacks: list[str]
    rows: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Leaderboard:
    """Every board, plus what could not be ranked and why."""

    boards: list[Board]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"boards": [b.to_dict() for b in self.boards], "skipped": list(self.skipped)}


def _cell(result: Mapping[str, Any]) -> Cell:
    ci = result.get("ci95")
    return Cell(accuracy=float(result["accuracy"]), correct=_int(result.get("correct")),
                n=_int(result.get("n")), ci95=(float(ci[0]), float(ci[1])) if ci and len(ci) == 2 else None)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _count_cell(correct: int, n: int) -> Cell:
    from .eval import wilson_interval  # the same interval eval.json records

    lo, hi = wilson_interval(int(correct), int(n))
    return Cell(accuracy=correct / n, correct=int(correct), n=int(n), ci95=(round(lo, 6), round(hi, 6)))


def _rank_choice(clean: Cell | None, attacks: Mapping[str, Cell], worst: Cell | None,
                 worst_attacks: list[str]) -> tuple[str, Cell, str]:
    if RANK_ATTACK in attacks:
        return RANK_ATTACK, attacks[RANK_ATTACK], ""
    if worst is not None and worst_attacks:
        return ("worst-case", worst, "no AutoAttack: ranked by the per-example worst case over "
                f"{', '.join(worst_attacks)}, an upper bound on robust accuracy")
    if attacks:
        name = min(attacks, key=lambda a: attacks[a].accuracy)
        return name, attacks[name], (f"no AutoAttack: ranked by the strongest attack run ({name}), an "
                                     f"upper bound on robust accuracy")
    if clean is not None:
        return "clean", clean, "no attack was run: clean accuracy only, no measured robustness"
    raise ValueError("nothing to rank by")


def row_from_report(name: str, config: Mapping[str, Any], report: Mapping[str, Any], *,
                    location: str) -> tuple[tuple[str, str, float], Row]:
    """A run's row, keyed by its threat model (dataset, norm, ε)."""
    rz = config["robustzoo"]
    results = {r["attack"]: _cell(r) for r in report.get("results", [])
               if isinstance(r, Mapping) and "attack" in r and "accuracy" in r}
    clean = results.pop("clean", None)
    wc = report.get("worst_case")
    worst = _cell(wc) if isinstance(wc, Mapping) and "accuracy" in wc else None
    worst_attacks = list(wc.get("attacks") or []) if isinstance(wc, Mapping) else []
    ranked_by, cell, note = _rank_choice(clean, results, worst, worst_attacks)
    from .eval import (  # deferred (startup time): the evaluation package loads torch
        custom_rows,
        custom_text,
    )

    custom = custom_rows(dict(report))
    if custom:
        # Allowed with --allow-custom, but not the standard protocol: weaker settings (fewer
        # queries, restarts) give a higher number, so the row is ranked as an upper bound.
        note = "; ".join(filter(None, [note, f"custom settings ({custom_text(custom)})"]))
    health = report.get("health")
    verdict = str(health.get("status")) if isinstance(health, Mapping) and health.get("status") else "—"
    if any(r.get("suspect") for r in report.get("results", []) if isinstance(r, Mapping)):
        verdict = "suspect"
    key = (str(report.get("dataset") or rz["dataset"]), str(rz.get("threat_model", {}).get("norm", "linf")),
           float(report["eps"]))
    links = _links(str(rz["objective"]), card=Path(location) / "README.md", run=Path(location))
    return key, Row(name=name, source="run", location=location, status="local", method=str(rz["objective"]),
                    architecture=str(config["architecture"]), clean=clean, attacks=results,
                    ranked_by=ranked_by, rank_cell=cell, health=verdict, note=note,
                    upper_bound=_upper_bound(ranked_by) or ranked_by in custom, links=links)


def _upper_bound(ranked_by: str) -> bool:
    return ranked_by not in (RANK_ATTACK, "clean")


#: The source checkout (model_cards/ and the recorded runs live there, not in a wheel).
_SOURCE = Path(__file__).resolve().parents[1]


def _links(method: str, *, card: Path | str | None = None, run: Path | str | None = None,
           repo: str | None = None) -> dict[str, str]:
    """Links of a row: the method's paper, and the card / run / Hub repo that exist."""
    from .papers import method_paper

    out = {"paper": method_paper(method).link}
    for key, target in (("card", card), ("run", run)):
        if isinstance(target, str) and target.startswith("https://"):
            out[key] = target
        elif target is not None and Path(target).exists():
            out[key] = str(Path(target).resolve())
    if repo:
        out["repo"] = repo
    return {k: v for k, v in out.items() if v}


def row_from_entry(entry: ZooEntry) -> tuple[tuple[str, str, float], Row] | None:
    """A zoo entry's row: its published results, or the recorded run under ``measured``;
    None for an entry with no numbers at all."""
    key = (entry.dataset, str(entry.threat_model.get("norm", "linf")), float(entry.eps or 0.0))
    if entry.published:
        counts = (entry.evaluation or {}).get("counts") or {}
        cells = {a: _count_cell(*counts[a]) if a in counts else Cell(accuracy=float(v))
                 for a, v in entry.results.items()}
        status, location = "published", f"{entry.repo_id}@{entry.revision[:12]}"
        health = str((entry.evaluation or {}).get("health") or "—")
        extra = ""
        hub = f"{hub_endpoint()}/{entry.repo_id}"
        links = _links(entry.method, card=f"{hub}/blob/{entry.revision}/README.md",
                       repo=f"{hub}/tree/{entry.revision}")
    elif entry.measured:
        m = entry.measured
        cells = {a: _count_cell(*m["counts"][a]) for a in m["results"]}
        status, location, health = "measured", m["source"], str(m.get("health") or "—")
        extra = f"not published; measured under {m['protocol'].split(':')[0]} (not the recipe)"
        links = _links(entry.method, card=_SOURCE / entry.card if entry.card else None, run=_SOURCE / m["source"])
    else:
        return None
    clean = cells.pop("clean", None)
    ranked_by, cell, note = _rank_choice(clean, cells, None, [])
    return key, Row(name=entry.name, source="zoo", location=location, status=status, method=entry.method,
                    architecture=entry.architecture, clean=clean, attacks=cells, ranked_by=ranked_by,
                    rank_cell=cell, health=health, note="; ".join(x for x in (extra, note) if x),
                    upper_bound=_upper_bound(ranked_by), links=links)


def hub_endpoint() -> str:
    """The Hub the zoo's repos are on: ``HF_ENDPOINT``, else huggingface.co (as huggingface_hub
    reads it; read here without importing huggingface_hub)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _attack_key(name: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(name), name) if name in ATTACK_ORDER else (len(ATTACK_ORDER), name)


def build(rows: Iterable[tuple[tuple[str, str, float], Row]],
          skipped: list[dict[str, str]] | None = None) -> Leaderboard:
    """Group rows by threat model and rank each group (AutoAttack rows first, best first)."""
    groups: dict[tuple[str, str, float], list[Row]] = {}
    for key, row in rows:
        groups.setdefault((key[0], key[1], round(key[2], 9)), []).append(row)
    boards = []
    for (dataset, norm, eps), members in sorted(groups.items()):
        members.sort(key=lambda r: (r.ranked_by != RANK_ATTACK, -r.rank_cell.accuracy,
                                    -(r.clean.accuracy if r.clean else 0.0), r.name))
        for i, r in enumerate(members, 1):
            r.rank = i
        attacks = sorted({a for r in members for a in r.attacks}, key=_attack_key)
        boards.append(Board(dataset=dataset, norm=norm, eps=eps, attacks=attacks, rows=members))
    return Leaderboard(boards=boards, skipped=list(skipped or []))


def run_dirs(root: str | Path) -> list[Path]:
    """``root`` itself when it is a run, else its sub-directories that hold a config.json."""
    root = Path(root)
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a directory; pass a folder of run directories (e.g. runs/) "
                            f"or --zoo")
    if (root / runs.CONFIG_FILE).is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / runs.CONFIG_FILE).is_file())


def from_runs(root: str | Path) -> tuple[list[tuple[tuple[str, str, float], Row]], list[dict[str, str]]]:
    """Rows of every evaluated run under ``root``, and the runs skipped with the reason."""
    rows, skipped = [], []
    for run_dir in run_dirs(root):
        try:
            config = runs.read_config(run_dir)
            report = runs.eval_record(run_dir)
        except RobustzooError as exc:
            skipped.append({"name": run_dir.name, "path": str(run_dir), "why": str(exc)})
            continue
        if report is None or "eps" not in report or not report.get("results"):
            hint = f"`robustzoo eval {run_dir} --suite autoattack`"
            why = None
            if report is None:
                from .eval import why_no_record  # deferred: the evaluation package loads torch

                why = why_no_record(run_dir)  # evaluated, but no evaluation may rank it
            skipped.append({"name": run_dir.name, "path": str(run_dir),
                            "why": f"{why}; see docs/evaluation.md, then evaluate again: {hint}" if why else
                            f"not evaluated; run {hint}"})
            continue
        from .eval import (  # deferred (startup time): the evaluation package loads torch
            NO_HEALTH,
            canonical_problems,
        )

        # An eval.json written before the canonical rule knew health and custom settings may hold
        # a failed or custom record: it is not ranked as robust accuracy.
        problems = canonical_problems(dict(report))
        if not isinstance(report.get("health"), dict):
            problems.append(NO_HEALTH)
        if problems:
            skipped.append({"name": run_dir.name, "path": str(run_dir),
                            "why": f"{'; '.join(problems)}; run `robustzoo eval {run_dir} --suite autoattack`"})
            continue
        rows.append(row_from_report(run_dir.name, config, report, location=str(run_dir)))
    return rows, skipped


def from_zoo(entries: Iterable[ZooEntry]) -> list[tuple[tuple[str, str, float], Row]]:
    """Rows of the zoo entries that carry numbers (published, or a recorded run under ``measured``)."""
    return [r for r in (row_from_entry(e) for e in entries) if r is not None]


def leaderboard(runs_dir: str | Path | None = None, *, zoo: bool = False,
                entries: Iterable[ZooEntry] | None = None) -> Leaderboard:
    """The leaderboard of the runs under ``runs_dir`` and/or (``zoo``) the registered zoo entries."""
    rows: list[tuple[tuple[str, str, float], Row]] = []
    skipped: list[dict[str, str]] = []
    if runs_dir is not None:
        rows, skipped = from_runs(runs_dir)
    if zoo or entries is not None:
        if entries is None:
            from .plugins import registry

            entries = [e for _, e in registry("zoo").items()]
        rows += from_zoo(entries)
    return build(rows, skipped)
