"""Build docs/results.md, its figures and the runs' model cards from the Fashion-MNIST study's records.

    python docs/make_results.py docs/results/fmnist                        # the records alone
    python docs/make_results.py docs/results/fmnist --weights runs/fmnist  # also the mask figures
    python docs/make_results.py docs/results/fmnist --into /tmp/preview    # write a preview elsewhere

RECORDS holds one folder per run as ``benchmarks/fmnist_zoo.py export`` writes it (no weights):
config.json, metrics.jsonl, eval.json and evals/ (the evaluation history; the end-of-training
record has ``"source": "train"``: clean and PGD-20 on the whole test set), eval-paper.json (one
evaluation of every attack, standard AutoAttack included, on the same 1,000 test images of
every run), eval-sweep.json (PGD-20 at several ε on those images), eval_flags.safetensors (the
per-example outcomes of both) and weights.sha256; protocol.json; and study.json (the runs the
study plans; the page says which of them its tables do not cover yet). From these alone it
regenerates:

* the part of docs/results.md between the ``generated`` markers (the hand-written reading
  outside them is kept): the protocol, the accuracy table (mean ± std over seeds), every run's
  AutoAttack with its 95% Wilson interval, each method against AT image by image (exact
  McNemar tests, per seed and pooled over seeds; a t-test over seeds for the method's
  difference), the same test between seeds of one method, a ranking in ``robustzoo leaderboard``'s
  order that gives methods it cannot tell apart the same rank, Calibrated AT's β × β1 points,
  PGD-20 against the stronger attacks, the training table and the commands;
* docs/img/fmnist-eps-curve.png (PGD-20 accuracy against ε, one line per method);
* model_cards/runs/<method>-cnn-fmnist-run.md for the best run of each method, rendered by the
  same code as ``robustzoo push`` as the card of an unpublished run (the weights' sha256 come
  from weights.sha256; cards of methods no longer present are removed);
* the ``measured`` blocks of the zoo entries (robustzoo/zoo/index.json) that cite those cards,
  and those entries' cards (model_cards/<entry>.md): the numbers of the card, the protocol
  and the commands of its seed.

The mask figures (docs/img/fmnist-masks-<method>.png) need the weights: with ``--weights RUNS``
(the run directories the records were exported from; each model's sha256 must match
weights.sha256) they are drawn again and described in docs/img/fmnist-masks.json; without it the
figures drawn before are kept and linked when that file says they show the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustzoo.cards import attack_label, front_matter, render_run_card, write_zoo_cards
from robustzoo.errors import IntegrityError, NotFoundError, RobustzooError, RunError
from robustzoo.eval import mcnemar_exact, wilson_interval
from robustzoo.files import atomic_path, write_json, write_text
from robustzoo.leaderboard import build, row_from_report
from robustzoo.runs import check_eval_report, read_config, read_json, read_metrics, read_weights
from robustzoo.zoo import ZooEntry

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
CARDS = ROOT / "model_cards" / "runs"  # run cards, kept apart from the zoo entries' cards
MASK_INFO = "fmnist-masks.json"  # beside the mask figures: which run and weights each one shows
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
ORDER = ["at", "trades", "mart", "fat-trades", "cat-cent", "cat-cw", "cat-cw-b1-0.05", "cat-cw-b5-0.3",
         "cat-cw-b5-0.05", "cat-cent-b5-0.05", "customized-ce", "customized-mix", "customized-mix-code"]
REFERENCE = "at"  # every method is tested against this one, image by image
ALPHA = 0.01  # an image-by-image difference with p below this: the two models differ on these images
# A difference of the *method* also needs its seeds to agree: every seed pair the same way and a
# paired t-test over the seeds (df = k - 1, the training seed's noise included) below this.
SEED_ALPHA = 0.05
# Columns of the accuracy table, all from eval-paper.json: (attack, header).
COLUMNS = [("clean", "clean"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("pgd100", "PGD-100"), ("cw", "CW∞"),
           ("square", "Square"), ("apgd-ce", "APGD-CE"), ("apgd-dlr", "APGD-DLR"), ("autoattack", "AutoAttack")]
AA_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
# Calibrated AT runs whose masks are drawn: the MNIST settings (β 1, β1 0.3) and the CIFAR ones (β 5, β1 0.05).
MASK_FIGURES = ("cat-cent", "cat-cw", "cat-cent-b5-0.05", "cat-cw-b5-0.05")
# Where the regenerate commands put the run directories (fmnist_zoo.py's default --out; any folder works).
RUNS = "runs/fmnist"
WEIGHT_FILES = ("model.safetensors", "aux.safetensors")  # what a card and a mask figure are made from


@dataclass
class Run:
    """One run's records (a folder of the export)."""

    name: str
    method: str
    seed: int
    dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    paper: dict[str, Any] | None  # eval-paper.json: every attack on the shared images
    sweep: dict[str, Any] | None  # eval-sweep.json
    final: dict[str, dict[str, Any]]  # the end-of-training evaluation (whole test set), by attack
    weights: dict[str, str]  # file -> sha256, from weights.sha256
    index: Any = None  # the evaluated examples' rows in the test split (torch tensor)
    outcomes: dict[str, Any] = field(default_factory=dict)  # attack -> per-example "still correct"
    outcome_note: str = ""  # why per-example outcomes are missing

    @property
    def rows(self) -> dict[str, dict[str, Any]]:
        """eval-paper.json's results by attack ({} before the run is evaluated)."""
        return {r["attack"]: r for r in (self.paper or {}).get("results", [])}

    @property
    def flags(self) -> set[str]:
        """The gradient-masking checks that flagged (or failed) eval-paper.json."""
        checks = ((self.paper or {}).get("health") or {}).get("checks", [])
        return {c["name"] + (" (failed)" if c["status"] == "failed" else "") for c in checks
                if c.get("status") in ("flagged", "failed")}

    @property
    def best_epoch(self) -> int | None:
        """model.safetensors is the last epoch marked best on validation."""
        return max((x["epoch"] for x in self.metrics if x.get("best")), default=None)

    def acc(self, attack: str) -> float | None:
        row = self.rows.get(attack)
        return row["accuracy"] if row else None


@dataclass
class Pair:
    """Two runs' outcomes under one attack on the same n examples."""

    n: int
    ref_only: int  # still correct for the reference run only
    other_only: int  # still correct for the other run only

    @property
    def diff(self) -> float:
        """The other run's accuracy minus the reference's (a fraction)."""
        return (self.other_only - self.ref_only) / self.n

    @property
    def p(self) -> float:
        return two_sided_p(self.ref_only, self.other_only)


