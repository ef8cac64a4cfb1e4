"""The prepared GPU check: one run on one H100 or H200, every figure in one JSON file.

Run it through ``bash benchmarks/gpu_check.sh OUT.json`` from a fresh checkout (the script
installs the checkout, then calls this file). In under 8 minutes, in this order:

1. **throughput**: PGD-10 adversarial training of PreAct ResNet-18 at batch 128 on
   CIFAR-shaped data: robustzoo's fast path, the same loop in plain fp32 NCHW, and a paper
   repository's fp32 loop (``benchmarks/throughput.py``), each in its own process, their
   timed rounds interleaved; the speed-up and where it comes from;
2. **host syncs** of a training epoch (``torch.cuda.set_sync_debug_mode('warn')``), per step
   and per epoch, silent and with running figures shown, and of a PGD-20 evaluation;
3. **FAT at τ = 0**: the early-stopped search compacted to the examples still attacking
   against the full batch, interleaved;
4. **bf16 against fp32**: a short trained run (CIFAR-10 with ``--data-dir``, else
   Fashion-MNIST where installed, else the embedded digits), evaluated with clean and PGD-20
   in both precisions; the drift and the precision ``robustzoo eval --precision auto`` takes;
5. **torch.compile reduce-overhead**, last: compilation time, images/s against eager, graphs
   per BatchNorm mode, recompiles and CUDA-graph fallbacks (:func:`robustzoo.fast.compile_stats`).

The JSON is rewritten after every phase, so a run stopped by its time limit keeps what it
measured; a phase that fails records its error and the next one runs. ``--smoke`` (or
``GPU_CHECK_SMOKE=1`` for the shell script) runs every phase with tiny sizes on the CPU, in
this process: the test suite checks the JSON's keys that way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402 - the benchmark beside this file

SCHEMA = 1
PHASES = ("throughput", "host_syncs", "fat_compaction", "precision_drift", "compile")

#: Sizes of a real run and of a smoke run.
SETTINGS: dict[str, dict[str, Any]] = {
    "gpu": dict(device="cuda", arch="preact_resnet18", batch_size=128, steps=10, warmup=5, rounds=5,
                iters=20, sync_steps=10, fat_rounds=3, fat_iters=10, eval_n=1000, eval_batch=500,
                drift_epochs=2, drift_n=10000, compile_mode="reduce-overhead", compile_backend="inductor",
                compile_warmup=10, compile_rounds=3, workers=4, threads=None),
    "smoke": dict(device="cpu", arch="smallcnn", batch_size=4, steps=2, warmup=1, rounds=1, iters=1,
                  sync_steps=1, fat_rounds=1, fat_iters=1, eval_n=8, eval_batch=4, drift_epochs=1, drift_n=16,
                  compile_mode="default", compile_backend="eager", compile_warmup=1, compile_rounds=1,
                  workers=0, threads=1),
}


class Check:
    """The run: its settings, its deadline and the JSON it fills."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.smoke = args.smoke
        self.s = dict(SETTINGS["smoke" if args.smoke else "gpu"])
        if args.device:
            self.s["device"] = args.device
        self.started = args.started or time.time()
        self.deadline = self.started + args.budget_seconds
        self.out = Path(args.out)
        self.report: dict[str, Any] = {
            "schema": SCHEMA, "smoke": self.smoke, "started": datetime.fromtimestamp(
                self.started, timezone.utc).isoformat(timespec="seconds"),
            "budget_seconds": args.budget_seconds, "settings": self.s, "environment": environment(),
            **{p: None for p in PHASES}, "errors": {}, "skipped": [], "seconds": {},
        }

    def left(self) -> float:
        return self.deadline - time.time()

    def write(self) -> None:
        self.report["seconds_total"] = round(time.time() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.out)

    def worker(self, name: str, **spec: Any) -> Any:
        base = dict(arch=self.s["arch"], batch_size=self.s["batch_size"], steps=self.s["steps"], seed=0,
                    device=self.s["device"], threads=self.s["threads"], eval_n=self.s["eval_n"], aa_n=8,
                    max_steps=max(self.s["iters"], self.s["warmup"], 2 * self.s["sync_steps"],
                                  self.s["fat_iters"], self.s["compile_warmup"]))
        return tp.make_worker(name, dict(base, **spec), in_process=self.smoke and not self.args.processes)

    def run(self, name: str, need_seconds: float, fn) -> None:
        """Run phase ``name`` if ``need_seconds`` are left; record its figures or its error."""
        if self.left() < need_seconds:
            self.report["skipped"].append(f"{name}: {self.left():.0f} s left, needs ~{need_seconds:.0f} s")
            self.write()
            return
        t0 = time.time()
        try:
            self.report[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a failed phase must not cost the others
            self.report["errors"][name] = tp._one_line(exc)
        self.report["seconds"][name] = round(time.time() - t0, 1)
        tp._log(f"gpu_check: {name} done in {self.report['seconds'][name]:.0f} s")
        self.write()


def environment() -> dict[str, Any]:
    """Versions and the commit, for the record (the device is named by the first worker)."""
    import importlib.metadata as md
    import platform
    import subprocess

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "safetensors", "robustzoo"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "versions": versions, "commit": commit,
            "cpu_count": os.cpu_count()}


