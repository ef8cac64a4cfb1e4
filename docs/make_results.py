"""Build docs/results.md, its figures and the runs' model cards from Fashion-MNIST run dirs.

    python docs/make_results.py runs/fmnist

Reads each run's config.json, metrics.jsonl, the end-of-training evaluation (its record in
RUN/evals/, or RUN/eval-final.json in run directories made before the history),
eval-paper.json, eval-autoattack.json and eval-sweep.json (written by
``benchmarks/fmnist_zoo.py eval``) and the directory's protocol.json, and regenerates:

* the part of docs/results.md between the ``generated`` markers (the hand-written reading
  outside them is kept), including a ranking of the methods by the same code as
  ``robustzoo leaderboard``;
* docs/img/fmnist-eps-curve.png (PGD-20 accuracy against ε, one line per method);
* docs/img/fmnist-masks-<method>.png (natural / adversarial / mask / calibrated grid) for the
  best run of each Calibrated AT variant;
* model_cards/runs/<method>-cnn-fmnist-run.md for the best run of each method, rendered by
  the same code as ``robustzoo push`` as the card of an unpublished run (no repo, no zoo
  alias; cards of methods no longer present are removed).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
CARDS = ROOT / "model_cards" / "runs"  # run cards, kept apart from the zoo entries' cards
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
ORDER = ["at", "trades", "mart", "fat-trades", "cat-cent", "cat-cw", "cat-cw-b1-0.05", "cat-cw-b5-0.3",
         "cat-cw-b5-0.05", "cat-cent-b5-0.05", "customized-ce", "customized-mix", "customized-mix-code"]
# Columns of the main table: (attack, which report it comes from, header); "aa" is
# eval-autoattack.json, "paper" eval-paper.json.
COLUMNS = [("clean", "paper", "clean"), ("fgsm", "paper", "FGSM"), ("pgd20", "paper", "PGD-20"),
           ("pgd100", "paper", "PGD-100"), ("cw", "paper", "CW∞"), ("square", "paper", "Square"),
           ("apgd-ce", "paper", "APGD-CE"), ("apgd-dlr", "paper", "APGD-DLR"),
           ("autoattack", "aa", "AutoAttack")]
AA_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
# Calibrated AT runs whose masks are drawn: the MNIST settings (β 1, β1 0.3) and the CIFAR ones (β 5, β1 0.05).
MASK_FIGURES = ("cat-cent", "cat-cw", "cat-cent-b5-0.05", "cat-cw-b5-0.05")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _by_attack(report: dict[str, Any] | None, largest: bool = False) -> dict[str, dict[str, Any]]:
    """attack -> result; ``largest``: of the rows of one attack keep the one on the most images
    (an eval.json of a run made before the evaluation history may have merged later
    evaluations on fewer images into it)."""
    out: dict[str, dict[str, Any]] = {}
    for r in (report or {}).get("results", []):
        if not largest or r["attack"] not in out or r["n"] > out[r["attack"]]["n"]:
            out[r["attack"]] = r
    return out


def training_eval(run: Path) -> dict[str, Any] | None:
    """The run's end-of-training evaluation (clean and PGD-20 on the whole test set).

    Run directories made before the evaluation history kept it in eval-final.json; newer ones
    keep it in RUN/evals/ (``"source": "train"``, or the record migrated from the first
    eval.json, which only training writes here); else eval.json itself.
    """
    old = _load(run / "eval-final.json")
    if old is not None:
        return old
    records = [json.loads(p.read_text()) for p in sorted((run / "evals").glob("*.json"))]
    for pick in (lambda r: r.get("source") == "train", lambda r: r.get("migrated")):
        found = [r for r in records if pick(r)]
        if found:
            return max(found, key=lambda r: r.get("n") or 0)
    return _load(run / "eval.json")


def collect(root: Path) -> dict[str, list[dict[str, Any]]]:
    """method -> its finished runs (one per seed); a run without eval.json is not scored."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in sorted(p for p in root.iterdir() if (p / "eval.json").is_file()):
        reports = {k: _load(run / f"eval-{k}.json") for k in ("paper", "autoattack", "sweep", "autoattack-large")}
        flags: set[str] = set()
        for key in ("paper", "autoattack"):
            for c in ((reports[key] or {}).get("health") or {}).get("checks", []):
                if c["status"] == "flagged":
                    flags.add(c["name"])
        cfg = json.loads((run / "config.json").read_text())
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
        final = training_eval(run)
        runs[run.name.rsplit("-s", 1)[0]].append({
            "dir": run, "config": cfg, "seed": cfg["robustzoo"]["config"]["seed"], "metrics": metrics,
            "paper": _by_attack(reports["paper"]), "aa": _by_attack(reports["autoattack"]),
            "aa_large": _by_attack(reports["autoattack-large"]),
            "final": _by_attack(final, largest=True),
            # model.safetensors is the last epoch marked best on validation
            "best_epoch": max((x["epoch"] for x in metrics if x.get("best")), default=None),
            "reports": reports, "flags": flags, "sweep": reports["sweep"]})
    return runs


