"""The prepared GPU check: one run on one H100 or H200, every figure in one JSON file.

Prepare once, on a machine with the checkout and network access (PyPI), then carry the
checkout and its ignored ``.gpu_check/`` folder to the GPU machine and run the shell script:

    bash benchmarks/gpu_check.sh --prepare          # here: Fashion-MNIST, wheels, the commit
    bash benchmarks/gpu_check.sh [OUT.json]         # there: every phase, under 8 minutes

``--prepare`` fills ``.gpu_check/`` (about 31 MB): ``fashion-mnist/`` (the four IDX .gz
files, from /usr/share/datasets/fashion-mnist or ``--fmnist-from``), ``wheels/`` and
``commit.json`` (the commit and whether the tree differed from it: the copy that travels
has no ``.git``).

Wheels: the GPU image (PyTorch 2.11, Python 3.12) has torch, torchvision, timm, pluggy,
click, rich, safetensors, huggingface-hub, scikit-learn, numpy and matplotlib; it lacks
exactly one package robustzoo needs, **pyautoattack==0.2.0** (pure Python). Its wheel
carries 45 MB of example weights (``pyautoattack/examples/``, never imported), so
``--prepare`` stores it without them: ``wheels/pyautoattack-0.2.0-py3-none-any.whl``,
about 0.1 MB. The shell script installs every wheel of ``.gpu_check/wheels`` with
``pip install --no-index --no-deps --target`` when the package is missing, and runs the
checkout from PYTHONPATH (nothing is installed into the image).

The phases, in order, each with its budget in seconds on one H100 (:data:`PHASES`; the
sum, 420 s, plus ~20 s of start-up, fits the default ``--budget-seconds`` of 465 from the
shell script's start, under 8 minutes). A phase runs in a **time box**, announced when it
starts: its budget plus whatever the phases before it left unused, and never time the
phases after it are budgeted for, so a slow phase cannot starve the ones after it (the
compile phase, last, always gets its 100 s); a phase whose box is under half its budget is
skipped and listed. Workers (processes) still running when their box ends are killed and
the phase keeps what it measured.

1. **throughput** (75 s): PGD-10 adversarial training of PreAct ResNet-18 at batch 128 on
   CIFAR-shaped data, six contenders each in its own process, timed rounds interleaved
   (``benchmarks/throughput.py``): robustzoo's fast path; the same in NCHW; robustzoo's loop
   in fp32 with TF32 convolutions and in strict fp32; a paper repository's loop with
   PyTorch's default numerics (the "paper default") and in strict fp32. The speed-up against
   both references, split into 33F -> 23F (and data path), precision, layout (and compile,
   from phase 8);
2. **host_syncs** (15 s): syncs of a training epoch per step and per epoch, with running
   figures shown, and of a PGD-20 evaluation (target 1), counted per call site;
3. **eval_batch** (25 s): PGD-20 on 10,000 images with PRN-18 at evaluation batches 256,
   512 and 1024: the PGD-20 target, and the batch ``CUDA_EVAL_BATCH`` should be;
4. **wrn34** (50 s): WRN-34-10: a timed slice of PGD-10 training (extrapolated to a
   50,000-image epoch) and PGD-20 slices of 1,024 images at the three batches (extrapolated
   to 10,000); every extrapolation is labelled so in the JSON;
5. **precision_drift** (65 s): PreAct ResNet-18 trained 2 epochs on Fashion-MNIST (CIFAR-10
   when ``--data-dir`` holds it), clean and PGD-20 on the whole test set in exact fp32 and in
   bf16, as a paired count of flipped examples (10,000 images resolve 0.01 points); the
   phase names the data it used and refuses to run on data too small to resolve 0.1 points;
6. **autoattack** (45 s): standard AutoAttack on one evaluation batch (512) of that trained
   run's test set, extrapolated per 10,000 images; scaled by measured PGD-20 costs to
   CIFAR-shaped PRN-18 and WRN-34-10 (estimates, labelled);
7. **fat_compaction** (45 s): FAT (``at``, tau = 0) with the compacted search against the
   full batch, interleaved, on Fashion-MNIST: untrained (the best case: every example stops
   at step 1) and after 2 epochs of FAT training (a model that is learning), with the
   forward-equivalents per image of each (FLOP counter) beside the time;
8. **compile** (100 s): ``torch.compile(mode="reduce-overhead")``: compilation time,
   images/s against eager, graphs per BatchNorm mode, recompiles, CUDA-graph skips.

The JSON is rewritten after every phase (and a phase keeps what it measured when it stops
early), so a run cut by its time limit keeps its figures; ``--phases a,b`` reruns only those
phases and merges them into the JSON already at ``--out``. ``--smoke`` (``GPU_CHECK_SMOKE=1``
for the shell script) runs every phase with tiny sizes on the CPU, in this process: the test
suite checks the JSON that way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402 - the benchmark beside this file

SCHEMA = 2
ROOT = Path(__file__).resolve().parents[1]
#: What ``--prepare`` fills and the GPU run reads (ignored by git; carried to the GPU machine).
PAYLOAD = ROOT / ".gpu_check"
COMMIT_FILE = "commit.json"
#: The wheels the GPU image lacks (exact versions; the help and --prepare use this list).
WHEELS = ("pyautoattack==0.2.0",)
#: Members of a wheel left out by --prepare: bytes nothing imports (45 MB of example weights).
WHEEL_SKIP = ("pyautoattack/examples/",)

#: (phase, budget in seconds on one H100), in running order.
PHASES: tuple[tuple[str, float], ...] = (
    ("throughput", 75), ("host_syncs", 15), ("eval_batch", 25), ("wrn34", 50),
    ("precision_drift", 65), ("autoattack", 45), ("fat_compaction", 45), ("compile", 100),
)
PHASE_NAMES = tuple(p for p, _ in PHASES)
TOLERANCE_POINTS = 0.1  # docs/performance.md: bf16 vs fp32 robust accuracy

#: Sizes of a real run and of a smoke run.
SETTINGS: dict[str, dict[str, Any]] = {
    "gpu": dict(device="cuda", arch="preact_resnet18", batch_size=128, steps=10, warmup=5, rounds=3,
                iters=15, sync_steps=10, eval_n=10000, eval_batches=[256, 512, 1024],
                wrn_arch="wrn34_10", wrn_warmup=3, wrn_rounds=2, wrn_iters=5, wrn_eval_n=1024,
                drift_epochs=2, drift_n=None, aa_n=512, aa_batch=512, aa_attack="autoattack", aa_options={},
                fat_steps=10, fat_rounds=2, fat_epochs=2, fat_subset=None, fat_arch="preact_resnet18",
                compile_mode="reduce-overhead", compile_backend="inductor", compile_warmup=10,
                compile_rounds=3, workers=4, threads=None),
    "smoke": dict(device="cpu", arch="smallcnn", batch_size=4, steps=2, warmup=1, rounds=1, iters=1,
                  sync_steps=1, eval_n=4, eval_batches=[2, 4], wrn_arch="smallcnn", wrn_warmup=1,
                  wrn_rounds=1, wrn_iters=1, wrn_eval_n=4, drift_epochs=1, drift_n=16, aa_n=8,
                  aa_batch=8, aa_attack="square", aa_options={"square_queries": 20}, fat_steps=1,
                  fat_rounds=1, fat_epochs=1, fat_subset=48, fat_arch="cnn_mnist", compile_mode="default",
                  compile_backend="eager", compile_warmup=1, compile_rounds=1, workers=0, threads=1),
}
CIFAR_EPOCH = 50000  # training images of a CIFAR-10 epoch
CIFAR_TEST = 10000


class Check:
    """The run: its settings, its deadline, its phases' time boxes and the JSON it fills."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.smoke = args.smoke
        self.s = dict(SETTINGS["smoke" if args.smoke else "gpu"])
        if args.device:
            self.s["device"] = args.device
        self.started = args.started or time.time()
        self.deadline = self.started + args.budget_seconds
        self.out = Path(args.out)
        self.selected = [p for p in PHASE_NAMES if not args.phases or p in args.phases]
        self.pending = list(self.selected)
        self.box_end = float("inf")
        self.data_dir, self.data_dir_from = data_dir_of(args)
        self.workers: dict[str, Any] = {}
        self.trained: dict[str, Any] | None = None
        previous = load_previous(self.out) if args.phases else None
        run = {"started": _iso(self.started), "phases": self.selected, "smoke": self.smoke}
        self.report: dict[str, Any] = {
            "schema": SCHEMA, "smoke": self.smoke, "started": run["started"],
            "budget_seconds": args.budget_seconds, "settings": self.s,
            "phase_budgets_s": dict(PHASES), "time_boxes": {}, "environment": environment(),
            "data_dir": {"path": self.data_dir, "from": self.data_dir_from},
            **{p: None for p in PHASE_NAMES}, "errors": {}, "skipped": [], "seconds": {},
        }
        if previous is not None:  # a rerun of some phases: the others keep their figures
            for key in ("time_boxes", "errors", "seconds"):
                self.report[key] = {k: v for k, v in previous.get(key, {}).items() if k not in self.selected}
            for p in PHASE_NAMES:
                if p not in self.selected:
                    self.report[p] = previous.get(p)
            self.report["skipped"] = [s for s in previous.get("skipped", []) if s.split(":")[0] not in self.selected]
            self.report["runs"] = previous.get("runs", [{"started": previous.get("started"),
                                                          "phases": list(PHASE_NAMES)}])
        self.report.setdefault("runs", [])
        self.report["device_name"] = self.report["environment"]["cuda_device"]
        self.report["runs"].append(run)

    def left(self) -> float:
        return self.deadline - time.time()

    def timeout(self) -> float:
        """Seconds left in the current phase's time box (at least 1)."""
        return max(self.box_end - time.time(), 1.0)

    def write(self) -> None:
        self.report["seconds_total"] = round(time.time() - self.started, 1)
        self.report["runs"][-1]["seconds_total"] = self.report["seconds_total"]
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.out)

    @property
    def in_process(self) -> bool:
        return self.smoke and not self.args.processes

    def max_steps(self) -> int:
        """Training batches a benchmark worker holds (its longest call)."""
        s = self.s
        return max(s["iters"], s["warmup"], 2 * s["sync_steps"], s["compile_warmup"])

    def worker(self, name: str, **spec: Any) -> Any:
        base = dict(arch=self.s["arch"], batch_size=self.s["batch_size"], steps=self.s["steps"], seed=0,
                    device=self.s["device"], threads=self.s["threads"], eval_n=self.s["eval_n"], aa_n=8,
                    max_steps=self.max_steps())
        return tp.make_worker(name, dict(base, **spec), in_process=self.in_process)

    def box(self, name: str) -> tuple[float, float]:
        """(time box, budget) of phase ``name``: up to the deadline less the budgets of the
        phases after it."""
        later = self.pending[self.pending.index(name) + 1:]
        reserve = sum(dict(PHASES)[p] for p in later)
        return self.deadline - reserve - time.time(), dict(PHASES)[name]

    def run(self, name: str, fn) -> None:
        """Run phase ``name`` in its time box; record its figures, partial ones included."""
        box, budget = self.box(name)
        self.pending.remove(name)
        if not self.smoke and box < 0.5 * budget:
            self.report["skipped"].append(f"{name}: a {box:.0f} s box left (budget {budget:.0f} s) after "
                                          f"reserving the later phases' budgets")
            self.write()
            return
        if self.smoke:
            box = max(box, 3600.0)
        self.box_end = time.time() + box
        self.report["time_boxes"][name] = round(box, 1)
        tp._log(f"gpu_check: {name}: time box {box:.0f} s (budget {budget:.0f} s), until "
                f"{datetime.fromtimestamp(self.box_end).strftime('%H:%M:%S')}")
        out: dict[str, Any] = {}
        self.report[name] = out
        t0 = time.time()
        try:
            fn(self, out)
        except Exception as exc:  # noqa: BLE001 - a failed phase must not cost the others
            self.report["errors"][name] = tp._one_line(exc)
        self.report["seconds"][name] = round(time.time() - t0, 1)
        tp._log(f"gpu_check: {name} done in {self.report['seconds'][name]:.0f} s")
        self.write()

    def close(self, key: str) -> None:
        w = self.workers.pop(key, None)
        if w is not None:
            w.close(kill=time.time() > self.box_end)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def load_previous(path: Path) -> dict[str, Any] | None:
    """The JSON a run before this one left at ``path`` (same schema), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def data_dir_of(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The data folder and where it was named: --data-dir, GPU_CHECK_DATA_DIR, or the
    prepared .gpu_check/fashion-mnist."""
    if args.data_dir:
        return str(args.data_dir), "--data-dir"
    if os.environ.get("GPU_CHECK_DATA_DIR"):
        return os.environ["GPU_CHECK_DATA_DIR"], "GPU_CHECK_DATA_DIR"
    prepared = PAYLOAD / "fashion-mnist"
    if prepared.is_dir():
        return str(prepared), "prepared (.gpu_check/fashion-mnist)"
    return None, None