# -- the phases -----------------------------------------------------------------------------------
def throughput(c: Check) -> dict[str, Any]:
    s = c.s
    specs = {
        "fast": dict(kind="robustzoo", precision="auto"),
        "fp32_nchw": dict(kind="robustzoo", precision="fp32", channels_last=False),
        "reference": dict(kind="reference", workers=s["workers"]),
    }
    workers = {k: c.worker(k, **v) for k, v in specs.items()}  # the processes start together
    c._fast = workers["fast"]  # kept for the host-sync phase (warm, its shapes autotuned)
    try:
        for w in workers.values():
            w.ready(timeout=max(c.left(), 60))
        train = tp.interleaved(workers, s["rounds"], s["iters"], s["warmup"], timeout=max(c.left(), 60))
    finally:
        for k, w in workers.items():
            if k != "fast":
                w.close()
    flops = tp.forward_flops(s["arch"], None)
    per_image = (2 * s["steps"] + 3) * flops
    peak = c.args.peak_tflops or _peak(c._fast.info.get("device_name", ""))
    for res in train.values():
        if "images_per_s" in res:
            res["fraction_of_limit"] = res["images_per_s"] * per_image / (peak * 1e12) if peak else None
    out: dict[str, Any] = {"arch": s["arch"], "batch_size": s["batch_size"], "pgd_steps": s["steps"],
                           "rounds": s["rounds"], "steps_per_round": s["iters"], "forward_gflops": flops / 1e9,
                           "forward_equivalents_per_image": 2 * s["steps"] + 3, "peak_tflops": peak,
                           "device_name": c._fast.info.get("device_name"), "contenders": train,
                           "breakdown": tp.breakdown(train)}
    if all("images_per_s" in train.get(k, {}) for k in ("fast", "reference")):
        out["speedup_vs_reference"] = train["fast"]["images_per_s"] / train["reference"]["images_per_s"]
        out["epoch_50k_s"] = {k: 50000 / v["images_per_s"] for k, v in train.items() if "images_per_s" in v}
    c.report["device_name"] = c._fast.info.get("device_name")
    return out


def _peak(name: str) -> float | None:
    return next((v for k, v in tp.PEAK_TFLOPS.items() if k in name), None)


def host_syncs(c: Check) -> dict[str, Any]:
    s, fast = c.s, getattr(c, "_fast", None)
    if fast is None or not fast.ready():
        fast = c._fast = c.worker("fast", kind="robustzoo", precision="auto")
    k, timeout = s["sync_steps"], max(c.left(), 30)
    try:
        one, two = fast.call("syncs", timeout, steps=k), fast.call("syncs", timeout, steps=2 * k)
        live = fast.call("syncs", timeout, steps=2 * k, live=True)
        ev = fast.call("eval_syncs", timeout, n=4 * s["eval_batch"], batch=s["eval_batch"])
    finally:
        fast.close()
    for r in (one, two, live, ev):
        if "error" in r:
            raise RuntimeError(r["error"])
    out: dict[str, Any] = {"available": one["available"], "epoch_steps": [k, 2 * k]}
    if not one["available"]:
        out["reason"] = one["reason"]
        return out
    per_step = (two["syncs"] - one["syncs"]) / k
    out.update(per_step=per_step, per_epoch_fixed=one["syncs"] - per_step * k,
               epoch_of_k=one, epoch_of_2k=two, epoch_of_2k_with_running_figures=live,
               pgd20_eval={"images": 4 * s["eval_batch"], "batches": 4, **ev})
    return out


