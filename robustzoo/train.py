"""The training loop. Reads top to bottom: resolve settings, load data, build model and
objective, then per epoch: train, validate, checkpoint (atomically), log a JSON line.

``--resume`` restarts from the last resume state written (after every epoch by default;
``resume_every`` / ``resume_every_minutes`` write it less often); each epoch re-seeds its
random streams from (seed, epoch), so an interrupted and resumed run ends with the same
weights as an uninterrupted one. Checkpoints are written from CPU copies in a background
thread while the next epoch trains.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed, files, runs
from ._version import __version__
from .attacks import pgd
from .config import TrainConfig, apply_sets, check_config
from .data import DatasetSpec, Splits, load_splits
from .devices import resolve_device
from .errors import (
    NotFoundError,
    RobustzooError,
    RunError,
    SettingWarning,
    UsageError,
    first_sentence,
)
from .eval import evaluate_model, mark_precision, migrate, model_fingerprint, write_record
from .fast import FastPath, check_compile_mode, eval_model, precision_scope, resolve_precision
from .models import build_model, check_input_size
from .objectives import Objective, ObjectiveContext
from .plugins import registry
from .progress import Progress, refresh_seconds


def build_config(objective: str | None = None, recipe: str | None = None,
                 sets: dict[str, Any] | None = None, **options: Any) -> TrainConfig:
    """Combine a recipe, explicit options and ``--set`` pairs into a TrainConfig.

    ``options`` are TrainConfig fields (None values are ignored); ``sets`` may also name
    objective settings.
    """
    cfg = TrainConfig()
    pairs: dict[str, Any] = {}
    if recipe:
        rec = registry("recipes").get(recipe)
        cfg.objective = rec.objective
        cfg.recipe = recipe
        pairs.update(rec.settings)
    if objective:
        if recipe and objective != cfg.objective:
            raise UsageError(f"recipe {recipe!r} trains {cfg.objective!r}, not {objective!r}; "
                             f"drop --objective or the recipe")
        cfg.objective = objective
    obj_cls = registry("objectives").get(cfg.objective)
    pairs.update({k: v for k, v in options.items() if v is not None})
    pairs.update(sets or {})
    apply_sets(cfg, pairs, obj_cls.defaults)
    return cfg


@dataclass
class Resolved:
    """A config with every default filled in, plus what it refers to."""

    config: TrainConfig
    spec: DatasetSpec
    objective_cls: type[Objective]
    settings: dict[str, Any]


def resolve(cfg: TrainConfig) -> Resolved:
    """Fill dataset defaults and validate everything before anything touches the disk."""
    check_config(cfg)  # a TrainConfig built in Python has not passed apply_sets
    spec = registry("datasets").get(cfg.dataset)
    obj_cls = registry("objectives").get(cfg.objective)
    settings = obj_cls.resolve_settings(cfg.objective_args)
    c = TrainConfig(**cfg.to_dict())
    c.arch = c.arch or spec.default_arch
    c.eps = spec.eps if c.eps is None else float(c.eps)
    c.alpha = spec.alpha if c.alpha is None else float(c.alpha)
    c.steps = spec.steps if c.steps is None else int(c.steps)
    c.epochs = spec.epochs if c.epochs is None else int(c.epochs)
    c.batch_size = spec.batch_size if c.batch_size is None else int(c.batch_size)
    c.optimizer = c.optimizer or spec.optimizer
    c.lr = (spec.lr if c.optimizer == spec.optimizer else (1e-3 if c.optimizer == "adam" else 0.1)) \
        if c.lr is None else float(c.lr)
    if c.weight_decay is None:
        c.weight_decay = 0.0 if c.optimizer == "adam" else 5e-4
    c.augment = c.augment or spec.augment
    c.objective_args = settings
    check_config(c)  # every value typed and in range (config.SCHEMA), defaults filled in
    if c.eps * c.train_eps_factor > 1:
        raise UsageError(f"train_eps_factor={c.train_eps_factor:g} makes the training ε = {c.eps:.4g}·"
                         f"{c.train_eps_factor:g} = {c.eps * c.train_eps_factor:.4g}, outside (0, 1]; e.g. "
                         f"--set train_eps_factor=4/3")
    if c.reset_optimizer and c.schedule != "piecewise":
        raise UsageError(f"reset_optimizer clears the optimiser when a piecewise milestone starts a new lr "
                         f"stage; schedule={c.schedule} has no stages (use --set schedule=piecewise, or drop "
                         f"reset_optimizer)")
    resolve_precision(c.precision, "cpu")  # validates the name; 'auto' is resolved per device
    c.compile = check_compile_mode(c.compile)
    reg = registry("attacks")
    for a in c.eval_attacks:
        reg.get(a)
    check_input_size(c.arch, num_classes=spec.num_classes, shape=spec.shape, mean=spec.mean, std=spec.std,
                     dataset=spec.name)
    for line in obj_cls.setting_warnings(settings):
        warnings.warn(f"{c.objective}: {line}", SettingWarning, stacklevel=2)
    return Resolved(c, spec, obj_cls, settings)


def lr_factor(cfg: TrainConfig, epoch: int, frac: float) -> float:
    """Multiplier of the base lr at 0-based ``epoch`` plus ``frac`` of it.

    Piecewise milestones below 1 are fractions of the run (0.5 = half way); others are
    1-based epoch numbers from which the decay applies (TRADES' 'x0.1 at epoch 75').
    """
    t = epoch + frac
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        return t / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t / cfg.epochs))
    return cfg.gamma ** lr_stage(cfg, epoch)


def lr_stage(cfg: TrainConfig, epoch: int) -> int:
    """How many piecewise milestones apply at 0-based ``epoch`` (0 = the first lr stage)."""
    return sum(1 for m in cfg.milestones
               if (m < 1 and epoch >= m * cfg.epochs) or (m >= 1 and epoch + 1 >= m))


def starts_stage(cfg: TrainConfig, epoch: int) -> bool:
    """Whether 0-based ``epoch`` is the first of a new piecewise lr stage (never epoch 0)."""
    return cfg.schedule == "piecewise" and epoch > 0 and lr_stage(cfg, epoch) > lr_stage(cfg, epoch - 1)


def optimizer_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The classifier's optimiser settings from a resolved config (what extra modules inherit)."""
    return {"optimizer": cfg.optimizer, "lr": float(cfg.lr), "momentum": float(cfg.momentum),
            "weight_decay": float(cfg.weight_decay), "nesterov": bool(cfg.nesterov)}


def build_optimizer(params, settings: dict[str, Any], fused: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, nesterov) or Adam from resolved ``settings``.

    ``fused`` (CUDA): one kernel updates every parameter instead of a loop of small ones.
    """
    extra = {"fused": True} if fused else {}
    if settings["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=settings["lr"], weight_decay=settings["weight_decay"], **extra)
    return torch.optim.SGD(params, lr=settings["lr"], momentum=settings["momentum"],
                           weight_decay=settings["weight_decay"],
                           nesterov=settings["nesterov"] and settings["momentum"] > 0, **extra)


def make_optimizer(params, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The classifier's optimiser: :func:`build_optimizer` with the config's settings."""
    return build_optimizer(params, optimizer_settings(cfg), fused=fused)


def _optimizer_kind(state: dict[str, Any]) -> str | None:
    """'adam' or 'sgd' from a saved optimiser state_dict (None when it holds no state yet)."""
    for per_param in state.get("state", {}).values():
        if "exp_avg" in per_param:
            return "adam"
        if "momentum_buffer" in per_param:
            return "sgd"
    return None


def versions() -> dict[str, str]:
    """Package versions recorded with every run."""
    from importlib.metadata import version  # timm's version without importing timm (seconds)

    return {"robustzoo": __version__, "torch": torch.__version__, "timm": version("timm"),
            "python": platform.python_version()}


def validate(model: nn.Module, data, cfg: TrainConfig, batch_size: int = 500,
             step_begin: Callable[[], None] | None = None) -> tuple[float, float]:
    """Clean and PGD accuracy on the validation split (eval mode; training ε, uniform start).

    ``step_begin`` is called before each batch (:meth:`robustzoo.fast.FastPath.step_begin`).
    """
    model.eval()
    # Both counts are summed where the data is and read once at the end: no host sync per batch.
    counts = torch.zeros(2, dtype=torch.long, device=data.x.device)
    gen_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed + 7919)  # fixed attack noise: comparable across epochs
    for x, y, _ in data.batches(batch_size):
        if step_begin is not None:
            step_begin()
        with torch.no_grad():
            counts[0] += (model(x).argmax(1) == y).sum()
        x_adv = pgd(model, x, y, eps=cfg.eps, alpha=cfg.alpha if cfg.steps else cfg.eps / 4,
                    steps=cfg.val_steps, rand_init="uniform")
        with torch.no_grad():
            counts[1] += (model(x_adv).argmax(1) == y).sum()
    torch.set_rng_state(gen_state)
    clean, robust = counts.tolist()
    n = max(len(data), 1)
    return clean / n, robust / n


