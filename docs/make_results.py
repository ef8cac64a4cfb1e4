"""Build docs/results.md, its figures and the runs' model cards from Fashion-MNIST run dirs.

    python docs/make_results.py runs/fmnist

Reads each run's config.json, eval.json, eval-paper.json, eval-autoattack.json and
eval-sweep.json (written by ``benchmarks/fmnist_zoo.py eval``), and regenerates the part of
docs/results.md between the ``generated`` markers (the hand-written reading outside them is
kept), docs/img/fmnist-eps-curve.png, docs/img/fmnist-masks.png (Calibrated AT's masks) and
model_cards/<method>-cnn-fmnist-run.md for the best run of each method (rendered by the same
code as ``robustzoo push``).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
COLUMNS = [("clean", "paper"), ("fgsm", "paper"), ("pgd20", "paper"), ("pgd100", "paper"), ("cw", "paper"),
           ("square", "paper"), ("apgd-ce", "paper"), ("apgd-dlr", "paper"), ("autoattack", "autoattack")]
ORDER = ["at", "trades", "mart", "fat-trades", "cat-cent", "cat-cw", "customized-ce", "customized-mix"]


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(root: Path) -> dict[str, list[dict[str, Any]]]:
    """method -> list of runs (one per seed) with their accuracies and health."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    # A run whose training has not finished (no eval.json) is listed as unfinished, not scored.
    for run in sorted(p for p in root.iterdir() if (p / "eval.json").is_file()):
        method = run.name.rsplit("-s", 1)[0]
        evals = {k: _load(run / f"eval-{k}.json") for k in ("paper", "autoattack", "sweep")}
        acc: dict[str, float] = {}
        n: dict[str, int] = {}
        flags: set[str] = set()
        for key in ("paper", "autoattack"):
            rep = evals[key]
            if not rep:
                continue
            for r in rep["results"]:
                acc.setdefault(r["attack"], r["accuracy"])
                n.setdefault(r["attack"], r["n"])
            for c in (rep.get("health") or {}).get("checks", []):
                if c["status"] == "flagged":
                    flags.add(c["name"])
        cfg = json.loads((run / "config.json").read_text())
        runs[method].append({"dir": run, "acc": acc, "n": n, "flags": flags, "sweep": evals["sweep"],
                             "config": cfg, "seed": cfg["robustzoo"]["config"]["seed"]})
    return runs


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    m = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def tables(runs: dict[str, list[dict[str, Any]]]) -> str:
    methods = [m for m in ORDER if m in runs] + sorted(set(runs) - set(ORDER))
    head = "| method | seeds | " + " | ".join(a for a, _ in COLUMNS) + " | PGD-20 − AA* | health flags |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for m in methods:
        rs = runs[m]
        cells = [_cell([r["acc"][a] for r in rs if a in r["acc"]]) for a, _ in COLUMNS]
        # PGD-20 minus the strongest AutoAttack number measured (standard AA, else APGD-DLR/CE).
        gaps = [r["acc"]["pgd20"] - min(r["acc"][k] for k in ("autoattack", "apgd-dlr", "apgd-ce") if k in r["acc"])
                for r in rs if "pgd20" in r["acc"] and {"autoattack", "apgd-dlr", "apgd-ce"} & r["acc"].keys()]
        flags = sorted(set().union(*(r["flags"] for r in rs))) or ["none"]
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(cells) + f" | {_cell(gaps)} | {', '.join(flags)} |")
    ns = sorted({v for rs in runs.values() for r in rs for v in r["n"].values()})
    lines.append("")
    lines.append(f"Accuracy in % on {', '.join(map(str, ns))} Fashion-MNIST test images (mean ± standard "
                 "deviation over seeds; one seed shows no ±); ε = 0.1 (L∞, [0,1] scale); — = not measured. "
                 "AA* = standard AutoAttack where measured, else the lower of APGD-CE and APGD-DLR "
                 "(two of AutoAttack's four attacks).")
    return "\n".join(lines)