def two_sided_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller one-sided tail, at most 1."""
    return min(1.0, 2 * min(mcnemar_exact(b, c), mcnemar_exact(c, b)))


def _read(path: Path, fix: str) -> Any:
    return read_json(path, fix) if path.is_file() else None


def _report(path: Path) -> dict[str, Any] | None:
    fix = "export the run again (benchmarks/fmnist_zoo.py export) or delete the file and re-run its evaluation"
    data = _read(path, fix)
    return None if data is None else check_eval_report(data, path, fix)


def training_eval(run: Path) -> dict[str, Any] | None:
    """The run's end-of-training evaluation (clean and PGD-20 on the whole test set) from its history.

    Training records it in RUN/evals/ with ``"source": "train"`` (a run made before that has it
    as the record migrated from its first eval.json, which only training wrote); the largest
    such record when there are several.
    """
    records = [_read(p, "export the run again") for p in sorted((run / "evals").glob("*.json"))]
    for pick in (lambda r: r.get("source") == "train", lambda r: r.get("migrated")):
        found = [r for r in records if isinstance(r, dict) and pick(r)]
        if found:
            return max(found, key=lambda r: r.get("n") or 0)
    return None


def _weights(run: Path) -> dict[str, str]:
    """file -> sha256 of the run's weights: weights.sha256 of an export, else (a run directory
    itself given as the records) the weight files there."""
    path = run / "weights.sha256"
    if not path.is_file():
        return {f: _sha256(run / f) for f in WEIGHT_FILES if (run / f).is_file()}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            out[name] = digest
    return out


def load_outcomes(run: Run) -> None:
    """Fill ``run.index`` and ``run.outcomes`` from eval_flags.safetensors, when that file holds
    eval-paper.json's evaluation (same model, examples, ε and seed) and agrees with its counts;
    else say why in ``run.outcome_note``.

    AutoAttack's outcomes are stored per component (``autoattack/<component>``): an example
    is robust when no component broke it.
    """
    path = run.dir / "eval_flags.safetensors"
    if run.paper is None:
        return
    if not path.is_file():
        run.outcome_note = "no eval_flags.safetensors"
        return
    tensors, meta = read_weights(path)
    info = json.loads(meta.get("robustzoo.eval_flags", "{}"))
    header, entries = info.get("header", {}), info.get("entries", {})
    for key in ("model", "n", "seed", "eps"):
        if header.get(key) != run.paper.get(key):
            run.outcome_note = (f"eval_flags.safetensors holds another evaluation ({key} {header.get(key)!r}, "
                                f"eval-paper.json {run.paper.get(key)!r})")
            return
    outcomes = {}
    for attack, row in run.rows.items():
        keys = ([k for k in entries if k.startswith(attack + "/")] if row.get("components") else
                [attack] if attack in entries else [])
        if not keys or not all(entries[k].get("complete") for k in keys):
            continue
        robust = tensors[f"flags::{keys[0]}"].bool()
        for k in keys[1:]:
            robust = robust & tensors[f"flags::{k}"].bool()
        if int(robust.sum()) != row["correct"]:
            run.outcome_note = (f"eval_flags.safetensors counts {int(robust.sum())} examples correct under "
                                f"{attack}, eval-paper.json {row['correct']}")
            return
        outcomes[attack] = robust
    run.index, run.outcomes = tensors["index"].long(), outcomes


def collect(root: Path) -> dict[str, list[Run]]:
    """method -> its exported runs, by seed (a run folder is one with eval.json)."""
    runs: dict[str, list[Run]] = defaultdict(list)
    for d in sorted(p for p in root.iterdir() if (p / "eval.json").is_file()):
        cfg = read_config(d)
        final = training_eval(d)
        run = Run(name=d.name, method=d.name.rsplit("-s", 1)[0], seed=int(cfg["robustzoo"]["config"]["seed"]),
                  dir=d, config=cfg, metrics=read_metrics(d), paper=_report(d / "eval-paper.json"),
                  sweep=_report(d / "eval-sweep.json"),
                  final={r["attack"]: r for r in (final or {}).get("results", [])}, weights=_weights(d))
        load_outcomes(run)
        twin = next((r for r in runs[run.method] if r.seed == run.seed), None)
        if twin is not None:
            raise RunError(f"{twin.dir} and {d} are both {run.method} with seed {run.seed}; keep one of them in {root}")
        runs[run.method].append(run)
    for rs in runs.values():
        rs.sort(key=lambda r: r.seed)
    return dict(runs)


def evaluated(runs: dict[str, list[Run]]) -> dict[str, list[Run]]:
    """The runs that have eval-paper.json, by method (methods without any are left out)."""
    out = {m: [r for r in rs if r.paper is not None] for m, rs in runs.items()}
    return {m: rs for m, rs in out.items() if rs}


def _methods(runs: dict[str, Any]) -> list[str]:
    return [m for m in ORDER if m in runs] + sorted(set(runs) - set(ORDER))


def _cell(values: list[float]) -> str:
    """Mean ± sample standard deviation over seeds, in percent ('—' when nothing was measured)."""
    if not values:
        return "—"
    m = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def _interval(values: list[float], n: int) -> str:
    """``_cell`` with the 95% Wilson interval at n examples of the mean (one seed: of the run).

    The seeds of a method are evaluated on the same images, so averaging them does not
    shrink the images' sampling error: the interval at n of the mean accuracy bounds it.
    """
    if not values:
        return "—"
    lo, hi = wilson_interval(round(statistics.fmean(values) * n), n)
    return f"{_cell(values)} ({100 * lo:.1f}–{100 * hi:.1f})"


def _label(attack: str) -> str:
    """An attack's name inside a sentence ('clean', 'PGD-20')."""
    return "clean" if attack == "clean" else attack_label(attack)


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float) -> str:
    text = f"{p:.2g}"
    return f"**{text}**" if p < ALPHA else text


def _half_width(n: int) -> float:
    """Largest half-width of a 95% interval at n examples (p = 0.5), in points."""
    return 100 * 1.96 * math.sqrt(0.25 / n)


def _sizes(runs: dict[str, list[Run]]) -> list[int]:
    return sorted({r.paper["n"] for rs in runs.values() for r in rs})


def _seeds(rs: list[Run]) -> str:
    seeds = [r.seed for r in rs]
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))


def _flag_cell(rs: list[Run]) -> str:
    names = sorted(set().union(*(r.flags for r in rs)))
    if not names:
        return "none"
    return ", ".join(n if all(n in r.flags for r in rs) else
                     f"{n} ({sum(n in r.flags for r in rs)} of {len(rs)} seeds)" for n in names)


def main_table(runs: dict[str, list[Run]]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r.rows for rs in runs.values() for r in rs)]
    lines = ["| method | seeds | " + " | ".join(h for _, h in cols) + " | health flags |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for m in _methods(runs):
        rs = runs[m]
        cells = [_cell([r.acc(a) for r in rs if a in r.rows]) for a, _ in cols]
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(cells) + f" | {_flag_cell(rs)} |")
    return "\n".join(lines)


def runs_table(runs: dict[str, list[Run]]) -> str:
    """Every run's AutoAttack (and clean) accuracy with its 95% Wilson interval."""
    lines = ["| run | clean (95% CI) | AutoAttack: correct / n | AutoAttack (95% CI) | health |",
             "|---|---|---|---|---|"]

    def ci(row: dict[str, Any] | None) -> str:
        if row is None:
            return "—"
        lo, hi = wilson_interval(row["correct"], row["n"])
        return f"{100 * row['accuracy']:.1f} ({100 * lo:.1f}–{100 * hi:.1f})"

    for m in _methods(runs):
        for r in runs[m]:
            aa = r.rows.get("autoattack")
            health = ((r.paper or {}).get("health") or {}).get("status", "—")
            lines.append(f"| {r.name} | {ci(r.rows.get('clean'))} | "
                         f"{'{} / {}'.format(aa['correct'], aa['n']) if aa else '—'} | {ci(aa)} | {health} |")
    return "\n".join(lines)


def pair(ref: Run, other: Run, attack: str) -> Pair | None:
    """The two runs' outcomes under ``attack`` on the same examples (None: not comparable)."""
    if attack not in ref.outcomes or attack not in other.outcomes:
        return None
    if ref.index.shape != other.index.shape or not bool((ref.index == other.index).all()):
        return None
    a, b = ref.outcomes[attack], other.outcomes[attack]
    return Pair(n=len(a), ref_only=int((a & ~b).sum()), other_only=int((b & ~a).sum()))