def host_copy(obj: Any) -> Any:
    """``obj`` (nested dicts, lists and tuples of tensors) with every tensor copied to the CPU.

    Copied even when already there: training goes on changing the originals in place while
    a background thread writes the copy. GPU tensors are copied into pinned memory without
    waiting, and the copy waits once, for all of them, at the end (one host sync per call,
    not one per tensor).
    """
    streams: set[torch.cuda.Stream] = set()
    out = _host_copy(obj, streams)
    for stream in streams:
        stream.synchronize()
    return out


def _host_copy(obj: Any, streams: set) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type != "cuda":
            return t.to("cpu", copy=True)
        copy = torch.empty_like(t, device="cpu", pin_memory=True)  # the same layout as .to("cpu")
        copy.copy_(t, non_blocking=True)
        streams.add(torch.cuda.current_stream(t.device))
        return copy
    if isinstance(obj, dict):
        return type(obj)((k, _host_copy(v, streams)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v, streams) for v in obj)
    return obj


def _aux_tensors(extra: dict[str, dict[str, torch.Tensor]], state: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """aux.safetensors' flat names for extra modules' state dicts and an objective's state."""
    out = {f"module.{k}.{p}": t for k, sd in extra.items() for p, t in sd.items()}
    out.update({f"state.{k}": t for k, t in state.items()})
    return out


class CheckpointWriter:
    """Writes one epoch's checkpoint files in a background thread while training goes on.

    One write at a time: :meth:`submit` first waits for the previous one, and
    :meth:`join` (at the end of training, before anything reads the files) waits for the
    last and re-raises its error, if any. Every file is written atomically, so a process
    killed mid-write leaves the previous complete files.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.join()
        self._thread = threading.Thread(target=self._run, args=(write,), name="robustzoo-checkpoint")
        self._thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread by join()
            self._error = exc

    def join(self, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


class Trainer:
    """Trains one run into ``out_dir``.

    Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DDP, each process trains on
    its shard with ``batch_size / world`` examples per step, and only rank 0 writes, prints
    and evaluates (:mod:`robustzoo.distributed`). On CUDA the fast path of
    :mod:`robustzoo.fast` is on (bf16 autocast, channels_last, fused optimiser, optional
    torch.compile); on the CPU the loop is the plain fp32 one.

    Args:
        config: a TrainConfig (defaults are filled by :func:`resolve`).
        out_dir: the run directory (created once data and model are ready).
        resume: continue the run in ``out_dir`` from its last finished epoch.
        progress: receives a task per epoch (with the running loss and accuracy), each
            finished epoch's metrics and the final evaluation's tasks
            (:class:`robustzoo.progress.Progress`; None: silent). Only rank 0 reports.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
                 progress: Progress | None = None):
        self.resume = resume
        r = resolve(config)
        self.cfg, self.spec, self.settings = r.config, r.spec, r.settings
        self.dist, self.device = distributed.setup(resolve_device(self.cfg.device))
        self.out = Path(distributed.broadcast_object(str(out_dir), self.dist))  # rank 0's choice
        self.progress = progress if self.dist.is_main else None
        self.local_batch_size = distributed.per_process_batch_size(self.cfg.batch_size, self.dist.world_size)
        self.cfg.precision = resolve_precision(self.cfg.precision, self.device)
        self.fast = FastPath.create(self.device, self.cfg.precision, self.cfg.compile, self.cfg.compile_backend,
                                    channels_last=self.cfg.channels_last)
        self.fast.setup_backends()
        torch.manual_seed(self.cfg.seed)
        self.splits: Splits = load_splits(self.spec, data_dir=self.cfg.data_dir, subset=self.cfg.subset,
                                          val_size=self.cfg.val_size, seed=self.cfg.seed)
        self.train_data = self.splits.train.to(self.device)
        self.val_data = self.splits.val.to(self.device)
        c, h, w = self.spec.shape
        self.model = build_model(self.cfg.arch, num_classes=self.spec.num_classes, in_chans=c,
                                 input_size=(h, w), mean=self.spec.mean, std=self.spec.std).to(self.device)
        if self.cfg.sync_bn:  # before the optimiser: SyncBatchNorm keeps the same parameters
            self.model = distributed.convert_sync_batchnorm(self.model, self.dist, self.device)
        ctx = ObjectiveContext(eps=self.cfg.eps * self.cfg.train_eps_factor, alpha=self.cfg.alpha,
                               steps=self.cfg.steps,
                               num_classes=self.spec.num_classes, input_shape=self.spec.shape,
                               num_train=len(self.train_data), epochs=self.cfg.epochs, device=self.device,
                               dataset=self.spec.name, seed=self.cfg.seed, fixed_shapes=self.fast.drop_last)
        self.objective: Objective = r.objective_cls(self.settings, ctx)
        self.extra = {k: self.fast.prepare_model(m.to(self.device))
                      for k, m in self.objective.extra_modules().items()}
        self.fast.prepare_model(self.model)
        fused = self.fast.fused_optimizer
        # One optimiser per trained module, each with its own base lr that the schedule scales:
        # an objective may train its extra modules differently (Calibrated AT's g_φ on SGD).
        base = optimizer_settings(self.cfg)
        specs = self.objective.optimizer_specs()
        unknown = sorted(set(specs) - set(self.extra))
        if unknown:
            raise RunError(f"objective {self.cfg.objective!r} declares an optimiser for {unknown[0]!r}, "
                           f"which is not one of its extra modules ({', '.join(sorted(self.extra)) or 'none'})")
        self.optim_settings: dict[str, dict[str, Any]] = {"model": base}
        for k in self.extra:
            self.optim_settings[k] = specs[k].resolve(base) if k in specs else dict(base)
        self.optimizer = build_optimizer(self.model.parameters(), base, fused=fused)
        self.objective.optimizers = {k: build_optimizer(m.parameters(), self.optim_settings[k], fused=fused)
                                     for k, m in self.extra.items()}
        for opt in self.objective.optimizers.values():  # extra modules: average grads over ranks
            distributed.average_grads_on_step(opt, self.dist)
        # eval_net: the model with the fast path (channels_last, one compiled callable per BN
        # mode) or the model itself on the CPU; rank 0 validates with it alone. net: what
        # objectives call while training, eval_net inside DDP for several processes (DDP's
        # forward stays eager; its gradient hooks sit on the parameters).
        self.eval_net = self.fast.wrap(self.model)
        self.net = distributed.wrap_model(self.eval_net, self.dist, self.device)
        self.start_epoch = 0
        self.best_score = -1.0
        self.best_epoch = -1
        self.writer = CheckpointWriter()
        self._resume_written = time.monotonic()  # when the resume state was last written

    # -- run directory --------------------------------------------------------------------
    def robustzoo_block(self) -> dict[str, Any]:
        return {
            "format": runs.FORMAT_VERSION,
            "dataset": self.spec.name,
            "objective": self.cfg.objective,
            "objective_settings": self.settings,
            "threat_model": {"norm": "linf", "eps": self.cfg.eps,
                             **({"train_eps": self.cfg.eps * self.cfg.train_eps_factor}
                                if self.cfg.train_eps_factor != 1 else {})},
            "config": self.cfg.to_dict(),
            "num_train": len(self.train_data),
            "extra_modules": sorted(self.extra),
            "optimizers": self.optim_settings,
            "state_tensors": sorted(self.objective.state_tensors()),
            "versions": versions(),
            # Seeded CPU runs repeat bit for bit only with the same number of torch threads
            # (the order of float sums in a reduction changes with it).
            "machine": {"device": self.device.type, "torch_threads": torch.get_num_threads()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _warn_other_threads(self) -> None:
        """Warn when a CPU run resumes with another torch thread count than it was started with."""
        if self.device.type != "cpu" or not self.dist.is_main:
            return
        try:
            machine = runs.read_config(self.out).get("robustzoo", {}).get("machine") or {}
        except RobustzooError:
            return  # the resume state is what counts; a damaged config.json is reported elsewhere
        threads, now = machine.get("torch_threads"), torch.get_num_threads()
        if machine.get("device") == "cpu" and isinstance(threads, int) and threads != now:
            warnings.warn(f"{self.out} was trained with {threads} torch thread{'s' if threads != 1 else ''}, "
                          f"this process has {now}: the resumed epochs are the same training but not bit for "
                          f"bit; set OMP_NUM_THREADS={threads} to continue it exactly", SettingWarning, stacklevel=2)

    def _prepare_dir(self) -> None:
        cfg_path = self.out / runs.CONFIG_FILE
        if self.resume:
            if self.dist.is_main:  # before reading the state another writer might be replacing
                self._held.enter_context(files.run_lock(self.out, "train --resume"))
            state = self.out / runs.RESUME_FILE
            if not state.is_file():
                if not (self.out / runs.LAST_FILE).exists() and not (self.out / runs.METRICS_FILE).exists():
                    return  # stopped before its first epoch ended: start at epoch 0, same settings
                raise NotFoundError(f"{self.out} has no resumable state ({runs.RESUME_FILE}); "
                                    f"start a new run with `robustzoo train --out DIR`")
            blob = runs.read_state(state, self.device)
            field = "model"
            try:
                self.model.load_state_dict(blob["model"])
                field = "optimizer"
                self.optimizer.load_state_dict(blob["optimizer"])
                for k, m in self.extra.items():
                    field = f"extra.{k}"
                    m.load_state_dict(blob["extra"][k])
                    self._check_resumed_optimizer(k, blob)
                    field = f"extra_optim.{k}"
                    self.objective.optimizers[k].load_state_dict(blob["extra_optim"][k])
                field = "state"
                self.objective.load_state_tensors(blob["state"])
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                first = first_sentence(exc)
                raise RunError(f"{state}: {field} does not fit this run's model and settings ({type(exc).__name__}: "
                               f"{first}); the resume state is damaged or from another run: start a new run with "
                               f"`robustzoo train --out DIR`") from None
            self._warn_other_threads()
            self.start_epoch = int(blob["epoch"])
            self.best_score = float(blob["best_score"])
            self.best_epoch = int(blob["best_epoch"])
            if self.dist.is_main and (self.out / runs.EVAL_FILE).is_file():
                # An eval.json from before the run's history: keep it as the record of the
                # weights it was made for, before training changes them.
                migrate(self.out, model_fingerprint(runs.load_run(self.out)[0]), len(self.splits.test))
            if self.dist.is_main:
                self._forget_metrics_after(self.start_epoch)
            return
        # A run, a file, or a folder of other files: refused (files.check_run_dir), never mixed.
        files.check_run_dir(self.out, create_parent=True)
        distributed.barrier(self.dist)  # every rank has checked before rank 0 writes
        if not self.dist.is_main:
            return
        files.make_dir(self.out)
        self._held.enter_context(files.run_lock(self.out, "train"))
        # Again under the lock: a second `train` into the same --out that started at the same
        # time has written its config.json by now, or holds the lock (files.run_lock says so).
        files.check_run_dir(self.out, create_parent=True)
        c, h, w = self.spec.shape
        runs.write_json(cfg_path, runs.model_config(self.cfg.arch, self.spec.num_classes, (c, h, w),
                                                    self.spec.mean, self.spec.std, self.robustzoo_block()))

    def _check_resumed_optimizer(self, name: str, blob: dict[str, Any]) -> None:
        """Refuse to load an extra module's optimiser state into an optimiser of another kind.

        A run started before optimisers were declared per module has no recorded settings in
        its resume state; the kind is then read off the saved state (Adam keeps exp_avg).
        """
        mine = self.optim_settings[name]
        saved = (blob.get("extra_optim_settings") or {}).get(name)
        kind = saved["optimizer"] if saved else _optimizer_kind(blob["extra_optim"][name])
        if kind is not None and kind != mine["optimizer"]:
            raise RunError(f"{self.out}: {name} was trained with {kind}, but these settings (or this "
                           f"version of robustzoo) build it with {mine['optimizer']}; the run cannot be "
                           f"resumed exactly (start a new run with `robustzoo train --out DIR`)")

    def _forget_metrics_after(self, epoch: int) -> None:
        """Drop metrics.jsonl rows of epochs after the resume state's (they are trained again)."""
        path = self.out / runs.METRICS_FILE
        if not path.is_file():
            return
        rows = runs.read_metrics(self.out)  # a damaged line is an error naming the file and the line
        keep = [r for r in rows if r.get("epoch", 0) <= epoch]
        if len(keep) != len(path.read_text(encoding="utf-8").splitlines()):
            runs.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))

    def _weights_metadata(self, epoch: int) -> dict[str, Any]:
        return {"format": runs.FORMAT_VERSION, "architecture": self.cfg.arch, "epoch": epoch,
                "dataset": self.spec.name, "objective": self.cfg.objective,
                "eps": self.cfg.eps, "num_classes": self.spec.num_classes}

    def aux_tensors(self) -> dict[str, torch.Tensor]:
        """Extra modules ('module.<name>.<param>') and state ('state.<key>') for aux.safetensors."""
        return _aux_tensors({k: m.state_dict() for k, m in self.extra.items()}, self.objective.state_tensors())

    def _resume_due(self, epoch: int, stop: int) -> bool:
        """Whether the resume state is written after 0-based ``epoch`` (this call ends at ``stop``)."""
        done, cfg = epoch + 1, self.cfg
        if done >= stop or (cfg.resume_every and done % cfg.resume_every == 0):
            return True
        minutes = cfg.resume_every_minutes
        return bool(minutes) and time.monotonic() - self._resume_written >= 60.0 * minutes

    def _save_epoch(self, epoch: int, is_best: bool, write_resume: bool = True) -> None:
        """Checkpoint the finished ``epoch``: copy the state to the CPU (the only wait) and
        write it in the background.

        last.safetensors every epoch; model.safetensors, when this epoch is the best, as a
        hard link to it (the same bytes are not written twice); aux.safetensors with the
        best; the resume state when ``write_resume``, last, so that it is never newer than
        the weights files beside it.
        """
        out, meta = self.out, self._weights_metadata(epoch + 1)
        # Everything this checkpoint writes is copied to the CPU once, in one host_copy (one
        # wait): the weights, extra modules and state are shared by the weights files and the
        # resume state.
        live: dict[str, Any] = {"model": self.model.state_dict()}
        if is_best or write_resume:
            live.update(extra={k: m.state_dict() for k, m in self.extra.items()},
                        state=self.objective.state_tensors())
        if write_resume:
            live.update(optimizer=self.optimizer.state_dict(),
                        extra_optim={k: o.state_dict() for k, o in self.objective.optimizers.items()})
        copied = host_copy(live)
        weights = copied["model"]
        aux = _aux_tensors(copied["extra"], copied["state"]) if is_best else {}
        blob = None
        if write_resume:
            blob = {
                "epoch": epoch + 1, "model": weights, "optimizer": copied["optimizer"],
                "extra": copied["extra"], "extra_optim": copied["extra_optim"],
                "extra_optim_settings": {k: dict(self.optim_settings[k]) for k in self.objective.optimizers},
                "state": copied["state"], "best_score": self.best_score, "best_epoch": self.best_epoch,
            }
            self._resume_written = time.monotonic()

        def write() -> None:
            runs.save_weights(out / runs.LAST_FILE, weights, meta)
            if is_best:
                runs.link_file(out / runs.LAST_FILE, out / runs.MODEL_FILE)
                if aux:
                    runs.save_weights(out / runs.AUX_FILE, aux, meta)
            if blob is not None:
                runs.save_state(out / runs.RESUME_FILE, blob)

        self.writer.submit(write)

    # -- the loop ---------------------------------------------------------------------------
    def _set_lr(self, epoch: int, frac: float) -> float:
        """Scale every optimiser's own base lr by the schedule; returns the classifier's lr."""
        factor = lr_factor(self.cfg, epoch, frac)
        for name, opt in [("model", self.optimizer), *self.objective.optimizers.items()]:
            lr = self.optim_settings[name]["lr"] * factor
            for group in opt.param_groups:
                group["lr"] = lr
        return self.optim_settings["model"]["lr"] * factor

    def reset_optimizers(self) -> None:
        """Clear the state of every optimiser (the classifier's and the extra modules').

        The next step then does what the first step of a new optimiser does (SGD: the
        momentum buffer starts as that step's gradient; Adam: step count and moments from
        zero); learning rates, weight decay and the distributed gradient hooks stay.
        """
        for opt in (self.optimizer, *self.objective.optimizers.values()):
            opt.state.clear()

    def train_epoch(self, epoch: int, progress: Progress | None = None) -> dict[str, float]:
        """One pass over the training set; returns averaged metrics (``progress``: a task).

        With ``reset_optimizer``, an epoch that starts a new lr stage first clears every
        optimiser's state. The resume state written after the previous epoch still holds the
        old state, so a resumed run clears it here too and stays bit-identical.
        """
        cfg, rank, world = self.cfg, self.dist.rank, self.dist.world_size
        if cfg.reset_optimizer and starts_stage(cfg, epoch):
            self.reset_optimizers()
        # Attack noise: reproducible per epoch, and different on each rank (rank 0 = 1 process).
        torch.manual_seed(cfg.seed * 100003 + epoch + 1000003 * rank)
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)  # same order on every rank
        self.objective.on_epoch_start(epoch)
        self.net.train()
        for m in self.extra.values():
            m.train()
        bs_local, fp = self.local_batch_size, self.fast
        n_local = len(self.train_data) // world if world > 1 else len(self.train_data)
        n_batches = n_local // bs_local if fp.drop_last else math.ceil(n_local / bs_local)
        task = progress.task_start(f"epoch {epoch + 1}/{cfg.epochs}", total=n_batches) \
            if progress is not None else None
        # Running figures are read (a host sync on a GPU) only for a progress object that
        # shows them, at most once per `every` seconds, and once at the end of the epoch.
        every = refresh_seconds(progress) if task is not None else None
        next_update = time.monotonic()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        extra_sums: dict[str, Any] = {}  # float64 sums on the device: no host sync per step
        batches = self.train_data.batches(bs_local, shuffle=True, generator=gen, augment=cfg.augment,
                                          drop_last=fp.drop_last, shard=(rank, world))
        for i, (x, y, idx) in enumerate(batches):
            self._set_lr(epoch, i / n_batches)
            x = fp.prepare_input(x)
            fp.step_begin()
            with fp.autocast():
                res = self.objective.loss(self.net, x, y, idx)
            self.optimizer.zero_grad(set_to_none=True)
            res.loss.backward()
            self.optimizer.step()
            bs = len(y)
            # Read the step's outputs before after_step runs more forwards (a compiled model's
            # outputs live in CUDA-graph memory until the next step's mark).
            loss_sum += res.loss.detach() * bs
            if res.logits is not None:
                yy = res.y if res.y is not None else y
                correct += (res.logits.detach().argmax(1) == yy).sum()
            metrics = dict(res.metrics)
            with fp.autocast():
                metrics.update(self.objective.after_step(self.net, x, y, idx, res))
            seen += bs
            for k, v in metrics.items():
                term = v.detach().double() * bs if isinstance(v, torch.Tensor) else float(v) * bs
                extra_sums[k] = extra_sums[k] + term if k in extra_sums else term
            due = every is not None and time.monotonic() >= next_update
            if task is not None and (due or i == n_batches - 1):
                progress.task_update(task, i + 1, loss=float(loss_sum) / seen, acc=float(correct) / seen)
                next_update = time.monotonic() + (every or 0.0)
        if task is not None:
            progress.task_end(task)
        self.objective.sync_state()
        if self.dist.enabled:  # sums over every rank's shard
            keys = sorted(extra_sums)
            packed = torch.tensor([float(loss_sum), float(correct), float(seen)]
                                  + [float(extra_sums[k]) for k in keys], dtype=torch.float64, device=self.device)
            distributed.all_reduce_sum(packed, self.dist)
            loss_sum, correct, seen = packed[0], packed[1], int(packed[2])
            extra_sums = {k: packed[3 + j] for j, k in enumerate(keys)}
        out = {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1)}
        out.update({k: float(v) / max(seen, 1) for k, v in extra_sums.items()})
        return out

    def fit(self, until_epoch: int | None = None) -> dict[str, Any] | None:
        """Train to the end (or to ``until_epoch``), then evaluate the best checkpoint.

        The run directory's lock (:func:`robustzoo.files.run_lock`) is held from before the
        first write to the end: a second writer is refused with the process that holds it.

        Returns:
            The eval.json dictionary, or None when stopped early by ``until_epoch``.
        """
        with contextlib.ExitStack() as self._held:
            return self._fit(until_epoch)

    def _fit(self, until_epoch: int | None) -> dict[str, Any] | None:
        self._prepare_dir()
        cfg = self.cfg
        stop = cfg.epochs if until_epoch is None else min(until_epoch, cfg.epochs)
        self._resume_written = time.monotonic()
        try:
            self._train_epochs(stop)
        except BaseException:
            self.writer.join(raise_error=False)  # finish the write under way; the error wins
            raise
        self.writer.join()
        distributed.barrier(self.dist)  # rank 0 has written the last checkpoint
        distributed.teardown(self.dist)
        if stop < cfg.epochs or not self.dist.is_main:
            return None
        return self.final_eval()

    def _train_epochs(self, stop: int) -> None:
        """Epochs start_epoch..stop-1: train, validate, checkpoint, log."""
        cfg, progress = self.cfg, self.progress
        for epoch in range(self.start_epoch, stop):
            t0 = time.perf_counter()
            factor = lr_factor(cfg, epoch, 0.0)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optim_settings["model"]["lr"] * factor}
            row.update({f"lr_{k}": self.optim_settings[k]["lr"] * factor for k in self.extra})
            row.update(self.train_epoch(epoch, progress))
            row.update(self.objective.epoch_metrics())
            distributed.sync_buffers([self.model, *self.extra.values()], self.dist)
            if not self.dist.is_main:
                continue  # rank 0 validates, checkpoints and logs
            last = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.val_every == 0 or last:
                with self.fast.autocast():
                    vc, vr = validate(self.eval_net, self.val_data, cfg, step_begin=self.fast.step_begin)
                row.update(val_clean=vc, val_pgd=vr)
                score = vc + vr
                is_best = score > self.best_score
                if is_best:
                    self.best_score, self.best_epoch = score, epoch + 1
            else:
                is_best = self.best_epoch < 0
            row["best"] = is_best
            row["seconds"] = round(time.perf_counter() - t0, 3)
            self._save_epoch(epoch, is_best, self._resume_due(epoch, stop))
            runs.append_jsonl(self.out / runs.METRICS_FILE, row)
            if progress is not None:
                progress.epoch_end(row)

    def final_eval(self) -> dict[str, Any]:
        """Evaluate model.safetensors (best on validation) on the test set; write eval.json.

        In exact fp32 whatever the training precision (TF32 off on CUDA): the report becomes
        the run's canonical record, which may be published (robustzoo.fast.eval_precision).
        """
        model, _ = runs.load_run(self.out, device=self.device)
        test = self.splits.test
        with precision_scope(self.device, "fp32"):  # no autocast, no TF32, no compile
            report = evaluate_model(eval_model(model, self.device, "fp32"), test,
                                    list(self.cfg.eval_attacks), eps=self.cfg.eps,
                                    alpha=self.spec.eval_alpha, num_classes=self.spec.num_classes,
                                    n=self.cfg.eval_n, seed=self.cfg.seed, device=self.device,
                                    progress=self.progress, test_size=self.spec.test_size)
        mark_precision(report, "fp32")
        report["checkpoint"] = runs.MODEL_FILE
        report["best_epoch"] = self.best_epoch
        report["dataset"] = self.spec.name
        report["split"] = "test"
        # Into the run's history; eval.json becomes the canonical record (this one, unless an
        # earlier evaluation of the same weights is stronger).
        write_record(self.out, report, source="train", test_size=len(test))
        return report


