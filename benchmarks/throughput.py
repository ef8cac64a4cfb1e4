"""Throughput of adversarial training and evaluation on one device (see docs/performance.md).

On CIFAR-shaped random data (3x32x32, 10 classes), for each architecture (PreAct ResNet-18
and WRN-34-10 by default), every contender in **its own process** (its own cuDNN, TF32 and
allocator state), their timed rounds interleaved in one run:

* PGD-10 adversarial training, images/s, six contenders (:data:`CONTENDERS`, ``--contenders``):
  ``fast`` (robustzoo's fast path: the real ``Trainer`` and ``at`` objective, bf16 autocast,
  channels_last, fused SGD, cuDNN autotuning, data on the device), ``bf16_nchw`` (the same in
  NCHW), ``fp32_tf32_nchw`` and ``fp32_nchw`` (robustzoo's loop in fp32 with PyTorch's
  default TF32 convolutions, and in strict fp32), and two references, what a paper
  repository runs (a torch DataLoader with per-image CPU crop/flip, ``.backward()`` inside
  the attack: weight gradients too, 33F per image): ``reference``, the **paper default**
  (PyTorch's defaults: TF32 convolutions on, ``cudnn.benchmark`` off, as Rice et al.'s and
  TRADES' scripts leave them), and ``reference_strict`` (TF32 off). With ``--compile``
  (default reduce-overhead on CUDA) also the fast path compiled, after the others (its
  compilation takes minutes). The speed-up over each reference is split into factors that
  multiply to it (:func:`breakdown`): 33F -> 23F and data path, precision, layout, compile;
  and the fraction of the physical limit: images/s x 23 forward FLOPs per image over
  --peak-tflops;
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
    python benchmarks/throughput.py --fat --arch preact_resnet18 --fat-epochs 3   # FAT, learning

``--check-precision`` compares bf16 with exact fp32 on a trained run, paired per example;
``--fat`` measures FAT's compacted search against the full batch as training sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
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


# -- the contenders, each run inside its own worker process ------------------------------------
class RobustzooLoop:
    """robustzoo's training loop (the real Trainer) on the benchmark data, in a worker.

    ``spec`` keys: arch, batch_size, steps (PGD), max_steps (training batches held), precision,
    compile, compile_backend, channels_last, seed, objective, settings (objective settings),
    eval_n, aa_n (test images held); ``dataset`` (with ``data_dir``, ``subset``) trains on a
    registered dataset instead of the random CIFAR-shaped one; ``tf32`` (with precision
    'fp32'): TF32 convolutions back on, as PyTorch's default has them (the paper default's
    numerics in robustzoo's loop; robustzoo's own fp32 is strict).
    """

    def __init__(self, spec: dict[str, Any], device: torch.device, workdir: Path):
        from robustzoo import plugins
        from robustzoo.train import Trainer, build_config

        bs = int(spec["batch_size"])
        SIZES["train"] = bs * int(spec.get("max_steps", 8)) + 8  # + the 8 validation images
        SIZES["test"] = max(int(spec.get("eval_n", 8)), int(spec.get("aa_n", 8)), 8)
        plugins.unregister_plugin("throughput-bench")
        plugins.register_plugin(BenchPlugin(), name="throughput-bench")
        _register_method_plugins()
        real = spec.get("dataset")
        data = dict(dataset=real, data_dir=spec.get("data_dir"), subset=spec.get("subset")) if real else \
            dict(dataset=DATASET)
        cfg = build_config(spec.get("objective", "at"), None, dict(spec.get("settings", {})), **data,
                           arch=spec["arch"], batch_size=bs, steps=spec.get("steps"), epochs=2,
                           schedule="constant", device=str(device), precision=spec.get("precision", "auto"),
                           compile=spec.get("compile", "off"), compile_backend=spec.get("compile_backend", "inductor"),
                           channels_last=bool(spec.get("channels_last", True)), seed=int(spec.get("seed", 0)),
                           val_steps=int(spec.get("val_steps", 1)))
        self.trainer = Trainer(cfg, workdir / "run")
        if spec.get("tf32") and self.trainer.fast.precision == "fp32" and device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's default; matmuls stay exact (also default)
        self.device, self.bs = device, bs
        self.full = self.trainer.train_data
        self.epoch = 0

    def describe(self) -> dict[str, Any]:
        d = self.trainer.fast.describe()
        tr = self.trainer
        d.update(objective=tr.cfg.objective, settings=tr.settings, batch_size=self.bs, dataset=tr.spec.name,
                 arch=tr.cfg.arch, train_images=len(self.full), backends=_backend_flags(),
                 device_name=device_name(self.device), torch=torch.__version__, cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
        if d["backends"]["cudnn_allow_tf32"] and tr.fast.precision == "fp32" and self.device.type == "cuda":
            d["tf32_off"] = False
        return d

    def _epoch_of(self, steps: int, progress: Any = None) -> None:
        rows = torch.arange(self.bs * steps, device=self.full.x.device) % len(self.full)
        self.trainer.train_data = self.full.take(rows)
        self.trainer.train_epoch(self.epoch % 2, progress)  # epochs 0/1: the schedule is constant
        self.epoch += 1

    def train(self, steps: int) -> dict[str, Any]:
        """``steps`` training batches (one 'epoch' of the Trainer), timed."""
        with DeviceTimer(self.device) as t:
            self._epoch_of(steps)
        return {"seconds": t.seconds, "steps": steps, "images": steps * self.bs}

    def syncs(self, steps: int, live: bool = False) -> dict[str, Any]:
        """Host syncs of one training epoch of ``steps`` batches (torch.cuda.set_sync_debug_mode).

        ``live``: with a progress object that shows its running figures (4 a second).
        """
        return _count_syncs(self.device, lambda: self._epoch_of(steps, _LiveProgress() if live else None))

    def eval_syncs(self, n: int, batch: int) -> dict[str, Any]:
        """Host syncs of a PGD-20 evaluation of ``n`` images (robustzoo.eval.run_attack)."""
        run = self._pgd20_runner(n, batch)
        run()  # warm-up
        return _count_syncs(self.device, run)

    def _pgd20_runner(self, n: int, batch: int):
        from robustzoo.attacks import AttackContext
        from robustzoo.eval import run_attack
        from robustzoo.fast import eval_model
        from robustzoo.plugins import registry

        tr = self.trainer
        model = eval_model(tr.model, self.device, tr.fast.precision)  # as `robustzoo eval`: no compile
        data = tr.splits.test.take(torch.arange(n) % len(tr.splits.test)).to(self.device)
        spec = registry("attacks").get("pgd20")
        ctx = AttackContext(eps=EPS, alpha=EVAL_ALPHA, num_classes=10, seed=0, device=str(self.device))

        def run():
            with tr.fast.scope():
                return run_attack(model, data, spec, ctx, batch)

        return run

    def pgd20(self, n: int, batch: int) -> dict[str, Any]:
        """images/s of the registered pgd20 attack on the trained model (eval mode)."""
        run = self._pgd20_runner(n, batch)
        # warm-up: one full batch and the last, smaller one (cuDNN autotunes every new shape)
        self._pgd20_runner(min(n, batch + n % batch), batch)()
        with DeviceTimer(self.device) as t:
            run()
        return {"images_per_s": n / t.seconds, "images": n, "seconds": t.seconds}

    def validate(self) -> dict[str, Any]:
        """One validation pass (eval-mode graphs of a compiled model), timed."""
        from robustzoo.train import validate

        tr = self.trainer
        with DeviceTimer(self.device) as t, tr.fast.autocast():
            validate(tr.eval_net, tr.val_data, tr.cfg, step_begin=tr.fast.step_begin)
        return {"seconds": t.seconds}

    def compile_stats(self) -> dict[str, Any]:
        from robustzoo.fast import compile_stats

        return compile_stats()

    def eval_batches(self, n: int, batches: list[int]) -> dict[str, Any]:
        """PGD-20 images/s on ``n`` test images at each evaluation batch size, with the peak
        device memory; ``recommended``: the smallest batch within 5% of the fastest."""
        rows = []
        for bs in batches:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(self.device)
            try:
                r = self.pgd20(n, bs)
            except torch.cuda.OutOfMemoryError as exc:  # a batch too large for this device
                rows.append({"batch": bs, "error": _one_line(exc)})
                continue
            if self.device.type == "cuda":
                r["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            rows.append({"batch": bs, **r})
        ok = [r for r in rows if "images_per_s" in r]
        best = max((r["images_per_s"] for r in ok), default=None)
        rec = min((r["batch"] for r in ok if r["images_per_s"] >= 0.95 * best), default=None) if best else None
        return {"n": n, "rows": rows, "recommended": rec}

    # -- FAT's compaction, measured as training sees it --------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        import copy

        tr = self.trainer
        return copy.deepcopy({"model": tr.model.state_dict(), "opt": tr.optimizer.state_dict()})

    def _restore(self, snap: dict[str, Any]) -> None:
        self.trainer.model.load_state_dict(snap["model"])
        self.trainer.optimizer.load_state_dict(snap["opt"])

    def _fat_steps(self, steps: int, compact: str, epoch: int) -> dict[str, float]:
        """``steps`` training batches of FAT with ``compact`` ('on'/'off') from the first rows
        of the training set, as epoch ``epoch`` (its seeds: the same batches and noise)."""
        tr = self.trainer
        tr.objective.settings["compact"] = compact
        rows = torch.arange(self.bs * steps, device=self.full.x.device) % len(self.full)
        tr.train_data = self.full.take(rows)
        try:
            return tr.train_epoch(epoch)
        finally:
            tr.train_data = self.full

    def fat_measure(self, steps: int, rounds: int) -> dict[str, Any]:
        """FAT's search compacted ('on') against the full batch ('off') from the current
        weights: ``rounds`` interleaved rounds of ``steps`` timed steps each (every one from
        the same weights, batches and noise), and forward-equivalents per image of one step
        of each (FLOP counter). The weights are left as they were."""
        if self.trainer.cfg.objective != "fat":
            raise ValueError("fat_measure needs objective 'fat'")
        snap = self._snapshot()
        out: dict[str, Any] = {m: {"seconds": 0.0, "images": 0, "rounds_images_per_s": []} for m in ("on", "off")}
        epoch = 1000 + self.epoch  # outside the run's epochs: its own seeds
        try:
            for m in ("on", "off"):  # warm-up: cuDNN autotunes the compacted shapes
                self._restore(snap)
                self._fat_steps(min(steps, 2), m, epoch)
            for _ in range(rounds):
                for m in ("on", "off"):
                    self._restore(snap)
                    with DeviceTimer(self.device) as t:
                        metrics = self._fat_steps(steps, m, epoch)
                    r = out[m]
                    r["seconds"] += t.seconds
                    r["images"] += steps * self.bs
                    r["rounds_images_per_s"].append(steps * self.bs / t.seconds)
                    r["fat_steps"] = metrics.get("fat_steps")
                    r["train_acc"] = metrics.get("train_acc")
            for m in ("on", "off"):
                self._restore(snap)
                out[m]["forward_equivalents_per_image"] = self._fat_step_cost(m, epoch)
        finally:
            self._restore(snap)
            self.epoch += 1
        for r in out.values():
            r["images_per_s"] = r["images"] / r["seconds"]
        out["speedup_compact_over_full"] = out["on"]["images_per_s"] / out["off"]["images_per_s"]
        out["time_ratio_compact_over_full"] = out["off"]["images_per_s"] / out["on"]["images_per_s"]
        out["flop_ratio_compact_over_full"] = (out["on"]["forward_equivalents_per_image"]
                                               / out["off"]["forward_equivalents_per_image"])
        return out

    def _fat_step_cost(self, compact: str, epoch: int) -> float:
        """Forward-equivalents per image of one training step (FLOP counter, one batch)."""
        x = self.full.take(torch.arange(1, device=self.full.x.device)).x.float() / 255
        model = self.trainer.model
        was_training = model.training
        with _flop_counter() as fc, torch.no_grad():
            model.eval()(self.trainer.fast.prepare_input(x))
        model.train(was_training)
        one = fc.get_total_flops()
        with _flop_counter() as fc:
            self._fat_steps(1, compact, epoch)
        return fc.get_total_flops() / self.bs / one

    def fat_advance(self, epochs: int) -> dict[str, Any]:
        """Train ``epochs`` real epochs on the whole training set (FAT as configured): the
        model learns, so the next :meth:`fat_measure` sees what training a few epochs in sees."""
        tr, rows = self.trainer, []
        tr.train_data = self.full
        for _ in range(epochs):
            with DeviceTimer(self.device) as t:
                m = tr.train_epoch(self.epoch)
            self.epoch += 1
            rows.append({"epoch": self.epoch, "seconds": t.seconds, **m})
        return {"epochs": rows, "train_images": len(self.full)}

    def autoattack(self, n: int, batch: int, attack: str, square_queries: int | None) -> dict[str, Any]:
        """Seconds of ``attack`` (standard AutoAttack) on ``n`` examples labelled by the model."""
        from robustzoo.attacks import AttackContext
        from robustzoo.data import TensorData
        from robustzoo.eval import run_attack
        from robustzoo.fast import eval_model
        from robustzoo.plugins import registry

        tr = self.trainer
        spec = registry("attacks").get(attack)
        model = eval_model(tr.model, self.device, tr.fast.precision).eval()
        test = tr.splits.test.take(torch.arange(n)).to(self.device)
        with tr.fast.scope(), torch.no_grad():  # attack every example: labels = predictions
            pred = torch.cat([model(x).argmax(1) for x, _, _ in test.batches(batch)])
        data = TensorData(test.x, pred, test.index)
        options = {"square_queries": square_queries} if square_queries else {}
        ctx = AttackContext(eps=EPS, alpha=EVAL_ALPHA, num_classes=10, seed=0, device=str(self.device),
                            options=options)
        with tr.fast.scope(), DeviceTimer(self.device) as t:
            res = run_attack(model, data, spec, ctx, batch)
        return {"attack": attack, "seconds": t.seconds, "images": n, "robust_accuracy": res.accuracy,
                "seconds_per_10k": t.seconds * 10000 / n, "square_queries": square_queries or 5000,
                "note": "random-weight model, labels = its predictions: a lower bound of the time on a "
                        "robust model (use --aa-run RUN_DIR)"}


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks make
    ``torch.autograd.grad`` w.r.t. a leaf input (every attack) raise; only the total is needed."""

    parents = {"Global"}

    def __enter__(self) -> _NoModuleTracking:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    return counter


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


