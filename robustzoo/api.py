"""Python API behind the command line: train, load and evaluate by run directory or Hub name.

Quiet unless asked: ``show_progress=True`` draws rich progress bars on stderr (as the command
line does), ``progress=`` sends the events to an object of your own
(:class:`robustzoo.progress.Progress`); with neither nothing is printed.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import distributed, files, hub, runs
from .config import TrainConfig
from .data import load_test
from .devices import resolve_device
from .errors import NotFoundError, UsageError, did_you_mean
from .eval import (
    FLAGS_FILE,
    Shard,
    evaluate_model,
    mark_precision,
    model_fingerprint,
    parse_attack_options,
    parse_eps_list,
    plot_sweep,
    resolve_suite,
    write_record,
)
from .fast import (
    DRIFT_TOLERANCE,
    eval_model,
    eval_precision,
    precision_scope,
    read_precision_check,
    write_precision_check,
)
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
            if out is not None and not str(out).strip():
                raise UsageError("out='' is empty; give the run directory, or leave out= out for "
                                 "runs/<objective>-<dataset>-<time>")
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
    text = str(name)
    if not text.strip():
        raise UsageError("the model name is empty (an unset shell variable?); give a run directory, a zoo "
                         "alias or hf-hub:org/name")
    p = Path(name)
    if p.is_dir():
        return p
    if text.startswith("hf-hub:") or _is_zoo_alias(text):
        return hub.pull(text, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    # Local paths first: a name whose first part exists here (runs/at-digitz-...), or that is
    # shaped like a path, is a run directory with a typo, never a Hub repo. Only 'org/name'
    # (one slash, no leading '/' or '.') with no local 'org' goes to the Hub.
    hub_like = re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", text) is not None
    if hub_like and not p.exists() and not Path(p.parts[0]).exists():
        return hub.pull(text, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    zoo = did_you_mean(text, registry("zoo").list()) if "/" not in text else ""
    raise NotFoundError(runs.missing_run_dir(name, hint=(
        f"a run directory is what `robustzoo train --out DIR` writes; a Hub model is hf-hub:org/name; zoo "
        f"aliases: `robustzoo list zoo`{zoo}")))


def _is_zoo_alias(name: str) -> bool:
    return name in registry("zoo")


def load(name: str | Path, *, device: str | torch.device = "cpu", revision: str | None = None,
         endpoint: str | None = None, cache_dir: str | None = None, with_config: bool = False
         ) -> nn.Module | tuple[nn.Module, dict[str, Any]]:
    """Load a model (eval mode, takes [0,1] images) from a run directory, zoo alias or hf-hub id."""
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    model, cfg = runs.load_run(run_dir, device=device)
    return (model, cfg) if with_config else model


def _one_writer(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Hold the run directory's lock (files.run_lock) while an evaluation of a local run that
    writes its record runs: a training or another evaluation of the same run is refused."""
    @functools.wraps(fn)
    def wrapper(name: str | Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Under torchrun only rank 0 writes (the other ranks compute their share): it alone locks.
        writer = distributed.env_info().rank == 0 or not kwargs.get("shard", True)
        if writer and kwargs.get("write", True) and str(name).strip() and Path(name).is_dir():
            with files.run_lock(name, "eval"):
                return fn(name, *args, **kwargs)
        return fn(name, *args, **kwargs)

    return wrapper


@_one_writer
def evaluate(name: str | Path, attacks: list[str] | str | None = None, *, n: int | None = None,
             eps: float | None = None, seed: int = 0, batch_size: int | None = None, device: str = "auto",
             data_dir: str | None = None, show_progress: bool = False,
             progress: Progress | None = None, write: bool = True,
             revision: str | None = None, endpoint: str | None = None, cache_dir: str | None = None,
             suite: str | None = None, cascade: bool = False, options: dict[str, Any] | None = None,
             eps_sweep: list[float] | str | None = None, sweep_attack: str | None = None,
             plot: str | Path | None = None, health: bool = True, resume: bool = True,
             precision: str = "auto", allow_custom: bool = False, shard: bool = True,
             dataset: str | None = None) -> dict[str, Any]:
    """Evaluate a model on its dataset's test set under ``attacks`` (or a named ``suite``).

    Returns the eval.json dictionary; with ``write`` and a local run directory it is also
    kept in the run's history ``RUN_DIR/evals/`` (one report per protocol key; nothing else is
    replaced), ``RUN_DIR/eval.json`` is rewritten with the canonical record (the strongest
    eligible protocol evaluated, :mod:`robustzoo.eval` ``write_record``), and
    ``report["record"]`` says which record was written and which is canonical. The per-example
    outcomes go to RUN_DIR/eval_flags.safetensors, from which a later
    call with ``resume`` reuses every attack already done on the same examples. See
    :func:`robustzoo.eval.evaluate_model` for ``cascade``, ``options``, ``health`` and
    ``eps_sweep``; ``plot`` writes the accuracy-vs-ε PNG there. ``precision``: 'auto' and
    'fp32' evaluate in exact fp32 on every device (TF32 off on CUDA); 'bf16' only after a
    precision check of these weights covers every attack (:func:`check_precision`), and the
    report then records the measured drift (:func:`robustzoo.fast.eval_precision`).
    ``allow_custom``: attack options that depart from an attack's standard settings make a
    custom protocol, kept in the history but never the canonical record unless this is set
    (docs/evaluation.md). Only the test split is loaded. ``show_progress`` and ``progress``:
    see the module docstring.

    Under ``torchrun`` (WORLD_SIZE > 1) the evaluation is sharded (``robustzoo.eval.Shard``):
    every process calls ``evaluate`` with the same arguments and runs a share of every
    attack's batches; rank 0 alone reports progress and writes the record, the flags and the
    plot, and every rank returns the numbers one process would (docs/evaluation.md,
    "Distributed evaluation"). ``shard=False`` evaluates in this process alone. ``dataset`` names the test set of a model
    that records none (a timm export of a fine-tune: :func:`robustzoo.runs.export_config`); its ε
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
    if batch_size is not None and batch_size < 1:  # None: 256, or CUDA_EVAL_BATCH on CUDA
        raise UsageError(f"batch size {batch_size} must be at least 1")
    if eps is not None:
        _check_eval_eps(eps)
    seed = _check_eval_seed(seed)
    reg = registry("attacks")
    for a in attacks:
        reg.get(a)
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    dev = resolve_device(device)
    # Under torchrun: join its process group (one GPU per process on CUDA).
    info, dev = distributed.setup(dev) if shard else (distributed.DistInfo(), dev)
    if not info.is_main:  # the other ranks compute their share silently and write nothing
        show_progress, progress, plot, write = False, None, None, False
    shard_ = Shard.join(info) if info.enabled else None
    model, cfg = runs.load_run(run_dir, device=dev)
    rz = cfg.get("robustzoo") or {}
    spec = _test_set(str(name), cfg, dataset)
    eps = float(rz["threat_model"]["eps"] if rz else spec.eps) if eps is None else float(eps)
    _check_eval_eps(eps)
    local = write and Path(name).is_dir() and bool(rz)  # records go into robustzoo runs only
    # Published numbers are exact fp32 unless a precision check of these weights allows bf16.
    check = read_precision_check(run_dir, lambda: model_fingerprint(model)) if precision == "bf16" else None
    prec, drift = eval_precision(precision, dev, check, attacks=attacks)
    test = load_test(spec, data_dir=data_dir or rz.get("config", {}).get("data_dir"))
    if local and not resume:
        (run_dir / FLAGS_FILE).unlink(missing_ok=True)  # start afresh; the new outcomes are saved
    with precision_scope(dev, prec), _reporting(show_progress, progress) as rep:
        report = evaluate_model(eval_model(model, dev, prec), test, list(attacks), eps=eps,
                                alpha=spec.eval_alpha, num_classes=spec.num_classes, n=n, seed=seed,
                                batch_size=batch_size, device=dev, progress=rep,
                                cascade=cascade, flags_path=run_dir / FLAGS_FILE if local else None,
                                options=options, health=health, eps_sweep=sweep,
                                sweep_attack=sweep_attack, test_size=spec.test_size, shard=shard_)
        aa = report.get("autoattack_version")
        if rep is not None and aa and aa["version"] != "standard":
            rep.note(f"AutoAttack ran its {aa['version']} version ({aa['reason']}); the record says so")
    report.update(dataset=spec.name, split="test", checkpoint=runs.MODEL_FILE, precision=prec)
    mark_precision(report, prec, drift)
    if allow_custom and not report.get("standard", True):
        report["allow_custom"] = True
    if suite:
        report["suite"] = suite
    if plot is not None:
        plot_sweep(report, plot, title=f"{Path(str(name)).name}: accuracy vs ε ({report['eps_sweep_attack']}, "
                                       f"n={report['n']})")
        report["plot"] = str(plot)
    if local:
        write_record(run_dir, report, source="eval", test_size=len(test))
    if shard_ is not None:
        shard_.finish()
    distributed.teardown(info)
    return report


def _check_eval_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
        why = ("at ε = 0 every attack is a no-op; use --attacks clean for clean accuracy"
               if isinstance(eps, (int, float)) and eps == 0 else
               "ε is a distance on that scale: below 0 means nothing, above 1 allows every image"
               if isinstance(eps, (int, float)) and math.isfinite(eps) else "ε must be a finite number")
        raise UsageError(f"--eps {eps} must be in (0, 1] on the [0,1] pixel scale (8/255 = 0.0314): {why}")


def _check_eval_seed(seed: int) -> int:
    """The sample seed of an evaluation, by train's rule (an integer in 0..2³²−1): it names the
    record file, and a record its own reader refuses would block every later use of the run."""
    from .config import SCHEMA

    return SCHEMA["seed"].check("seed", seed)


def check_precision(name: str | Path, attacks: list[str] | str | None = None, *, n: int | None = 1000,
                    seed: int = 0, batch_size: int | None = None, device: str = "auto",
                    data_dir: str | None = None, tolerance: float = DRIFT_TOLERANCE, record: bool = True,
                    low: str = "bf16", show_progress: bool = False, progress: Progress | None = None,
                    revision: str | None = None, endpoint: str | None = None,
                    cache_dir: str | None = None) -> dict[str, Any]:
    """Evaluate a model in exact fp32 and in bf16 on the same examples; report each attack's drift.

    The check that ``evaluate(..., precision='bf16')`` needs, saved as
    ``RUN_DIR/precision_check.json`` (with ``record`` and a run directory) with the model's
    fingerprint, so it applies to these weights only. The drift is paired: every example's
    outcome is kept in both precisions; ``only_fp32`` examples are correct (robust) in fp32
    only, ``only_bf16`` in bf16 only, and drift = (only_bf16 − only_fp32) / n, in points.
    ``resolution_points`` is 100 / n, the smallest drift n examples can show. ``ok`` is True
    when every drift is within ``tolerance`` and n resolves the tolerance, False when a drift
    exceeds it, None when n is too small to tell (``resolved`` False; bf16 is then refused).
    ``low='fp32'`` compares fp32 with itself (every drift must be 0) and records nothing.
    """
    import tempfile  # deferred: only the check keeps its flags in a temporary folder

    if low not in ("bf16", "fp32"):
        raise UsageError(f"low precision {low!r}: use bf16 (or fp32 for a sanity check)")
    seed = _check_eval_seed(seed)
    names = [a.strip() for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(
        attacks if attacks is not None else ["clean", "pgd20"])
    if not names:
        raise UsageError("no attacks to check; e.g. --attacks clean,pgd20")
    for a in names:
        registry("attacks").get(a)
    run_dir = resolve_model_dir(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir)
    dev = resolve_device(device)
    model, cfg = runs.load_run(run_dir, device=dev)
    rz = cfg["robustzoo"]
    spec = registry("datasets").get(rz["dataset"])
    test = load_test(spec, data_dir=data_dir or rz.get("config", {}).get("data_dir"))
    reports, flags = {}, {}
    with tempfile.TemporaryDirectory() as tmp, _reporting(show_progress, progress) as rep:
        for prec in ("fp32", low):
            path = Path(tmp) / f"{prec}.safetensors"
            with precision_scope(dev, prec):
                reports[prec] = evaluate_model(
                    eval_model(model, dev, prec), test, names, eps=float(rz["threat_model"]["eps"]),
                    alpha=spec.eval_alpha, num_classes=spec.num_classes, n=n, seed=seed, batch_size=batch_size,
                    device=dev, progress=rep, flags_path=path, health=False, test_size=spec.test_size)
            flags[prec] = runs.read_weights(path)[0]
    ref, other = reports["fp32"], reports[low]
    count = int(ref["n"])
    rows = []
    for a, b in zip(ref["results"], other["results"]):
        row = {"attack": a["attack"], "fp32": a["accuracy"], low: b["accuracy"],
               "drift_points": round(100 * (b["accuracy"] - a["accuracy"]), 4), "n": a["n"]}
        key = f"flags::{a['attack']}"
        if key in flags["fp32"] and key in flags[low]:  # composite attacks keep per-component flags only
            f32, flo = flags["fp32"][key].bool(), flags[low][key].bool()
            row["only_fp32"], row[f"only_{low}"] = int((f32 & ~flo).sum()), int((flo & ~f32).sum())
            row["flipped"] = row["only_fp32"] + row[f"only_{low}"]
        rows.append(row)
    worst = max((abs(r["drift_points"]) for r in rows), default=0.0)
    resolution = 100.0 / max(count, 1)
    resolved = resolution <= tolerance + 1e-12
    out = {"model": str(name), "model_fingerprint": model_fingerprint(model), "device": str(dev),
           "n": count, "precisions": ["fp32", low], "tolerance_points": tolerance,
           "resolution_points": resolution, "resolved": resolved, "max_abs_drift_points": worst,
           "ok": False if worst > tolerance else (True if resolved else None), "results": rows}
    if not resolved and worst <= tolerance:
        out["unresolved"] = (f"{count} examples resolve {resolution:.3g} points, coarser than the "
                             f"{tolerance:g}-point tolerance: a drift of {worst:g} says only that it is "
                             f"below {resolution:.3g} points")
    if record and low == "bf16" and Path(name).is_dir():
        out["recorded"] = str(write_precision_check(run_dir, out))
    return out


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