def _methods(runs: dict[str, Any]) -> list[str]:
    return [m for m in ORDER if m in runs] + sorted(set(runs) - set(ORDER))


def _cell(values: list[float]) -> str:
    """Mean ± standard deviation over seeds, in percent ('—' when nothing was measured)."""
    if not values:
        return "—"
    m = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def _ns(runs: dict[str, list[dict[str, Any]]], key: str, attacks: tuple[str, ...] | None = None) -> list[int]:
    return sorted({r[key][a]["n"] for rs in runs.values() for r in rs for a in r[key]
                   if attacks is None or a in attacks})


def _half_width(n: int) -> float:
    """Largest half-width of a 95% interval at n examples (p = 0.5), in points."""
    return 100 * 1.96 * math.sqrt(0.25 / n)


def main_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    cols = [c for c in COLUMNS if any(c[0] in r[c[1]] for rs in runs.values() for r in rs)]
    lines = ["| method | seeds | " + " | ".join(h for _, _, h in cols) + " | health flags |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for m in _methods(runs):
        rs = runs[m]
        cells = [_cell([r[src][a]["accuracy"] for r in rs if a in r[src]]) for a, src, _ in cols]
        flags = sorted(set().union(*(r["flags"] for r in rs))) or ["none"]
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(cells) + f" | {', '.join(flags)} |")
    return "\n".join(lines)