def environment() -> dict[str, Any]:
    """Versions, the CUDA device and the commit, for the record.

    The commit comes from git when the tree has its ``.git``; else from
    ``.gpu_check/commit.json``, which ``--prepare`` wrote before the tree travelled.
    """
    import importlib.metadata as md
    import platform

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "safetensors", "pyautoattack"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    from robustzoo._version import __version__

    versions["robustzoo"] = __version__
    commit, source, dirty = None, None, None
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=ROOT)
        if res.returncode == 0 and res.stdout.strip():
            commit, source = res.stdout.strip(), "git"
            st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=10, cwd=ROOT)
            dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    if commit is None:
        try:
            saved = json.loads((PAYLOAD / COMMIT_FILE).read_text(encoding="utf-8"))
            commit, dirty = saved.get("commit"), saved.get("dirty")
            source = f"{PAYLOAD.name}/{COMMIT_FILE} (prepared {saved.get('prepared')})"
        except (OSError, ValueError):
            pass
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "versions": versions, "commit": commit,
            "commit_source": source, "tree_differed_from_commit": dirty, "cpu_count": os.cpu_count(),
            "cuda_device": device, "cuda_devices": torch.cuda.device_count() if device else 0}


# -- the phases -----------------------------------------------------------------------------------
def throughput(c: Check, out: dict[str, Any]) -> None:
    s = c.s
    args = argparse.Namespace(batch_size=s["batch_size"], steps=s["steps"], seed=0, eval_n=s["eval_n"], aa_n=8,
                              threads=s["threads"], precision="auto", workers=s["workers"])
    specs = tp.contender_specs(s["arch"], args, s["device"], c.max_steps())
    workers = {k: tp.make_worker(k, v, in_process=c.in_process) for k, v in specs.items()}  # start together
    c.workers["fast"] = workers["fast"]  # kept warm for the host-sync and eval-batch phases
    flops = tp.forward_flops(s["arch"], None)
    peak = c.args.peak_tflops
    out.update(arch=s["arch"], batch_size=s["batch_size"], pgd_steps=s["steps"], rounds=s["rounds"],
               steps_per_round=s["iters"], forward_gflops=flops / 1e9,
               forward_equivalents_per_image=2 * s["steps"] + 3, contender_descriptions=tp.CONTENDERS)
    try:
        for w in workers.values():
            w.ready(timeout=c.timeout())
        train = tp.interleaved(workers, s["rounds"], s["iters"], s["warmup"], timeout=c.timeout)
    finally:
        for k, w in workers.items():
            if k != "fast":
                w.close(kill=time.time() > c.box_end)
    name = workers["fast"].info.get("device_name", "") if workers["fast"].info else ""
    peak = peak or _peak(name)
    per_image = (2 * s["steps"] + 3) * flops
    for res in train.values():
        if "images_per_s" in res:
            res["fraction_of_limit"] = res["images_per_s"] * per_image / (peak * 1e12) if peak else None
    out.update(peak_tflops=peak, device_name=name or None, contenders=train, breakdown=tp.breakdown(train))
    ips = {k: v["images_per_s"] for k, v in train.items() if "images_per_s" in v}
    if "fast" in ips:
        out["speedup_vs_reference"] = {k: ips["fast"] / ips[ref] for k, (ref, _) in tp.REFERENCES.items()
                                       if ref in ips}
    out["epoch_50k_s"] = {k: CIFAR_EPOCH / v for k, v in ips.items()}
    c.report["device_name"] = name or c.report.get("device_name")