def curve(runs: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = False
    for m in [m for m in ORDER if m in runs]:
        sweeps = [r["sweep"]["eps_sweep"] for r in runs[m] if r["sweep"] and r["sweep"].get("eps_sweep")]
        if not sweeps:
            continue
        eps = [row["eps"] for row in sweeps[0]]
        acc = [100 * statistics.fmean(s[i]["accuracy"] for s in sweeps) for i in range(len(eps))]
        ax.plot(eps, acc, marker="o", label=m)
        drawn = True
    if not drawn:
        return False
    ax.axvline(0.1, color="grey", linestyle="--", linewidth=1, label="training ε = 0.1")
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
    return max(rs, key=lambda r: (r["acc"].get("autoattack", r["acc"].get("pgd20", 0)), r["acc"].get("clean", 0)))


def cards(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    from robustzoo.cards import render_run_card

    written = []
    for m, rs in runs.items():
        r = best_run(rs)
        report = {"results": [], "health": {"checks": []}}
        for key in ("paper", "autoattack"):
            rep = _load(r["dir"] / f"eval-{key}.json")
            if rep:
                have = {x["attack"] for x in report["results"]}
                report["results"] += [x for x in rep["results"] if x["attack"] not in have]
                report["health"]["checks"] += (rep.get("health") or {}).get("checks", [])
                report.update({k: v for k, v in rep.items() if k not in ("results", "health")})
        if not report["results"]:
            continue
        files = {f: hashlib.sha256((r["dir"] / f).read_bytes()).hexdigest()
                 for f in ("model.safetensors", "aux.safetensors", "config.json") if (r["dir"] / f).is_file()}
        alias = f"{m}-cnn-fmnist"
        text = render_run_card(r["config"], report, repo_id=f"robustzoo/{alias}", files=files, alias=alias)
        out = ROOT / "model_cards" / "runs" / f"{alias}-run.md"  # not zoo entries: kept apart
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        written.append(out.name)
    return written


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "runs/fmnist")
    runs = collect(root)
    if not runs:
        print(f"no runs under {root}; run benchmarks/fmnist_zoo.py first", file=sys.stderr)
        return 1
    protocol = _load(root / "protocol.json") or {}
    parts = [START, "", "## Results", ""]
    if protocol.get("reduced"):
        parts += ["**Reduced protocol (CPU)** — training: " + ", ".join(
            f"{k}={v}" for k, v in (protocol.get("reduced_train") or {}).items()) +
            f"; evaluation on {protocol.get('eval_n')} test images with Square (alone and inside "
            f"AutoAttack) limited to {(protocol.get('reduced_eval') or {}).get('square_queries')} queries. "
            "The full protocol (whole training set, 40 epochs, PGD-20, 3 seeds, whole test set, "
            "standard AutoAttack) is still to be run on a GPU.", ""]
    parts += [tables(runs), ""]
    if curve(runs, IMG / "fmnist-eps-curve.png"):
        parts += ["![accuracy vs ε](img/fmnist-eps-curve.png)", ""]
    unfinished = sorted(p for p in root.iterdir() if (p / "config.json").is_file() and not (p / "eval.json").is_file())
    if unfinished:
        done = {p.name: len((p / "metrics.jsonl").read_text().splitlines()) if (p / "metrics.jsonl").is_file() else 0
                for p in unfinished}
        total = {p.name: json.loads((p / "config.json").read_text())["robustzoo"]["config"]["epochs"] for p in unfinished}
        parts += ["Not finished in this session (resume with `robustzoo train --resume RUN_DIR`): " + ", ".join(
            f"`{n}` ({done[n]}/{total[n]} epochs)" for n in done), ""]
    cat = runs.get("cat-cw") or runs.get("cat-cent")
    cat_dir = best_run(cat)["dir"] if cat else next(
        (p for p in unfinished if p.name.startswith("cat-") and (p / "aux.safetensors").is_file()), None)
    if cat_dir is not None:
        code = subprocess.call([sys.executable, "-m", "robustzoo", "viz", "masks", str(cat_dir),
                                "--out", str(IMG / "fmnist-masks.png")])
        if code == 0:
            epochs = len((cat_dir / "metrics.jsonl").read_text().splitlines())
            parts += ["Calibrated AT masks (rows: natural, adversarial, mask M, calibrated x_cal) of "
                      f"`{cat_dir.name}` after {epochs} epoch(s):", "", "![masks](img/fmnist-masks.png)", ""]
    written = cards(runs)
    parts += ["Model cards of the best run of each method: " + ", ".join(
        f"[{w}](../model_cards/runs/{w})" for w in written), ""]
    parts += [f"Regenerate: `python benchmarks/fmnist_zoo.py train --out {root} ...`, "
              f"`python benchmarks/fmnist_zoo.py eval --out {root} ...`, `python docs/make_results.py {root}`.",
              "", END]
    generated = "\n".join(parts)
    text = PAGE.read_text() if PAGE.is_file() else "# Results on Fashion-MNIST\n\n" + START + "\n" + END + "\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    PAGE.write_text(head + generated + tail)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