def ranking_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The best run of each method ranked as `robustzoo leaderboard` ranks runs (by standard
    AutoAttack where it was run, else by the strongest attack, with a note)."""
    from robustzoo.cards import attack_label
    from robustzoo.leaderboard import build, row_from_report

    rows = []
    for m in _methods(runs):
        r = best_run(runs[m])
        report = merged_report(r)
        if report is not None:
            rows.append(row_from_report(m, r["config"], report, location=str(r["dir"])))
    lines = ["| rank | method | clean | robust | ranked by | n | 95% CI | health |", "|---|---|---|---|---|---|---|---|"]
    for board in build(rows).boards:
        for row in board.rows:
            ci = row.rank_cell.ci95
            lines.append(f"| {row.rank} | {row.name} | {_cell([row.clean.accuracy]) if row.clean else '—'} | "
                         f"{_cell([row.rank_cell.accuracy])} | {attack_label(row.ranked_by)} | {row.rank_cell.n} | "
                         + (f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else "—") + f" | {row.health} |")
    return "\n".join(lines)


def gap_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """PGD-20 against the stronger attacks, each gap on one set of images."""
    lines = ["| method | PGD-20 − min(APGD-CE, APGD-DLR) | PGD-20 | AutoAttack | PGD-20 − AutoAttack | "
             "AutoAttack after " + " → ".join(s.upper() for s in AA_STAGES) + " | whole test set: clean / PGD-20 |",
             "|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        rs = runs[m]
        apgd_gap = [r["paper"]["pgd20"]["accuracy"] - min(r["paper"][k]["accuracy"] for k in ("apgd-ce", "apgd-dlr"))
                    for r in rs if {"pgd20", "apgd-ce", "apgd-dlr"} <= r["paper"].keys()]
        both = [r for r in rs if {"pgd20", "autoattack"} <= r["aa"].keys()]
        pgd = [r["aa"]["pgd20"]["accuracy"] for r in both]
        aa = [r["aa"]["autoattack"]["accuracy"] for r in both]
        stages = []
        for s in AA_STAGES:
            vals = [c["accuracy"] for r in both for c in r["aa"]["autoattack"].get("components", [])
                    if c["attack"] == s]
            stages.append(_cell(vals))
        full = " / ".join(_cell([r["final"][a]["accuracy"] for r in rs if a in r["final"]]) for a in ("clean", "pgd20"))
        lines.append(f"| {m} | {_cell(apgd_gap)} | {_cell(pgd)} | {_cell(aa)} | "
                     f"{_cell([p - a for p, a in zip(pgd, aa)])} | {' → '.join(stages)} | {full} |")
    return "\n".join(lines)


def _setting(r: dict[str, Any], key: str) -> Any:
    return r["config"]["robustzoo"].get("objective_settings", {}).get(key)


def _pct1(result: dict[str, Any] | None) -> str:
    return f"{100 * result['accuracy']:.1f}" if result else "—"


def _full(r: dict[str, Any], attack: str) -> str:
    return _pct1(r["final"].get(attack))


def calibrated_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Calibrated AT's β × β1 runs next to AT and TRADES: clean, PGD-20, AutoAttack, the mask."""
    lines = ["| run | training attack | β | β1 | mean M (last epoch) | mask collapsed | clean | PGD-20 | "
             "AutoAttack (200) | AutoAttack (1,000) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        for r in runs[m]:
            obj = r["config"]["robustzoo"]["objective"]
            if obj not in ("calibrated", "at", "trades"):
                continue
            rows = r["metrics"]
            if obj == "calibrated":
                attack = "CE (CATcent)" if _setting(r, "attack") == "cent" else "CW (CATcw)"
                beta, beta1 = f"{_setting(r, 'beta'):g}", f"{_setting(r, 'beta1'):g}"
                mask = f"{rows[-1]['mask_mean']:.2f}" if "mask_mean" in rows[-1] else "—"
                collapsed = "yes" if any(x.get("mask_collapsed") for x in rows) else "no"
            else:
                attack = "CE (PGD)" if obj == "at" else "KL (TRADES)"
                beta = f"{_setting(r, 'beta'):g}" if obj == "trades" else "—"
                beta1 = mask = collapsed = "—"
            aa, big = (_pct1(r[k].get("autoattack")) for k in ("aa", "aa_large"))
            lines.append(f"| {m} | {attack} | {beta} | {beta1} | {mask} | {collapsed} | {_full(r, 'clean')} | "
                         f"{_full(r, 'pgd20')} | {aa} | {big} |")
    return "\n".join(lines)


def _autoattack_flags(run: Path, n: int) -> tuple[Any, Any] | None:
    """(test rows, per-example "robust under standard AutoAttack") from RUN/eval_flags.safetensors,
    when the flags saved there are those of the n-image AutoAttack evaluation; else None."""
    from robustzoo.runs import read_weights

    path = run / "eval_flags.safetensors"
    if not path.is_file():
        return None
    tensors, meta = read_weights(path)
    info = json.loads(meta.get("robustzoo.eval_flags", "{}"))
    if info.get("header", {}).get("n") != n:
        return None
    keys = [k for k in info.get("entries", {}) if k.startswith("autoattack/")]
    if not keys or not all(info["entries"][k].get("complete") for k in keys):
        return None
    robust = tensors[f"flags::{keys[0]}"].bool()
    for k in keys[1:]:  # AutoAttack cascades: robust = no component broke the example
        robust = robust & tensors[f"flags::{k}"].bool()
    return tensors["index"].long(), robust


def large_aa_table(runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """Standard AutoAttack on the larger shared sample; each run against AT, example by example."""
    from robustzoo.eval import wilson_interval
    from robustzoo.eval._stats import mcnemar_exact, paired_counts

    have = [(m, r) for m in _methods(runs) for r in runs[m] if "autoattack" in r["aa_large"]]
    if not have:
        return None
    flags = {r["dir"]: _autoattack_flags(r["dir"], r["aa_large"]["autoattack"]["n"]) for _, r in have}
    ref = next((r for m, r in have if m == "at"), None)
    ref_flags = flags.get(ref["dir"]) if ref else None
    lines = ["| run | clean | PGD-20 | AutoAttack (95% CI) | − AT (points) | robust only under AT / only here | "
             "exact McNemar p (two-sided) |", "|---|---|---|---|---|---|---|"]
    for m, r in have:
        big = r["aa_large"]
        aa = big["autoattack"]
        lo, hi = wilson_interval(aa["correct"], aa["n"])
        cells = [f"{100 * big['clean']['accuracy']:.1f}" if "clean" in big else "—",
                 f"{100 * big['pgd20']['accuracy']:.1f}" if "pgd20" in big else "—",
                 f"{100 * aa['accuracy']:.1f} ({100 * lo:.1f}–{100 * hi:.1f}), n = {aa['n']}"]
        mine = flags.get(r["dir"])
        if ref is None or r is ref or mine is None or ref_flags is None or not bool(
                (mine[0] == ref_flags[0]).all()):
            cells += ["—", "—", "—"]
        else:
            at_only, here_only = paired_counts(ref_flags[1], mine[1])
            p = min(1.0, 2 * min(mcnemar_exact(at_only, here_only), mcnemar_exact(here_only, at_only)))
            cells += [f"{100 * (aa['accuracy'] - ref['aa_large']['autoattack']['accuracy']):+.1f}",
                      f"{at_only} / {here_only}", f"{p:.2g}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eps_table_summary(r: dict[str, Any]) -> str:
    """Customized AT's per-example budgets ε_i saved with the checkpoint: mean, share at ε_max."""
    from safetensors.torch import load_file

    aux = r["dir"] / "aux.safetensors"
    eps_max = r["config"]["robustzoo"].get("objective_settings", {}).get("eps_max")
    if not aux.is_file() or eps_max is None:
        return "—"
    eps = load_file(str(aux)).get("state.eps")
    if eps is None:
        return "—"
    eps = eps.float()
    return f"{float(eps.mean()):.3f} / {100 * float((eps >= eps_max - 1e-6).float().mean()):.0f}%"


def training_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| method | best epoch (validation) | val clean | val PGD-10 | s per epoch (wall clock; runs "
             "shared 2 CPU cores two at a time or more) | mean of the mask M by epoch | mask collapsed | ε_i at the best epoch: mean / "
             "share at ε_max |", "|---|---|---|---|---|---|---|---|"]
    for m in _methods(runs):
        for r in runs[m]:
            rows = r["metrics"]
            best = next((x for x in rows if x["epoch"] == r["best_epoch"]), rows[-1])
            masks = " ".join(f"{x['mask_mean']:.3f}" if "mask_mean" in x else "–" for x in rows) \
                if any("mask_mean" in x for x in rows) else "—"
            secs = statistics.fmean(x["seconds"] for x in rows)
            watched = [x for x in rows if "mask_collapsed" in x]
            collapsed = ("yes, epoch " + ", ".join(str(x["epoch"]) for x in watched if x["mask_collapsed"])
                         if any(x["mask_collapsed"] for x in watched) else "no") if watched else "—"
            lines.append(f"| {m} (seed {r['seed']}) | {best['epoch']} of {len(rows)} | "
                         f"{100 * best['val_clean']:.1f} | {100 * best['val_pgd']:.1f} | {secs:.0f} | {masks} | "
                         f"{collapsed} | {eps_table_summary(r)} |")
    return "\n".join(lines)


def curve(runs: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = False
    for m in _methods(runs):
        sweeps = [r["sweep"]["eps_sweep"] for r in runs[m] if r["sweep"] and r["sweep"].get("eps_sweep")]
        if not sweeps:
            continue
        eps = [row["eps"] for row in sweeps[0]]
        acc = [100 * statistics.fmean(s[i]["accuracy"] for s in sweeps) for i in range(len(eps))]
        ax.plot(eps, acc, marker="o", label=m, linestyle="--" if m.startswith("cat-") else "-")
        drawn = True
    if not drawn:
        return False
    ax.axvline(0.1, color="grey", linestyle=":", linewidth=1, label="training ε = 0.1")
    ax.set_xlabel("ε (L∞, [0,1] scale)")
    ax.set_ylabel("PGD-20 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Fashion-MNIST: robust accuracy vs ε")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return True


def best_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed with the best worst-case accuracy (AutoAttack when measured, else PGD-20)."""
    def score(r: dict[str, Any]) -> tuple[float, float]:
        robust = r["aa"].get("autoattack") or r["paper"].get("pgd20") or r["final"].get("pgd20")
        clean = r["paper"].get("clean") or r["final"].get("clean")
        return (robust["accuracy"] if robust else 0.0, clean["accuracy"] if clean else 0.0)
    return max(rs, key=score)


def merged_report(r: dict[str, Any]) -> dict[str, Any] | None:
    """The run's gradient-attack report with the AutoAttack row (and its health) added."""
    paper, aa = r["reports"]["paper"], r["reports"]["autoattack"]
    if not paper and not aa:
        return None
    report = dict(paper or aa)
    have = {x["attack"] for x in report["results"]}
    if paper and aa:
        report["results"] = list(paper["results"]) + [x for x in aa["results"] if x["attack"] not in have]
        report["health"] = dict(paper.get("health") or {})
        checks = {c["name"]: c for c in (paper.get("health") or {}).get("checks", [])}
        for c in (aa.get("health") or {}).get("checks", []):  # a flag from either sample counts
            if c["name"] not in checks or checks[c["name"]]["status"] == "skipped" or c["status"] == "flagged":
                checks[c["name"]] = c
        report["health"]["checks"] = list(checks.values())
        flagged = [c["name"] for c in checks.values() if c["status"] == "flagged"]
        report["health"].update(status="suspect" if flagged else "passed", flagged=flagged)
        report["worst_case"] = aa.get("worst_case") or report.get("worst_case")
        report.pop("suite", None)
    return report


def cards(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    from robustzoo.cards import render_run_card

    written = []
    for m in _methods(runs):
        r = best_run(runs[m])
        report = merged_report(r)
        if report is None:
            continue
        files = {f: hashlib.sha256((r["dir"] / f).read_bytes()).hexdigest()
                 for f in ("model.safetensors", "aux.safetensors", "config.json") if (r["dir"] / f).is_file()}
        stem = f"{m}-cnn-fmnist"
        # Not published: the card names no repo and no zoo alias, only the run, what it scored
        # and the commands that trained and evaluated it (its numbers are documented on PAGE).
        text = render_run_card(r["config"], report, repo_id=None, files=files,
                               name=f"{stem}-run ({r['dir'].name}, reduced protocol)",
                               source_url="../../docs/results.md", metrics=r["metrics"])
        out = CARDS / f"{stem}-run.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(out)
        written.append(out.name)
    for stale in CARDS.glob("*-cnn-fmnist-run.md"):
        if stale.name not in written:
            stale.unlink()
    return written


def masks(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mask grids of the best run of each Calibrated AT variant; returns page lines."""
    from robustzoo_calibrated.viz import mask_figure

    lines = []
    for old in IMG.glob("fmnist-masks*.png"):
        old.unlink()
    for m in _methods(runs):
        r = best_run(runs[m])
        if r["config"]["robustzoo"]["objective"] != "calibrated" or m not in MASK_FIGURES:
            continue
        path = IMG / f"fmnist-masks-{m}.png"
        info = mask_figure(r["dir"], path, n=8, seed=0)
        lines += [f"**{m}** (`{r['dir'].name}`, best epoch {r['best_epoch']}): mean of M over these 8 test "
                  f"images {info['mask_mean']:.3f}. Rows: natural x, adversarial x', mask M, calibrated x_cal.",
                  "", f"![{m} masks](img/{path.name})", ""]
    return lines


def commands(root: Path, protocol: dict[str, Any]) -> list[str]:
    stages = protocol.get("stages", {})
    red = " --reduced" if protocol.get("reduced") else ""
    train = stages.get("train", {})
    seeds = ",".join(map(str, train.get("seeds", [0])))
    methods = ",".join(train.get("methods", []))
    out = [f"python benchmarks/fmnist_zoo.py train --out {root}{red} --seeds {seeds}"
           + (f" --methods {methods}" if methods else "") + " --jobs 2",
           f"python benchmarks/fmnist_zoo.py eval --out {root}{red} --jobs 2",
           f"python docs/make_results.py {root}"]
    return [f"`{c}`" for c in out]


def _values(runs: dict[str, list[dict[str, Any]]], key: str) -> str:
    """The distinct values of a training setting over all runs, from their config.json."""
    vals = []
    for rs in runs.values():
        for r in rs:
            v = r["config"]["robustzoo"]["config"].get(key)
            v = ",".join(f"{x:g}" for x in v) if isinstance(v, list) else v
            if v not in vals:
                vals.append(v)
    return " / ".join(str(v) for v in vals)


def protocol_text(runs: dict[str, list[dict[str, Any]]], protocol: dict[str, Any]) -> str:
    """What the runs were trained and evaluated with, read from their own config.json."""
    ev = protocol.get("reduced_eval") or {}
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    n_train = sorted({r["config"]["robustzoo"]["num_train"] for rs in runs.values() for r in rs})
    subset = _values(runs, "subset")
    text = (f"Training: `{_values(runs, 'arch')}`, ε = {_values(runs, 'eps')}, {_values(runs, 'epochs')} epochs, "
            f"PGD-{_values(runs, 'steps')} with α = {_values(runs, 'alpha')}, {_values(runs, 'optimizer')} "
            f"lr {_values(runs, 'lr')} (×0.1 from milestone {_values(runs, 'milestones')}; below 1 = fraction of "
            f"the run), batch {_values(runs, 'batch_size')}, {', '.join(map(str, n_train))} training images"
            + (f" (a seeded subset of {subset} minus the validation split)" if subset != "None" else "")
            + f", checkpoint chosen on a held-out validation split by clean + PGD-10 accuracy; "
            f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}.")
    if protocol.get("reduced"):
        text = ("**Reduced protocol (CPU).** " + text +
                f" Evaluation: {ev.get('attacks', '').replace(',', ', ')} on {ev.get('n')} test images; standard "
                f"AutoAttack (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries) with PGD-20 beside it on the first "
                f"{ev.get('aa_n')} of them; the ε sweep on {ev.get('sweep_n')}; clean and PGD-20 on the whole test "
                "set at the end of training. Standalone Square is not run (it runs inside AutoAttack). The full "
                "protocol (whole training set, 40 epochs, PGD-20 training, 3 seeds, every attack on the whole "
                "test set) is still to be run on a GPU.")
    return text


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "runs/fmnist")
    if not root.is_dir():
        print(f"{root} is not a directory; run benchmarks/fmnist_zoo.py train --out {root} first", file=sys.stderr)
        return 1
    runs = collect(root)
    if not runs:
        print(f"no finished runs under {root}; run benchmarks/fmnist_zoo.py first", file=sys.stderr)
        return 1
    protocol = _load(root / "protocol.json") or {}
    n_grad, n_aa = _ns(runs, "paper"), _ns(runs, "aa", ("autoattack",))
    widths = ", ".join(f"±{_half_width(n):.1f} at n = {n}" for n in sorted(set(n_grad) | set(n_aa)))
    parts = [START, "", "## Protocol", "", protocol_text(runs, protocol), "",
             "## Accuracy under attack", "", main_table(runs), "",
             f"Accuracy in % at ε = 0.1 (L∞, [0,1] scale); mean ± standard deviation over seeds (one seed: no ±). "
             f"Clean to APGD-DLR on {', '.join(map(str, n_grad))} test images, AutoAttack on "
             f"{', '.join(map(str, n_aa))} (the first of the same seeded sample); a 95% Wilson interval is at most "
             f"{widths} points wide on either side. Health flags: the gradient-masking checks of "
             "[Evaluation](evaluation.md) that flagged something, on either sample.", "",
             "## Ranking", "",
             "The best run of each method, ranked as `robustzoo leaderboard` ranks runs: by standard AutoAttack "
             "(accuracy in %, its n and 95% Wilson interval), clean accuracy on the gradient attacks' sample, and "
             "the health verdict of both samples.", "", ranking_table(runs), "",
             "## PGD-20 against the stronger attacks", "",
             "The gap a masked model shows: each gap is measured on one set of images. The first on "
             f"{', '.join(map(str, n_grad))} images; PGD-20, AutoAttack, their gap and AutoAttack's running accuracy "
             f"after each of its four attacks on {', '.join(map(str, n_aa))}; the last column on the whole test set "
             "(10,000 images, evaluated at the end of training).", "", gap_table(runs), ""]
    if curve(runs, IMG / "fmnist-eps-curve.png"):
        n_sw = sorted({r["sweep"]["n"] for rs in runs.values() for r in rs if r["sweep"]})
        parts += ["## Accuracy against ε", "", f"PGD-20 (no random start) at each ε on {', '.join(map(str, n_sw))} "
                  "test images; dashed lines are Calibrated AT.", "", "![accuracy vs ε](img/fmnist-eps-curve.png)", ""]
    if any(r["config"]["robustzoo"]["objective"] == "calibrated" for rs in runs.values() for r in rs):
        parts += ["## Calibrated AT: β and β1", "",
                  "Every Calibrated AT run (g_φ on SGD, the objective's default), with AT and TRADES on the same "
                  "protocol. Clean and PGD-20 on the whole test set (end of training); AutoAttack on 200 images "
                  "and, where run, on 1,000 (the same seeded images for every run). β weighs the KL term of the "
                  "classifier's loss, β1 the CE term of the mask network's.", "", calibrated_table(runs), ""]
    large = large_aa_table(runs)
    if large:
        n_large = _ns(runs, "aa_large", ("autoattack",))
        parts += [f"## Standard AutoAttack on {', '.join(map(str, n_large))} images", "",
                  "The same seeded test images for every run, so each run is compared with AT example by example: "
                  "the discordant counts are images robust under AutoAttack for AT only and for the run only, and "
                  "the exact McNemar test asks whether the difference is more than chance.", "", large, ""]
    parts += ["## Training", "", training_table(runs), ""]
    unfinished = sorted(p for p in root.iterdir() if (p / "config.json").is_file() and not (p / "eval.json").is_file())
    if unfinished:
        parts += ["Not finished (resume with `robustzoo train --resume RUN_DIR`): " + ", ".join(
            f"`{p.name}`" for p in unfinished), ""]
    mask_lines = masks(runs)
    if mask_lines:
        parts += ["## Calibrated AT masks", ""] + mask_lines
    written = cards(runs)
    parts += ["## Model cards", "", "Best run of each method (highest AutoAttack accuracy over its seeds), rendered by "
              "`robustzoo push`'s card code: " + ", ".join(f"[{w}](../model_cards/runs/{w})" for w in written), ""]
    parts += ["## Regenerate", "", "From a clean checkout (training and evaluation skip what is already done):", ""]
    parts += [f"{i}. {c}" for i, c in enumerate(commands(root, protocol), 1)] + ["", END]
    generated = "\n".join(parts)
    text = PAGE.read_text() if PAGE.is_file() else "# Results on Fashion-MNIST\n\n" + START + "\n" + END + "\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    tmp = PAGE.with_suffix(".md.tmp")
    tmp.write_text(head + generated + tail)
    tmp.replace(PAGE)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