def _peak(name: str) -> float | None:
    return next((v for k, v in tp.PEAK_TFLOPS.items() if k in name), None)


def _fast(c: Check) -> Any:
    fast = c.workers.get("fast")
    if fast is None or not fast.ready():
        fast = c.workers["fast"] = c.worker("fast", kind="robustzoo", precision="auto")
    return fast


def host_syncs(c: Check, out: dict[str, Any]) -> None:
    from robustzoo.eval._evaluate import default_eval_batch

    s, fast = c.s, _fast(c)
    k = s["sync_steps"]
    batch = s["eval_batches"][0] if c.smoke else default_eval_batch(s["device"])
    one = _ok(fast.call("syncs", c.timeout(), steps=k))
    out["available"] = one["available"]
    if not one["available"]:
        out["reason"] = one["reason"]
        return
    two = _ok(fast.call("syncs", c.timeout(), steps=2 * k))
    per_step = (two["syncs"] - one["syncs"]) / k
    out.update(epoch_steps=[k, 2 * k], per_step=per_step, per_epoch_fixed=one["syncs"] - per_step * k,
               epoch_of_k=one, epoch_of_2k=two)
    c.write()
    out["epoch_of_2k_with_running_figures"] = _ok(fast.call("syncs", c.timeout(), steps=2 * k, live=True))
    ev = _ok(fast.call("eval_syncs", c.timeout(), n=4 * batch, batch=batch))
    out["pgd20_eval"] = {"images": 4 * batch, "batches": 4, "target": 1, "meets_target": ev["syncs"] <= 1, **ev}


