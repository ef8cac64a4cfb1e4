"""Throughput of adversarial training and evaluation on one device (see docs/performance.md).

In one process, on one device, on CIFAR-shaped random data (3x32x32, 10 classes), for each
architecture (PreAct ResNet-18 and WRN-34-10 by default):

* PGD-10 adversarial training, images/s:
  (a) robustzoo's fast path: the real ``Trainer`` and ``at`` objective (bf16 autocast,
      channels_last, fused SGD, data on the device; once more with ``torch.compile`` when
      ``--compile`` is not 'off'),
  (b) a straightforward fp32 reference loop written here: a torch DataLoader with per-image
      CPU crop/flip, ``.backward()`` inside the attack (weight gradients too), fp32;
  the ratio (a)/(b), and the fraction of the physical limit: images/s x 23 forward FLOPs
  per image (PGD-10 AT = 10 x 2F + 3F) over ``--peak-tflops``;
* PGD-20 evaluation throughput (fast path and reference), images/s;
* AutoAttack (standard) time on ``--aa-n`` examples through the registered ``autoattack``
  attack. On the benchmark's random-weight model the labels are its own clean predictions,
  so every example is attacked but falls quickly: a lower bound. ``--aa-run RUN_DIR`` times
  a trained run's test set instead.

Timing uses CUDA events and ``torch.cuda.synchronize()`` on GPUs, after warm-up; the warm-up
(which holds compilation and cuDNN autotuning) is reported separately.

Examples::

    python benchmarks/throughput.py --out bench.json                 # GPU: PRN-18 and WRN-34-10
    python benchmarks/throughput.py --device cpu --quick --out bench-cpu.json
    python benchmarks/throughput.py --check-precision runs/at-prn18-... --n 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustzoo.hookspecs import hookimpl

ARCH_ALIASES = {"prn18": "preact_resnet18", "wrn34": "wrn34_10"}
# Dense bf16 tensor throughput a well-tuned kernel sustains, TFLOP/s (override: --peak-tflops).
PEAK_TFLOPS = {"H100": 800.0, "H200": 800.0, "A100": 312.0}
EPS, ALPHA, EVAL_ALPHA = 8 / 255, 2 / 255, 0.003
DATASET = "bench-cifar"
SIZES = {"train": 256, "test": 256}  # set before each Trainer is built


# -- a CIFAR-shaped random dataset, registered like any plugin's -------------------------------
def _random_cifar(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=g)


def _load_bench(data_dir: Any, download: bool):
    x_tr, y_tr = _random_cifar(SIZES["train"], 0)
    x_te, y_te = _random_cifar(SIZES["test"], 1)
    return x_tr, y_tr, x_te, y_te


class BenchPlugin:
    """Registers the ``bench-cifar`` dataset (random uint8 images with CIFAR-10's shape)."""

    @hookimpl
    def register_datasets(self, register):
        from robustzoo.data import DatasetSpec

        register(DatasetSpec(
            name=DATASET, num_classes=10, shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465),
            std=(0.2471, 0.2435, 0.2616), load=_load_bench, default_arch="preact_resnet18",
            eps=EPS, alpha=ALPHA, steps=10, eval_alpha=EVAL_ALPHA, val_size=8, augment="crop_flip",
            description="random CIFAR-shaped data for benchmarks/throughput.py"))


