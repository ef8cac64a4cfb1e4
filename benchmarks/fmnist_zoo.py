"""Train and evaluate every method on Fashion-MNIST: the runs behind docs/results.md.

    python benchmarks/fmnist_zoo.py train --out runs/fmnist --seeds 0,1,2 --jobs 4   # full protocol (GPU)
    python benchmarks/fmnist_zoo.py eval  --out runs/fmnist --jobs 4                 # paper suite + AutoAttack
    python benchmarks/fmnist_zoo.py train --out runs/fmnist-cpu --reduced --jobs 2   # reduced protocol (CPU)
    python benchmarks/fmnist_zoo.py eval  --out runs/fmnist-cpu --reduced --jobs 2
    python benchmarks/fmnist_zoo.py status --out runs/fmnist-cpu --reduced           # what is left of STUDY
    python benchmarks/fmnist_zoo.py export --out runs/fmnist-cpu --to docs/results/fmnist
    python docs/make_results.py docs/results/fmnist --weights runs/fmnist-cpu        # the page

Both stages skip what is already done, so they can be re-run (or interrupted and resumed).

Full protocol (needs a GPU): the whole training set, cnn_mnist, ε = 0.1, the MNIST recipes'
other settings (Adam 1e-3, 40 epochs, ×0.1 at epoch 30, PGD-20 with α = ε/20 = 0.005,
batch 128), validation-based checkpoint selection; evaluation with the `paper` suite and
standard AutoAttack on the whole test set. ``--reduced`` shrinks training set, epochs,
attack steps and evaluation size so that it finishes on a CPU; every reduction is recorded
in each run's config.json and printed on the results page.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# ε = 0.1 on the [0,1] scale; α = ε/20 as in the Calibrated AT MNIST recipe.
COMMON = dict(dataset="fashion-mnist", arch="cnn_mnist", eps="0.1", alpha="0.005", steps="20",
              epochs="40", milestones="30", optimizer="adam", lr="0.001", weight_decay="0",
              batch_size="128")

# name -> (objective, method settings). The methods' MNIST settings where the papers give
# them (methods.md); TRADES β=6 and MART λ=6 are their CIFAR defaults (no MNIST value is
# reported for MART), FAT uses its TRADES variant with its τ schedule; Customized AT uses
# its -cnn-fmnist recipes (η = 0.016, c = 3: c·ε_max must stay below 1).
METHODS: dict[str, tuple[str, dict[str, str]]] = {
    "at": ("at", {}),
    "trades": ("trades", {"beta": "6"}),
    "mart": ("mart", {"lam": "6"}),
    # FAT-TRADES τ schedule 0 (≤30), 1 (≤50), 2 (≤70), 3 of 85 epochs, as fractions of the run.
    "fat-trades": ("fat", {"variant": "trades", "beta": "6", "tau_schedule": "0@0.35,1@0.59,2@0.82,3"}),
    # Calibrated AT with its MNIST settings (β 1, β1 0.3, κ 150) and the objective's default g_φ
    # optimiser (SGD 0.01, momentum 0.9: Adam, the authors' MNIST choice, collapses the mask).
    "cat-cent": ("calibrated", {"attack": "cent", "beta": "1", "beta1": "0.3", "kappa": "150"}),
    "cat-cw": ("calibrated", {"attack": "cw", "beta": "1", "beta1": "0.3", "kappa": "150"}),
    # The β × β1 sweep: β 5 is the paper's CIFAR value (a TRADES-like weight), β1 0.05 its CIFAR
    # value; (β 1, β1 0.3) is cat-cw above.
    "cat-cw-b1-0.05": ("calibrated", {"attack": "cw", "beta": "1", "beta1": "0.05", "kappa": "150"}),
    "cat-cw-b5-0.3": ("calibrated", {"attack": "cw", "beta": "5", "beta1": "0.3", "kappa": "150"}),
    "cat-cw-b5-0.05": ("calibrated", {"attack": "cw", "beta": "5", "beta1": "0.05", "kappa": "150"}),
    "cat-cent-b5-0.05": ("calibrated", {"attack": "cent", "beta": "5", "beta1": "0.05", "kappa": "150"}),
    "customized-ce": ("customized", {"loss": "ce", "eps_max": "0.1", "eta": "0.016", "c": "3"}),
    "customized-mix": ("customized", {"loss": "mix", "eps_max": "0.1", "eta": "0.016", "c": "3"}),
    # The authors' released code (rule=code: ε_i grows where the attack succeeds, its own attack
    # and loss), its η 0.0025 and ε_max 0.035 scaled to ε_max 0.1 (the -cnn-fmnist-code recipes).
    "customized-mix-code": ("customized", {"loss": "mix", "rule": "code", "eps_max": "0.1",
                                           "eta": "0.00714", "c": "3"}),
}

REDUCED = dict(subset="10000", epochs="8", milestones="0.75", steps="10", alpha="0.02")
# Reduced (CPU) evaluation: every attack on the same 1,000 test images of every run (seed 0 of
# robustzoo's sample rule), so any two runs can be compared example by example (paired tests).
# Clean, FGSM, PGD-20/100, CW, APGD-CE/APGD-DLR and standard AutoAttack run in one evaluation
# (AutoAttack reuses the standalone APGD-CE); the ε sweep runs on the same images, so all the
# per-example outcomes stay in one RUN/eval_flags.safetensors. Standard AutoAttack costs about
# 3.5 s per robust image on one core (Square-5000 and FAB-T dominate).
REDUCED_EVAL = dict(n=1000, aa_n=1000, sweep_n=1000)
# Gradient attacks of the reduced protocol: the paper suite without its standalone
# Square-5000 (Square still runs, with 5,000 queries, inside AutoAttack) plus APGD-CE and
# APGD-DLR, which make the PGD-vs-APGD masking check possible on all n images.
REDUCED_ATTACKS = "clean,fgsm,pgd20,pgd100,cw,apgd-ce,apgd-dlr"
SWEEP = "0,0.05,0.1,0.15,0.2,0.3"

#: The study docs/results.md reports: three seeds for the methods the page compares most closely
#: (AT, TRADES, the best Calibrated AT point and Customized AT's paper rule), one for the rest.
#: ``export`` writes it beside the records (study.json) so the page can say what is still missing.
STUDY: dict[str, tuple[int, ...]] = {
    **{m: (0, 1, 2) for m in ("at", "trades", "cat-cw-b5-0.05", "customized-ce", "customized-mix")},
    **{m: (0,) for m in ("mart", "fat-trades", "cat-cent", "cat-cw", "cat-cent-b5-0.05", "cat-cw-b5-0.3",
                         "cat-cw-b1-0.05", "customized-mix-code")},
}


def _run(cmd: list[str], log: Path, threads: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    print(f"[{time.time() - t0:7.1f}s] exit {code}: {' '.join(cmd)}", flush=True)
    return code


def train_commands(out: Path, seeds: list[int], methods: list[str], reduced: bool, device: str) -> list[list[str]]:
    cmds = []
    for name in methods:
        objective, settings = METHODS[name]
        for seed in seeds:
            run = out / f"{name}-s{seed}"
            if (run / "eval.json").is_file():
                continue
            opts = dict(COMMON, **settings, seed=str(seed))
            if reduced:
                opts.update(REDUCED)
            cmd = [sys.executable, "-m", "robustzoo", "train", "--objective", objective, "--device", device]
            if (run / "state" / "resume.pt").is_file():
                cmd = [sys.executable, "-m", "robustzoo", "train", "--resume", str(run), "--device", device]
            else:
                cmd += ["--out", str(run)] + [a for k, v in opts.items() for a in ("--set", f"{k}={v}")]
            cmds.append(cmd)
    return cmds


def eval_commands(out: Path, reduced: bool, sweep: str, device: str, aa_large_n: int = 0,
                  aa_large_methods: list[str] | None = None,
                  methods: list[str] | None = None, seeds: list[int] | None = None) -> list[list[str]]:
    """The evaluations still missing for every finished run (one with eval.json) under ``out``.

    Full protocol: the ``paper`` and ``autoattack`` suites on the whole test set. Reduced:
    see REDUCED_EVAL. The evaluations write RUN/eval-{paper,autoattack,sweep}.json; the
    training's own evaluation stays in the run's history (RUN/evals/, ``"source": "train"``),
    whatever later evaluations do to RUN/eval.json. docs/make_results.py reads all four. An
    existing file is kept (delete it to re-run).

    ``aa_large_n`` > 0 adds standard AutoAttack (with clean and PGD-20) on that many images for
    the runs of ``aa_large_methods`` (RUN/eval-autoattack-large.json): the same seeded images
    for every run, so methods can be compared pair by pair on them. ``methods`` (default: all)
    keeps only those methods' runs, so that a method can be evaluated as soon as it has trained;
    ``seeds`` (default: all) only those seeds' runs.
    """
    r = REDUCED_EVAL if reduced else dict(n=None, aa_n=None, sweep_n=None)
    if reduced:  # one evaluation of every attack on the same images (see REDUCED_EVAL)
        jobs = {"paper": (r["n"], ["--attacks", REDUCED_ATTACKS + ",autoattack"]),
                "sweep": (r["sweep_n"], ["--attacks", "pgd20", "--eps-sweep", sweep])}
    else:
        jobs = {"paper": (None, ["--suite", "paper"]), "autoattack": (None, ["--suite", "autoattack"]),
                "sweep": (None, ["--attacks", "pgd20", "--eps-sweep", sweep])}
    if aa_large_n:
        jobs["autoattack-large"] = (aa_large_n, ["--attacks", "clean,pgd20,autoattack"])
    finished = sorted(p for p in out.iterdir() if (p / "eval.json").is_file()) if out.is_dir() else []
    cmds = []
    # Suite by suite, so that parallel jobs work on different run directories (each
    # evaluation also updates RUN/eval.json and RUN/eval_flags.safetensors).
    for name, (n, args) in jobs.items():
        for run in finished:
            method, _, seed = run.name.rpartition("-s")
            if methods is not None and method not in methods:
                continue
            if seeds is not None and seed not in {str(s) for s in seeds}:
                continue
            if name == "autoattack-large" and method not in (aa_large_methods or []):
                continue
            target = run / f"eval-{name}.json"
            if not target.is_file():
                cmds.append([sys.executable, "-m", "robustzoo", "eval", str(run), "--device", device]
                            + (["--n", str(n)] if n else []) + args + ["--json", str(target)])
    return cmds


#: What `export` copies from a run directory into the repository: everything that proves what was
#: measured, and the sha256 of the weights (not the weights) so a rerun can prove it trained the
#: same model.
EXPORT_FILES = ("config.json", "metrics.jsonl", "eval.json", "eval_flags.safetensors", "eval-paper.json",
                "eval-autoattack.json", "eval-sweep.json", "eval-autoattack-large.json")


def export_runs(out: Path, to: Path, methods: list[str] | None = None) -> list[str]:
    """Copy each finished run's records from ``out`` into ``to/<run>/`` (no weights); returns the runs.

    Writes ``weights.sha256`` (sha256 of model.safetensors, last.safetensors and aux.safetensors)
    and ``evals/`` (the evaluation history). A file already there is replaced only by a newer one.
    """
    import hashlib
    import shutil

    done = []
    for run in sorted(p for p in out.iterdir() if (p / "eval.json").is_file()) if out.is_dir() else []:
        if methods is not None and run.name.rsplit("-s", 1)[0] not in methods:
            continue
        dst = to / run.name
        (dst / "evals").mkdir(parents=True, exist_ok=True)
        for name in EXPORT_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, dst / name)
        for p in sorted((run / "evals").glob("*.json")):
            shutil.copy2(p, dst / "evals" / p.name)
        lines = []
        for w in ("model.safetensors", "last.safetensors", "aux.safetensors"):
            if (run / w).is_file():
                lines.append(f"{hashlib.sha256((run / w).read_bytes()).hexdigest()}  {w}")
        (dst / "weights.sha256").write_text("\n".join(lines) + "\n")
        done.append(run.name)
    return done


def run_state(run: Path) -> str:
    """``evaluated`` (the study's evaluation is done), ``trained``, ``training`` or ``not started``."""
    if (run / "eval-paper.json").is_file() and (run / "eval-sweep.json").is_file():
        return "evaluated"
    if (run / "eval.json").is_file():
        return "trained"
    return "training" if (run / "config.json").is_file() else "not started"


def study_status(out: Path) -> dict[str, str]:
    """The state of every run of :data:`STUDY` under ``out``, keyed by run name (``<method>-s<seed>``)."""
    return {f"{m}-s{s}": run_state(out / f"{m}-s{s}") for m, seeds in STUDY.items() for s in seeds}


def remaining_commands(out: Path, reduced: bool) -> list[str]:
    """The commands that finish :data:`STUDY` under ``out`` (training grouped by seed, then evaluation)."""
    red = " --reduced" if reduced else ""
    status = study_status(out)
    by_seed: dict[int, list[str]] = {}
    for m, seeds in STUDY.items():
        for s in seeds:
            if status[f"{m}-s{s}"] in ("training", "not started"):
                by_seed.setdefault(s, []).append(m)
    cmds = [f"python benchmarks/fmnist_zoo.py train --out {out}{red} --seeds {s} --methods {','.join(ms)} --jobs 2"
            for s, ms in sorted(by_seed.items())]
    if any(v != "evaluated" for v in status.values()):
        cmds.append(f"python benchmarks/fmnist_zoo.py eval --out {out}{red} --jobs 2")
    return cmds


def record_protocol(out: Path, stage: str, seeds: list[int], methods: list[str], reduced: bool,
                    sweep: str) -> None:
    """Merge this invocation into OUT/protocol.json (what docs/make_results.py prints)."""
    path = out / "protocol.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old and old.get("reduced") != reduced:
        raise SystemExit(f"{out} holds runs of the {'reduced' if old['reduced'] else 'full'} protocol; "
                         f"use another --out")
    stages = old.get("stages", {})
    if stage == "train":
        done = stages.get("train", {})
        stages["train"] = {"seeds": sorted(set(done.get("seeds", [])) | set(seeds)),
                           "methods": [m for m in METHODS if m in set(done.get("methods", [])) | set(methods)]}
    else:
        stages["eval"] = {"sweep": sweep}
    data = {"common": COMMON, "methods": METHODS, "reduced": reduced,
            "reduced_train": REDUCED if reduced else None,
            "reduced_eval": dict(REDUCED_EVAL, attacks=REDUCED_ATTACKS) if reduced else None,
            "stages": stages}
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")  # two invocations may run side by side
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["train", "eval", "export", "status"])
    ap.add_argument("--to", type=Path, default=Path("docs/results/fmnist"),
                    help="export: the folder in the repository the runs' records are copied to")
    ap.add_argument("--out", type=Path, default=Path("runs/fmnist"))
    ap.add_argument("--seeds", help="comma-separated seeds to train (default 0), or whose runs to evaluate "
                                     "or export (default: all)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="methods to train, or whose runs to evaluate (comma-separated; default: all)")
    ap.add_argument("--reduced", action="store_true", help="CPU protocol (see REDUCED, REDUCED_EVAL)")
    ap.add_argument("--sweep", default=SWEEP, help="ε values of the accuracy-vs-ε curve")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    ap.add_argument("--threads", type=int, help="torch threads per run (default: cores/jobs)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--aa-large-n", type=int, default=0,
                    help="eval: also standard AutoAttack on this many images for --aa-large-methods")
    ap.add_argument("--aa-large-methods", default="", help="methods for --aa-large-n (comma-separated)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    if args.stage == "export":
        names = export_runs(args.out, args.to, methods if args.methods != ",".join(METHODS) else None)
        if (args.out / "protocol.json").is_file():
            import shutil

            shutil.copy2(args.out / "protocol.json", args.to / "protocol.json")
        args.to.mkdir(parents=True, exist_ok=True)
        (args.to / "study.json").write_text(json.dumps({"plan": STUDY}, indent=2) + "\n")
        print(f"exported {len(names)} runs to {args.to}: {', '.join(names)}")
        return 0
    if args.stage == "status":
        status = study_status(args.out)
        for name, state in status.items():
            print(f"{name:24} {state}")
        done = sum(v == "evaluated" for v in status.values())
        print(f"{done} of {len(status)} runs of the study evaluated under {args.out}")
        for c in remaining_commands(args.out, args.reduced):
            print(c)
        return 0
    if args.stage == "train":
        seeds = seeds or [0]
        cmds = train_commands(args.out, seeds, methods, args.reduced, args.device)
    else:
        cmds = eval_commands(args.out, args.reduced, args.sweep, args.device, args.aa_large_n,
                             [m for m in args.aa_large_methods.split(",") if m],
                             methods, seeds)
    record_protocol(args.out, args.stage, seeds or [], methods, args.reduced, args.sweep)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    logs = args.out / "logs"
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda c: _run(c, logs / f"{args.stage}-{abs(hash(tuple(c))) % 10**8}.log", threads), cmds))
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