def fat_compaction(c: Check) -> dict[str, Any]:
    s = c.s
    settings = {"variant": "at", "tau": 0}
    workers = {f"compact_{m}": c.worker(f"fat-{m}", kind="robustzoo", objective="fat",
                                        settings=dict(settings, compact=m)) for m in ("on", "off")}
    try:
        res = tp.interleaved(workers, s["fat_rounds"], s["fat_iters"], s["warmup"], timeout=max(c.left(), 60))
    finally:
        for w in workers.values():
            w.close()
    out: dict[str, Any] = {"objective": "fat", "settings": settings, "contenders": res}
    if all("images_per_s" in r for r in res.values()):
        out["speedup_compact_over_full"] = res["compact_on"]["images_per_s"] / res["compact_off"]["images_per_s"]
    return out


def precision_drift(c: Check) -> dict[str, Any]:
    s, data_dir = c.s, c.args.data_dir
    if c.smoke:
        plan = dict(dataset="digits", arch="cnn_mnist", subset=120, n=s["drift_n"], batch_size=32, steps=2)
    elif data_dir and _has_cifar(data_dir):
        plan = dict(dataset="cifar10", arch="preact_resnet18", subset=None, n=s["drift_n"], batch_size=128)
    elif _has_fashion_mnist(data_dir):
        plan = dict(dataset="fashion-mnist", arch="preact_resnet18", subset=None, n=s["drift_n"], batch_size=128)
    else:
        plan = dict(dataset="digits", arch="cnn_mnist", subset=None, n=None, batch_size=None)
    w = c.worker("drift", kind="drift")
    try:
        res = w.call("run", timeout=max(c.left() - 5, 30), dataset=plan["dataset"], arch=plan["arch"],
                     epochs=s["drift_epochs"], n=plan["n"], subset=plan["subset"], data_dir=data_dir,
                     batch_size=plan["batch_size"], steps=plan.get("steps"))
    finally:
        w.close()
    if "error" in res:
        raise RuntimeError(res["error"])
    res["fallback_to_fp32"] = res["decision"] == "fp32" and not res["ok"]
    return res


def _has_cifar(data_dir: str) -> bool:
    return any((Path(data_dir) / sub / "data_batch_1").is_file() for sub in ("cifar-10-batches-py", "."))


def _has_fashion_mnist(data_dir: str | None) -> bool:
    from robustzoo.data.sources import FMNIST_SYSTEM_DIR

    return FMNIST_SYSTEM_DIR.is_dir() or bool(data_dir and any(Path(data_dir).glob("**/train-images-idx3-ubyte*")))


def compile_phase(c: Check) -> dict[str, Any]:
    """Compile, warm up (CUDA graphs are recorded in the first steps), validate once (the
    eval-mode graphs), then time: nothing may compile after the warm-up."""
    s = c.s
    mode = s["compile_mode"]
    w = c.worker(f"compile-{mode}", kind="robustzoo", precision="auto", compile=mode,
                 compile_backend=s["compile_backend"])
    timeout = max(c.left() - 5, 30)
    try:
        if not w.ready(timeout):
            raise RuntimeError(w.error)
        warm = _ok(w.call("train", timeout, steps=s["compile_warmup"]))
        first_validation = _ok(w.call("validate", timeout))
        warm_stats = _ok(w.call("compile_stats", timeout))
        timed = [_ok(w.call("train", timeout, steps=s["iters"])) for _ in range(s["compile_rounds"])]
        validation = _ok(w.call("validate", timeout))
        stats = _ok(w.call("compile_stats", timeout))
    finally:
        w.close(kill=c.left() < 10)
    seconds, images = sum(t["seconds"] for t in timed), sum(t["images"] for t in timed)
    out: dict[str, Any] = {
        "mode": mode, "backend": s["compile_backend"], "fast_path": w.info,
        "warmup_s": warm["seconds"], "warmup_steps": s["compile_warmup"],
        "first_validation_s": first_validation["seconds"], "validation_s": validation["seconds"],
        "images_per_s": images / seconds, "step_ms": 1000 * seconds / (s["compile_rounds"] * s["iters"]),
        "rounds_images_per_s": [t["images"] / t["seconds"] for t in timed], "stats": stats,
        "graphs_after_warmup": {m: (n or 0) - (warm_stats["graphs"].get(m) or 0) for m, n in stats["graphs"].items()},
        "cudagraph_skips_after_warmup": stats["cudagraph_skips"] - warm_stats["cudagraph_skips"],
    }
    eager = ((c.report.get("throughput") or {}).get("contenders") or {}).get("fast", {}).get("images_per_s")
    if eager:
        out["speedup_vs_eager"] = out["images_per_s"] / eager
    return out