def default_out_dir(cfg: TrainConfig) -> Path:
    """runs/<objective>-<dataset>-<UTC time>: a new directory per run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{cfg.recipe or cfg.objective}-{cfg.dataset}-{stamp}"
    out, i = base, 1
    while out.exists():
        out = Path(f"{base}-{i}")
        i += 1
    return out


def config_from_run(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig recorded in a run's config.json."""
    if not Path(run_dir).is_dir():
        raise NotFoundError(runs.missing_run_dir(run_dir, hint="--resume continues a run directory written by "
                                                               "`robustzoo train --out DIR`"))
    cfg = runs.read_config(run_dir)
    source = str(Path(run_dir) / runs.CONFIG_FILE)
    if not isinstance(cfg["robustzoo"].get("config"), dict):
        raise RunError(f"{source} has no robustzoo.config block (the settings of the run); it cannot be resumed: "
                       f"start a new run with `robustzoo train --out DIR`")
    tc = TrainConfig.from_dict(cfg["robustzoo"]["config"], source=source)
    try:  # the objective's settings, checked as --set checks them, but blamed on the file
        registry("objectives").get(tc.objective).resolve_settings(tc.objective_args)
    except UsageError as exc:
        raise RunError(f"{source}: robustzoo.config.objective_args: {exc}; restore the file as `robustzoo train` "
                       f"wrote it, or start a new run") from None
    return tc


def json_dumps(obj: Any) -> str:
    """JSON with tensors turned into lists."""
    return json.dumps(obj, default=lambda o: o.tolist() if isinstance(o, torch.Tensor) else str(o))


__all__ = ["Trainer", "build_config", "resolve", "lr_factor", "lr_stage", "starts_stage", "F"]
