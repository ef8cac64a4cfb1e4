"""The fast path: what the trainer and the evaluator switch on for CUDA devices.

On a CUDA device, by default (every objective gets it without knowing):

* bf16 autocast for every forward pass, training and attacks alike. BatchNorm parameters
  and running statistics stay fp32 (autocast never casts module state; cuDNN's BatchNorm
  takes bf16 activations with fp32 weights and accumulates its statistics in fp32). Attack
  losses are summed per example (:func:`robustzoo.attacks.pgd`), and bf16 has fp32's
  exponent range, so input gradients do not underflow the way fp16 ones do;
* ``channels_last`` for the model, the inputs and therefore δ (``rand_like``/``clone`` keep
  the layout), so no step pays a layout copy;
* fused SGD/Adam and ``cudnn.benchmark = True`` (the shapes are fixed);
* the dataset stays on the GPU as uint8 (:class:`robustzoo.data.TensorData`), crops and flips
  run there.

``precision='fp32'`` is the exact mode: no autocast and no TF32 (cuDNN enables TF32 for
convolutions by default). On the CPU everything above is off and the code path is the plain
one; ``precision='bf16'`` there means CPU autocast (used to test this path without a GPU).

``compile`` (off by default) wraps the model in :class:`FastModel`: one compiled callable per
BatchNorm mode (train/eval), so toggling modes never recompiles, training batches keep a
fixed shape (``drop_last``), and ``mode='reduce-overhead'`` records CUDA graphs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UsageError
from .runs import write_json

PRECISIONS = ("auto", "bf16", "fp32")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes whose graphs are replayed as CUDA graphs (they need a step marker per iteration).
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """'auto' → 'bf16' on CUDA, 'fp32' elsewhere; 'bf16' and 'fp32' pass through.

    Raises:
        UsageError: an unknown name.
    """
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if p == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return p


#: Largest drift of bf16 from exact fp32 accuracy, in percentage points, that lets an attack
#: be evaluated in bf16 on request (docs/performance.md's target).
DRIFT_TOLERANCE = 0.1
#: Where a run directory keeps the result of its bf16-versus-fp32 check.
PRECISION_CHECK_FILE = "precision_check.json"


def eval_precision(precision: str | None, device: torch.device | str, check: dict[str, Any] | None,
                   tolerance: float = DRIFT_TOLERANCE, attacks: list[str] | tuple[str, ...] | None = None
                   ) -> tuple[str, dict[str, Any] | None]:
    """The precision an evaluation runs in, and the measured drift that allowed bf16.

    An evaluation makes a record that may be published, so 'auto' and 'fp32' mean exact fp32
    on every device (TF32 off on CUDA): AutoAttack's DLR ratio, FAB's linearised boundary and
    Square's "loss improved" test must not see 8-bit-mantissa logits, and RobustBench's
    protocol is fp32. bf16 (faster on a GPU) is used only when asked for, and only after a
    precision check of these weights (``robustzoo eval RUN --check-precision``) measured every
    attack to be run within ``tolerance`` points of fp32.

    Args:
        check: the run's saved check (:func:`read_precision_check`), ``{"results": [{"attack",
            "drift_points", ...}], "n", ...}``, or None.
        attacks: the attacks the evaluation will run (each must be in the check).

    Returns:
        ``(precision, drift)``: 'fp32' and None, or 'bf16' and ``{"n", "tolerance_points",
        "max_abs_drift_points", "drift_points": {attack: points}}`` for the record.

    Raises:
        UsageError: an unknown name, or bf16 without a check that covers every attack within
            the tolerance (the message names the missing attacks or the drift, and the command).
    """
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if p != "bf16":
        return "fp32", None
    wanted = list(dict.fromkeys(attacks or []))
    cmd = f"robustzoo eval RUN_DIR --check-precision --attacks {','.join(wanted) or 'clean,pgd20'}"
    if not check:
        raise UsageError(f"--precision bf16 needs a precision check of these weights first: `{cmd}` "
                         f"(or evaluate in fp32, the default)")
    if check.get("resolved") is False:
        raise UsageError(f"--precision bf16: the precision check ran on {check.get('n')} examples, which resolve "
                         f"{check.get('resolution_points', 0):.3g} points, coarser than the {tolerance:g}-point "
                         f"tolerance; run `{cmd} --n {int(100 / tolerance)}` (or evaluate in fp32, the default)")
    rows = {r.get("attack"): r for r in check.get("results", []) if isinstance(r, dict)}
    missing = [a for a in wanted if a not in rows]
    if missing:
        raise UsageError(f"--precision bf16: the precision check did not measure {', '.join(missing)}; run "
                         f"`{cmd}` (or evaluate in fp32, the default)")
    drift = {a: float(rows[a].get("drift_points", 0.0)) for a in wanted}
    over = {a: d for a, d in drift.items() if abs(d) > tolerance}
    if over:
        a, d = max(over.items(), key=lambda kv: abs(kv[1]))
        raise UsageError(f"--precision bf16: {a} drifted {d:g} points from fp32 on these weights (more than "
                         f"{tolerance:g}; check on {check.get('n', '?')} examples): evaluate in fp32, the default")
    return "bf16", {"n": check.get("n"), "tolerance_points": tolerance,
                    "max_abs_drift_points": max((abs(d) for d in drift.values()), default=0.0),
                    "drift_points": drift}


def read_precision_check(run_dir: str | Path, fingerprint: Callable[[], str] | None = None
                         ) -> dict[str, Any] | None:
    """The saved bf16-versus-fp32 check of a run directory, or None when it has none.

    ``fingerprint`` returns :func:`robustzoo.eval.model_fingerprint` of the model about to be
    evaluated (called only when there is a check): a check made on other weights (the run was
    trained on since) is ignored.
    """
    path = Path(run_dir) / PRECISION_CHECK_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None  # an unreadable check decides nothing
    if not isinstance(data, dict) or "max_abs_drift_points" not in data:
        return None
    if fingerprint is not None and data.get("model_fingerprint") not in (None, fingerprint()):
        return None
    return data


def write_precision_check(run_dir: str | Path, report: dict[str, Any]) -> Path:
    """Save a bf16-versus-fp32 check (``benchmarks/throughput.py --check-precision``) in the run."""
    path = Path(run_dir) / PRECISION_CHECK_FILE
    write_json(path, report)
    return path


def check_compile_mode(mode: str | None) -> str:
    """Validate a compile mode ('off' when None or empty)."""
    m = (mode or "off").lower()
    if m in ("none", "false", "0", "no"):
        m = "off"
    if m not in COMPILE_MODES:
        raise UsageError(f"unknown compile mode {mode!r}; use {', '.join(COMPILE_MODES)}")
    return m


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for precision 'bf16'; a no-op context for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast_dtype(device: torch.device | str) -> str | None:
    """The dtype autocast runs ``device``'s forwards in right now ('bfloat16'), or None if off.

    Evaluation records it with saved per-example outcomes, so a bf16 evaluation is never
    resumed as an fp32 one.
    """
    kind = torch.device(device).type
    try:
        if not torch.is_autocast_enabled(kind):
            return None
        return str(torch.get_autocast_dtype(kind)).replace("torch.", "")
    except (TypeError, AttributeError):  # PyTorch < 2.4: no per-device queries
        on = torch.is_autocast_cpu_enabled() if kind == "cpu" else torch.is_autocast_enabled()
        return "autocast" if on else None


@contextlib.contextmanager
def tf32_disabled(enabled: bool = True) -> Iterator[None]:
    """Turn TF32 off for cuBLAS and cuDNN (exact fp32) inside the block, then restore."""
    if not enabled:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def precision_scope(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for 'bf16'; TF32 off on CUDA for 'fp32'. Use around evaluation."""
    exact = precision == "fp32" and torch.device(device).type == "cuda"
    with tf32_disabled(exact), autocast(device, precision):
        yield


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last layout when it is a 4-D batch (a no-op if it already is)."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# Two separate functions on purpose: torch.compile caches graphs per code object, so the
# training-mode and eval-mode graphs live in separate caches and each stays within the
# recompile limit (train: attack + θ-forward; eval: no-grad + attack, per batch shape).
def _forward_train_mode(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def _forward_eval_mode(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


_MODE_FUNCTIONS = {"train": _forward_train_mode, "eval": _forward_eval_mode}


def _cached_graphs(fn: Any) -> int | None:
    """Graphs torch.compile holds for ``fn``'s code (None when this PyTorch cannot tell)."""
    try:
        from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list
    except ImportError:  # pragma: no cover - older or newer PyTorch
        return None
    return len(_debug_get_cache_entry_list(fn.__code__))


def compile_stats() -> dict[str, Any]:
    """What torch.compile has made of :class:`FastModel` forwards in this process so far.

    Counted since the last ``torch._dynamo.reset()``, over every FastModel of the process:

    * ``graphs``: graphs per BatchNorm mode ('train', 'eval'); each beyond the first is a
      recompile (a new shape, dtype, layout or ``requires_grad`` pattern);
    * ``recompile_limit`` and ``at_limit``: the modes whose graphs reached
      ``torch._dynamo.config.recompile_limit``, past which calls silently run eagerly;
    * ``unique_graphs`` and ``graph_breaks``: dynamo's own counters (all compiled code);
    * ``cudagraph_skips``: graphs inductor compiled but could not record as CUDA graphs
      (mode 'reduce-overhead'), each then replayed without them.
    """
    from torch._dynamo.utils import counters  # deferred: loads the compiler stack

    graphs = {mode: _cached_graphs(fn) for mode, fn in _MODE_FUNCTIONS.items()}
    limit = int(torch._dynamo.config.recompile_limit)
    return {
        "graphs": graphs,
        "recompiles": {m: (max(n - 1, 0) if n is not None else None) for m, n in graphs.items()},
        "recompile_limit": limit,
        "at_limit": [m for m, n in graphs.items() if n is not None and n >= limit],
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


class FastModel(nn.Module):
    """What objectives and attacks call during fast training or evaluation.

    Converts inputs to channels_last (when asked) and routes each forward to the compiled
    callable of the current BatchNorm mode. ``train()``/``eval()`` reach the wrapped module;
    attributes the wrapper lacks (e.g. ``num_classes``) are read from the underlying model.

    Args:
        inner: what runs the forward: the model, or the DDP wrapper around it.
        model: the plain model (whose ``training`` flag picks the mode); default ``inner``.
        channels_last: convert 4-D inputs to channels_last.
        compile_mode: one of :data:`COMPILE_MODES`.
        backend: torch.compile backend ('inductor'; 'aot_eager' or 'eager' for tests).
    """

    def __init__(self, inner: nn.Module, model: nn.Module | None = None, *, channels_last: bool = False,
                 compile_mode: str = "off", backend: str = "inductor"):
        super().__init__()
        self.inner = inner
        self.__dict__["model"] = model if model is not None else inner  # not a second child
        self.channels_last = channels_last
        self.compile_mode = check_compile_mode(compile_mode)
        self._fns: dict[bool, Any] = {}
        if self.compile_mode != "off":
            kwargs: dict[str, Any] = {"backend": backend, "dynamic": False}
            if backend == "inductor" and self.compile_mode != "default":
                kwargs["mode"] = self.compile_mode
            self._fns = {True: torch.compile(_forward_train_mode, **kwargs),
                         False: torch.compile(_forward_eval_mode, **kwargs)}

    @property
    def compiled(self) -> bool:
        return bool(self._fns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = channels_last(x)
        if not self._fns:
            return self.inner(x)
        return self._fns[self.model.training](self.inner, x)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("model")
            if model is None or name.startswith("_"):
                raise
            return getattr(model, name)


@dataclass
class FastPath:
    """The switches of one run, resolved for its device.

    Attributes:
        device: the run's device.
        precision: 'bf16' or 'fp32' (resolved, never 'auto').
        compile: a compile mode ('off' by default).
        backend: torch.compile backend.
        nhwc: use channels_last on CUDA (False: NCHW, to measure what the layout brings).
    """

    device: torch.device
    precision: str = "fp32"
    compile: str = "off"
    backend: str = "inductor"
    nhwc: bool = True

    @classmethod
    def create(cls, device: torch.device, precision: str | None = "auto", compile: str | None = "off",
               backend: str | None = "inductor", channels_last: bool = True) -> FastPath:
        """Resolve 'auto' precision and validate the compile mode for ``device``."""
        return cls(torch.device(device), resolve_precision(precision, device), check_compile_mode(compile),
                   backend or "inductor", bool(channels_last))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        """channels_last only pays on CUDA (cuDNN NHWC kernels); CPU keeps NCHW."""
        return self.cuda and self.nhwc

    @property
    def fused_optimizer(self) -> bool:
        """Fused SGD/Adam: one kernel for the whole update, CUDA only."""
        return self.cuda

    @property
    def drop_last(self) -> bool:
        """Fixed batch shapes when compiling (a smaller last batch would be another graph)."""
        return self.compile != "off"

    @property
    def uses_cudagraphs(self) -> bool:
        return self.cuda and self.backend == "inductor" and self.compile in CUDAGRAPH_MODES

    def setup_backends(self) -> None:
        """cuDNN autotuning for fixed shapes, and TF32 off in exact fp32 mode (CUDA only).

        These are process-wide switches: a process trains one run.
        """
        if not self.cuda:
            return
        torch.backends.cudnn.benchmark = True
        if self.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of forward passes (training, attacks, validation)."""
        return autocast(self.device, self.precision)

    def scope(self) -> contextlib.AbstractContextManager:
        """Autocast plus (on CUDA, fp32) TF32 off, restored on exit: for evaluation."""
        return precision_scope(self.device, self.precision)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Convert ``model`` in place to channels_last on CUDA (weights keep their values)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the layout the model wants (δ then inherits it)."""
        return channels_last(x) if self.channels_last else x

    def wrap(self, inner: nn.Module, model: nn.Module | None = None) -> nn.Module:
        """The callable objectives see: ``inner`` itself when nothing is on, else a FastModel."""
        if not self.channels_last and self.compile == "off":
            return inner
        return FastModel(inner, model, channels_last=self.channels_last, compile_mode=self.compile,
                         backend=self.backend)

    def step_begin(self) -> None:
        """Mark a new iteration for CUDA-graph trees: the outputs of the last may be overwritten.

        Once marked by hand, CUDA-graph trees start a generation only at a mark, so every
        compiled forward and backward of one training step (the K attack steps, the θ-step,
        an objective's after_step) is one recorded path, replayed step after step; nothing
        of a step is read after the next mark. The trainer marks each training step and each
        validation batch (else the validation batches would chain onto one long path).
        """
        if self.uses_cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    def describe(self) -> dict[str, Any]:
        """What is on, for run configs and benchmark reports."""
        return {"device": str(self.device), "precision": self.precision, "compile": self.compile,
                "compile_backend": self.backend, "channels_last": self.channels_last,
                "fused_optimizer": self.fused_optimizer,
                "cudnn_benchmark": self.cuda, "tf32_off": self.cuda and self.precision == "fp32"}


def eval_model(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """``model`` prepared for fast evaluation on ``device`` (channels_last on CUDA)."""
    fp = FastPath(torch.device(device), precision)
    return fp.wrap(fp.prepare_model(model))
