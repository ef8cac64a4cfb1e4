"""Python API behind the command line: train, load and evaluate by run directory or Hub name.

Quiet unless asked: ``show_progress=True`` draws rich progress bars on stderr (as the command
line does), ``progress=`` sends the events to an object of your own
(:class:`robustzoo.progress.Progress`); with neither nothing is printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import files, hub, runs
from .config import TrainConfig
from .data import load_splits
from .devices import resolve_device
from .errors import NotFoundError, UsageError
from .eval import (
    FLAGS_FILE,
    evaluate_model,
    model_fingerprint,
    parse_attack_options,
    parse_eps_list,
    plot_sweep,
    resolve_suite,
    write_record,
)
from .fast import eval_model, eval_precision, precision_scope, read_precision_check
from .plugins import registry
from .progress import Progress
from .train import Trainer, build_config, config_from_run, default_out_dir


def _check_reporting(show_progress: bool, progress: Progress | None) -> None:
    if show_progress and progress is not None:
        raise UsageError("give show_progress=True (rich bars) or progress=... (your own), not both")


@contextmanager
def _reporting(show_progress: bool, progress: Progress | None) -> Iterator[Progress | None]:
    """The progress object a call reports to: the caller's, rich bars, or none."""
    _check_reporting(show_progress, progress)
    if progress is not None:
        yield progress
    elif show_progress:
        from .ui import RichProgress  # deferred: rich is imported only when bars are asked for

        with RichProgress() as bars:
            yield bars
    else:
        yield None