def pooled(pairs: list[Pair]) -> Pair:
    """Seeds pooled: the discordant counts summed (one test; the difference is the seeds' mean)."""
    return Pair(n=sum(p.n for p in pairs), ref_only=sum(p.ref_only for p in pairs),
                other_only=sum(p.other_only for p in pairs))


def seed_pairs(ref: list[Run], other: list[Run], attack: str) -> list[tuple[int, Pair | None]]:
    """Seed k of ``other`` against seed k of ``ref``, for each seed of ``other`` that ``ref`` has."""
    by_seed = {r.seed: r for r in ref}
    return [(o.seed, pair(by_seed[o.seed], o, attack)) for o in other if o.seed in by_seed]


@dataclass
class SeedTest:
    """A method's difference from the reference seed by seed (seed k against seed k)."""

    diffs: list[float]  # fractions, one per shared seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.diffs)

    @property
    def same_sign(self) -> bool:
        return all(d > 0 for d in self.diffs) or all(d < 0 for d in self.diffs)

    @property
    def p(self) -> float:
        """Two-sided p of a one-sample t-test of the per-seed differences (df = seeds - 1)."""
        from scipy.stats import t as student  # scipy comes with scikit-learn, a dependency

        sd = statistics.stdev(self.diffs)
        if sd == 0:
            return 0.0 if self.mean != 0 else 1.0
        t = self.mean / (sd / math.sqrt(len(self.diffs)))
        return float(min(1.0, 2 * student.sf(abs(t), len(self.diffs) - 1)))


def seed_test(ref: list[Run], other: list[Run], attack: str) -> SeedTest | None:
    """The per-seed differences, when at least two seeds are paired (None otherwise)."""
    pairs = [p for _, p in seed_pairs(ref, other, attack)]
    if len(pairs) < 2 or any(p is None for p in pairs):
        return None
    return SeedTest([p.diff for p in pairs])


def verdict(ref: list[Run], other: list[Run], attack: str) -> tuple[str, Pair | None, SeedTest | None]:
    """What the study can say about ``other`` against ``ref`` under ``attack``.

    'method': the images decide (pooled McNemar p < ALPHA) and so do the seeds (at least two,
    every one the same way, seed-level p < SEED_ALPHA). 'models': the trained models differ on
    these images, but one seed, or seeds that disagree, cannot tell the method from the
    training seed (two seeds of one method can differ as much: :func:`seed_control`). 'tie':
    the images cannot tell them apart. 'untested': no per-example outcomes to pair.
    """
    pooled_pair = compare(ref, other, attack)
    if pooled_pair is None:
        return "untested", None, None
    seeds = seed_test(ref, other, attack)
    if pooled_pair.p >= ALPHA:
        return "tie", pooled_pair, seeds
    if (seeds is not None and seeds.same_sign and seeds.p < SEED_ALPHA
            and (seeds.mean > 0) == (pooled_pair.diff > 0)):
        return "method", pooled_pair, seeds
    return "models", pooled_pair, seeds


def compare(ref: list[Run], other: list[Run], attack: str) -> Pair | None:
    """The test that decides: seeds paired and pooled (one seed: that pair); None if none paired."""
    pairs = [p for _, p in seed_pairs(ref, other, attack)]
    if not pairs or any(p is None for p in pairs):
        return None
    return pooled(pairs) if len(pairs) > 1 else pairs[0]


def paired_table(runs: dict[str, list[Run]]) -> tuple[str, list[str]] | None:
    """Each method against AT, example by example: the table and the summary lines."""
    if REFERENCE not in runs or set(runs) == {REFERENCE}:
        return None
    ref = runs[REFERENCE]
    lines = ["| method | pairing | AutoAttack − AT (points) | robust only for AT / only for the method | p | "
             "clean − AT (points) | correct only for AT / only for the method | p |", "|---|---|---|---|---|---|---|---|"]
    # attack -> (method, how it was paired, verdict kind, pooled pair, seed test)
    verdicts: dict[str, list[tuple[str, str, str, Pair, SeedTest | None]]] = {"autoattack": [], "clean": []}
    missing = []

    def cells(p: Pair | None) -> list[str]:
        return [_points(p.diff), f"{p.ref_only} / {p.other_only}", _p(p.p)] if p else ["—", "—", "—"]

    for m in _methods(runs):
        if m == REFERENCE:
            continue
        per = {a: seed_pairs(ref, runs[m], a) for a in verdicts}
        if not per["autoattack"]:
            missing.append(f"{m} (no seed in common with {REFERENCE})")
            continue
        for i, (seed, aa) in enumerate(per["autoattack"]):
            clean = per["clean"][i][1]
            lines.append(f"| {m} | seed {seed} vs {REFERENCE} seed {seed} | " + " | ".join(cells(aa) + cells(clean)) + " |")
        if len(per["autoattack"]) > 1:
            lines.append(f"| {m} | {_seeds([r for r in runs[m] if r.seed in {s for s, _ in per['autoattack']}])} "
                         "pooled | " + " | ".join(cells(compare(ref, runs[m], "autoattack"))
                                                  + cells(compare(ref, runs[m], "clean"))) + " |")
        for a in verdicts:
            kind, decided, seeds = verdict(ref, runs[m], a)
            if decided is None:
                missing.append(f"{m} ({a}: per-example outcomes missing)")
            else:
                how = "pooled over seeds" if len(per[a]) > 1 else f"seed {per[a][0][0]}"
                verdicts[a].append((m, how, kind, decided, seeds))
    summary = []
    for a, label in (("autoattack", "AutoAttack"), ("clean", "Clean accuracy")):
        said: dict[str, list[str]] = {"method": [], "models": [], "tie": []}
        for m, how, kind, p, seeds in verdicts[a]:
            if seeds is None:
                detail = f"images p = {p.p:.2g}, {how}"
            else:
                detail = (f"images p = {p.p:.2g}, {how}; seeds {', '.join(_points(d) for d in seeds.diffs)}: "
                          f"seed-level p = {seeds.p:.2g}")
            said[kind].append(f"{m} {_points(p.diff)} ({detail})")
        summary.append(
            f"- **{label}**: a difference of the method (the images decide, p < {ALPHA:g}, and so do at least two "
            f"seeds, all the same way, seed-level p < {SEED_ALPHA:g}): {'; '.join(said['method']) or 'none'}. "
            f"The models differ on these images, but the seeds do not decide it: {'; '.join(said['models']) or 'none'}. "
            f"Not told apart from {REFERENCE}: {'; '.join(said['tie']) or 'none'}.")
    notes = {r.name: r.outcome_note for rs in runs.values() for r in rs if r.outcome_note}
    if notes or missing:
        summary.append("- Not tested: " + "; ".join([f"{k}: {v}" for k, v in notes.items()] + missing) + ".")
    return "\n".join(lines), summary


