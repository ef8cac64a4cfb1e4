"""Robust accuracy against ε: the numbers and an accuracy-vs-ε plot.

The sweep runs ε in increasing order and attacks, at each ε, only the examples still robust at
the previous one. That is exact, not an approximation: an adversarial example found within
ε is also within every larger ε, so an example broken at ε stays broken. The curve is
therefore monotone by construction. The step size scales with ε (α·ε'/ε, the protocol's
α/ε ratio), so a PGD-20 run can still cross the larger balls; ε = 0 is clean accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..runs import atomic_path
from ._stats import wilson_interval


def run_sweep(run: Callable[..., Any], spec: Any, ctx: Any, eps_values: list[float],
              clean_flags: torch.Tensor) -> list[dict[str, Any]]:
    """Accuracy under ``spec`` at each ε (ascending, cascaded; see the module docstring).

    Args:
        run: ``run(spec, ctx, key=, only=, after=, label=)`` runs one attack on the examples
            in the bool mask ``only`` and returns its result (``.flags``: still correct);
            the evaluation passes :func:`robustzoo.eval.run_keyed` bound to its model,
            examples and flag store, so every ε is saved and resumed like any attack.
        clean_flags: the examples classified correctly without an attack.

    Returns:
        ``[{"eps", "accuracy", "correct", "n", "ci95", "alpha"}]`` in ε order.
    """
    rows = []
    robust = clean_flags.clone()
    after = ["clean"]
    for e in sorted(eps_values):
        alpha = ctx.alpha * (e / ctx.eps) if ctx.eps > 0 else ctx.alpha
        if e == 0:
            flags = clean_flags.clone()
        else:
            ctx_e = replace(ctx, eps=float(e), alpha=float(alpha))
            key = f"sweep/{spec.name}@{e!r}"
            res = run(spec, ctx_e, key=key, only=robust, after=after, label=f"{spec.name} @ ε={e:.4g}")
            flags = res.flags
            after = after + [key]
        robust = robust & flags
        correct = int(robust.sum())
        lo, hi = wilson_interval(correct, len(robust))
        rows.append({"eps": float(e), "accuracy": round(correct / len(robust), 6) if len(robust) else 0.0,
                     "correct": correct, "n": len(robust), "ci95": [round(lo, 6), round(hi, 6)],
                     "alpha": round(float(alpha), 8) if e > 0 else 0.0})
    return rows


def plot_sweep(report: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write an accuracy-vs-ε PNG of ``report['eps_sweep']`` (atomically; matplotlib Agg)."""
    # A Figure with its own Agg canvas: no pyplot, no global backend state, no display needed.
    # Deferred: matplotlib is slow to import and only --plot needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report.get("eps_sweep") or []
    if not rows:
        raise UsageError("no ε sweep in this report; run with --eps-sweep 0,2/255,4/255,8/255")
    eps = [r["eps"] for r in rows]
    acc = [100 * r["accuracy"] for r in rows]
    lo = [100 * r["ci95"][0] for r in rows]
    hi = [100 * r["ci95"][1] for r in rows]
    on_255 = all(abs(e * 255 - round(e * 255)) < 1e-6 for e in eps)  # 0, 2/255, 8/255, ...
    xs = [e * 255 for e in eps] if on_255 else eps
    fig = Figure(figsize=(5.5, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(xs, lo, hi, alpha=0.2, label="95% Wilson interval")
    ax.plot(xs, acc, marker="o", label=report.get("eps_sweep_attack", "attack"))
    budget = report.get("eps")
    if budget:
        bx = budget * 255 if on_255 else budget
        ax.axvline(bx, color="grey", linestyle="--", linewidth=1, label=f"budget ε={budget:.4g}")
    ax.set_xlabel("ε (×1/255)" if on_255 else "ε ([0,1] scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{report.get('dataset', '')} robust accuracy vs ε (n={rows[0]['n']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
