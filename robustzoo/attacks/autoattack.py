"""Attacks from the authors' AutoAttack package (``pyautoattack`` on PyPI, ``import pyautoattack``).

Each wrapper builds the package's own ``AutoAttack`` object with the *standard* settings and
runs one of its sub-attacks exactly as ``AutoAttack.run_standard_evaluation`` does (same
objects, same seeding, same per-attack switches), so a number from here is the number the
authors' code gives on the same examples. What we change, and why:

* ``verbose`` is off and the package's ``auto-attack`` logger is captured (see
  :func:`capture_notes`), so nothing is printed; its warnings (e.g. "points with zero
  gradient") are kept as notes on the result instead.
* APGD-T / FAB-T use ``min(9, num_classes - 1)`` target classes: 9 is the standard setting,
  and with fewer than 10 classes there are only ``num_classes - 1`` other classes to target.
* The Square budget can be lowered with the option ``square_queries`` (default 5,000, the
  standard one); it is shown in the results table.
* The version: ``standard`` (APGD-CE, APGD-T, FAB-T, Square) or, for a randomised model,
  the authors' ``rand`` version (APGD-CE and APGD-DLR, each with Expectation over
  Transformation over 20 gradient samples). The evaluation chooses it from its randomness
  check (option ``aa_version``: auto, standard, rand) — the package's own
  ``check_randomized`` only warns and advises ``version='rand'``.
* ``eot_iter`` (option; default 1) averages the APGD gradient over that many forward passes,
  as the ``rand`` version does with 20.

The model is in eval mode and maps [0,1] images to logits, which is what the package expects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..errors import UsageError
from .core import AttackContext, AttackSpec

#: The components of standard AutoAttack, in the order the authors run them.
STANDARD_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
#: The authors' version for randomised defences: APGD-CE and APGD-DLR with EoT.
RAND_COMPONENTS = ("apgd-ce", "apgd-dlr")
RAND_EOT_ITER = 20
AA_VERSIONS = ("standard", "rand")
#: Square Attack of the standard version: 5,000 queries, p_init 0.8, one restart.
SQUARE_QUERIES = 5000
SQUARE_P_INIT = 0.8
#: APGD iterations and restarts of the standard version.
APGD_ITERATIONS = 100
FAB_ITERATIONS = 100
LOGGER_NAME = "auto-attack"
NORMS = {"linf": "Linf", "l2": "L2"}
# Fewest classes each loss works with: DLR divides by z_(1) - z_(3), targeted DLR uses z_(4).
MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4, "fab-t": 2, "apgd-ce": 2, "square": 2}


def n_targets(num_classes: int) -> int:
    """Target classes for APGD-T / FAB-T: the standard 9, or every other class when fewer."""
    return max(1, min(9, num_classes - 1))


def square_queries(ctx: AttackContext) -> int:
    """Square's query budget from ``ctx.options['square_queries']`` (default 5,000)."""
    q = int(ctx.options.get("square_queries", SQUARE_QUERIES))
    if q < 1:
        raise UsageError(f"square_queries must be at least 1, got {q}")
    return q


def make_adversary(model: nn.Module, ctx: AttackContext, device: torch.device | str) -> Any:
    """The package's ``AutoAttack`` object with the standard settings for ``ctx``."""
    try:
        from pyautoattack import AutoAttack  # deferred: only the AutoAttack attacks need it
    except ImportError:  # pragma: no cover - a declared dependency
        raise UsageError("the AutoAttack attacks need the 'pyautoattack' package: "
                         "pip install pyautoattack") from None
    if ctx.norm not in NORMS:
        raise UsageError(f"AutoAttack supports the linf and l2 threat models, not {ctx.norm!r}")
    aa = AutoAttack(model, eps=float(ctx.eps), norm=NORMS[ctx.norm], seed=int(ctx.seed),
                    version="standard", device=device)
    aa.verbose = False
    k = n_targets(ctx.num_classes)
    aa.apgd_targeted.n_target_classes = k
    aa.fab.n_target_classes = k
    aa.square.n_queries = square_queries(ctx)
    aa.square.p_init = SQUARE_P_INIT
    aa.apgd.n_restarts = int(ctx.options.get("apgd_restarts", 1))
    aa.apgd.eot_iter = aa.apgd_targeted.eot_iter = eot_iter(ctx)
    return aa


def eot_iter(ctx: AttackContext) -> int:
    """Gradient samples APGD averages per step (``ctx.options['eot_iter']``, default 1)."""
    k = int(ctx.options.get("eot_iter", 1))
    if k < 1:
        raise UsageError(f"eot_iter must be at least 1, got {k}")
    return k


def aa_version(ctx: AttackContext) -> str:
    """The AutoAttack version ``ctx`` asks for ('standard' unless the evaluation chose 'rand')."""
    v = str(ctx.options.get("aa_version", "standard"))
    return "standard" if v == "auto" else v