def eval_batch(c: Check, out: dict[str, Any]) -> None:
    """PGD-20 on eval_n images at each evaluation batch (the 10k target and CUDA_EVAL_BATCH)."""
    from robustzoo.eval._evaluate import CUDA_EVAL_BATCH

    s = c.s
    res = _ok(_fast(c).call("eval_batches", c.timeout(), n=s["eval_n"], batches=s["eval_batches"]))
    c.close("fast")
    out.update(arch=s["arch"], images=s["eval_n"], measured_not_extrapolated=True, **res,
               current_default=CUDA_EVAL_BATCH)
    rows = {r["batch"]: r for r in res["rows"] if "images_per_s" in r}
    if rows:
        default = rows.get(CUDA_EVAL_BATCH) or max(rows.values(), key=lambda r: r["images_per_s"])
        out["pgd20_10k_s"] = CIFAR_TEST / default["images_per_s"]
        out["pgd20_10k_s_at_batch"] = default["batch"]


def wrn34(c: Check, out: dict[str, Any]) -> None:
    """WRN-34-10: a timed training slice and PGD-20 slices, extrapolated and labelled so."""
    s = c.s
    arch, bs = s["wrn_arch"], s["batch_size"]
    w = c.workers["wrn34"] = c.worker("wrn34", kind="robustzoo", precision="auto", arch=arch,
                                      eval_n=s["wrn_eval_n"], max_steps=max(s["wrn_iters"], s["wrn_warmup"]))
    try:
        train = tp.interleaved({"fast": w}, s["wrn_rounds"], s["wrn_iters"], s["wrn_warmup"],
                               timeout=c.timeout)["fast"]
        out.update(arch=arch, batch_size=bs, train=train)
        if "images_per_s" in train:
            steps = -(-CIFAR_EPOCH // bs)
            out["epoch_50k_s"] = {"value": CIFAR_EPOCH / train["images_per_s"], "extrapolated": True,
                                  "from": f"{s['wrn_rounds'] * s['wrn_iters']} timed steps of {bs} "
                                          f"(after {s['wrn_warmup']} warm-up steps) x {steps} steps"}
        c.write()
        res = _ok(w.call("eval_batches", c.timeout(), n=s["wrn_eval_n"], batches=s["eval_batches"]))
        out["pgd20"] = res
        best = max((r for r in res["rows"] if "images_per_s" in r), key=lambda r: r["images_per_s"], default=None)
        if best:
            out["pgd20_10k_s"] = {"value": CIFAR_TEST / best["images_per_s"], "extrapolated": True,
                                  "batch": best["batch"],
                                  "from": f"{s['wrn_eval_n']} images timed at batch {best['batch']}, x "
                                          f"{CIFAR_TEST / s['wrn_eval_n']:.2f}"}
    finally:
        c.close("wrn34")


def drift_plan(c: Check) -> dict[str, Any]:
    """Which data the drift (and FAT) phases train on, or why they refuse to."""
    if c.smoke:
        return dict(dataset="digits", arch="cnn_mnist", subset=80, n=c.s["drift_n"], batch_size=32, steps=2,
                    source="embedded (scikit-learn digits)", test_images=360)
    d = c.data_dir
    if d and _has_cifar(d):
        return dict(dataset="cifar10", arch="preact_resnet18", subset=None, n=c.s["drift_n"], batch_size=128,
                    source=d, test_images=10000)
    src = _fashion_mnist_source(d)
    if src:
        return dict(dataset="fashion-mnist", arch="preact_resnet18", subset=None, n=c.s["drift_n"],
                    batch_size=128, source=src, test_images=10000)
    return {"refused": "no Fashion-MNIST or CIFAR-10 found (--data-dir, GPU_CHECK_DATA_DIR or "
                       "`bash benchmarks/gpu_check.sh --prepare`); the embedded digits' 360 test images "
                       f"resolve {100 / 360:.2f} points, coarser than the {TOLERANCE_POINTS:g}-point tolerance"}


def _has_cifar(data_dir: str) -> bool:
    return any((Path(data_dir) / sub / "data_batch_1").is_file() for sub in ("cifar-10-batches-py", "."))


def _fashion_mnist_source(data_dir: str | None) -> str | None:
    """The folder load_fashion_mnist would read the training images from, or None."""
    from robustzoo.data.sources import FMNIST_SYSTEM_DIR, IDX_NAMES

    dirs = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"] if data_dir else []
    for d in [*dirs, FMNIST_SYSTEM_DIR]:
        name = IDX_NAMES["train_x"]
        if (d / name).is_file() or (d / f"{name}.gz").is_file():
            return str(d)
    return None


def _drift(c: Check) -> tuple[Any, dict[str, Any]]:
    """The worker holding the trained run, trained first if this run has none yet."""
    plan = drift_plan(c)
    if "refused" in plan:
        raise RuntimeError(f"refused: {plan['refused']}")
    w = c.workers.get("drift")
    if w is None:
        w = c.workers["drift"] = c.worker("drift", kind="drift")
        c.trained = _ok(w.call("train", c.timeout(), dataset=plan["dataset"], arch=plan["arch"],
                               epochs=c.s["drift_epochs"], subset=plan["subset"], data_dir=c.data_dir,
                               batch_size=plan["batch_size"], steps=plan.get("steps")))
    return w, plan


def precision_drift(c: Check, out: dict[str, Any]) -> None:
    plan = drift_plan(c)
    out["data"] = {k: plan.get(k) for k in ("dataset", "source", "test_images")}
    if "refused" in plan:
        out["refused"] = plan["refused"]
        return
    w, plan = _drift(c)
    out["trained"] = c.trained
    c.write()
    res = _ok(w.call("compare", c.timeout(), n=plan["n"], tolerance=TOLERANCE_POINTS))
    res["fallback_to_fp32"] = res["decision"] == "fp32" and res["ok"] is False
    out.update(res)


def autoattack(c: Check, out: dict[str, Any]) -> None:
    s = c.s
    w, plan = _drift(c)
    out["data"] = {k: plan.get(k) for k in ("dataset", "source")}
    try:
        res = _ok(w.call("autoattack", c.timeout(), n=s["aa_n"], batch=s["aa_batch"], attack=s["aa_attack"],
                         options=s["aa_options"]))
    finally:
        c.close("drift")
    out.update(res)
    per10k = res["seconds"] * CIFAR_TEST / res["n"]
    out["seconds_per_10k"] = {"value": per10k, "extrapolated": True, "dataset": plan["dataset"],
                              "from": f"{res['n']} test images at batch {res['batch']}, x {CIFAR_TEST / res['n']:.2f}"}
    # CIFAR-shaped estimates: AutoAttack's cost is gradient and forward passes of the model on
    # the examples still standing, so at an equal robust fraction it scales as PGD-20 does.
    pgd_here = res["pgd20_seconds"] / res["n"]
    est = {}
    prn = (c.report.get("eval_batch") or {}).get("pgd20_10k_s")
    wrn = ((c.report.get("wrn34") or {}).get("pgd20_10k_s") or {}).get("value")
    for arch, pgd10k in (("preact_resnet18", prn), ("wrn34_10", wrn)):
        if pgd10k and pgd_here > 0:
            est[arch] = {"seconds_per_10k": per10k * (pgd10k / CIFAR_TEST) / pgd_here, "estimate": True,
                         "how": f"AutoAttack per 10k on {plan['dataset']} x (PGD-20 s per image of {arch} on "
                                f"CIFAR-shaped data / PGD-20 s per image here), at this run's robust fraction"}
    out["cifar_estimates"] = est


def fat_compaction(c: Check, out: dict[str, Any]) -> None:
    s = c.s
    plan = drift_plan(c)
    settings = {"variant": "at", "tau": 0, "compact": "on"}
    real = "refused" not in plan
    spec = dict(kind="robustzoo", objective="fat", settings=settings, precision="auto")
    if real:
        spec.update(dataset=plan["dataset"], data_dir=c.data_dir, subset=s["fat_subset"],
                    arch=s["fat_arch"] if c.smoke else plan["arch"])
    out.update(objective="fat", settings=settings, data={k: plan.get(k) for k in ("dataset", "source")}
               if real else {"dataset": tp.DATASET, "labels": "random"})
    w = c.workers["fat"] = c.worker("fat", **spec)
    try:
        t0 = time.time()
        out["untrained"] = _ok(w.call("fat_measure", c.timeout(), steps=s["fat_steps"], rounds=s["fat_rounds"]))
        measure_s = time.time() - t0
        out["untrained"]["note"] = "best case: an untrained net gets (almost) every example wrong at step 1"
        c.write()
        if not real:
            out["learning"] = {"refused": "needs real labels: " + plan["refused"]}
            return
        out["training"] = {"epochs": []}
        for _ in range(s["fat_epochs"]):  # epoch by epoch: the box keeps room for the measurement
            if out["training"]["epochs"] and c.timeout() < 1.5 * measure_s + out["training"]["epochs"][-1]["seconds"]:
                break
            res = _ok(w.call("fat_advance", c.timeout(), epochs=1))
            out["training"]["epochs"] += res["epochs"]
            out["training"]["train_images"] = res["train_images"]
            c.write()
        done = len(out["training"]["epochs"])
        out["learning"] = _ok(w.call("fat_measure", c.timeout(), steps=s["fat_steps"], rounds=s["fat_rounds"]))
        out["learning"]["note"] = f"after {done} epoch(s) of FAT (tau = 0) on {plan['dataset']}"
    finally:
        c.close("fat")


def compile_phase(c: Check, out: dict[str, Any]) -> None:
    """Compile, warm up (CUDA graphs are recorded in the first steps), validate once (the
    eval-mode graphs), then time: nothing may compile after the warm-up. Each stage records
    what it reached, so a box that ends mid-compilation still says how far it got."""
    s = c.s
    mode = s["compile_mode"]
    out.update(mode=mode, backend=s["compile_backend"], time_box_s=c.report["time_boxes"].get("compile"),
               reached="start")
    w = c.workers["compile"] = c.worker(f"compile-{mode}", kind="robustzoo", precision="auto", compile=mode,
                                        compile_backend=s["compile_backend"])
    try:
        if not w.ready(c.timeout()):
            raise RuntimeError(w.error)
        out["fast_path"] = w.info
        first = _ok(w.call("train", c.timeout(), steps=1))  # compiles the train-mode graphs
        out.update(first_step_s=first["seconds"], reached="first step (train-mode graphs compiled)")
        c.write()
        warm = _ok(w.call("train", c.timeout(), steps=max(s["compile_warmup"] - 1, 1)))
        first_validation = _ok(w.call("validate", c.timeout()))
        warm_stats = _ok(w.call("compile_stats", c.timeout()))
        out.update(warmup_s=first["seconds"] + warm["seconds"], warmup_steps=s["compile_warmup"],
                   first_validation_s=first_validation["seconds"], reached="warm-up and first validation")
        c.write()
        timed = [_ok(w.call("train", c.timeout(), steps=s["iters"])) for _ in range(s["compile_rounds"])]
        validation = _ok(w.call("validate", c.timeout()))
        stats = _ok(w.call("compile_stats", c.timeout()))
    finally:
        c.close("compile")
    seconds, images = sum(t["seconds"] for t in timed), sum(t["images"] for t in timed)
    out.update(
        reached="done", validation_s=validation["seconds"], images_per_s=images / seconds,
        step_ms=1000 * seconds / (s["compile_rounds"] * s["iters"]),
        rounds_images_per_s=[t["images"] / t["seconds"] for t in timed], stats=stats,
        graphs_after_warmup={m: (n or 0) - (warm_stats["graphs"].get(m) or 0) for m, n in stats["graphs"].items()},
        cudagraph_skips_after_warmup=stats["cudagraph_skips"] - warm_stats["cudagraph_skips"])
    t = c.report.get("throughput") or {}
    eager = (t.get("contenders") or {}).get("fast", {}).get("images_per_s")
    if eager:
        out["speedup_vs_eager"] = out["images_per_s"] / eager
        contenders = dict(t["contenders"], **{f"fast_compile_{mode}": {"images_per_s": out["images_per_s"]}})
        t["breakdown"] = tp.breakdown(contenders)  # the compile factor joins the split


def _ok(res: dict[str, Any]) -> dict[str, Any]:
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


PHASE_FUNCTIONS = {"throughput": throughput, "host_syncs": host_syncs, "eval_batch": eval_batch, "wrn34": wrn34,
                   "precision_drift": precision_drift, "autoattack": autoattack,
                   "fat_compaction": fat_compaction, "compile": compile_phase}


# -- preparing the payload ------------------------------------------------------------------------
def prepare(fmnist_from: str | None = None, payload: Path = PAYLOAD) -> dict[str, Any]:
    """Fill ``payload`` (default .gpu_check/) for a GPU machine without network or ``.git``."""
    from robustzoo.data.sources import FMNIST_SYSTEM_DIR, IDX_NAMES

    payload.mkdir(exist_ok=True)
    src = Path(fmnist_from) if fmnist_from else FMNIST_SYSTEM_DIR
    dest = payload / "fashion-mnist"
    dest.mkdir(exist_ok=True)
    copied = []
    for name in IDX_NAMES.values():
        for cand in (src / f"{name}.gz", src / name):
            if cand.is_file():
                shutil.copy2(cand, dest / cand.name)
                copied.append(cand.name)
                break
        else:
            raise SystemExit(f"gpu_check --prepare: {src} has no {name}(.gz); pass --fmnist-from DIR "
                             f"(or apt-get install dataset-fashion-mnist)")
    wheels = payload / "wheels"
    wheels.mkdir(exist_ok=True)
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, *WHEELS]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"gpu_check --prepare: `{' '.join(cmd[2:])}` failed: "
                             f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")
        for whl in sorted(Path(tmp).glob("*.whl")):
            slim_wheel(whl, wheels / whl.name)
            made.append(whl.name)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, cwd=ROOT).stdout.strip())
    info = {"commit": commit or None, "dirty": dirty, "prepared": _iso(time.time()),
            "fashion_mnist": copied, "wheels": made}
    (payload / COMMIT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in payload.rglob("*") if f.is_file())
    info["bytes"] = size
    return info