# -- timing ------------------------------------------------------------------------------------
class DeviceTimer:
    """Wall time of a block: CUDA events (synchronised) on GPUs, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __enter__(self) -> DeviceTimer:
        if self.cuda:
            torch.cuda.synchronize()
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self._t0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({torch.get_num_threads()} threads)"


def default_peak(device: torch.device) -> float | None:
    """Peak bf16 TFLOP/s for known GPUs (None: unknown, give --peak-tflops)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def forward_flops(arch: str, device: torch.device) -> float:
    """Forward FLOPs of one 3x32x32 image (FlopCounterMode: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    from robustzoo.models import build_model

    model = build_model(arch, num_classes=10, in_chans=3, input_size=(32, 32), mean=(0.5,) * 3,
                        std=(0.25,) * 3).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    return float(counter.get_total_flops())


# -- (a) the fast path: robustzoo's own Trainer ---------------------------------------------------
def make_trainer(arch: str, args: argparse.Namespace, device: torch.device, compile_mode: str,
                 n_train: int, workdir: Path):
    from robustzoo import plugins
    from robustzoo.train import Trainer, build_config

    SIZES["train"] = n_train + 8  # + the 8 validation images the spec holds out
    SIZES["test"] = max(args.eval_n, args.aa_n, 8)
    plugins.unregister_plugin("throughput-bench")
    plugins.register_plugin(BenchPlugin(), name="throughput-bench")
    cfg = build_config("at", dataset=DATASET, arch=arch, batch_size=args.batch_size, steps=args.steps,
                       epochs=2, schedule="constant", device=str(device), precision=args.precision,
                       compile=compile_mode, compile_backend=args.compile_backend, seed=args.seed)
    return Trainer(cfg, workdir / f"{arch}-{compile_mode}")


def bench_fast_training(arch: str, args: argparse.Namespace, device: torch.device, compile_mode: str,
                        workdir: Path) -> tuple[dict[str, Any], Any]:
    """images/s of Trainer.train_epoch (objective 'at', PGD-K) after a warm-up epoch."""
    bs = args.batch_size
    trainer = make_trainer(arch, args, device, compile_mode, bs * args.iters, workdir)
    full = trainer.train_data
    rows = torch.arange(bs * args.warmup, device=full.x.device) % len(full)
    trainer.train_data = full.take(rows)
    with DeviceTimer(device) as warm:
        trainer.train_epoch(0)
    trainer.train_data = full
    with DeviceTimer(device) as timed:
        trainer.train_epoch(1)
    n = bs * args.iters
    step = timed.seconds / args.iters
    return {"images_per_s": n / timed.seconds, "step_ms": 1000 * step, "images": n,
            "warmup_s": warm.seconds, "warmup_steps": args.warmup,
            "compile_and_autotune_s": max(warm.seconds - args.warmup * step, 0.0),
            "fast_path": trainer.fast.describe()}, trainer


def bench_fast_pgd20(trainer, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """images/s of the registered pgd20 attack on the trained model (fast path, eval mode)."""
    from robustzoo.attacks import AttackContext
    from robustzoo.eval import run_attack
    from robustzoo.plugins import registry

    data = trainer.splits.test.take(torch.arange(args.eval_n)).to(device)
    spec = registry("attacks").get("pgd20")
    ctx = AttackContext(eps=EPS, alpha=EVAL_ALPHA, num_classes=10, seed=0, device=str(device))
    with trainer.fast.autocast():
        run_attack(trainer.eval_net, data.take(torch.arange(args.eval_batch, device=data.x.device)),
                   spec, ctx, args.eval_batch)  # warm-up (and compile of the eval graphs)
        with DeviceTimer(device) as t:
            run_attack(trainer.eval_net, data, spec, ctx, args.eval_batch)
    return {"images_per_s": len(data) / t.seconds, "images": len(data), "seconds": t.seconds}


# -- (b) the straightforward fp32 reference ---------------------------------------------------
class CifarLike(torch.utils.data.Dataset):
    """uint8 images → float tensors with a per-image pad-4 crop and flip on the CPU."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: bool = True):
        from torchvision import transforms as T

        self.x, self.y = x, y
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]) if augment else None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].float() / 255
        return (self.tf(img) if self.tf else img), self.y[i]


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                  steps: int, rand_init: bool = True) -> torch.Tensor:
    """PGD as commonly written: mean CE, ``.backward()`` (weight gradients too), fp32."""
    delta = torch.zeros_like(x)
    if rand_init:
        delta.uniform_(-eps, eps)
    delta = (torch.clamp(x + delta, 0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        with torch.no_grad():
            delta += alpha * delta.grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_(torch.clamp(x + delta, 0, 1) - x)
        delta.grad.zero_()
    model.zero_grad(set_to_none=True)
    return (x + delta).detach()


def bench_reference(arch: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """images/s of the reference PGD-K training loop and of reference PGD-20 evaluation."""
    from robustzoo.models import build_model

    torch.manual_seed(args.seed)
    model = build_model(arch, num_classes=10, in_chans=3, input_size=(32, 32), mean=(0.4914, 0.4822, 0.4465),
                        std=(0.2471, 0.2435, 0.2616)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    bs, total = args.batch_size, args.warmup + args.iters
    x, y = _random_cifar(bs * total, 0)
    loader = torch.utils.data.DataLoader(CifarLike(x, y), batch_size=bs, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    timer = DeviceTimer(device)
    model.train()
    for i, (xb, yb) in enumerate(loader):
        if i == args.warmup:
            timer.__enter__()
        xb, yb = xb.to(device), yb.to(device)
        x_adv = reference_pgd(model, xb, yb, EPS, ALPHA, args.steps)
        loss = F.cross_entropy(model(x_adv), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    timer.__exit__()
    n = bs * args.iters
    train = {"images_per_s": n / timer.seconds, "step_ms": 1000 * timer.seconds / args.iters, "images": n}
    # PGD-20 evaluation, eval mode, no random start (as the registered pgd20)
    model.eval()
    xe, ye = _random_cifar(args.eval_n, 1)
    loader = torch.utils.data.DataLoader(CifarLike(xe, ye, augment=False), batch_size=args.eval_batch,
                                         num_workers=args.workers, pin_memory=device.type == "cuda")
    with DeviceTimer(device) as t:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            x_adv = reference_pgd(model, xb, yb, EPS, EVAL_ALPHA, 20, rand_init=False)
            with torch.no_grad():
                (model(x_adv).argmax(1) == yb).sum().item()
    return {"train": train, "pgd20": {"images_per_s": args.eval_n / t.seconds, "images": args.eval_n,
                                      "seconds": t.seconds}}


# -- AutoAttack -------------------------------------------------------------------------------
def bench_autoattack(trainer, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds of standard AutoAttack (the registered 'autoattack') on --aa-n examples."""
    from robustzoo.attacks import AttackContext
    from robustzoo.data import TensorData
    from robustzoo.eval import run_attack
    from robustzoo.fast import eval_model
    from robustzoo.plugins import registry

    spec = registry("attacks").get(args.aa_attack)
    model = eval_model(trainer.model, device, trainer.fast.precision).eval()
    test = trainer.splits.test.take(torch.arange(args.aa_n)).to(device)
    with trainer.fast.scope(), torch.no_grad():  # attack every example: labels = predictions
        pred = torch.cat([model(x).argmax(1) for x, _, _ in test.batches(args.eval_batch)])
    data = TensorData(test.x, pred, test.index)
    options = {"square_queries": args.square_queries} if args.square_queries else {}
    ctx = AttackContext(eps=EPS, alpha=EVAL_ALPHA, num_classes=10, seed=0, device=str(device),
                        options=options)
    with trainer.fast.scope(), DeviceTimer(device) as t:
        res = run_attack(model, data, spec, ctx, args.eval_batch)
    return {"attack": args.aa_attack, "seconds": t.seconds, "images": args.aa_n,
            "robust_accuracy": res.accuracy,
            "seconds_per_10k": t.seconds * 10000 / args.aa_n,
            "square_queries": args.square_queries or 5000,
            "note": "random-weight model, labels = its predictions: a lower bound of the time on a "
                    "robust model (use --aa-run RUN_DIR)"}


def bench_autoattack_run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Seconds of standard AutoAttack on a trained run's first --aa-n test images."""
    from robustzoo.api import evaluate

    options = {"square_queries": args.square_queries} if args.square_queries else None
    t0 = time.perf_counter()
    rep = evaluate(args.aa_run, [args.aa_attack], n=args.aa_n, device=str(device), precision=args.precision,
                   write=False, health=False, options=options, batch_size=args.eval_batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"run": str(args.aa_run), "attack": args.aa_attack, "seconds": sec, "images": rep["n"],
            "seconds_per_10k": sec * 10000 / rep["n"], "robust_accuracy": rep["results"][0]["accuracy"],
            "precision": rep.get("precision")}


# -- bf16 against fp32 ------------------------------------------------------------------------
def compare_precisions(name: str, attacks: list[str] | str = ("clean", "pgd20"), *, n: int | None = 1000,
                       device: str = "auto", tolerance: float = 0.1, seed: int = 0,
                       batch_size: int = 256, data_dir: str | None = None,
                       low: str = "bf16", record: bool = False) -> dict[str, Any]:
    """Evaluate one model in exact fp32 and in ``low`` precision; report the drift.

    Both runs use the same examples, seed and attacks. The drift of each attack is in
    percentage points; ``ok`` is true when every drift is at most ``tolerance`` points.
    ``decision`` is the precision ``robustzoo eval --precision auto`` then uses on this
    device (:func:`robustzoo.fast.eval_precision`); with ``record`` and a run directory the
    report is saved there (``precision_check.json``), where that evaluation reads it.

    Args:
        name: run directory, zoo alias or hf-hub id.
        attacks: attack names (a list or 'a,b').
        n: number of test examples (None = all).
        device: 'auto', 'cuda', 'cpu', ...
        tolerance: allowed drift in percentage points (0.1 by the performance targets).
        low: the precision compared with fp32 ('bf16').
    """
    from robustzoo import runs
    from robustzoo.api import evaluate, resolve_model_dir
    from robustzoo.devices import resolve_device
    from robustzoo.eval import model_fingerprint
    from robustzoo.fast import eval_precision, write_precision_check

    common = dict(n=n, seed=seed, batch_size=batch_size, device=device, data_dir=data_dir,
                  write=False, health=False)
    ref = evaluate(name, attacks, precision="fp32", **common)
    test = evaluate(name, attacks, precision=low, **common)
    rows = []
    for a, b in zip(ref["results"], test["results"]):
        drift = round(100 * (b["accuracy"] - a["accuracy"]), 4)
        rows.append({"attack": a["attack"], "fp32": a["accuracy"], low: b["accuracy"],
                     "drift_points": drift, "n": a["n"]})
    worst = max((abs(r["drift_points"]) for r in rows), default=0.0)
    dev = resolve_device(device)
    model, _ = runs.load_run(resolve_model_dir(name))
    report = {"model": str(name), "model_fingerprint": model_fingerprint(model), "device": str(dev),
              "n": ref["n"], "precisions": ["fp32", low], "tolerance_points": tolerance,
              "max_abs_drift_points": worst, "ok": worst <= tolerance, "results": rows}
    report["decision"] = eval_precision("auto", dev, report, tolerance)[0]
    if record and Path(name).is_dir():
        report["recorded"] = str(write_precision_check(name, report))
    return report


# -- driver -----------------------------------------------------------------------------------
def bench_arch(name: str, args: argparse.Namespace, device: torch.device, peak: float | None,
               workdir: Path) -> dict[str, Any]:
    arch = ARCH_ALIASES.get(name, name)
    flops = forward_flops(arch, device)
    per_image = (2 * args.steps + 3) * flops  # PGD-K AT: K x (F + 2F) + F + 2F
    out: dict[str, Any] = {"arch": arch, "forward_gflops": flops / 1e9,
                           "forward_equivalents_per_image": 2 * args.steps + 3,
                           "batch_size": args.batch_size, "pgd_steps": args.steps, "train": {}}

    def limit_fraction(ips: float) -> float | None:
        return ips * per_image / (peak * 1e12) if peak else None

    variants = ["off"] + ([args.compile] if args.compile != "off" else [])
    trainer, best = None, 0.0  # evaluation below uses the faster training variant's model
    for mode in variants:
        key = "fast" if mode == "off" else f"fast_compile_{mode}"
        try:
            res, tr = bench_fast_training(arch, args, device, mode, workdir)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other variants
            out["train"][key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            continue
        res["fraction_of_limit"] = limit_fraction(res["images_per_s"])
        out["train"][key] = res
        if res["images_per_s"] > best:
            trainer, best = tr, res["images_per_s"]
        _log(f"{name}: {key}: {res['images_per_s']:.1f} img/s (warm-up {res['warmup_s']:.1f} s)")
    ref = bench_reference(arch, args, device)
    ref["train"]["fraction_of_limit"] = limit_fraction(ref["train"]["images_per_s"])
    out["train"]["reference"] = ref["train"]
    _log(f"{name}: reference: {ref['train']['images_per_s']:.1f} img/s")
    fast = [v["images_per_s"] for k, v in out["train"].items() if k != "reference" and "images_per_s" in v]
    if fast:
        out["train"]["speedup_vs_reference"] = max(fast) / ref["train"]["images_per_s"]
    out["train"]["epoch_50k_s"] = {k: 50000 / v["images_per_s"] for k, v in out["train"].items()
                                   if isinstance(v, dict) and "images_per_s" in v}
    if trainer is None:
        return out
    pgd20 = bench_fast_pgd20(trainer, args, device)
    out["pgd20_eval"] = {"fast": pgd20, "reference": ref["pgd20"], "compile": trainer.fast.compile,
                         "speedup_vs_reference": pgd20["images_per_s"] / ref["pgd20"]["images_per_s"],
                         "seconds_per_10k": {"fast": 10000 / pgd20["images_per_s"],
                                             "reference": 10000 / ref["pgd20"]["images_per_s"]}}
    _log(f"{name}: PGD-20 eval: {pgd20['images_per_s']:.1f} img/s (reference "
         f"{ref['pgd20']['images_per_s']:.1f})")
    if not args.skip_aa:
        out["autoattack"] = bench_autoattack(trainer, args, device)
        _log(f"{name}: {args.aa_attack} on {args.aa_n}: {out['autoattack']['seconds']:.1f} s")
    return out


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--arch", action="append", help="prn18, wrn34 or any registered name (repeatable; "
                                                    "default prn18 and wrn34, --quick: prn18)")
    p.add_argument("--batch-size", type=int, help="training batch (default 128, --quick 8)")
    p.add_argument("--iters", type=int, help="timed training steps (default 20, --quick 2)")
    p.add_argument("--warmup", type=int, help="warm-up steps before timing (default 5, --quick 1)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps of training (default 10)")
    p.add_argument("--eval-n", type=int, help="images for PGD-20 eval (default 5000, --quick 16)")
    p.add_argument("--eval-batch", type=int, help="eval batch (default 500, --quick 8)")
    p.add_argument("--aa-n", type=int, help="AutoAttack examples (default 1000, --quick 4)")
    p.add_argument("--aa-run", help="time AutoAttack on this trained run's test set instead")
    p.add_argument("--square-queries", type=int, help="Square budget inside AutoAttack (default 5000, "
                                                       "--quick 20)")
    p.add_argument("--aa-attack", default="autoattack",
                   help="registered attack timed as 'AutoAttack' (default autoattack, the standard version)")
    p.add_argument("--skip-aa", action="store_true", help="do not time AutoAttack")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--compile", default=None, help="compile mode measured besides eager "
                                                   "(default reduce-overhead on CUDA, off on CPU)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--peak-tflops", type=float, help="peak TFLOP/s of the device (default: H100/H200 800, "
                                                     "A100 312; none on CPU)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference (default 2, --quick 0)")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run (CPU tests)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--check-precision", metavar="RUN_DIR",
                   help="only evaluate RUN_DIR in fp32 and bf16 and report the drift (≤ 0.1 points)")
    p.add_argument("--attacks", default="clean,pgd20", help="attacks of --check-precision")
    p.add_argument("--n", type=int, default=1000, help="test images of --check-precision")
    p.add_argument("--no-record", action="store_true",
                   help="do not save the --check-precision result in RUN_DIR/precision_check.json "
                        "(which `robustzoo eval --precision auto` follows)")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(batch_size=(8, 128), iters=(2, 20), warmup=(1, 5), eval_n=(16, 5000), eval_batch=(8, 500),
                    aa_n=(4, 1000), square_queries=(20, None), workers=(0, 2))
    for key, (q, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, q if quick else full)
    if not args.arch:
        args.arch = ["prn18"] if quick else ["prn18", "wrn34"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from robustzoo.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.check_precision:
        report = compare_precisions(args.check_precision, args.attacks, n=args.n, device=str(device),
                                    record=not args.no_record)
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return report
    if args.compile is None:
        args.compile = "reduce-overhead" if device.type == "cuda" else "off"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peak = args.peak_tflops if args.peak_tflops else default_peak(device)
    report: dict[str, Any] = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "precision": args.precision, "compile": args.compile, "quick": args.quick,
        "peak_tflops": peak, "threads": torch.get_num_threads(),
        "argv": sys.argv[1:] if argv is None else argv, "archs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.arch:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()  # fresh compile caches per architecture
            report["archs"][name] = bench_arch(name, args, device, peak, Path(tmp))
    if args.aa_run:
        report["autoattack_run"] = bench_autoattack_run(args, device)
    if device.type == "cuda":
        report["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    _print_summary(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _log(f"wrote {args.out}")
    return report


def _print_summary(report: dict[str, Any]) -> None:
    print(f"device: {report['device']}  torch {report['torch']}  precision {report['precision']}  "
          f"compile {report['compile']}  peak {report['peak_tflops'] or '?'} TFLOP/s")
    for name, r in report["archs"].items():
        print(f"\n{name} ({r['arch']}, {r['forward_gflops']:.2f} GFLOP forward, batch {r['batch_size']}, "
              f"PGD-{r['pgd_steps']} AT = {r['forward_equivalents_per_image']}F per image)")
        for key, v in r["train"].items():
            if not isinstance(v, dict) or key == "epoch_50k_s":
                continue
            if "error" in v:
                print(f"  train {key:<32} error: {v['error']}")
                continue
            frac = v.get("fraction_of_limit")
            print(f"  train {key:<32} {v['images_per_s']:10.1f} img/s  {v['step_ms']:9.1f} ms/step"
                  + (f"  {100 * frac:5.1f}% of limit" if frac is not None else ""))
        if "speedup_vs_reference" in r["train"]:
            print(f"  speedup (best fast / reference): {r['train']['speedup_vs_reference']:.2f}x")
        if "pgd20_eval" in r:
            e = r["pgd20_eval"]
            print(f"  PGD-20 eval: {e['fast']['images_per_s']:.1f} img/s (reference "
                  f"{e['reference']['images_per_s']:.1f}; {e['speedup_vs_reference']:.2f}x)")
        if "autoattack" in r:
            a = r["autoattack"]
            print(f"  {a['attack']}: {a['seconds']:.1f} s on {a['images']} images "
                  f"(~{a['seconds_per_10k'] / 60:.1f} min per 10k; lower bound, random weights)")
    if "autoattack_run" in report:
        a = report["autoattack_run"]
        print(f"\n{a['attack']} on {a['run']}: {a['seconds']:.1f} s on {a['images']} images "
              f"(~{a['seconds_per_10k'] / 60:.1f} min per 10k)")


if __name__ == "__main__":
    main()