def run_component(aa: Any, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Run one sub-attack of ``aa`` on (x, y) as ``run_standard_evaluation`` dispatches it."""
    if name == "apgd-ce":
        aa.apgd.loss = "ce"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if name == "apgd-dlr":
        aa.apgd.loss = "dlr"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if name == "apgd-t":
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if name == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if name == "square":
        aa.square.seed = aa.get_seed()
        return aa.square.perturb(x, y)
    raise ValueError(f"unknown AutoAttack component {name!r}")


class _NoteHandler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.sink and len(self.sink) < 10:
            self.sink.append(msg)


@contextmanager
def capture_notes() -> Iterator[list[str]]:
    """Silence the package's logger; yield the list its (distinct) warnings are added to."""
    notes: list[str] = []
    logger = logging.getLogger(LOGGER_NAME)
    handler = _NoteHandler(notes)
    old = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # otherwise logging's last-resort handler prints to stderr
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


def _check_classes(name: str, ctx: AttackContext) -> None:
    need = MIN_CLASSES.get(name, 2)
    if ctx.num_classes < need:
        raise UsageError(f"{name} needs at least {need} classes; this dataset has {ctx.num_classes}")


def _component_attack(name: str):
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        _check_classes(name, ctx)
        if len(y) == 0:
            return x
        aa = make_adversary(model, ctx, x.device)
        return run_component(aa, name, x, y).detach()

    return run


class AutoAttackRun:
    """AutoAttack on one batch: each component only on what is still robust.

    ``components_for(ctx)`` tells :func:`robustzoo.eval.evaluate_model` to run the
    components one by one over the whole evaluation set instead (as the authors do), so each
    component's result is saved, resumable and reported; ``component_context(ctx)`` is the
    context they run under (EoT for the ``rand`` version).
    """

    def __init__(self, components: tuple[str, ...] = STANDARD_COMPONENTS):
        self.components = components

    def components_for(self, ctx: AttackContext) -> tuple[str, ...]:
        return RAND_COMPONENTS if aa_version(ctx) == "rand" else self.components

    def component_context(self, ctx: AttackContext) -> AttackContext:
        if aa_version(ctx) == "rand":
            return replace(ctx, options=dict(ctx.options, eot_iter=RAND_EOT_ITER))
        return ctx

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        comps = self.components_for(ctx)
        for c in comps:
            _check_classes(c, ctx)
        aa = make_adversary(model, self.component_context(ctx), x.device)
        x_adv = x.clone()
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        for c in comps:
            idx = robust.nonzero().flatten()
            if len(idx) == 0:
                break
            adv = run_component(aa, c, x[idx], y[idx]).detach()
            with torch.no_grad():
                broken = model(adv).argmax(1) != y[idx]
            x_adv[idx[broken]] = adv[broken]
            robust[idx[broken]] = False
        return x_adv


def _apgd_settings(loss: str):
    def settings(ctx: AttackContext) -> dict[str, Any]:
        out = {"eps": ctx.eps, "loss": loss, "iterations": APGD_ITERATIONS,
               "restarts": int(ctx.options.get("apgd_restarts", 1))}
        if eot_iter(ctx) > 1:  # named only when used: standard settings (and saved outcomes) stay as they were
            out["eot_iter"] = eot_iter(ctx)
        return out
    return settings


def _square_settings(ctx: AttackContext) -> dict[str, Any]:
    return {"eps": ctx.eps, "queries": square_queries(ctx), "p_init": SQUARE_P_INIT, "restarts": 1}


def _aa_settings(ctx: AttackContext) -> dict[str, Any]:
    if aa_version(ctx) == "rand":
        return {"eps": ctx.eps, "version": "rand", "components": "+".join(RAND_COMPONENTS),
                "eot_iter": RAND_EOT_ITER}
    return {"eps": ctx.eps, "version": "standard", "components": "+".join(STANDARD_COMPONENTS),
            "targets": n_targets(ctx.num_classes), "square_queries": square_queries(ctx)}


def register_autoattack(register: Any) -> None:
    """Register apgd-ce, apgd-dlr, apgd-t, fab-t, square and autoattack (standard)."""
    register(AttackSpec("apgd-ce", _component_attack("apgd-ce"),
                        "APGD on CE, 100 iterations, 1 restart (AutoAttack's first attack)",
                        settings=_apgd_settings("ce")))
    register(AttackSpec("apgd-dlr", _component_attack("apgd-dlr"),
                        "APGD on the scale-invariant DLR loss, 100 iterations, 1 restart",
                        settings=_apgd_settings("dlr")))
    register(AttackSpec("apgd-t", _component_attack("apgd-t"),
                        "targeted APGD on the DLR loss, 100 iterations, min(9, C-1) target classes",
                        settings=lambda c: {"eps": c.eps, "iterations": APGD_ITERATIONS,
                                            "targets": n_targets(c.num_classes),
                                            **({"eot_iter": eot_iter(c)} if eot_iter(c) > 1 else {})}))
    register(AttackSpec("fab-t", _component_attack("fab-t"),
                        "targeted FAB (minimum-norm), 100 iterations, min(9, C-1) target classes",
                        settings=lambda c: {"eps": c.eps, "iterations": FAB_ITERATIONS,
                                            "targets": n_targets(c.num_classes)}))
    register(AttackSpec("square", _component_attack("square"),
                        "Square Attack: score-based black box, 5,000 queries, p_init 0.8",
                        settings=_square_settings, kind="black-box"))
    register(AttackSpec("autoattack", AutoAttackRun(),
                        "AutoAttack: standard (APGD-CE, APGD-T, FAB-T, Square-5000), or rand (APGD-CE, "
                        "APGD-DLR with EoT-20) for a randomised model; worst case per image",
                        settings=_aa_settings, kind="ensemble"))