class ReferenceLoop:
    """The straightforward loop of a paper repository, in a worker process of its own.

    A DataLoader with per-image CPU augmentation, ``.backward()`` inside the attack (weight
    gradients too: 33F per image), fp32 weights, SGD unfused, NCHW, in a process no robustzoo
    Trainer has touched. Two numerics (spec ``tf32``):

    * **paper default** (``tf32=True``): PyTorch's own defaults, which a repository that sets
      neither flag runs: TF32 convolutions on (``cudnn.allow_tf32``), TF32 matmuls off
      (``cuda.matmul.allow_tf32``, off by default since PyTorch 1.12). Rice et al.'s
      ``train_cifar.py`` (locuslab/robust_overfitting, PGD-10 PreAct ResNet-18) and TRADES'
      ``train_trades_cifar10.py`` set no flag; FAT's ``FAT.py`` sets ``cudnn.benchmark =
      True`` (spec ``cudnn_benchmark``, default False as in the first two);
    * **strict fp32** (``tf32=False``): TF32 off for convolutions and matmuls.
    """

    def __init__(self, spec: dict[str, Any], device: torch.device, workdir: Path):
        from robustzoo.models import build_model

        # The paper default touches nothing but what the repository itself sets.
        torch.backends.cudnn.benchmark = bool(spec.get("cudnn_benchmark", False))
        self.tf32 = bool(spec.get("tf32", True))
        if not self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(int(spec.get("seed", 0)))
        self.device, self.bs, self.steps = device, int(spec["batch_size"]), int(spec["steps"])
        self.model = build_model(spec["arch"], num_classes=10, in_chans=3, input_size=(32, 32),
                                 mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x, y = _random_cifar(self.bs * int(spec.get("max_steps", 8)), 0)
        workers = int(spec.get("workers", 2))
        self.loader = torch.utils.data.DataLoader(
            CifarLike(x, y), batch_size=self.bs, shuffle=True, drop_last=True, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self._it = iter(self.loader)
        self.workers = workers

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "precision": "fp32 (TF32 convolutions, PyTorch's default)"
                if self.tf32 else "fp32 (strict: TF32 off)", "numerics": "paper default" if self.tf32
                else "strict fp32", "channels_last": False, "compile": "off", "fused_optimizer": False,
                "data": f"DataLoader, {self.workers} workers, CPU crop/flip",
                "attack": ".backward() (weight gradients too)", "batch_size": self.bs, "backends": _backend_flags()}

    def _next(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def train(self, steps: int) -> dict[str, Any]:
        model, opt = self.model.train(), self.opt
        with DeviceTimer(self.device) as t:
            for _ in range(steps):
                xb, yb = self._next()
                xb, yb = xb.to(self.device), yb.to(self.device)
                x_adv = reference_pgd(model, xb, yb, EPS, ALPHA, self.steps)
                loss = F.cross_entropy(model(x_adv), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {"seconds": t.seconds, "steps": steps, "images": steps * self.bs}

    def pgd20(self, n: int, batch: int) -> dict[str, Any]:
        """PGD-20 evaluation, eval mode, no random start (as the registered pgd20)."""
        model = self.model.eval()
        xe, ye = _random_cifar(n, 1)
        loader = torch.utils.data.DataLoader(CifarLike(xe, ye, augment=False), batch_size=batch,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda")
        with DeviceTimer(self.device) as t:
            for xb, yb in loader:
                xb, yb = xb.to(self.device), yb.to(self.device)
                x_adv = reference_pgd(model, xb, yb, EPS, EVAL_ALPHA, 20, rand_init=False)
                with torch.no_grad():
                    (model(x_adv).argmax(1) == yb).sum().item()
        return {"images_per_s": n / t.seconds, "images": n, "seconds": t.seconds}


class DriftCheck:
    """bf16 against exact fp32 on a short trained run, in a worker (``benchmarks/gpu_check.py``);
    the trained run then serves the AutoAttack timing (:meth:`autoattack`)."""

    def __init__(self, spec: dict[str, Any], device: torch.device, workdir: Path):
        self.device, self.workdir = device, workdir
        self.run_dir: Path | None = None
        self.data_dir: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "device_name": device_name(self.device)}

    def train(self, dataset: str, arch: str, epochs: int, subset: int | None = None,
              data_dir: str | None = None, batch_size: int | None = None, steps: int | None = None
              ) -> dict[str, Any]:
        """Train ``arch`` on ``dataset`` (PGD AT, the dataset's defaults otherwise)."""
        from robustzoo.api import train

        run = self.workdir / f"drift-{dataset}"
        t0 = time.perf_counter()
        _, report = train("at", dataset=dataset, arch=arch, epochs=epochs, subset=subset, data_dir=data_dir,
                          batch_size=batch_size, steps=steps, device=str(self.device), out=run,
                          eval_attacks=["clean"], eval_n=256, val_steps=2)
        self.run_dir, self.data_dir = run, data_dir
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {"dataset": dataset, "arch": arch, "epochs": epochs, "train_seconds": time.perf_counter() - t0,
                "epoch_seconds": [m.get("seconds") for m in metrics],
                "val_clean": metrics[-1].get("val_clean"), "val_pgd": metrics[-1].get("val_pgd"),
                "train_clean_accuracy": report["results"][0]["accuracy"]}

    def compare(self, n: int | None, tolerance: float = 0.1) -> dict[str, Any]:
        """bf16 against exact fp32 (clean and PGD-20) on the trained run's test set."""
        t0 = time.perf_counter()
        check = compare_precisions(self.run_dir, "clean,pgd20", n=n, device=str(self.device),
                                   data_dir=self.data_dir, tolerance=tolerance, record=True)
        check["check_seconds"] = time.perf_counter() - t0
        # what `robustzoo eval --precision auto` now does with this run (it reads the check)
        from robustzoo.api import evaluate

        auto = evaluate(self.run_dir, ["clean"], n=min(256, check["n"]), device=str(self.device),
                        data_dir=self.data_dir, write=False, health=False)
        check["auto_eval"] = {"precision": auto["precision"], "fallback": auto.get("precision_fallback")}
        return check

    def run(self, dataset: str, arch: str, epochs: int, n: int | None, subset: int | None = None,
            data_dir: str | None = None, batch_size: int | None = None, steps: int | None = None
            ) -> dict[str, Any]:
        """Train, then compare precisions (:meth:`train` and :meth:`compare`)."""
        trained = self.train(dataset, arch, epochs, subset, data_dir, batch_size, steps)
        return {**self.compare(n), **trained}

    def autoattack(self, n: int, batch: int | None = None, attack: str = "autoattack",
                   options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Standard AutoAttack, and PGD-20 for scale, on the trained run's first ``n`` test
        images (seeded choice), timed per attack (each row's own seconds, read back once)."""
        from robustzoo.api import evaluate

        if self.run_dir is None:
            raise RuntimeError("no trained run: call train first")
        rep = evaluate(self.run_dir, ["clean", "pgd20", attack], n=n, device=str(self.device),
                       data_dir=self.data_dir, write=False, health=False, batch_size=batch, options=options)
        rows = {r["attack"]: r for r in rep["results"]}
        aa = rows[attack]
        return {"n": rep["n"], "batch": batch, "precision": rep.get("precision"), "attack": attack,
                "seconds": aa["seconds"], "robust_accuracy": aa["accuracy"],
                "clean_accuracy": rows["clean"]["accuracy"], "pgd20_accuracy": rows["pgd20"]["accuracy"],
                "pgd20_seconds": rows["pgd20"]["seconds"],
                "components": [{k: c.get(k) for k in ("attack", "accuracy", "seconds")}
                               for c in aa.get("components", [])]}


LOOPS = {"robustzoo": RobustzooLoop, "reference": ReferenceLoop, "drift": DriftCheck}


class _LiveProgress:
    """A progress object that shows running figures (4 a second), drawing nothing."""

    refresh_seconds = 0.25

    def task_start(self, label: str, total: int, completed: int = 0) -> str:
        return label

    def task_update(self, task: Any, completed: int, **fields: float) -> None:
        pass

    def task_end(self, task: Any) -> None:
        pass

    def epoch_end(self, row: Any) -> None:
        pass

    def note(self, message: str) -> None:
        pass


#: Where a sync's call site is looked for: the innermost frames in these folders.
SYNC_ROOTS = tuple(str(Path(__file__).resolve().parents[1] / d) for d in ("robustzoo", "plugins", "benchmarks"))


class SyncSites:
    """Host syncs counted per call site while :meth:`recording`.

    ``torch.cuda.set_sync_debug_mode('warn')`` reports every sync with the same warning text,
    so the text says nothing about where it came from. When the warning is shown, the Python
    stack is still that of the call that synchronised: each sync is attributed to a short
    stack, the innermost ``depth`` frames inside ``roots`` (robustzoo, its plugins and this
    benchmark), as ``file:line`` relative to the checkout, innermost first.
    """

    def __init__(self, roots: tuple[str, ...] = SYNC_ROOTS, depth: int = 3):
        self.roots = tuple(str(Path(r).resolve()) + os.sep for r in roots)
        self.base = os.path.commonpath([str(Path(r).parent) for r in self.roots]) if self.roots else ""
        self.depth = depth
        self.sites: dict[str, int] = {}
        self.total = 0

    @contextlib.contextmanager
    def recording(self):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = self._show  # restored by catch_warnings
            yield self

    def _show(self, message: Any, category: Any, filename: str, lineno: int, file: Any = None,
              line: Any = None) -> None:
        if "synchroniz" not in str(message).lower():
            return
        self.total += 1
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(self.roots)]
        key = " < ".join(f"{os.path.relpath(f.filename, self.base)}:{f.lineno}"
                         for f in reversed(frames[-self.depth:])) if frames else f"{filename}:{lineno}"
        self.sites[key] = self.sites.get(key, 0) + 1

    def table(self) -> dict[str, int]:
        """Counts per call site, most frequent first."""
        return dict(sorted(self.sites.items(), key=lambda kv: (-kv[1], kv[0])))


def _count_syncs(device: torch.device, work) -> dict[str, Any]:
    """Host syncs ``work()`` makes, as ``torch.cuda.set_sync_debug_mode('warn')`` reports them,
    per call site (:class:`SyncSites`)."""
    if device.type != "cuda":
        work()
        return {"available": False, "reason": "torch.cuda.set_sync_debug_mode counts CUDA syncs only"}
    sites = SyncSites()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with sites.recording():
            work()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"available": True, "syncs": sites.total, "sites": sites.table()}


def _backend_flags() -> dict[str, Any]:
    return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


def _register_method_plugins() -> None:
    """Register the method plugins by module when no entry points list them (a checkout run
    without ``pip install``, on PYTHONPATH)."""
    import importlib

    from robustzoo import plugins

    names = set(plugins.registry("objectives").list())
    for name, module in (("fat", "robustzoo_fat"), ("trades", "robustzoo_trades"), ("mart", "robustzoo_mart")):
        if name in names:
            continue
        with contextlib.suppress(ImportError):
            plugins.register_plugin(importlib.import_module(module), name=name)
            names = set(plugins.registry("objectives").list())


def worker_main(spec_text: str) -> None:
    """A contender's process: build it, then answer JSON-line commands on stdin until 'quit'."""
    from robustzoo.devices import resolve_device

    spec = json.loads(spec_text)
    # The protocol keeps the original stdout to itself; anything else written to stdout, by
    # Python or by a library's C code, goes to stderr (the log) instead.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, default=str) + "\n")
        out.flush()

    with tempfile.TemporaryDirectory() as tmp:
        try:
            device = resolve_device(spec.get("device", "auto"))
            loop = LOOPS[spec["kind"]](spec, device, Path(tmp))
            send({"ready": True, "describe": loop.describe()})
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which goes on
            send({"error": _one_line(exc)})
            return
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("cmd") == "quit":
                break
            try:
                send(getattr(loop, msg["cmd"])(**msg.get("args", {})))
            except Exception as exc:  # noqa: BLE001
                send({"error": _one_line(exc)})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class Worker:
    """The driver's handle on one contender's process (see :func:`worker_main`)."""

    def __init__(self, name: str, spec: dict[str, Any]):
        self.name, self.spec = name, spec
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info: dict[str, Any] | None = None
        self.error: str | None = None

    def _read(self, timeout: float | None) -> dict[str, Any]:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                self.close(kill=True)
                return {"error": f"timed out after {timeout:.0f} s"}
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"error": f"worker exited with code {code}"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"error": f"worker sent {line[:200]!r}"}

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the contender is built; False (with ``error`` set) when it could not be."""
        if self.info is None and self.error is None:
            msg = self._read(timeout)
            self.error = msg.get("error")
            self.info = msg.get("describe", {}) if self.error is None else {}
        return self.error is None

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        if not self.ready(timeout) or self.proc.poll() is not None:
            return {"error": self.error or "worker is gone"}
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                with contextlib.suppress(OSError):
                    self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    self.proc.stdin.flush()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        self.proc.wait()


class LocalWorker:
    """A :class:`Worker` stand-in that runs the contender in this process (CPU smoke runs and
    tests: no start-up cost, no separate process state). Answers pass through JSON as a
    worker's would."""

    def __init__(self, name: str, spec: dict[str, Any]):
        from robustzoo.devices import resolve_device

        self.name, self.spec = name, spec
        self._tmp = tempfile.TemporaryDirectory()
        self.info: dict[str, Any] | None = None
        self.error: str | None = None
        try:
            self.loop = LOOPS[spec["kind"]](spec, resolve_device(spec.get("device", "auto")), Path(self._tmp.name))
            self.info = json.loads(json.dumps(self.loop.describe(), default=str))
        except Exception as exc:  # noqa: BLE001 - reported like a worker's failure
            self.error, self.info = _one_line(exc), {}

    def ready(self, timeout: float | None = None) -> bool:
        return self.error is None

    def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        try:
            return json.loads(json.dumps(getattr(self.loop, cmd)(**args), default=str))
        except Exception as exc:  # noqa: BLE001
            return {"error": _one_line(exc)}

    def close(self, kill: bool = False) -> None:
        self._tmp.cleanup()


def make_worker(name: str, spec: dict[str, Any], in_process: bool = False) -> Worker | LocalWorker:
    return LocalWorker(name, spec) if in_process else Worker(name, spec)


def start_workers(specs: dict[str, dict[str, Any]], timeout: float | None = None,
                  in_process: bool = False) -> dict[str, Worker | LocalWorker]:
    """Start every contender's process at once (they build in parallel) and wait for them."""
    workers = {name: make_worker(name, spec, in_process) for name, spec in specs.items()}
    for w in workers.values():
        w.ready(timeout)
    return workers


def interleaved(workers: dict[str, Any], rounds: int, steps: int, warmup: int,
                timeout: float | Any = None) -> dict[str, dict[str, Any]]:
    """Warm each contender up, then time ``rounds`` rounds of ``steps`` training steps each,
    one contender after the other within a round (drift of the machine hits all alike).

    ``timeout``: seconds per call, or a callable giving them at each call (a time box)."""
    limit = timeout if callable(timeout) else (lambda: timeout)
    out: dict[str, dict[str, Any]] = {}
    for name, w in workers.items():
        if not w.ready(limit()):
            out[name] = {"error": w.error}
            continue
        warm = w.call("train", limit(), steps=warmup)
        out[name] = {"error": warm["error"]} if "error" in warm else {
            "warmup_s": warm["seconds"], "warmup_steps": warmup, "rounds_images_per_s": [],
            "seconds": 0.0, "images": 0, "fast_path": w.info}
    for _ in range(rounds):
        for name, w in workers.items():
            res = out[name]
            if "error" in res:
                continue
            r = w.call("train", limit(), steps=steps)
            if "error" in r:
                out[name] = {"error": r["error"]}
                continue
            res["seconds"] += r["seconds"]
            res["images"] += r["images"]
            res["rounds_images_per_s"].append(r["images"] / r["seconds"])
    for res in out.values():
        if "error" not in res and res["seconds"] > 0:
            step = res["seconds"] / (rounds * steps)
            res.update(images_per_s=res["images"] / res["seconds"], step_ms=1000 * step,
                       compile_and_autotune_s=max(res["warmup_s"] - warmup * step, 0.0))
    return out


#: The two references and, for each, robustzoo's loop in the same numerics (fp32, NCHW).
REFERENCES = {"paper_default": ("reference", "fp32_tf32_nchw"), "strict_fp32": ("reference_strict", "fp32_nchw")}
#: Every contender: what it is (docs/performance.md, "The throughput benchmark").
CONTENDERS = {
    "fast": "robustzoo's fast path: bf16 autocast, channels_last, fused SGD, data on the device",
    "bf16_nchw": "the fast path in NCHW (channels_last off)",
    "fp32_tf32_nchw": "robustzoo's loop in fp32 with TF32 convolutions (PyTorch's default), NCHW",
    "fp32_nchw": "robustzoo's loop in strict fp32 (TF32 off), NCHW",
    "reference": "paper default: DataLoader, .backward() attack (33F), fp32 with TF32 convolutions",
    "reference_strict": "the reference in strict fp32 (TF32 off)",
}


def breakdown(train: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where the speed-up over each reference comes from, as ratios of images/s.

    Against each reference (paper default, strict fp32) the total fast / reference is the
    product of: ``loop_33F_to_23F_and_data`` (robustzoo's fp32 NCHW loop in the reference's
    numerics / the reference: 23F instead of 33F per image, of which 33/23 = 1.43x is FLOP
    arithmetic, and data on the device instead of a DataLoader), ``precision`` (bf16 NCHW /
    that fp32 loop), ``layout`` (fast / bf16 NCHW) and, when measured, ``compile``
    (compiled / fast). A factor is missing when one of its contenders is, a reference's
    entry when the reference is.
    """
    ips = {k: v["images_per_s"] for k, v in train.items() if isinstance(v, dict) and "images_per_s" in v}
    compiled = max((v for k, v in ips.items() if k.startswith("fast_compile")), default=None)
    out: dict[str, Any] = {"flop_ratio_33F_over_23F": 33 / 23}
    for name, (ref, loop) in REFERENCES.items():
        if ref not in ips:
            continue
        b: dict[str, float] = {}
        if loop in ips:
            b["loop_33F_to_23F_and_data"] = ips[loop] / ips[ref]
        if loop in ips and "bf16_nchw" in ips:
            b["precision"] = ips["bf16_nchw"] / ips[loop]
        if "bf16_nchw" in ips and "fast" in ips:
            b["layout"] = ips["fast"] / ips["bf16_nchw"]
        if compiled and "fast" in ips:
            b["compile"] = compiled / ips["fast"]
        if "fast" in ips:
            b["total_eager"] = ips["fast"] / ips[ref]
            if compiled:
                b["total_compiled"] = compiled / ips[ref]
        out[name] = b
    return out


def contender_specs(arch: str, args: argparse.Namespace, device: torch.device, max_steps: int,
                    names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The contenders of :data:`CONTENDERS` (``names``: a subset), for one architecture."""
    common = dict(arch=arch, batch_size=args.batch_size, steps=args.steps, seed=args.seed, device=str(device),
                  max_steps=max_steps, eval_n=args.eval_n, aa_n=args.aa_n, threads=args.threads)
    specs = {
        "fast": dict(common, kind="robustzoo", precision=args.precision, compile="off"),
        "bf16_nchw": dict(common, kind="robustzoo", precision=args.precision, compile="off", channels_last=False),
        "fp32_tf32_nchw": dict(common, kind="robustzoo", precision="fp32", compile="off", channels_last=False,
                               tf32=True),
        "fp32_nchw": dict(common, kind="robustzoo", precision="fp32", compile="off", channels_last=False),
        "reference": dict(common, kind="reference", workers=args.workers, tf32=True),
        "reference_strict": dict(common, kind="reference", workers=args.workers, tf32=False),
    }
    return {k: v for k, v in specs.items() if names is None or k in names}


# -- bf16 against fp32 ------------------------------------------------------------------------
def compare_precisions(name: str, attacks: list[str] | str = ("clean", "pgd20"), *, n: int | None = 1000,
                       device: str = "auto", tolerance: float = 0.1, seed: int = 0,
                       batch_size: int | None = None, data_dir: str | None = None,
                       low: str = "bf16", record: bool = False) -> dict[str, Any]:
    """Evaluate one model in exact fp32 and in ``low`` precision; report the drift, paired.

    :func:`robustzoo.api.check_precision` (what ``robustzoo eval RUN --check-precision`` runs),
    with ``decision``: the precision ``robustzoo eval --precision bf16`` would be allowed
    (bf16 when every attack's drift is within ``tolerance`` points, else fp32). With ``record``
    and a run directory the check is saved there (``precision_check.json``).
    """
    from robustzoo.api import check_precision

    names = [a for a in attacks.split(",") if a] if isinstance(attacks, str) else list(attacks)
    report = check_precision(name, names, n=n, seed=seed, batch_size=batch_size, device=device,
                             data_dir=data_dir, tolerance=tolerance, record=record, low=low)
    report["decision"] = "bf16" if report["ok"] and low == "bf16" else "fp32"
    return report


# -- driver -----------------------------------------------------------------------------------
def bench_arch(name: str, args: argparse.Namespace, device: torch.device, peak: float | None) -> dict[str, Any]:
    arch = ARCH_ALIASES.get(name, name)
    flops = forward_flops(arch, device)
    per_image = (2 * args.steps + 3) * flops  # PGD-K AT: K x (F + 2F) + F + 2F
    out: dict[str, Any] = {"arch": arch, "forward_gflops": flops / 1e9,
                           "forward_equivalents_per_image": 2 * args.steps + 3,
                           "batch_size": args.batch_size, "pgd_steps": args.steps, "rounds": args.rounds}

    def limit_fraction(ips: float) -> float | None:
        return ips * per_image / (peak * 1e12) if peak else None

    max_steps = max(args.iters, args.warmup)
    workers = start_workers(contender_specs(arch, args, device, max_steps, args.contenders),
                            in_process=args.in_process)
    try:
        train = interleaved(workers, args.rounds, args.iters, args.warmup)
        for key, res in train.items():
            if "images_per_s" in res:
                res["fraction_of_limit"] = limit_fraction(res["images_per_s"])
                _log(f"{name}: {key}: {res['images_per_s']:.1f} img/s (warm-up {res['warmup_s']:.1f} s)")
        pgd20 = {k: workers[k].call("pgd20", n=args.eval_n, batch=args.eval_batch)
                 for k in ("fast", "reference") if k in workers}
        aa = None if args.skip_aa or "fast" not in workers else workers["fast"].call(
            "autoattack", n=args.aa_n, batch=args.eval_batch, attack=args.aa_attack,
            square_queries=args.square_queries)
    finally:
        for w in workers.values():
            w.close()
    if args.compile != "off":  # after the others: compiling takes minutes and much memory
        key = f"fast_compile_{args.compile}"
        spec = dict(contender_specs(arch, args, device, max_steps)["fast"], compile=args.compile,
                    compile_backend=args.compile_backend)
        w = make_worker(key, spec, args.in_process)
        try:
            res = interleaved({key: w}, args.rounds, args.iters, args.warmup)[key]
            if "images_per_s" in res:
                res["fraction_of_limit"] = limit_fraction(res["images_per_s"])
                res["compile_stats"] = w.call("compile_stats")
                _log(f"{name}: {key}: {res['images_per_s']:.1f} img/s (warm-up {res['warmup_s']:.1f} s)")
            train[key] = res
        finally:
            w.close()
    out["train"] = train
    fast_ips = [v["images_per_s"] for k, v in train.items() if k.startswith("fast") and "images_per_s" in v]
    if fast_ips and "images_per_s" in train.get("reference", {}):
        train["speedup_vs_reference"] = max(fast_ips) / train["reference"]["images_per_s"]
    train["breakdown"] = breakdown(train)
    train["epoch_50k_s"] = {k: 50000 / v["images_per_s"] for k, v in train.items()
                            if isinstance(v, dict) and "images_per_s" in v}
    if "images_per_s" in pgd20.get("fast", {}) and "images_per_s" in pgd20.get("reference", {}):
        f, r = pgd20["fast"]["images_per_s"], pgd20["reference"]["images_per_s"]
        pgd20.update(compile="off", speedup_vs_reference=f / r,
                     seconds_per_10k={"fast": 10000 / f, "reference": 10000 / r})
        _log(f"{name}: PGD-20 eval: {f:.1f} img/s (reference {r:.1f})")
    out["pgd20_eval"] = pgd20
    if aa is not None:
        out["autoattack"] = aa
        if "seconds" in aa:
            _log(f"{name}: {args.aa_attack} on {args.aa_n}: {aa['seconds']:.1f} s")
    return out


def breakdown_lines(b: dict[str, Any]) -> list[str]:
    """The speed-up against each reference and its factors, one line per reference."""
    lines = []
    for name, label in (("paper_default", "paper default"), ("strict_fp32", "strict fp32")):
        f = b.get(name) or {}
        if "total_eager" not in f:
            continue
        parts = [f"{k} {f[k]:.2f}x" for k in ("loop_33F_to_23F_and_data", "precision", "layout", "compile")
                 if k in f]
        total = f.get("total_compiled", f["total_eager"])
        lines.append(f"vs {label}: {total:.2f}x = " + " x ".join(parts)
                     + f" (33F/23F alone: {b['flop_ratio_33F_over_23F']:.2f}x)")
    return lines


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
    p.add_argument("--iters", type=int, help="timed training steps per round (default 20, --quick 2)")
    p.add_argument("--rounds", type=int, help="interleaved timed rounds per contender (default 3, --quick 1)")
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
    p.add_argument("--contenders", type=lambda v: [c.strip() for c in v.split(",") if c.strip()],
                   help="comma-separated subset of " + ", ".join(CONTENDERS) + " (default: all)")
    p.add_argument("--compile", default=None, help="compile mode measured besides eager "
                                                   "(default reduce-overhead on CUDA, off on CPU)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--peak-tflops", type=float, help="peak TFLOP/s of the device (default: H100/H200 800, "
                                                     "A100 312; none on CPU)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference (default 2, --quick 0)")
    p.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run (CPU tests)")
    p.add_argument("--in-process", action="store_true",
                   help="run the contenders in this process, one after the other, sharing its state "
                        "(a quick smoke run; measurements want a process each, the default)")
    p.add_argument("--fat", action="store_true",
                   help="only measure FAT's compaction as training sees it (--fat-dataset, --fat-epochs; "
                        "--arch, --batch-size, --iters, --rounds, --subset apply)")
    p.add_argument("--fat-dataset", default="fashion-mnist", help="real labels for --fat (default fashion-mnist)")
    p.add_argument("--fat-epochs", type=int, default=3, help="epochs of FAT training measured after (default 3)")
    p.add_argument("--subset", type=int, help="--fat: training images kept (default all)")
    p.add_argument("--data-dir", help="--fat: where the dataset is")
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
    defaults = dict(batch_size=(8, 128), iters=(2, 20), rounds=(1, 3), warmup=(1, 5), eval_n=(16, 5000),
                    eval_batch=(8, 500), aa_n=(4, 1000), square_queries=(20, None), workers=(0, 2))
    for key, (q, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, q if quick else full)
    if not args.arch:
        args.arch = ["prn18"] if quick else ["prn18", "wrn34"]
    unknown = sorted(set(args.contenders or ()) - set(CONTENDERS))
    if unknown:
        p.error(f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}")
    return args


def bench_fat(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """FAT (``at``, τ = 0) compacted against the full batch as training sees it: measured on
    the untrained net (the best case), then after each of ``--fat-epochs`` epochs of FAT
    training on real labels. Per measurement: images/s of both (interleaved rounds from the
    same weights, batches and noise), forward-equivalents per image (FLOP counter) and the
    time and FLOP ratios."""
    spec = dict(kind="robustzoo", objective="fat", settings={"variant": "at", "tau": 0, "compact": "on"},
                dataset=args.fat_dataset, data_dir=args.data_dir, subset=args.subset,
                arch=ARCH_ALIASES.get(args.arch[0], args.arch[0]),
                batch_size=args.batch_size, steps=args.steps, seed=args.seed, device=str(device),
                precision=args.precision, threads=args.threads)
    w = make_worker("fat", spec, in_process=args.in_process)
    try:
        if not w.ready():
            raise RuntimeError(w.error)
        rows = [{"epochs_trained": 0, **_ok_call(w.call("fat_measure", steps=args.iters, rounds=args.rounds))}]
        epochs = []
        for e in range(args.fat_epochs):
            epochs += _ok_call(w.call("fat_advance", epochs=1))["epochs"]
            rows.append({"epochs_trained": e + 1,
                         **_ok_call(w.call("fat_measure", steps=args.iters, rounds=args.rounds))})
            r = rows[-1]
            _log(f"fat: after epoch {e + 1}: {r['on']['forward_equivalents_per_image']:.2f}F vs "
                 f"{r['off']['forward_equivalents_per_image']:.2f}F, time ratio "
                 f"{r['time_ratio_compact_over_full']:.3f}")
        return {"spec": {k: v for k, v in spec.items() if k != "kind"}, "fast_path": w.info,
                "training": epochs, "measurements": rows}
    finally:
        w.close()


def _ok_call(res: dict[str, Any]) -> dict[str, Any]:
    if "error" in res:
        raise RuntimeError(res["error"])
    return res


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # a contender's own process (see Worker)
        worker_main(argv[1])
        return {}
    args = parse_args(argv)
    from robustzoo.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.fat:
        report = bench_fat(args, device)
        report.update(device=device_name(device), torch=torch.__version__, argv=list(argv))
        for r in report["measurements"]:
            print(f"FAT after {r['epochs_trained']} epoch(s): compacted {r['on']['forward_equivalents_per_image']:.2f}F "
                  f"{r['on']['images_per_s']:.1f} img/s, full {r['off']['forward_equivalents_per_image']:.2f}F "
                  f"{r['off']['images_per_s']:.1f} img/s: FLOPs x{r['flop_ratio_compact_over_full']:.3f}, "
                  f"time x{r['time_ratio_compact_over_full']:.3f} (mean steps {r['on']['fat_steps']:.2f})")
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        return report
    if args.check_precision:
        report = compare_precisions(args.check_precision, args.attacks, n=args.n, device=str(device),
                                    record=not args.no_record)
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return report
    if args.compile is None:
        args.compile = "reduce-overhead" if device.type == "cuda" else "off"
    peak = args.peak_tflops if args.peak_tflops else default_peak(device)
    report: dict[str, Any] = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "precision": args.precision, "compile": args.compile, "quick": args.quick,
        "peak_tflops": peak, "threads": args.threads or torch.get_num_threads(),
        "argv": list(argv), "archs": {},
    }
    for name in args.arch:  # each contender in a process of its own (no state shared)
        report["archs"][name] = bench_arch(name, args, device, peak)
    if args.aa_run:
        report["autoattack_run"] = bench_autoattack_run(args, device)
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
            if not isinstance(v, dict) or key in ("epoch_50k_s", "breakdown"):
                continue
            if "error" in v:
                print(f"  train {key:<32} error: {v['error']}")
                continue
            frac = v.get("fraction_of_limit")
            print(f"  train {key:<32} {v['images_per_s']:10.1f} img/s  {v['step_ms']:9.1f} ms/step"
                  + (f"  {100 * frac:5.1f}% of limit" if frac is not None else ""))
        if "speedup_vs_reference" in r["train"]:
            print(f"  speedup (best fast / paper-default reference): {r['train']['speedup_vs_reference']:.2f}x")
        for line in breakdown_lines(r["train"].get("breakdown", {})):
            print("  " + line)
        if "speedup_vs_reference" in r.get("pgd20_eval", {}):
            e = r["pgd20_eval"]
            print(f"  PGD-20 eval: {e['fast']['images_per_s']:.1f} img/s (reference "
                  f"{e['reference']['images_per_s']:.1f}; {e['speedup_vs_reference']:.2f}x)")
        if "seconds" in r.get("autoattack", {}):
            a = r["autoattack"]
            print(f"  {a['attack']}: {a['seconds']:.1f} s on {a['images']} images "
                  f"(~{a['seconds_per_10k'] / 60:.1f} min per 10k; lower bound, random weights)")
    if "autoattack_run" in report:
        a = report["autoattack_run"]
        print(f"\n{a['attack']} on {a['run']}: {a['seconds']:.1f} s on {a['images']} images "
              f"(~{a['seconds_per_10k'] / 60:.1f} min per 10k)")


if __name__ == "__main__":
    main()
