"""robustzoo's AutoAttack wrapper against pyautoattack called directly, on the same examples.

In one process, interleaved (A B A B ..., after a warm-up of both), on the same ``--n``
examples of a run's test set:

* A: ``pyautoattack.AutoAttack(model, version="standard", ...).run_standard_evaluation(x, y)``,
  the authors' code as a user calls it;
* B: ``robustzoo.eval.evaluate_model(model, test, ["clean", "autoattack"], health=False)``, the
  wrapper as ``robustzoo eval --attacks clean,autoattack --no-health`` runs it (example
  choice, clean row, per-component outcomes, worst case);
* C (``--with-health``): the same with the health checks and their probes, as a plain
  ``robustzoo eval`` runs it. The probes are extra work the authors' code does not do
  (about 60 forward-backward passes per probe image), so C is reported beside, not against, A.

Both use the same batch size, seed, ε and Square budget, and must give the same robust count
(checked). Prints the median wall-clock seconds of each and the ratios B/A (and C/A); on a
CPU also the median CPU seconds of the process (``time.process_time``) and their ratios, which
a shared, loaded machine disturbs far less than wall-clock time (use ``--threads 1`` there:
several threads on busy cores spin and multiply the wall-clock time). Read the ratios, not the
seconds.

Examples::

    python benchmarks/autoattack_overhead.py                      # tiny digits run, trained here
    python benchmarks/autoattack_overhead.py --run runs/at-fashion-mnist-... --n 50 --repeats 5
    python benchmarks/autoattack_overhead.py --square-queries 1000 --with-health --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _model_and_data(run: str | None, tmp: Path, device: str) -> tuple[Any, Any, Any, Path]:
    from robustzoo import runs
    from robustzoo.data import load_splits
    from robustzoo.plugins import registry

    if run is None:  # a small adversarially trained CNN on the embedded digits (a few seconds)
        from robustzoo.testing import train_tiny

        run_dir, _ = train_tiny(tmp / "run", "at", subset=None, epochs=3)
    else:
        run_dir = Path(run)
    model, cfg = runs.load_run(run_dir, device=device)
    rz = cfg["robustzoo"]
    spec = registry("datasets").get(rz["dataset"])
    splits = load_splits(spec, data_dir=rz.get("config", {}).get("data_dir"),
                         seed=int(rz.get("config", {}).get("seed", 0)))
    return model.eval(), spec, splits.test, run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="run directory (default: train a tiny digits run)")
    ap.add_argument("--n", type=int, default=50, help="test examples (seeded choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, interleaved")
    ap.add_argument("--batch-size", type=int, default=250, help="both (250: run_standard_evaluation's default)")
    ap.add_argument("--square-queries", type=int, default=5000, help="Square budget of both (standard: 5000)")
    ap.add_argument("--eps", type=float, help="default: the run's training ε")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--with-health", action="store_true", help="also time C: the wrapper with health checks")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    from pyautoattack import AutoAttack

    from robustzoo.attacks.autoattack import n_targets
    from robustzoo.data import select_examples
    from robustzoo.eval import evaluate_model

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, spec, test, run_dir = _model_and_data(args.run, Path(tmp), args.device)
        eps = float(args.eps if args.eps is not None else spec.eps)
        data = select_examples(test, args.n, args.seed).to(args.device)
        x, y, _ = next(iter(data.batches(len(data))))
        k = n_targets(spec.num_classes)

        def direct(n_queries: int = args.square_queries, xs: torch.Tensor = x, ys: torch.Tensor = y) -> int:
            aa = AutoAttack(model, version="standard", eps=eps, seed=args.seed, norm="Linf", device=args.device)
            aa.verbose = False
            aa.square.n_queries = n_queries
            aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = k
            _, y_adv = aa.run_standard_evaluation(xs, ys, batch_size=args.batch_size)
            return int((y_adv == ys).sum())

        def wrapper(health: bool = False, n_queries: int = args.square_queries, n: int = args.n) -> int:
            rep = evaluate_model(model, test, ["clean", "autoattack"], eps=eps, alpha=spec.eval_alpha,
                                 num_classes=spec.num_classes, n=n, seed=args.seed,
                                 batch_size=args.batch_size, device=args.device, health=health,
                                 options={"square_queries": n_queries})
            return next(r["correct"] for r in rep["results"] if r["attack"] == "autoattack")

        # Warm-up: first calls pay for kernel selection and allocator growth; not timed.
        direct(10, x[:8], y[:8])
        wrapper(n_queries=10, n=8)
        names = ["A", "B"] + (["C"] if args.with_health else [])
        wall: dict[str, list[float]] = {k_: [] for k_ in names}
        cpu: dict[str, list[float]] = {k_: [] for k_ in names}
        counts: dict[str, set[int]] = {k_: set() for k_ in names}
        jobs = {"A": direct, "B": wrapper, "C": lambda: wrapper(health=True)}
        cuda = torch.device(args.device).type == "cuda"
        for _ in range(args.repeats):
            for name in names:
                if cuda:
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                counts[name].add(jobs[name]())
                if cuda:
                    torch.cuda.synchronize()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = {k_: statistics.median(v) for k_, v in wall.items()}
    med_cpu = {k_: statistics.median(v) for k_, v in cpu.items()}
    out = {"n": args.n, "repeats": args.repeats, "batch_size": args.batch_size,
           "square_queries": args.square_queries, "eps": eps, "threads": torch.get_num_threads(),
           "device": args.device, "run": str(run_dir) if args.run else "tiny digits AT run (trained here)",
           "seconds": wall, "cpu_seconds": cpu, "median_seconds": med, "median_cpu_seconds": med_cpu,
           "robust_correct": {k_: sorted(v) for k_, v in counts.items()},
           "ratio_wrapper_over_direct": med["B"] / med["A"],
           "cpu_ratio_wrapper_over_direct": med_cpu["B"] / med_cpu["A"]}
    if "C" in med:
        out["ratio_with_health_over_direct"] = med["C"] / med["A"]
        out["cpu_ratio_with_health_over_direct"] = med_cpu["C"] / med_cpu["A"]
    same = len(counts["A"] | counts["B"]) == 1
    print(f"AutoAttack (standard, {args.square_queries} Square queries) on {args.n} examples, batch "
          f"{args.batch_size}, {torch.get_num_threads()} threads, {args.repeats} interleaved runs each")
    labels = {"A": "A pyautoattack run_standard_evaluation", "B": "B robustzoo evaluate_model (no health)",
              "C": "C robustzoo evaluate_model (health)    "}
    for name in names:
        print(f"  {labels[name]}: median {med[name]:.2f} s wall, {med_cpu[name]:.2f} s CPU"
              f"  robust {sorted(counts[name])}")
    for kind, m in (("wall", med), ("CPU", med_cpu)):
        print(f"  {kind}: ratio B/A = {m['B'] / m['A']:.3f}" + (f", C/A = {m['C'] / m['A']:.3f}" if "C" in m else ""))
    if not same:
        print("  robust counts differ between A and B!")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