def train(objective: str | None = None, *, dataset: str | None = None, out: str | Path | None = None,
          recipe: str | None = None, resume: str | Path | None = None, show_progress: bool = False,
          progress: Progress | None = None, **settings: Any) -> tuple[Path, dict[str, Any]]:
    """Train a run and return (run_dir, eval report).

    ``settings`` are config keys and objective settings (as ``--set``); ``show_progress`` and
    ``progress``: see the module docstring.

    Example::

        run_dir, report = robustzoo.train("at", dataset="digits", epochs=5, out="runs/demo")
    """
    with _reporting(show_progress, progress) as rep:
        if resume is not None:
            run_dir = Path(resume)
            cfg = config_from_run(run_dir)
            trainer = Trainer(cfg, run_dir, resume=True, progress=rep)
        else:
            fields = set(TrainConfig.__dataclass_fields__)
            options = {k: v for k, v in settings.items() if k in fields}
            sets = {k: v for k, v in settings.items() if k not in fields}
            cfg = build_config(objective, recipe, sets, dataset=dataset, **options)
            run_dir = Path(out) if out else default_out_dir(cfg)
            files.check_run_dir(run_dir, "out", create_parent=not out)  # docs/cli.md, "Output files"
            trainer = Trainer(cfg, run_dir, progress=rep)
        report = trainer.fit()
    return run_dir, report  # type: ignore[return-value]


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
    # Only 'org/name' (one slash, no leading '/' or '.') can be a Hub id; other paths are paths.
    hub_like = re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", text) is not None and not p.exists()
    if text.startswith("hf-hub:") or hub_like or _is_zoo_alias(text):
        return hub.pull(text, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    raise NotFoundError(f"{name} is neither a run directory nor a zoo alias; see `robustzoo list zoo`, "
                        f"or train one with `robustzoo train --out {name}`")


def _is_zoo_alias(name: str) -> bool:
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
             data_dir: str | None = None, show_progress: bool = False,
             progress: Progress | None = None, write: bool = True,
             revision: str | None = None, endpoint: str | None = None, cache_dir: str | None = None,
             suite: str | None = None, cascade: bool = False, options: dict[str, Any] | None = None,
             eps_sweep: list[float] | str | None = None, sweep_attack: str | None = None,
             plot: str | Path | None = None, health: bool = True, resume: bool = True,
             precision: str = "auto", dataset: str | None = None) -> dict[str, Any]:
    """Evaluate a model on its dataset's test set under ``attacks`` (or a named ``suite``).

    Returns the eval.json dictionary; with ``write`` and a local run directory it is also
    kept in the run's history ``RUN_DIR/evals/`` (one report per protocol key; nothing else is
    replaced), ``RUN_DIR/eval.json`` is rewritten with the canonical record (the strongest
    complete protocol evaluated, :mod:`robustzoo.eval` ``write_record``), and
    ``report["record"]`` says which record was written and which is canonical. The per-example
    outcomes go to RUN_DIR/eval_flags.safetensors, from which a later
    call with ``resume`` reuses every attack already done on the same examples. See
    :func:`robustzoo.eval.evaluate_model` for ``cascade``, ``options``, ``health`` and
    ``eps_sweep``; ``plot`` writes the accuracy-vs-ε PNG there. ``precision``: 'auto' (bf16
    autocast on CUDA, fp32 elsewhere; fp32 when the run's saved precision check found bf16
    more than 0.1 points off, which the report records under ``precision_fallback``), 'bf16',
    or 'fp32' (exact: TF32 off on CUDA); see :mod:`robustzoo.fast`. ``show_progress`` and
    ``progress``: see the module docstring. ``dataset`` names the test set of a model that
    records none (a timm export of a fine-tune: :func:`robustzoo.runs.export_config`); its ε
    then defaults to the dataset's.
    """
    _check_reporting(show_progress, progress)  # before a model is pulled or loaded
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
    if plot is not None:
        files.check_output_file(plot, "--plot")  # before the attacks, not after them
    if batch_size < 1:
        raise UsageError(f"batch size {batch_size} must be at least 1")
    reg = registry("attacks")
    for a in attacks:
        reg.get(a)
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    dev = resolve_device(device)
    model, cfg = runs.load_run(run_dir, device=dev)
    rz = cfg.get("robustzoo") or {}
    spec = _test_set(str(name), cfg, dataset)
    eps = float(rz["threat_model"]["eps"] if rz else spec.eps) if eps is None else float(eps)
    if not 0 <= eps <= 1:
        raise UsageError(f"epsilon {eps} is outside [0, 1]; it is on the [0,1] pixel scale")
    seed_split = int(rz.get("config", {}).get("seed", 0))
    splits = load_splits(spec, data_dir=data_dir or rz.get("config", {}).get("data_dir"), seed=seed_split)
    local = write and Path(name).is_dir() and bool(rz)  # records go into robustzoo runs only
    if local and not resume:
        (run_dir / FLAGS_FILE).unlink(missing_ok=True)  # start afresh; the new outcomes are saved
    # 'auto' falls back to fp32 where the run's bf16 check drifted too far (docs/performance.md)
    check = read_precision_check(run_dir, lambda: model_fingerprint(model))
    prec, fallback = eval_precision(precision, dev, check)
    with precision_scope(dev, prec), _reporting(show_progress, progress) as rep:
        if fallback and rep is not None:
            rep.note(fallback)
        report = evaluate_model(eval_model(model, dev, prec), splits.test, list(attacks), eps=eps,
                                alpha=spec.eval_alpha, num_classes=spec.num_classes, n=n, seed=seed,
                                batch_size=batch_size, device=dev, progress=rep,
                                cascade=cascade, flags_path=run_dir / FLAGS_FILE if local else None,
                                options=options, health=health, eps_sweep=sweep,
                                sweep_attack=sweep_attack)
    report.update(dataset=spec.name, split="test", checkpoint=runs.MODEL_FILE, precision=prec)
    if fallback:
        report["precision_fallback"] = {"reason": fallback, "max_abs_drift_points": check["max_abs_drift_points"]}
    if suite:
        report["suite"] = suite
    if plot is not None:
        plot_sweep(report, plot, title=f"{Path(str(name)).name}: accuracy vs ε ({report['eps_sweep_attack']}, "
                                       f"n={report['n']})")
        report["plot"] = str(plot)
    if local:
        write_record(run_dir, report, source="eval", test_size=len(splits.test))
    return report


def _test_set(name: str, cfg: dict[str, Any], dataset: str | None) -> Any:
    """The dataset a model is evaluated on: its run's, or ``dataset`` for a timm export."""
    recorded = (cfg.get("robustzoo") or {}).get("dataset")
    if recorded and dataset and dataset != recorded:
        raise UsageError(f"{name} was trained on {recorded}; --dataset {dataset} is for models that record "
                         f"no dataset (timm exports)")
    if not (recorded or dataset):
        raise UsageError(f"{name} is a timm export that records no dataset (a fine-tune's classes are its "
                         f"own); name its test set: --dataset NAME (see `robustzoo list datasets`)")
    spec = registry("datasets").get(recorded or dataset)
    c, size = cfg["model_args"].get("in_chans", 3), list(cfg["model_args"].get("input_size", []))
    if (int(cfg["num_classes"]), int(c), size) != (spec.num_classes, spec.shape[0], list(spec.shape[1:])):
        raise UsageError(f"{name} takes {c}x{'x'.join(map(str, size))} images into {cfg['num_classes']} "
                         f"classes; {spec.name} has {'x'.join(map(str, spec.shape))} images in "
                         f"{spec.num_classes}: pick its dataset with --dataset")
    return spec


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    """Names in a registry ('datasets', 'architectures', 'attacks', 'objectives', 'recipes', 'zoo')."""
    return registry(kind).list(pattern)
