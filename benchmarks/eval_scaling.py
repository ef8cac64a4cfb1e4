"""Sharded evaluation: ``robustzoo eval --nproc N`` for N = 1, 2, ... on the same examples.

Each timed run is the command a user types, in a fresh copy of the run directory (nothing is
resumed), interleaved (1 2 1 2 ..., after one untimed warm-up of each N): ``robustzoo eval
COPY --attacks ... --n ... --batch-size ... --nproc N --json -``. Reported per N:

* the median wall-clock seconds of the whole command (start-up, the process group, loading,
  the attacks, rank 0's health probes and writes) and the speed-up over N = 1;
* the median of the attacks' own seconds (the sum of the report's per-attack ``seconds``:
  rank 0's wall time inside the attacks), and its speed-up;
* per attack, the load balance: busy seconds of the slowest process over the mean (median
  over the repeats; 1.0 is perfect), read from the flag store's ``ranks`` entries;
* a check that every N gave the same per-attack counts (the record is N-independent).

CPU threads (OMP_NUM_THREADS): ``--threads-per-process T`` gives every process T threads
(N processes then use N times the cores of one: the scaling of sharding itself); without it a
one-process run gets ``--threads`` (default: every core) and an N-process run ``threads / N``
per process (the same cores for each N: sharding against torch's own threads). On a machine
other work keeps busy, several threads per process spin on shared cores and slow down far more
than they should; use ``--threads-per-process 1`` there.

Examples::

    python benchmarks/eval_scaling.py                                  # tiny digits run, CPU, N = 1, 2
    python benchmarks/eval_scaling.py --threads-per-process 1          # a shared, busy machine
    python benchmarks/eval_scaling.py --run runs/at-fashion-mnist-... --n 500 --repeats 5
    # GPU recipe (a machine with several GPUs; one process per GPU, NCCL):
    python benchmarks/eval_scaling.py --run RUN --device cuda --nprocs 1,2,4,8 --n 2000 \\
        --attacks clean,pgd20,autoattack --batch-size 500 --repeats 3 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _train_tiny(out: Path) -> Path:
    """A small adversarially trained CNN on the embedded digits (about 30 s on two cores)."""
    from robustzoo.testing import train_tiny

    run_dir, _ = train_tiny(out, "at", subset=None, epochs=3)
    return run_dir


def balance(flags_file: Path) -> dict[str, float]:
    """``{attack key: slowest process's busy seconds / mean}`` from a sharded run's flag store."""
    from robustzoo.runs import read_weights

    _, meta = read_weights(flags_file)
    entries = json.loads(meta["robustzoo.eval_flags"])["entries"]
    return {k: float(e["ranks"]["slowest_over_mean"]) for k, e in entries.items() if e.get("ranks")}


def attack_seconds(report: dict[str, Any]) -> float:
    """Rank 0's seconds inside the attacks: the sum of the report's per-row ``seconds``."""
    return float(sum(r.get("seconds", 0.0) for r in report["results"]))


def counts(report: dict[str, Any]) -> list[tuple[str, int]]:
    return [(r["attack"], int(r["correct"])) for r in report["results"]]


def summarise(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians and speed-ups per N from the timed runs (``{N: [{"wall", "attacks", "balance", "counts"}]}``)."""
    out: dict[str, Any] = {"per_nproc": {}}
    base_wall = base_att = None
    for nproc in sorted(runs):
        rs = runs[nproc]
        wall = statistics.median(r["wall"] for r in rs)
        att = statistics.median(r["attacks"] for r in rs)
        if nproc == min(runs):
            base_wall, base_att = wall, att
        keys = sorted({k for r in rs for k in r["balance"]})
        out["per_nproc"][nproc] = {
            "median_wall_s": round(wall, 3), "median_attack_s": round(att, 3),
            "speedup_wall": round(base_wall / wall, 3), "speedup_attacks": round(base_att / att, 3),
            "slowest_over_mean": {k: round(statistics.median(r["balance"][k] for r in rs if k in r["balance"]), 3)
                                  for k in keys},
            "wall_s": [round(r["wall"], 3) for r in rs], "attack_s": [round(r["attacks"], 3) for r in rs]}
    every = {json.dumps(r["counts"]) for rs in runs.values() for r in rs}
    out["same_counts"] = len(every) == 1
    return out


def _one(run: Path, tmp: Path, nproc: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    copy = tmp / f"run-{tag}"
    shutil.copytree(run, copy)
    for stale in ("eval_flags.safetensors",):
        (copy / stale).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                        os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(args.threads_per_process or max(1, args.threads // nproc))
    cmd = [sys.executable, "-m", "robustzoo", "eval", str(copy), "--attacks", args.attacks, "--n", str(args.n),
           "--batch-size", str(args.batch_size), "--device", args.device, "--seed", str(args.seed),
           "--nproc", str(nproc), "--json", "-", *[f"--set={s}" for s in args.set]]
    if not args.health:
        cmd.append("--no-health")
    if args.cascade:
        cmd.append("--cascade")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"eval --nproc {nproc} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    flags = copy / "eval_flags.safetensors"
    out = {"wall": wall, "attacks": attack_seconds(report), "counts": counts(report),
           "balance": balance(flags) if nproc > 1 and flags.is_file() else {}}
    shutil.rmtree(copy, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="run directory (default: train a small digits run here)")
    ap.add_argument("--attacks", default="clean,pgd20,cw,apgd-ce", help="comma-separated, as eval --attacks")
    ap.add_argument("--n", type=int, default=360, help="test examples (seeded choice)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="attack option (repeatable)")
    ap.add_argument("--nprocs", default="1,2", help="process counts, e.g. 1,2 (CPU) or 1,2,4,8 (GPUs)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each N, interleaved")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CPU threads in all (a one-process run's; N processes get threads/N each)")
    ap.add_argument("--threads-per-process", type=int, help="CPU threads of every process (overrides --threads)")
    ap.add_argument("--cascade", action="store_true", help="eval --cascade: each attack only on what the last left")
    ap.add_argument("--health", action="store_true", help="keep the health probes (they run on rank 0 only)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    nprocs = [int(v) for v in args.nprocs.split(",")]
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        run = Path(args.run) if args.run else _train_tiny(tmp / "tiny")
        for nproc in nprocs:  # warm-up: file caches, the first torchrun start
            _one(run, tmp, nproc, argparse.Namespace(**{**vars(args), "n": min(args.n, 16)}), f"warm{nproc}")
        runs: dict[int, list[dict[str, Any]]] = {k: [] for k in nprocs}
        for i in range(args.repeats):
            for nproc in nprocs:
                runs[nproc].append(_one(run, tmp, nproc, args, f"{i}-{nproc}"))
    out = dict(summarise(runs), attacks=args.attacks, n=args.n, batch_size=args.batch_size, device=args.device,
               threads=args.threads, threads_per_process=args.threads_per_process, repeats=args.repeats, health=args.health, cascade=args.cascade, options=args.set,
               run=args.run or "small digits AT run (trained here)", cpu_count=os.cpu_count())
    threads = (f"{args.threads_per_process} thread(s) per process" if args.threads_per_process
               else f"{args.threads} threads in all")
    print(f"eval --attacks {args.attacks} on {args.n} examples, batch {args.batch_size}, {args.device} ({threads}), "
          f"{args.repeats} interleaved runs each ({'with' if args.health else 'no'} health probes)")
    for nproc, row in out["per_nproc"].items():
        bal = ", ".join(f"{k} {v:.2f}" for k, v in row["slowest_over_mean"].items()) or "-"
        print(f"  --nproc {nproc}: wall {row['median_wall_s']:.2f} s (x{row['speedup_wall']:.2f}), attacks "
              f"{row['median_attack_s']:.2f} s (x{row['speedup_attacks']:.2f}); slowest/mean busy: {bal}")
    print("  same per-attack counts for every N" if out["same_counts"] else "  COUNTS DIFFER between N!")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["same_counts"] else 1


if __name__ == "__main__":
    sys.exit(main())