def slim_wheel(src: Path, dest: Path, skip: tuple[str, ...] = WHEEL_SKIP) -> None:
    """Copy a wheel without the members under ``skip`` (and their RECORD lines)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if item.filename.startswith(skip):
                continue
            data = zin.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(ln for ln in lines if not ln.startswith(skip)).encode()
            zout.writestr(item, data)


# -- command line ---------------------------------------------------------------------------------
def _phase_list(value: str) -> list[str]:
    names = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in names if p not in PHASE_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase {unknown[0]!r}; choose from {', '.join(PHASE_NAMES)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    p.add_argument("--out", default=str(default_out), help="the JSON file (default $OUT/gpu_check.json)")
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_SMOKE", "0") != "0",
                   help="tiny sizes on the CPU, in this process (the test suite's run)")
    p.add_argument("--processes", action="store_true",
                   help="with --smoke: every contender in a process of its own, as on a GPU")
    p.add_argument("--device", help="override the device (default cuda; smoke: cpu)")
    p.add_argument("--data-dir", help="Fashion-MNIST's IDX files or CIFAR-10 (torchvision layout) for the "
                                      "drift, AutoAttack and FAT phases (default: $GPU_CHECK_DATA_DIR, else "
                                      ".gpu_check/fashion-mnist when prepared)")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s (default: H100/H200 800)")
    p.add_argument("--budget-seconds", type=float, default=465.0,
                   help="wall time for everything since --started (default 465: under 8 minutes)")
    p.add_argument("--started", type=float, help="UNIX time the run started (the shell script's start)")
    p.add_argument("--phases", type=_phase_list, help="comma-separated phases to run (default: all), e.g. a "
                                                       "rerun of what a cut run skipped; merged into --out")
    p.add_argument("--only", action="append", choices=PHASE_NAMES, help="one phase to run (repeatable; "
                                                                        "the same as --phases)")
    p.add_argument("--prepare", action="store_true", help="fill .gpu_check/ (Fashion-MNIST, wheels, the "
                                                          "commit) for the GPU machine, then stop")
    p.add_argument("--fmnist-from", help="with --prepare: where Fashion-MNIST's four .gz files are "
                                         "(default /usr/share/datasets/fashion-mnist)")
    args = p.parse_args(argv)
    if args.only:
        args.phases = list(dict.fromkeys((args.phases or []) + args.only))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.prepare:
        info = prepare(args.fmnist_from)
        print(f"gpu_check --prepare: {PAYLOAD} holds {len(info['fashion_mnist'])} Fashion-MNIST files, "
              f"wheels {', '.join(info['wheels'])}, commit {info['commit']}"
              f"{' (the tree differs from it)' if info['dirty'] else ''}: {info['bytes'] / 1e6:.1f} MB")
        return info
    c = Check(args)
    c.write()
    for name in list(c.selected):
        c.run(name, PHASE_FUNCTIONS[name])
    for key in list(c.workers):
        c.close(key)
    c.write()
    print(summary(c.report))
    return c.report


def summary(r: dict[str, Any]) -> str:
    """The run's figures in a few lines (the JSON has everything)."""
    lines = [f"gpu_check ({'smoke' if r['smoke'] else r.get('device_name')}): {r['seconds_total']:.0f} s, "
             f"commit {(r['environment'].get('commit') or '?')[:12]}"]
    t = r.get("throughput") or {}
    for k, v in (t.get("contenders") or {}).items():
        lines.append(f"  {k:<16} " + (f"{v['images_per_s']:9.1f} img/s" if "images_per_s" in v
                                      else v.get("error", "")))
    lines += ["  " + ln for ln in tp.breakdown_lines(t.get("breakdown") or {})]
    h = r.get("host_syncs") or {}
    if "per_step" in h:
        ev = h.get("pgd20_eval") or {}
        lines.append(f"  host syncs: {h['per_step']:g} per step, {h['per_epoch_fixed']:g} per epoch; PGD-20 eval "
                     f"{ev.get('syncs')} (target 1)")
        for site, n in list((ev.get("sites") or {}).items())[:3]:
            lines.append(f"    {n} at {site}")
    e = r.get("eval_batch") or {}
    if "pgd20_10k_s" in e:
        lines.append(f"  PGD-20 on 10k ({e['arch']}): {e['pgd20_10k_s']:.1f} s at batch {e['pgd20_10k_s_at_batch']}; "
                     f"recommended eval batch {e.get('recommended')} (now {e.get('current_default')})")
    wr = r.get("wrn34") or {}
    if "epoch_50k_s" in wr:
        lines.append(f"  {wr['arch']}: {wr['epoch_50k_s']['value']:.1f} s per 50k epoch (extrapolated)"
                     + (f", PGD-20 10k {wr['pgd20_10k_s']['value']:.1f} s (extrapolated)" if "pgd20_10k_s" in wr
                        else ""))
    d = r.get("precision_drift") or {}
    if "refused" in d:
        lines.append(f"  bf16 drift: refused: {d['refused']}")
    elif "max_abs_drift_points" in d:
        flips = ", ".join(f"{x['attack']} {x.get('flipped')} flipped" for x in d["results"])
        lines.append(f"  bf16 drift: {d['max_abs_drift_points']:g} points on {d['n']} {d['data']['dataset']} "
                     f"images (resolution {d['resolution_points']:.3g}; {flips}): eval --precision bf16 "
                     f"{'allowed' if d['decision'] == 'bf16' else 'refused'} (auto is fp32)"
                     + ("" if d.get("resolved") else " [unresolved]"))
    a = r.get("autoattack") or {}
    if "seconds_per_10k" in a:
        lines.append(f"  {a['attack']}: {a['seconds']:.1f} s on {a['n']} {a['data']['dataset']} images "
                     f"(~{a['seconds_per_10k']['value'] / 60:.1f} min per 10k, extrapolated)")
    f = r.get("fat_compaction") or {}
    for k in ("untrained", "learning"):
        v = f.get(k) or {}
        if "on" in v:
            lines.append(f"  FAT {k}: {v['on']['forward_equivalents_per_image']:.2f}F vs "
                         f"{v['off']['forward_equivalents_per_image']:.2f}F, time ratio "
                         f"{v['time_ratio_compact_over_full']:.2f}")
    cm = r.get("compile") or {}
    if "stats" in cm:
        lines.append(f"  compile {cm['mode']}: {cm.get('images_per_s', 0):.1f} img/s, graphs {cm['stats'].get('graphs')}, "
                     f"after warm-up {cm.get('graphs_after_warmup')}, CUDA-graph skips {cm['stats'].get('cudagraph_skips')}")
    elif cm:
        lines.append(f"  compile {cm.get('mode')}: reached {cm.get('reached')} in its {cm.get('time_box_s')} s box")
    for k, v in r["errors"].items():
        lines.append(f"  {k}: error: {v}")
    for v in r["skipped"]:
        lines.append(f"  skipped {v}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