def seed_control(runs: dict[str, list[Run]]) -> str | None:
    """Seeds of one method against each other, image by image: what the training seed alone does.

    The same exact McNemar test as between methods; a small p here shows that p < ALPHA between
    two runs is a difference of the trained models, not yet of the methods.
    """
    lines = ["| method | pairing | AutoAttack difference (points) | robust only for the lower seed / only for the "
             "higher | p | clean difference (points) | correct only for the lower seed / only for the higher | p |",
             "|---|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        rs = runs[m]
        for i, first in enumerate(rs):
            for second in rs[i + 1:]:
                cells = []
                for a in ("autoattack", "clean"):
                    p = pair(first, second, a)
                    cells += [_points(p.diff), f"{p.ref_only} / {p.other_only}", _p(p.p)] if p else ["—"] * 3
                lines.append(f"| {m} | seed {second.seed} − seed {first.seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else None


def ranking_table(runs: dict[str, list[Run]]) -> str:
    """The methods in `robustzoo leaderboard`'s order, with a rank that ties what the paired
    test cannot tell apart.

    Each method is a leaderboard row whose accuracies are the means over its seeds (ranked by
    standard AutoAttack where it was run, else by the strongest attack). Its rank is 1 + the
    number of methods that are better by a real difference: ranked by AutoAttack when it is
    not, or with a higher accuracy under the same attack and p < ALPHA (``compare``).
    """
    rows = []
    for m in _methods(runs):
        rs = runs[m]
        attacks = {a for r in rs for a in r.rows}
        report = {"eps": rs[0].paper["eps"], "dataset": rs[0].paper.get("dataset"),
                  "results": [{"attack": a, "accuracy": statistics.fmean(r.acc(a) for r in rs if a in r.rows)}
                              for a in sorted(attacks)],
                  "health": {"status": "suspect" if any(r.paper["health"].get("status") == "suspect"
                                                        for r in rs if r.paper.get("health")) else "passed"}}
        rows.append(row_from_report(m, rs[0].config, report, location=m))
    order = [row for board in build(rows).boards for row in board.rows]

    def better(a: Any, b: Any) -> bool:
        if a.ranked_by == "autoattack" and b.ranked_by != "autoattack":
            return True
        if a.ranked_by != b.ranked_by or a.rank_cell.accuracy <= b.rank_cell.accuracy:
            return False
        # on the seeds they share, a must be the better one too, by a difference of the method
        kind, p, _ = verdict(runs[b.name], runs[a.name], a.ranked_by)
        return kind == "method" and p is not None and p.diff > 0

    ranked = []
    for pos, row in enumerate(order):
        rank = 1 + sum(better(o, row) for o in order if o is not row)
        ties = [o.name if compare(runs[row.name], runs[o.name], o.ranked_by) else f"{o.name} (not tested)"
                for o in order if o is not row and o.ranked_by == row.ranked_by
                and not better(o, row) and not better(row, o)]
        ranked.append((rank, pos, row, ties))
    lines = ["| rank | method | seeds | clean | robust | ranked by | not told apart from (as methods) | health |",
             "|---|---|---|---|---|---|---|---|"]
    for rank, _, row, ties in sorted(ranked, key=lambda t: t[:2]):
        rs = runs[row.name]
        lines.append(f"| {rank} | {row.name} | {len(rs)} | {_cell([r.acc('clean') for r in rs if 'clean' in r.rows])} "
                     f"| {_cell([r.acc(row.ranked_by) for r in rs if row.ranked_by in r.rows])} | "
                     f"{attack_label(row.ranked_by)} | {', '.join(ties) or '—'} | {row.health} |")
    return "\n".join(lines)


def gap_table(runs: dict[str, list[Run]]) -> str:
    """PGD-20 against the stronger attacks on the same images; the whole test set at the end."""
    final_attacks = [a for a in ("clean", "pgd20", "cw") if any(a in r.final for rs in runs.values() for r in rs)]
    lines = ["| method | PGD-20 − min(APGD-CE, APGD-DLR) | PGD-20 | AutoAttack | PGD-20 − AutoAttack | "
             "AutoAttack after " + " → ".join(attack_label(s) for s in AA_STAGES) + " | whole test set: "
             + " / ".join(_label(a) for a in final_attacks) + " |", "|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        rs = runs[m]
        apgd = [r.acc("pgd20") - min(r.acc("apgd-ce"), r.acc("apgd-dlr"))
                for r in rs if {"pgd20", "apgd-ce", "apgd-dlr"} <= r.rows.keys()]
        both = [r for r in rs if {"pgd20", "autoattack"} <= r.rows.keys()]
        stages = [_cell([c["accuracy"] for r in both for c in r.rows["autoattack"].get("components", [])
                         if c["attack"] == s]) for s in AA_STAGES]
        full = " / ".join(_cell([r.final[a]["accuracy"] for r in rs if a in r.final]) for a in final_attacks)
        lines.append(f"| {m} | {_cell(apgd)} | {_cell([r.acc('pgd20') for r in both])} | "
                     f"{_cell([r.acc('autoattack') for r in both])} | "
                     f"{_cell([r.acc('pgd20') - r.acc('autoattack') for r in both])} | {' → '.join(stages)} | {full} |")
    return "\n".join(lines)


def _setting(config: dict[str, Any], key: str) -> Any:
    return config["robustzoo"].get("objective_settings", {}).get(key)


def calibrated_table(runs: dict[str, list[Run]], protocol: dict[str, Any]) -> str | None:
    """Every Calibrated AT point the study plans (protocol.json) or ran, next to AT and TRADES.

    Clean and AutoAttack on the shared images with their 95% intervals, mean ± std over seeds;
    a planned point without runs says so.
    """
    planned = {m: spec[1] for m, spec in (protocol.get("methods") or {}).items() if spec[0] == "calibrated"}
    ran = [m for m in runs if runs[m][0].config["robustzoo"]["objective"] == "calibrated"]
    if not planned and not ran:
        return None
    n = max(_sizes(runs))
    lines = ["| method | training attack | β | β1 | seeds | mean M (last epoch) | mask collapsed | clean (95% CI) | "
             "AutoAttack (95% CI) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in [m for m in ORDER if m in planned or m in ran] + sorted((set(planned) | set(ran)) - set(ORDER)):
        rs = runs.get(m, [])
        # the settings a run was trained with, else the ones the study plans for it
        get = (rs[0].config["robustzoo"].get("objective_settings", {}) if rs else planned[m]).get
        attack = "CE (CATcent)" if get("attack") == "cent" else "CW (CATcw)"
        if not rs:
            lines.append(f"| {m} | {attack} | {float(get('beta')):g} | {float(get('beta1')):g} | not run yet | "
                         "— | — | — | — |")
            continue
        masks = [r.metrics[-1]["mask_mean"] for r in rs if r.metrics and "mask_mean" in r.metrics[-1]]
        collapsed = [r.seed for r in rs if any(x.get("mask_collapsed") for x in r.metrics)]
        cells = [m, attack, f"{float(get('beta')):g}", f"{float(get('beta1')):g}", str(len(rs)),
                 f"{statistics.fmean(masks):.2f}" if masks else "—",
                 f"yes (seed {', '.join(map(str, collapsed))})" if collapsed else "no",
                 _interval([r.acc("clean") for r in rs if "clean" in r.rows], n),
                 _interval([r.acc("autoattack") for r in rs if "autoattack" in r.rows], n)]
        lines.append("| " + " | ".join(cells) + " |")
    for m, label in ((REFERENCE, "CE (PGD)"), ("trades", "KL (TRADES)")):
        rs = runs.get(m)
        if rs:
            beta = _setting(rs[0].config, "beta")
            beta = f"{float(beta):g}" if beta is not None else "—"
            lines.append(f"| {m} | {label} | {beta} | — | {len(rs)} | — | — | "
                         f"{_interval([r.acc('clean') for r in rs if 'clean' in r.rows], n)} | "
                         f"{_interval([r.acc('autoattack') for r in rs if 'autoattack' in r.rows], n)} |")
    return "\n".join(lines)


def training_table(runs: dict[str, list[Run]]) -> str:
    lines = [f"| run | best epoch (validation) | val clean | val PGD-{_values(runs, 'val_steps')} | s per epoch (wall clock; runs "
             "shared 2 CPU cores two at a time or more) | mean of the mask M by epoch | mask collapsed | "
             "mean ε_i at the best epoch (its training batches) |", "|---|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        for r in runs[m]:
            rows = r.metrics
            if not rows:
                lines.append(f"| {r.name} | — | — | — | — | — | — | — |")
                continue
            best = next((x for x in rows if x["epoch"] == r.best_epoch), rows[-1])
            masks = " ".join(f"{x['mask_mean']:.3f}" if "mask_mean" in x else "–" for x in rows) \
                if any("mask_mean" in x for x in rows) else "—"
            watched = [x for x in rows if "mask_collapsed" in x]
            collapsed = ("yes, epoch " + ", ".join(str(x["epoch"]) for x in watched if x["mask_collapsed"])
                         if any(x["mask_collapsed"] for x in watched) else "no") if watched else "—"
            eps = f"{best['eps_mean']:.4f}" if "eps_mean" in best else "—"
            lines.append(f"| {r.name} | {best['epoch']} of {len(rows)} | {100 * best['val_clean']:.1f} | "
                         f"{100 * best['val_pgd']:.1f} | {statistics.fmean(x['seconds'] for x in rows):.0f} | "
                         f"{masks} | {collapsed} | {eps} |")
    return "\n".join(lines)


def curve(runs: dict[str, list[Run]], path: Path) -> list[int]:
    """PGD-20 accuracy against ε, the mean over each method's seeds; returns the sample sizes
    drawn ([] when no run has a sweep, and nothing is written)."""
    # deferred: matplotlib is slow to import and only the figures need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sizes = set()
    for m in _methods(runs):
        sweeps = [r.sweep for r in runs[m] if r.sweep and r.sweep.get("eps_sweep")]
        if not sweeps:
            continue
        eps = [row["eps"] for row in sweeps[0]["eps_sweep"]]
        acc = [100 * statistics.fmean(s["eps_sweep"][i]["accuracy"] for s in sweeps) for i in range(len(eps))]
        ax.plot(eps, acc, marker="o", label=m, linestyle="--" if m.startswith("cat-") else "-")
        sizes |= {s["n"] for s in sweeps}
    if not sizes:
        return []
    train_eps = _values(runs, "eps")
    ax.axvline(float(train_eps.split(" / ")[0]), color="grey", linestyle=":", linewidth=1,
               label=f"training ε = {train_eps}")
    ax.set_xlabel("ε (L∞, [0,1] scale)")
    ax.set_ylabel("PGD-20 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Fashion-MNIST: robust accuracy vs ε")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return sorted(sizes)


def best_run(rs: list[Run]) -> Run:
    """The seed with the best AutoAttack accuracy (else PGD-20), then clean accuracy."""
    def score(r: Run) -> tuple[float, float]:
        robust = r.rows.get("autoattack") or r.rows.get("pgd20") or r.final.get("pgd20")
        clean = r.rows.get("clean") or r.final.get("clean")
        return (robust["accuracy"] if robust else 0.0, clean["accuracy"] if clean else 0.0)
    return max(rs, key=score)


def cards(runs: dict[str, list[Run]], out_dir: Path) -> list[str]:
    """The card of each method's best run (its eval-paper.json; the weights' sha256 from
    weights.sha256); stale cards removed. Returns the file names."""
    written = []
    for m in _methods(runs):
        r = best_run(runs[m])
        files = {f: r.weights[f] for f in WEIGHT_FILES if f in r.weights}
        files["config.json"] = hashlib.sha256((r.dir / "config.json").read_bytes()).hexdigest()
        stem = f"{m}-cnn-fmnist"
        # Not published: the card names no repo and no zoo alias, only the run, what it scored
        # and the commands that trained and evaluated it (its numbers are documented on the page).
        text = render_run_card(r.config, r.paper, repo_id=None, files=files,
                               name=f"{stem}-run ({r.name}, reduced protocol)",
                               source_url="../../docs/results.md", metrics=r.metrics)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / f"{stem}-run.md", text)
        written.append(f"{stem}-run.md")
    for stale in out_dir.glob("*-cnn-fmnist-run.md"):
        if stale.name not in written:
            stale.unlink()
    return written


def protocol_mismatch(runs: dict[str, list[Run]], protocol: dict[str, Any]) -> list[str]:
    """Where protocol.json's ``reduced_eval`` sizes disagree with what the records were evaluated on.

    The page reads every n from the records; protocol.json is what a reader (or a rerun) takes
    the protocol from, and a stage of an older fmnist_zoo.py can rewrite it with other sizes.
    """
    red = protocol.get("reduced_eval") or {}
    seen: dict[str, set[int]] = {"n": set(), "aa_n": set(), "sweep_n": set()}
    for rs in runs.values():
        for r in rs:
            for attack, row in r.rows.items():
                seen["aa_n" if attack == "autoattack" else "n"].add(int(row["n"]))
            if r.sweep is not None and "n" in r.sweep:
                seen["sweep_n"].add(int(r.sweep["n"]))
    return [f"protocol.json's reduced_eval says {key} = {red[key]}, the records were evaluated on "
            f"{', '.join(map(str, sorted(ns)))} images"
            for key, ns in seen.items() if key in red and ns and ns != {red[key]}]


def refresh_zoo(index_path: Path, runs: dict[str, list[Run]], cards_dir: Path,
                protocol: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Copy each zoo entry's ``measured`` block from the study's run card it cites.

    An entry of ``index_path`` whose ``measured.source`` names a run card of this study
    (``model_cards/runs/<method>-cnn-fmnist-run.md``) gets that card's counts and health, the
    protocol of its run (read from the run's config.json and protocol.json) and the commands
    that train and evaluate exactly that run (its seed). A block whose card is gone is dropped;
    a card of another method, dataset, architecture, ε or setting than the entry's is not
    copied. The file is rewritten only when something changed. Returns, by entry, whether its
    block changed and what happened.
    """
    data = json.loads(index_path.read_text(encoding="utf-8"))
    suffix = "-cnn-fmnist-run.md"
    report: dict[str, tuple[bool, str]] = {}
    for entry in data.get("entries", []):
        measured = entry.get("measured") or {}
        card = Path(measured.get("source", ""))
        if card.parent.as_posix() != "model_cards/runs" or not card.name.endswith(suffix):
            continue  # not one of this study's cards
        name = entry["name"]
        if not (cards_dir / card.name).is_file():
            del entry["measured"]
            report[name] = (True, f"dropped 'measured' ({card.name} is gone)")
            continue
        m = card.name[: -len(suffix)]
        evaluated = [r for r in runs.get(m, []) if r.paper is not None]
        if not evaluated:
            continue  # the card of a run these records do not hold: left as it is
        r = best_run(evaluated)
        rz = front_matter((cards_dir / card.name).read_text(encoding="utf-8"))["robustzoo"]
        why = _card_mismatch(ZooEntry.from_dict(entry), rz)
        if why:
            report[name] = (False, f"not refreshed: {card.name} {why}")
            continue
        counts = {a: [res["correct"], res["n"]] for a, res in rz["results"].items()}
        new = dict(measured, results={a: round(c / n, 4) for a, (c, n) in counts.items()}, counts=counts,
                   health=rz["health"]["status"], protocol=_zoo_protocol(r, len(evaluated), protocol),
                   train=f"python benchmarks/fmnist_zoo.py train --out {RUNS} --reduced --seeds {r.seed} --methods {m}",
                   eval=f"python benchmarks/fmnist_zoo.py eval --out {RUNS} --reduced --seeds {r.seed} --methods {m}")
        if new != measured:
            entry["measured"] = new
            report[name] = (True, f"'measured' from {r.name} ({card.name})")
    if any(changed for changed, _ in report.values()):
        write_text(index_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return report


def _card_mismatch(entry: ZooEntry, rz: dict[str, Any]) -> str:
    """Why a run card's front matter cannot stand for a zoo entry ('' when it can)."""
    for what, card_value, entry_value in (("method", rz.get("method"), entry.method),
                                          ("dataset", rz.get("dataset"), entry.dataset),
                                          ("architecture", rz.get("architecture"), entry.architecture)):
        if card_value != entry_value:
            return f"is a {what} {card_value!r} run, the entry {entry_value!r}"
    eps = (rz.get("threat_model") or {}).get("eps")
    if entry.eps is None or eps is None or not math.isclose(float(eps), entry.eps, rel_tol=1e-9):
        return f"has ε {eps}, the entry {entry.eps}"
    settings = rz.get("method_settings") or {}
    for key, value in entry.settings.items():
        if settings.get(key) != value:
            return f"was trained with {key}={settings.get(key)!r}, the entry says {value!r}"
    return ""


def _zoo_protocol(r: Run, seeds: int, protocol: dict[str, Any]) -> str:
    """The zoo's one-sentence protocol of a study run (the best of ``seeds``), against the
    recipe's settings (protocol.json)."""
    c = r.config["robustzoo"]["config"]
    recipe = protocol.get("common", {})
    n = sorted({row["n"] for row in r.rows.values()})
    evaluated = (f"every attack, standard AutoAttack included, on the same {n[0]:,} test images" if len(n) == 1
                 else f"every attack on {'/'.join(f'{k:,}' for k in n)} test images")
    # The best seed is the model one would publish, and an optimistic figure for the method.
    best = (f" (the most robust of {seeds} seeds under AutoAttack; docs/results.md gives their mean)"
            if seeds > 1 else "")
    return (f"the reduced CPU protocol of docs/results.md: {c['epochs']} epochs on "
            f"{r.config['robustzoo']['num_train']:,} of the training images with PGD-{c['steps']} "
            f"(α = {c['alpha']:g}), seed {r.seed}{best}, instead of the recipe's {recipe.get('epochs', '?')} epochs with "
            f"PGD-{recipe.get('steps', '?')} (α = {float(recipe.get('alpha', 'nan')):g}) on the whole training set; "
            f"{evaluated}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(runs: dict[str, list[Run]], weights: Path) -> None:
    """Every run of the records found under ``weights`` must have the weights it was measured with."""
    if not weights.is_dir():
        raise NotFoundError(f"--weights {weights} is not a directory; give the folder the records were exported "
                            "from (benchmarks/fmnist_zoo.py export --out FOLDER)")
    for rs in runs.values():
        for r in rs:
            for f in WEIGHT_FILES:
                path = weights / r.name / f
                if f in r.weights and path.is_file() and _sha256(path) != r.weights[f]:
                    raise IntegrityError(f"{path} is not the file {r.dir / 'weights.sha256'} names (sha256 differs): "
                                         "these weights are not the ones the records were measured with; export "
                                         "the runs again or give the right folder")


def masks(runs: dict[str, list[Run]], img: Path, weights: Path | None) -> list[str]:
    """Mask grids of the best run of each Calibrated AT variant in MASK_FIGURES; returns page lines.

    With ``weights`` they are drawn again (old figures removed) and described in MASK_INFO;
    without, a figure is linked only when MASK_INFO says it shows the same run and weights.
    """
    info_path = img / MASK_INFO
    chosen = [(m, best_run(runs[m])) for m in _methods(runs)
              if m in MASK_FIGURES and runs[m][0].config["robustzoo"]["objective"] == "calibrated"]
    if weights is not None:
        # deferred: a plugin's module, needed only when the figures are drawn
        from robustzoo_calibrated.viz import mask_figure

        img.mkdir(parents=True, exist_ok=True)
        for old in img.glob("fmnist-masks*.png"):
            old.unlink()
        info = {}
        for m, r in chosen:
            if not (weights / r.name / "model.safetensors").is_file():
                continue
            path = img / f"fmnist-masks-{m}.png"
            drawn = mask_figure(weights / r.name, path, n=8, seed=0)
            info[m] = {"run": r.name, "model_sha256": r.weights.get("model.safetensors"), "image": path.name,
                       "best_epoch": r.best_epoch, "mask_mean": round(float(drawn["mask_mean"]), 6)}
        write_json(info_path, info)
    info = _read(info_path, "run with --weights to draw the figures again") or {}
    lines = []
    for m, r in chosen:
        fig = info.get(m)
        if not fig or fig.get("run") != r.name or fig.get("model_sha256") != r.weights.get("model.safetensors") \
                or not (img / fig["image"]).is_file():
            lines += [f"**{m}** (`{r.name}`): no figure of these weights yet (`python docs/make_results.py "
                      f"RECORDS --weights {RUNS}` draws it).", ""]
            continue
        lines += [f"**{m}** (`{r.name}`, best epoch {fig['best_epoch']}): mean of M over these 8 test "
                  f"images {fig['mask_mean']:.3f}. Rows: natural x, adversarial x', mask M, calibrated x_cal.",
                  "", f"![{m} masks](img/{fig['image']})", ""]
    return lines


def _rel(path: Path) -> str:
    path = path.resolve()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def commands(root: Path, runs: dict[str, list[Run]], protocol: dict[str, Any]) -> list[str]:
    """Train (one command per set of seeds), evaluate, export and build the page."""
    red = " --reduced" if protocol.get("reduced") else ""
    groups: dict[tuple[int, ...], list[str]] = {}
    for m in _methods(runs):
        groups.setdefault(tuple(r.seed for r in runs[m]), []).append(m)
    out = [f"python benchmarks/fmnist_zoo.py train --out {RUNS}{red} --seeds {','.join(map(str, seeds))} "
           f"--methods {','.join(ms)} --jobs 2" for seeds, ms in sorted(groups.items(), key=lambda g: (-len(g[0]), g[0]))]
    out += [f"python benchmarks/fmnist_zoo.py eval --out {RUNS}{red} --jobs 2",
            f"python benchmarks/fmnist_zoo.py export --out {RUNS} --to {_rel(root)}",
            f"python docs/make_results.py {_rel(root)} --weights {RUNS}"]
    return [f"`{c}`" for c in out]


def _values(runs: dict[str, list[Run]], key: str) -> str:
    """The distinct values of a training setting over all runs, from their config.json."""
    vals = []
    for rs in runs.values():
        for r in rs:
            v = r.config["robustzoo"]["config"].get(key)
            v = ",".join(f"{x:g}" for x in v) if isinstance(v, list) else v
            if v not in vals:
                vals.append(v)
    return " / ".join(str(v) for v in vals)


def protocol_text(runs: dict[str, list[Run]], protocol: dict[str, Any]) -> str:
    """What the runs were trained and evaluated with, read from their config.json and reports."""
    seeds = sorted({r.seed for rs in runs.values() for r in rs})
    n_train = sorted({r.config["robustzoo"]["num_train"] for rs in runs.values() for r in rs})
    subset = _values(runs, "subset")
    text = (f"Training: `{_values(runs, 'arch')}`, ε = {_values(runs, 'eps')}, {_values(runs, 'epochs')} epochs, "
            f"PGD-{_values(runs, 'steps')} with α = {_values(runs, 'alpha')}, {_values(runs, 'optimizer')} "
            f"lr {_values(runs, 'lr')} (×0.1 from milestone {_values(runs, 'milestones')}; below 1 = fraction of "
            f"the run), batch {_values(runs, 'batch_size')}, {', '.join(map(str, n_train))} training images"
            + (f" (a seeded subset of {subset} minus the validation split)" if subset != "None" else "")
            + f", checkpoint chosen on a held-out validation split by clean + PGD-{_values(runs, 'val_steps')} "
            "accuracy; "
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}.")
    papers = [r.paper for rs in evaluated(runs).values() for r in rs]
    if papers:
        attacks = list(dict.fromkeys(r["attack"] for p in papers for r in p["results"]))
        samples = {(p["n"], p["seed"], (p.get("examples") or {}).get("index_sha256")) for p in papers}
        n, seed, sha = sorted(samples, key=str)[0]
        same = len(samples) == 1
        where = (f"the same {n:,} test images for every attack and every run (seed {seed} of robustzoo's sample "
                 f"rule, index sha256 `{str(sha)[:16]}…`), so any two runs are compared image by image"
                 if same else f"{' / '.join(str(s[0]) for s in sorted(samples, key=str))} test images — NOT the same "
                 "images in every run (different seeds or sizes), so runs are not compared image by image")
        custom = sorted({f"{a}: " + ", ".join(f"{k} = {v['value']} (standard {v['standard']})" for k, v in opts.items())
                         for p in papers for a, opts in (p.get("custom_settings") or {}).items()})
        aa = ("standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries)" if not custom else
              f"AutoAttack with custom settings ({'; '.join(custom)})") if "autoattack" in attacks else "no AutoAttack"
        sweeps = {(s["n"], (s.get("examples") or {}).get("index_sha256")) for rs in runs.values() for r in rs
                  for s in [r.sweep] if s}
        sweep = ("the ε sweep (PGD-20) on the same images" if sweeps and {x[1] for x in sweeps} == {sha} and same
                 else f"the ε sweep on {', '.join(str(x[0]) for x in sorted(sweeps))} images" if sweeps else "no ε sweep")
        final = list(dict.fromkeys(a for rs in runs.values() for r in rs for a in r.final))
        final_n = sorted({r.final[a]["n"] for rs in runs.values() for r in rs for a in r.final})
        ev = (f"Evaluation: one evaluation per run of {', '.join(_label(a) for a in attacks if a != 'autoattack')}"
              f" and {aa} on {where}; {sweep}; {', '.join(_label(a) for a in final) or 'nothing'} on the whole "
              f"test set ({' / '.join(f'{n:,}' for n in final_n)} images) at the end of training.")
        if "square" not in attacks and "autoattack" in attacks:
            ev += " Standalone Square is not run (it runs inside AutoAttack)."
        text += " " + ev
    if protocol.get("reduced"):
        text = ("**Reduced protocol (CPU).** " + text + " The full protocol (whole training set, 40 epochs, PGD-20 "
                "training, 3 seeds, every attack on the whole test set) is still to be run on a GPU.")
    return text


def status_section(root: Path, runs: dict[str, list[Run]], plan: dict[str, list[int]], reduced: bool) -> list[str]:
    """What the study planned (study.json, written by ``fmnist_zoo.py export``) against what the
    records hold: per method, the seeds evaluated, trained only, and not trained; then what is
    left to run. Empty when every planned run is evaluated."""
    have = {(m, r.seed): ("evaluated" if r.paper is not None and r.sweep is not None else "trained")
            for m, rs in runs.items() for r in rs}
    rows, todo_train, todo_eval = [], defaultdict(list), False
    for m, seeds in plan.items():
        cells: dict[str, list[str]] = {"evaluated": [], "trained": [], "not trained": []}
        for s in seeds:
            state = have.get((m, s), "not trained")
            cells[state].append(str(s))
            if state == "not trained":
                todo_train[s].append(m)
            todo_eval = todo_eval or state != "evaluated"
        rows.append([f"`{m}`", ", ".join(map(str, seeds))] + [", ".join(cells[k]) or "—" for k in cells])
    total = sum(len(s) for s in plan.values())
    done = sum(1 for (m, s), v in have.items() if v == "evaluated" and s in plan.get(m, ()))
    if done == total:
        return []
    trained = sum(1 for (m, s), v in have.items() if v == "trained" and s in plan.get(m, ()))
    red = " --reduced" if reduced else ""
    cmds = [f"python benchmarks/fmnist_zoo.py train --out {RUNS}{red} --seeds {s} --methods {','.join(ms)} --jobs 2"
            for s, ms in sorted(todo_train.items())]
    cmds += [f"python benchmarks/fmnist_zoo.py eval --out {RUNS}{red} --jobs 2"] if todo_eval else []
    cmds += [f"python benchmarks/fmnist_zoo.py export --out {RUNS} --to {_rel(root)}",
             f"python docs/make_results.py {_rel(root)} --weights {RUNS}"]
    return ["## Study status", "",
            f"**The study is not finished: {done} of its {total} planned runs {'is' if done == 1 else 'are'} "
            f"evaluated**, {trained} more {'is' if trained == 1 else 'are'} trained but not yet evaluated and "
            f"{total - done - trained} {'is' if total - done - trained == 1 else 'are'} not trained. Every table below "
            "covers the evaluated runs only; a method with fewer seeds than planned has a smaller (or no) ± and "
            "its comparisons have less power than the study was planned for.", "",
            "| method | planned seeds | evaluated | trained, not evaluated | not trained |", "|---|---|---|---|---|",
            *("| " + " | ".join(r) + " |" for r in rows), "",
            "To finish it (each command skips what is done):", ""] + [f"{i}. `{c}`" for i, c in enumerate(cmds, 1)] + [""]


def build_page(root: Path, runs: dict[str, list[Run]], protocol: dict[str, Any], img: Path, cards_dir: Path,
               weights: Path | None, plan: dict[str, list[int]] | None = None) -> str:
    """The generated part of the page (between the markers, markers included); writes the
    figures and cards it links."""
    done = evaluated(runs)
    parts = [START, "", "## Protocol", "", protocol_text(runs, protocol), ""]
    if plan:
        parts += status_section(root, runs, plan, bool(protocol.get("reduced")))
    if done:
        sizes = _sizes(done)
        widths = ", ".join(f"±{_half_width(n):.1f} points at n = {n:,}" for n in sizes)
        parts += ["## Accuracy under attack", "", main_table(done), "",
                  "Accuracy in % at ε = " + _values(runs, "eps") + " (L∞, [0,1] scale); mean ± sample standard "
                  "deviation over seeds (one seed: no ±). Every column on the same "
                  f"{', '.join(f'{n:,}' for n in sizes)} test images of each run; a 95% Wilson interval reaches at "
                  f"most {widths} on either side. Health flags: the gradient-masking checks of "
                  "[Evaluation](evaluation.md) that flagged the run's evaluation.", "",
                  "## Every run under AutoAttack", "",
                  "Accuracy in % with its 95% Wilson interval; health: the verdict of the run's gradient-masking "
                  "checks.", "", runs_table(done), ""]
        paired = paired_table(done)
        if paired:
            table, summary = paired
            parts += [f"## Each method against {REFERENCE.upper()}, image by image", "",
                      f"Every run keeps its outcome on each of the shared test images (eval_flags.safetensors), so "
                      f"each method is compared with {REFERENCE.upper()} on the same images: the discordant counts are "
                      f"the images only {REFERENCE.upper()} kept (robust under AutoAttack; correctly classified, for "
                      "clean accuracy) and those only the method kept, and the two-sided exact McNemar p-value "
                      "(twice the smaller one-sided `robustzoo.eval.mcnemar_exact`, at most 1) says how likely a "
                      "split at least this uneven is by chance. Seed k is paired with "
                      f"{REFERENCE.upper()}'s seed k; for a method with several seeds the discordant counts are also "
                      f"summed over seeds (one test). Bold: p < {ALPHA:g}, the two trained models differ on these "
                      "images; a larger p does not show them equal, only that this many images cannot tell them "
                      "apart. A bold p is not yet a difference of the *method*: the training seed moves a model too "
                      "(two seeds of one method, tested the same way, in the next table), so the summary below calls "
                      "a difference the method's only when at least two seeds agree as well: every seed pair the "
                      f"same way and a paired t-test over the seeds (df = seeds − 1) with p < {SEED_ALPHA:g}.",
                      "", table, ""] + summary + [""]
            control = seed_control(done)
            if control:
                parts += ["## Seed against seed, the same method", "",
                          "The same test between two seeds of one method, on the same images: how far the training "
                          "seed alone moves a model. Where these p are small, a small p between two methods on one "
                          "seed does not tell the method from the seed.", "", control, ""]
        parts += ["## Ranking", "",
                  "The methods in the order `robustzoo leaderboard` ranks runs (standard AutoAttack, here the mean "
                  "over a method's seeds, then clean accuracy), but the rank does not order what the paired test "
                  "cannot: it is 1 + the number of methods with a higher accuracy by a difference of the method "
                  "(the images and at least two seeds decide, as above), so methods not told apart share a "
                  "rank.", "", ranking_table(done), "",
                  "## PGD-20 against the stronger attacks", "",
                  "The gap a masked model shows, every gap on the same images of the run: PGD-20 against the better "
                  "of APGD-CE and APGD-DLR, against AutoAttack, and AutoAttack's running accuracy after each of its "
                  "four attacks; the last column is the end-of-training evaluation on the whole test set. "
                  "Mean ± std over seeds, in %.", "", gap_table(done), ""]
        sweep_sizes = curve(done, img / "fmnist-eps-curve.png")
        if sweep_sizes:
            parts += ["## Accuracy against ε", "", f"PGD-20 (no random start) at each ε on "
                      f"{', '.join(f'{n:,}' for n in sweep_sizes)} test images, the mean over each method's seeds; "
                      "dashed lines are Calibrated AT.", "", "![accuracy vs ε](img/fmnist-eps-curve.png)", ""]
        cal = calibrated_table(done, protocol)
        if cal:
            parts += ["## Calibrated AT: β and β1", "",
                      "Every Calibrated AT point of the study (g_φ on SGD, the objective's default), with AT and "
                      "TRADES on the same protocol. β weighs the KL term of the classifier's loss, β1 the CE term "
                      "of the mask network's. Clean and AutoAttack in % on the shared test images, mean ± std "
                      "over seeds, and a 95% Wilson interval at n of the mean (the seeds share the images, so "
                      "averaging them does not narrow it).", "", cal, ""]
    parts += ["## Training", "", training_table(runs), ""]
    pending = [r.name for rs in runs.values() for r in rs if r.paper is None]
    if pending:
        parts += ["Not evaluated yet (no eval-paper.json; `benchmarks/fmnist_zoo.py eval` then `export`): "
                  + ", ".join(f"`{n}`" for n in sorted(pending)), ""]
    if weights is not None:
        training = sorted(p.name for p in weights.iterdir() if (p / "config.json").is_file()
                          and not (p / "eval.json").is_file())
        if training:
            parts += ["Still training (resume with `robustzoo train --resume RUN_DIR`): "
                      + ", ".join(f"`{n}`" for n in training), ""]
    mask_lines = masks(done, img, weights) if done else []
    if mask_lines:
        parts += ["## Calibrated AT masks", ""] + mask_lines
    written = cards(done, cards_dir) if done else []
    if written:
        parts += ["## Model cards", "", "Best run of each method (highest AutoAttack accuracy over its seeds), "
                  "rendered by `robustzoo push`'s card code: "
                  + ", ".join(f"[{w}](../model_cards/runs/{w})" for w in written), ""]
    parts += ["## Regenerate", "", "From a clean checkout (training and evaluation skip what is already done; "
              "`export` copies each run's records, without the weights, into the repository):", ""]
    parts += [f"{i}. {c}" for i, c in enumerate(commands(root, runs, protocol), 1)] + ["", END]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records", type=Path, help="the exported records (benchmarks/fmnist_zoo.py export --to)")
    ap.add_argument("--weights", type=Path, help="the run directories they were exported from: also draw the "
                                                 "mask figures")
    ap.add_argument("--into", type=Path, help="write docs/results.md, docs/img/ and model_cards/runs/ under this "
                                              "folder instead of the checkout (a preview)")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = ap.parse_args(argv)
    try:
        return _main(args)
    except RobustzooError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    root = args.records
    fix = f"export the study's runs first: python benchmarks/fmnist_zoo.py export --out {RUNS} --to {root}"
    if not root.is_dir():
        print(f"error: {root} is not a directory; {fix}", file=sys.stderr)
        return 1
    runs = collect(root)
    if not runs:
        print(f"error: no run records under {root} (no RUN/eval.json); {fix}", file=sys.stderr)
        return 1
    if args.weights is not None:
        check_weights(runs, args.weights)
    protocol = _read(root / "protocol.json", fix) or {}
    for problem in protocol_mismatch(runs, protocol):
        print(f"warning: {problem}; run an evaluation stage of the current benchmarks/fmnist_zoo.py (it "
              f"rewrites protocol.json) and export again", file=sys.stderr)
    page, img, cards_dir = PAGE, IMG, CARDS
    if args.into is not None:
        page, img, cards_dir = (args.into / "docs" / "results.md", args.into / "docs" / "img",
                                args.into / "model_cards" / "runs")
    source = page if page.is_file() else PAGE  # a preview starts from the checkout's page
    text = (source.read_text(encoding="utf-8") if source.is_file()
            else "# Results on Fashion-MNIST\n\n" + START + "\n" + END + "\n")
    if START not in text or END not in text:
        print(f"error: {page} lacks the markers {START} and {END}; put them around the generated part",
              file=sys.stderr)
        return 1
    study = _read(root / "study.json", fix) if (root / "study.json").is_file() else None
    plan = {m: [int(s) for s in seeds] for m, seeds in (study or {}).get("plan", {}).items()} or None
    generated = build_page(root, runs, protocol, img, cards_dir, args.weights, plan)
    head, rest = text.split(START, 1)
    page.parent.mkdir(parents=True, exist_ok=True)
    write_text(page, head + generated + rest.split(END, 1)[1])
    print(f"wrote {page}")
    if any(r.paper is not None for rs in runs.values() for r in rs):
        # The run cards were written: the zoo entries that cite them follow.
        index = ROOT / "robustzoo" / "zoo" / "index.json"
        entry_cards = ROOT / "model_cards"
        if args.into is not None:
            entry_cards = args.into / "model_cards"
            index = args.into / "robustzoo" / "zoo" / "index.json"
            if not index.is_file():
                index.parent.mkdir(parents=True, exist_ok=True)
                write_text(index, (ROOT / "robustzoo" / "zoo" / "index.json").read_text(encoding="utf-8"))
        changes = refresh_zoo(index, runs, cards_dir, protocol)
        for name, (_, what) in changes.items():
            print(f"{_rel(index)}: {name}: {what}")
        changed = {name for name, (yes, _) in changes.items() if yes}
        if changed:
            entries = [ZooEntry.from_dict(e) for e in json.loads(index.read_text(encoding="utf-8"))["entries"]]
            for path in write_zoo_cards(entry_cards, [e for e in entries if e.name in changed]):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
