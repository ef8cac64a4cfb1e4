"""Evaluation: accuracy under each attack, with the number of examples and a Wilson interval.

Every attack runs on the model in eval mode on [0,1] inputs. Per-example correctness is kept
for each attack so the worst case over attacks is exact (an example counts as robust only if
every attack failed on it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .attacks import AttackContext
from .data import TensorData
from .errors import UsageError


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n`` (as fractions)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class AttackResult:
    """Accuracy of one attack."""

    attack: str
    correct: int
    n: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    flags: torch.Tensor | None = None  # per-example: still correct after this attack

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.n)
        return {"attack": self.attack, "accuracy": round(self.accuracy, 6), "correct": self.correct,
                "n": self.n, "ci95": [round(lo, 6), round(hi, 6)], "settings": self.settings,
                "seconds": round(self.seconds, 3)}


def select_examples(data: TensorData, n: int | None, seed: int = 0) -> TensorData:
    """The first ``n`` examples of a seeded permutation (all, in order, when n is None)."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data), generator=g)[:n].sort().values
    return data.take(rows.to(data.x.device))


def run_attack(model: nn.Module, data: TensorData, spec: Any, ctx: AttackContext,
               batch_size: int = 256, progress: Any = None, only: torch.Tensor | None = None) -> AttackResult:
    """Run one registered attack over ``data``; returns per-example correctness.

    Args:
        only: optional bool mask; examples outside it are not attacked and count as wrong
            (used to attack only what is still robust).
    """
    model.eval()
    flags = torch.zeros(len(data), dtype=torch.bool)
    torch.manual_seed(ctx.seed)
    t0 = time.perf_counter()
    bs = spec.batch_size or batch_size
    task = progress.add_task(spec.name, total=len(data)) if progress is not None else None
    start = 0
    for x, y, _ in data.batches(bs):
        sl = slice(start, start + len(y))
        start += len(y)
        todo = torch.ones(len(y), dtype=torch.bool) if only is None else only[sl].clone()
        if todo.any():
            dev_todo = todo.to(x.device)
            xs, ys = x[dev_todo], y[dev_todo]
            x_adv = xs if spec.name == "clean" else spec.run(model, xs, ys, ctx)
            with torch.no_grad():
                ok = (model(x_adv).argmax(1) == ys).cpu()
            part = torch.zeros(len(y), dtype=torch.bool)
            part[todo] = ok
            flags[sl] = part
        if task is not None:
            progress.advance(task, len(y))
    return AttackResult(attack=spec.name, correct=int(flags.sum()), n=len(data),
                        settings=spec.settings(ctx), seconds=time.perf_counter() - t0, flags=flags)


def evaluate_model(model: nn.Module, data: TensorData, attacks: list[str], *, eps: float, alpha: float,
                   num_classes: int, n: int | None = None, seed: int = 0, batch_size: int = 256,
                   device: str | torch.device = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` under each named attack; returns the eval.json dictionary."""
    from .plugins import registry

    reg = registry("attacks")
    specs = [reg.get(a) for a in attacks]  # fail fast on a misspelled name
    data = select_examples(data, n, seed).to(device)
    ctx = AttackContext(eps=eps, alpha=alpha, num_classes=num_classes, seed=seed, device=str(device))
    model = model.to(device).eval()
    results: list[AttackResult] = []
    progress = _progress() if show_progress else None
    if progress is not None:
        progress.start()
    try:
        for spec in specs:
            results.append(run_attack(model, data, spec, ctx, batch_size, progress))
    finally:
        if progress is not None:
            progress.stop()
    robust = [r for r in results if r.attack != "clean"]
    out: dict[str, Any] = {"eps": eps, "alpha": alpha, "n": len(data), "seed": seed,
                           "results": [r.to_dict() for r in results]}
    if robust:
        worst = torch.stack([r.flags for r in robust]).all(0)
        lo, hi = wilson_interval(int(worst.sum()), len(data))
        out["worst_case"] = {"accuracy": round(float(worst.float().mean()), 6), "correct": int(worst.sum()),
                             "n": len(data), "ci95": [round(lo, 6), round(hi, 6)],
                             "attacks": [r.attack for r in robust]}
    return out


def _progress():
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True,
                    disable=not sys.stderr.isatty())


def results_table(report: dict[str, Any], title: str = "Evaluation"):
    """A rich Table of an eval.json dictionary."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("attack", "accuracy", "95% CI", "n", "settings"):
        t.add_column(col, justify="right" if col in ("accuracy", "n") else "left")
    for r in report["results"]:
        lo, hi = r["ci95"]
        sett = ", ".join(f"{k}={_fmt(v)}" for k, v in r.get("settings", {}).items())
        label = r["attack"] + (" [red](suspect)[/red]" if r.get("suspect") else "")
        t.add_row(label, f"{100 * r['accuracy']:.2f}%", f"{100 * lo:.1f}–{100 * hi:.1f}", str(r["n"]), sett)
    if "worst_case" in report:
        w = report["worst_case"]
        lo, hi = w["ci95"]
        t.add_row("[bold]worst case[/bold]", f"{100 * w['accuracy']:.2f}%", f"{100 * lo:.1f}–{100 * hi:.1f}",
                  str(w["n"]), "per example, over " + ",".join(w["attacks"]))
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        for den in (255,):
            if abs(v * den - round(v * den)) < 1e-6 and v != 0 and v < 1:
                return f"{round(v * den)}/{den}"
        return f"{v:g}"
    return str(v)
