"""Train and evaluate every method on Fashion-MNIST: the runs behind docs/results.md.

    python benchmarks/fmnist_zoo.py train --out runs/fmnist --seeds 0,1,2          # full protocol
    python benchmarks/fmnist_zoo.py eval  --out runs/fmnist                         # paper suite + AutoAttack
    python docs/make_results.py runs/fmnist                                         # the page

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
    "cat-cent": ("calibrated", {"attack": "cent", "beta": "1", "beta1": "0.3", "kappa": "150"}),
    "cat-cw": ("calibrated", {"attack": "cw", "beta": "1", "beta1": "0.3", "kappa": "150"}),
    "customized-ce": ("customized", {"loss": "ce", "eps_max": "0.1", "eta": "0.016", "c": "3"}),
    "customized-mix": ("customized", {"loss": "mix", "eps_max": "0.1", "eta": "0.016", "c": "3"}),
}

REDUCED = dict(subset="8000", epochs="5", milestones="4", steps="10", alpha="0.02")
# Square (alone and inside AutoAttack) with 500 instead of 5,000 queries on CPU.
REDUCED_EVAL = dict(n=100, square_queries=500)


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


def eval_commands(out: Path, n: int | None, sweep: str, device: str,
                  square_queries: int | None = None, with_aa: bool = True) -> list[list[str]]:
    cmds = []
    for run in sorted(p for p in out.iterdir() if (p / "eval.json").is_file()):
        base = [sys.executable, "-m", "robustzoo", "eval", str(run), "--device", device]
        if n:
            base += ["--n", str(n)]
        if square_queries:
            base += ["--set", f"square_queries={square_queries}"]
        for suite in ("paper", "autoattack"):
            target = run / f"eval-{suite}.json"
            if target.is_file():
                continue
            if suite == "paper" and square_queries:
                # Reduced (CPU) protocol: the paper's gradient attacks plus APGD-CE/APGD-DLR
                # (AutoAttack's two cheapest parts); no standalone Square.
                cmds.append(base + ["--attacks", "clean,fgsm,pgd20,pgd100,cw,apgd-ce,apgd-dlr",
                                    "--json", str(target)])
            elif suite == "autoattack" and square_queries and not with_aa:
                continue
            else:
                cmds.append(base + ["--suite", suite, "--json", str(target)])
        if not (run / "eval-sweep.json").is_file():
            cmds.append(base + ["--attacks", "pgd20", "--eps-sweep", sweep, "--json", str(run / "eval-sweep.json")])
    return cmds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["train", "eval"])
    ap.add_argument("--out", type=Path, default=Path("runs/fmnist"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--reduced", action="store_true", help="CPU protocol (see REDUCED, REDUCED_EVAL)")
    ap.add_argument("--n", type=int, help="test images per evaluation (default: all; --reduced: 500)")
    ap.add_argument("--sweep", default="0,0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--autoattack", action="store_true",
                    help="with --reduced: also run standard AutoAttack (minutes per model on a CPU)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each gets cores/jobs threads)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.stage == "train":
        cmds = train_commands(args.out, seeds, methods, args.reduced, args.device)
    else:
        n = args.n or (REDUCED_EVAL["n"] if args.reduced else None)
        cmds = eval_commands(args.out, n, args.sweep, args.device,
                             REDUCED_EVAL["square_queries"] if args.reduced else None,
                             with_aa=not args.reduced or args.autoattack)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    logs = args.out / "logs"
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda c: _run(c, logs / f"{args.stage}-{abs(hash(tuple(c))) % 10**8}.log", threads), cmds))
    (args.out / "protocol.json").write_text(json.dumps(
        {"common": COMMON, "methods": METHODS, "reduced": args.reduced,
         "reduced_train": REDUCED if args.reduced else None,
         "reduced_eval": REDUCED_EVAL if args.reduced else None, "eval_n": args.n or
         (REDUCED_EVAL["n"] if args.reduced else None), "sweep": args.sweep}, indent=2) + "\n")
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
