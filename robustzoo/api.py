"""Python API behind the command line: load and evaluate by run directory or Hub name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import runs
from .errors import NotFoundError, UsageError


def resolve_model_dir(name: str | Path, *, revision: str | None = None, endpoint: str | None = None,
                      cache_dir: str | None = None) -> Path:
    """A local directory with config.json and model.safetensors for ``name``.

    ``name`` is a run directory, a zoo alias (``cat-cw-wrn34``), ``hf-hub:org/name[@rev]`` or
    ``org/name``; the last three are pulled (and hash-checked) by :mod:`robustzoo.hub`.
    """
    p = Path(name)
    if p.is_dir():
        return p
    text = str(name)
    try:
        from . import hub
    except ImportError:  # pragma: no cover - hub is part of the package
        hub = None
    # Only 'org/name' (one slash, no leading '/' or '.') can be a Hub id; other paths are paths.
    hub_like = re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", text) is not None and not p.exists()
    if hub is not None and (text.startswith("hf-hub:") or hub_like or _is_zoo_alias(text)):
        return hub.pull(text, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    raise NotFoundError(f"{name} is neither a run directory nor a zoo alias; see `robustzoo list zoo`, "
                        f"or train one with `robustzoo train --out {name}`")


def _is_zoo_alias(name: str) -> bool:
    from .plugins import registry

    return name in registry("zoo")


def load(name: str | Path, *, device: str | torch.device = "cpu", revision: str | None = None,
         endpoint: str | None = None, cache_dir: str | None = None, with_config: bool = False
         ) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """Load a model (eval mode, takes [0,1] images) from a run directory, zoo alias or hf-hub id."""
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    model, cfg = runs.load_run(run_dir, device=device)
    return (model, cfg) if with_config else model


def evaluate(name: str | Path, attacks: list[str] | str | None = None, *, n: int | None = None,
             eps: float | None = None, seed: int = 0, batch_size: int = 256, device: str = "auto",
             data_dir: str | None = None, show_progress: bool = False, write: bool = True,
             revision: str | None = None, endpoint: str | None = None, cache_dir: str | None = None,
             suite: str | None = None, cascade: bool = False, options: dict[str, Any] | None = None,
             eps_sweep: list[float] | str | None = None, sweep_attack: str | None = None,
             plot: str | Path | None = None, health: bool = True, resume: bool = True,
             precision: str = "auto") -> dict[str, Any]:
    """Evaluate a model on its dataset's test set under ``attacks`` (or a named ``suite``).

    Returns the eval.json dictionary; with ``write`` and a local run directory it is also
    merged into RUN_DIR/eval.json (results of the same attack, ε, n and seed are replaced)
    and the per-example outcomes go to RUN_DIR/eval_flags.safetensors, from which a later
    call with ``resume`` reuses every attack already done on the same examples. See
    :func:`robustzoo.evaluate.evaluate_model` for ``cascade``, ``options``, ``health`` and
    ``eps_sweep``; ``plot`` writes the accuracy-vs-ε PNG there. ``precision``: 'auto' (bf16
    autocast on CUDA, fp32 elsewhere), 'bf16', or 'fp32' (exact: TF32 off on CUDA); see
    :mod:`robustzoo.fast`.
    """
    from .data import load_splits
    from .evaluate import evaluate_model, parse_attack_options
    from .flagstore import FLAGS_FILE
    from .plugins import registry
    from .suites import parse_eps_list
    from .suites import resolve as resolve_suite
    from .train import resolve_device

    if sweep_attack is None and eps_sweep is not None:
        # The sweep uses the first non-clean attack the caller named, else PGD-20.
        named = [a.strip() for a in attacks.split(",")] if isinstance(attacks, str) else list(attacks or [])
        sweep_attack = next((a for a in named if a and a != "clean"), "pgd20")
    attacks, n = resolve_suite(suite, attacks, n)
    options = parse_attack_options(options or {})
    if not attacks:
        raise UsageError("no attacks given; e.g. --attacks clean,pgd20")
    sweep = parse_eps_list(eps_sweep) if eps_sweep is not None else None
    if plot is not None and not sweep:
        raise UsageError("--plot draws the ε sweep; add --eps-sweep 0,2/255,4/255,8/255")
    reg = registry("attacks")
    for a in attacks:
        reg.get(a)
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    dev = resolve_device(device)
    model, cfg = runs.load_run(run_dir, device=dev)
    rz = cfg["robustzoo"]
    spec = registry("datasets").get(rz["dataset"])
    eps = float(rz["threat_model"]["eps"]) if eps is None else float(eps)
    if not 0 <= eps <= 1:
        raise UsageError(f"epsilon {eps} is outside [0, 1]; it is on the [0,1] pixel scale")
    seed_split = int(rz.get("config", {}).get("seed", 0))
    splits = load_splits(spec, data_dir=data_dir or rz.get("config", {}).get("data_dir"), seed=seed_split)
    local = write and Path(name).is_dir()
    if local and not resume:
        (run_dir / FLAGS_FILE).unlink(missing_ok=True)  # start afresh; the new outcomes are saved
    from .fast import eval_model, precision_scope, resolve_precision

    prec = resolve_precision(precision, dev)
    with precision_scope(dev, prec):
        report = evaluate_model(eval_model(model, dev, prec), splits.test, list(attacks), eps=eps,
                                alpha=spec.eval_alpha, num_classes=spec.num_classes, n=n, seed=seed,
                                batch_size=batch_size, device=dev, show_progress=show_progress,
                                cascade=cascade, flags_path=run_dir / FLAGS_FILE if local else None,
                                options=options, health=health, eps_sweep=sweep,
                                sweep_attack=sweep_attack)
    report.update(dataset=spec.name, split="test", checkpoint=runs.MODEL_FILE, precision=prec)
    if suite:
        report["suite"] = suite
    if plot is not None:
        from .sweep import plot_sweep

        plot_sweep(report, plot, title=f"{Path(str(name)).name}: accuracy vs ε ({report['eps_sweep_attack']}, "
                                       f"n={report['n']})")
        report["plot"] = str(plot)
    if local:
        merge_eval(run_dir / runs.EVAL_FILE, report)
    return report


def merge_eval(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Merge ``report`` into an existing eval.json with the same ε, n and seed, else replace it."""
    import json

    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if old and all(old.get(k) == report.get(k) for k in ("eps", "n", "seed")):
            mine = {r["attack"] for r in report["results"]}
            kept = [r for r in old.get("results", []) if r["attack"] not in mine]
            merged = dict(old)
            merged.update({k: v for k, v in report.items() if k != "results"})
            merged["results"] = kept + report["results"]
            if "worst_case" in old and "worst_case" in report:
                merged["worst_case"] = report["worst_case"] if len(report["worst_case"]["attacks"]) >= len(
                    old["worst_case"]["attacks"]) else old["worst_case"]
            if kept and "health" in report:
                from .health import apply as apply_health

                # The kept rows come from an earlier call: re-check all rows together
                # (accuracies only: per-example flags of both calls are not at hand here).
                apply_health(merged, probes=report["health"].get("probes"))
            report = merged
    runs.write_json(path, report)
    return report


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    """Names in a registry ('datasets', 'architectures', 'attacks', 'objectives', 'recipes', 'zoo')."""
    from .plugins import registry

    return registry(kind).list(pattern)
