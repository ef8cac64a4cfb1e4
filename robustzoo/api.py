"""Python API behind the command line: load and evaluate by run directory or Hub name."""

from __future__ import annotations

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
    if hub is not None and (text.startswith("hf-hub:") or "/" in text.strip("/") and not p.exists()
                            or _is_zoo_alias(text)):
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


def evaluate(name: str | Path, attacks: list[str] | str = ("clean", "pgd20"), *, n: int | None = None,
             eps: float | None = None, seed: int = 0, batch_size: int = 256, device: str = "auto",
             data_dir: str | None = None, show_progress: bool = False, write: bool = True,
             revision: str | None = None, endpoint: str | None = None, cache_dir: str | None = None
             ) -> dict[str, Any]:
    """Evaluate a model on its dataset's test set under ``attacks``.

    Returns the eval.json dictionary; with ``write`` and a local run directory it is also
    merged into RUN_DIR/eval.json (results of the same attack, ε, n and seed are replaced).
    """
    from .data import load_splits
    from .evaluate import evaluate_model
    from .plugins import registry
    from .train import resolve_device

    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    if not attacks:
        raise UsageError("no attacks given; e.g. --attacks clean,pgd20")
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
    report = evaluate_model(model, splits.test, list(attacks), eps=eps, alpha=spec.eval_alpha,
                            num_classes=spec.num_classes, n=n, seed=seed, batch_size=batch_size,
                            device=dev, show_progress=show_progress)
    report.update(dataset=spec.name, split="test", checkpoint=runs.MODEL_FILE)
    if write and Path(name).is_dir():
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
            report = merged
    runs.write_json(path, report)
    return report


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    """Names in a registry ('datasets', 'architectures', 'attacks', 'objectives', 'recipes', 'zoo')."""
    from .plugins import registry

    return registry(kind).list(pattern)