def _ok(res: dict[str, Any]) -> dict[str, Any]:
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    p.add_argument("--out", default=str(default_out), help="the JSON file (default $OUT/gpu_check.json)")
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_SMOKE", "0") != "0",
                   help="tiny sizes on the CPU, in this process (the test suite's run)")
    p.add_argument("--processes", action="store_true",
                   help="with --smoke: every contender in a process of its own, as on a GPU")
    p.add_argument("--device", help="override the device (default cuda; smoke: cpu)")
    p.add_argument("--data-dir", help="where CIFAR-10 (torchvision layout) is, for the drift check")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s (default: H100/H200 800)")
    p.add_argument("--budget-seconds", type=float, default=465.0,
                   help="wall time for everything since --started (default 465: under 8 minutes)")
    p.add_argument("--started", type=float, help="UNIX time the run started (the shell script's start)")
    p.add_argument("--only", action="append", choices=PHASES, help="run only these phases (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    c = Check(args)
    c.write()
    # (phase, seconds it needs at least to be worth starting, function): compile last
    plan = [("throughput", 60, throughput), ("host_syncs", 20, host_syncs), ("fat_compaction", 30, fat_compaction),
            ("precision_drift", 60, precision_drift), ("compile", 60, compile_phase)]
    if c.smoke:
        plan = [(name, 0, fn) for name, _, fn in plan]
    for name, need, fn in plan:
        if args.only and name not in args.only:
            continue
        c.run(name, need, lambda fn=fn: fn(c))
    fast = getattr(c, "_fast", None)
    if fast is not None:
        fast.close()
    c.write()
    _summary(c.report)
    return c.report


def _summary(r: dict[str, Any]) -> None:
    lines = [f"gpu_check ({'smoke' if r['smoke'] else r.get('device_name')}): {r['seconds_total']:.0f} s"]
    t = r.get("throughput") or {}
    for k, v in (t.get("contenders") or {}).items():
        lines.append(f"  {k:<10} " + (f"{v['images_per_s']:9.1f} img/s" if "images_per_s" in v else v.get("error", "")))
    if "speedup_vs_reference" in t:
        b = t["breakdown"]
        lines.append(f"  speed-up {t['speedup_vs_reference']:.2f}x = FLOP structure and data "
                     f"{b.get('flop_structure_and_data', float('nan')):.2f}x x precision and layout "
                     f"{b.get('precision_and_layout', float('nan')):.2f}x")
    h = r.get("host_syncs") or {}
    if h.get("available"):
        lines.append(f"  host syncs: {h['per_step']:g} per step, {h['per_epoch_fixed']:g} per epoch")
    d = r.get("precision_drift") or {}
    if d:
        lines.append(f"  bf16 drift: {d['max_abs_drift_points']:g} points on {d['n']} ({d['dataset']}): "
                     f"eval --precision bf16 {'allowed' if d['decision'] == 'bf16' else 'refused'} "
                     f"(auto is fp32)")
    cm = r.get("compile") or {}
    if "stats" in cm:
        lines.append(f"  compile {cm['mode']}: {cm.get('images_per_s', 0):.1f} img/s, graphs {cm['stats'].get('graphs')}, "
                     f"CUDA-graph skips {cm['stats'].get('cudagraph_skips')}")
    for k, v in r["errors"].items():
        lines.append(f"  {k}: error: {v}")
    for v in r["skipped"]:
        lines.append(f"  skipped {v}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
