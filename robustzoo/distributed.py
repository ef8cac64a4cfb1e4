"""Multi-process training: DistributedDataParallel launched by ``torchrun``.

Launch with ``torchrun --nproc_per_node=N -m robustzoo train ...`` or
``robustzoo train --nproc N ...`` (which re-launches itself through ``torch.distributed.run``
with the same arguments). Each process reads RANK / WORLD_SIZE / LOCAL_RANK from the
environment; the backend is NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``) and gloo
on the CPU.

Semantics (documented in docs/performance.md):

* ``--batch-size`` is the global batch: each process takes ``batch_size / world`` examples
  per step, so a 1-process and an N-process run see the same global batches (rank r takes
  every N-th example of the shared shuffled order) and the same number of steps.
* The classifier is wrapped in DDP without forward buffer syncing: a DDP forward is then
  collective-free, so attacks may run any number of forwards per rank (FAT stops early per
  batch) and take input-only gradients (``torch.autograd.grad`` w.r.t. x fires no DDP
  gradient hook; the next forward re-arms the reducer). Parameter gradients are averaged by
  the backward of the θ-loss. BatchNorm running statistics are averaged at the end of every
  epoch, before validation and checkpointing.
* Extra trainable modules (Calibrated AT's mask network) are stepped by the objective with
  its own optimisers; their gradients are averaged across processes just before each
  ``optimizer.step()`` (a step pre-hook), so their weights stay identical.
* Per-example state is merged by the objective's ``sync_state()`` at the end of each epoch.
* Only rank 0 writes files, prints and validates; metrics are summed over processes.
* ``sync_bn=true`` (CUDA) makes BatchNorm normalise over the global batch
  (:func:`convert_sync_batchnorm`); by default each process normalises its own share.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel as DDP

from . import files
from .errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a distributed run.

    Attributes:
        rank: global rank (0 = the main process).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        owns_group: this module initialised the process group (and tears it down).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ: dict[str, str] | None = None) -> DistInfo:
    """Read RANK, WORLD_SIZE and LOCAL_RANK (as set by torchrun); absent means one process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is not in [0, WORLD_SIZE={world}); launch with torchrun")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group described by the environment; return it and this rank's device.

    One process (no WORLD_SIZE, or 1) returns ``(DistInfo(), device)`` and touches nothing.
    On CUDA each process uses ``cuda:LOCAL_RANK`` (NCCL); on the CPU, gloo. An existing
    process group (e.g. created by a test harness) is used as is.
    """
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=env_info().local_rank if "LOCAL_RANK" in os.environ else dist.get_rank())
    else:
        info = env_info()
    if not info.enabled:
        return info, device
    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; train with one process")
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK={info.local_rank} but only {torch.cuda.device_count()} CUDA "
                             f"devices are visible; use --nproc at most the number of GPUs")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, **kwargs)
        info = DistInfo(info.rank, info.world_size, info.local_rank, owns_group=True)
    return info, device


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """``batch_size / world_size``; the global batch must split evenly across processes."""
    if world_size <= 1:
        return batch_size
    if batch_size % world_size:
        raise UsageError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                         f"{world_size} processes; use e.g. --batch-size {batch_size - batch_size % world_size or world_size}")
    return batch_size // world_size


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around ``model`` for a multi-process run (the model itself for one process).

    Forward buffer syncing is off (see the module docstring): every DDP forward is then free
    of collectives, whatever number of attack forwards each rank runs.
    """
    if not info.enabled:
        return model
    params = inspect.signature(DDP.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "forward_sync_buffers" in params:  # newer PyTorch; buffers are still synced at init
        kwargs["forward_sync_buffers"] = False
    else:
        kwargs["broadcast_buffers"] = False
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index]
    return DDP(model, **kwargs)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm layer (of any dimension, synchronised or not)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def convert_sync_batchnorm(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm layer a ``SyncBatchNorm`` for a multi-process run.

    Each training forward then normalises with the statistics of the global batch (one
    all-reduce per layer), so N processes of B/N examples train as one process of B.
    Parameters and buffers are the same tensors under the same names, so the checkpoints
    load into the plain model. One process: ``model`` unchanged.

    Every rank must then run the same number of train-mode forwards per step (each is a
    collective): attacks in train mode (``attack_bn=train``) always run all their steps;
    eval-mode forwards (validation, FAT's early-stopped search) never synchronise.

    Raises:
        UsageError: a CPU run whose model has BatchNorm layers (torch's SyncBatchNorm has no
            CPU implementation).
    """
    if not info.enabled or not has_batchnorm(model):
        return model
    if device.type == "cpu":
        raise UsageError("sync_bn=true needs CUDA devices: PyTorch's SyncBatchNorm has no CPU kernel "
                         "(drop --set sync_bn=true; each CPU process then normalises its own share)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def sync_buffers(modules: Iterable[nn.Module], info: DistInfo) -> None:
    """Average BatchNorm running statistics over processes; copy every other buffer from rank 0."""
    if not info.enabled:
        return
    for module in modules:
        for name, buf in module.named_buffers():
            if buf.is_floating_point() and name.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(info.world_size)
            else:
                dist.broadcast(buf, src=0)


def _average_grads(params: list[torch.Tensor], world_size: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(world_size)
    for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


def average_grads_on_step(optimizer: torch.optim.Optimizer, info: DistInfo) -> Any:
    """Average the gradients of ``optimizer``'s parameters over processes before each step.

    For modules an objective steps itself (not wrapped in DDP). Returns the hook handle, or
    None for one process.
    """
    if not info.enabled:
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        _average_grads(params, info.world_size)

    return optimizer.register_step_pre_hook(hook)


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over processes in place (no-op for one process)."""
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process (picklable Python objects only, local use)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Destroy the process group this module created."""
    if info.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch_command(nproc: int, args: list[str]) -> list[str]:
    """The command that runs ``robustzoo ARGS`` in ``nproc`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "robustzoo", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Run ``robustzoo ARGS`` under torchrun with ``nproc`` processes; returns the exit code."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    return subprocess.call(launch_command(nproc, args))


#: Set by :func:`launch_here` for its workers: a rank other than 0 then leaves its one-line
#: error in torch's per-worker error file (:func:`record_failure`) instead of printing it.
LAUNCHED_ENV = "ROBUSTZOO_LAUNCHED"


@dataclass(frozen=True)
class RankFailure:
    """The first process of a multi-process job that failed.

    Attributes:
        rank: its global rank.
        world_size: processes in the job.
        exitcode: its exit code (negative: killed by that signal).
        message: its one-line error (:func:`record_failure`), or the signal's name.
        printed: rank 0 failed with an exit code: it printed its own error line already.
    """

    rank: int
    world_size: int
    exitcode: int
    message: str
    printed: bool = False

    def describe(self) -> str:
        """'rank 1 of 2 was killed by SIGKILL' / 'rank 1 of 2 failed: <its error>'."""
        who = f"rank {self.rank} of {self.world_size}"
        if self.exitcode < 0:
            return f"{who} was killed by {self.message}"
        return f"{who} failed (exit code {self.exitcode}): {self.message}"


def here_command(nproc: int, args: list[str]) -> list[str]:
    """torchrun's arguments for ``robustzoo ARGS`` in ``nproc`` processes.

    ``--`` ends torchrun's own options: its parser takes abbreviations, so ``--n 1000`` (of
    ``robustzoo eval``) would otherwise be read as an ambiguous ``--nnodes`` / ``--nproc...``.
    """
    return ["--standalone", f"--nproc_per_node={nproc}", "-m", "--", "robustzoo", *args]


def launch_here(nproc: int, args: list[str], debug: bool = False) -> RankFailure | None:
    """Run ``robustzoo ARGS`` in ``nproc`` processes, with torchrun's agent in this process.

    The processes are started exactly as ``torchrun --standalone --nproc_per_node=N -m
    robustzoo ARGS`` starts them (OMP_NUM_THREADS=1 unless set), but a failure comes back as
    the :class:`RankFailure` of the first process that failed instead of torchrun's page of
    report: when one process dies, the agent stops the others and this returns. The agent's
    own log lines are silenced unless ``debug``.

    Returns:
        None when every process exited with 0.
    """
    import logging

    # deferred: the launcher's modules are needed only here
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    ns = parse_args(here_command(nproc, args))
    old_env = os.environ.get(LAUNCHED_ENV)
    os.environ[LAUNCHED_ENV] = "1"  # the workers inherit it
    if not debug:
        logging.disable(logging.CRITICAL)  # the agent's warnings and its failure report
    try:
        run(ns)
    except ChildFailedError as exc:
        if 0 in exc.failures and exc.failures[0].exitcode > 0:
            f0 = exc.failures[0]
            return RankFailure(0, nproc, f0.exitcode, str(f0.message), printed=True)
        rank, f = exc.get_first_failure()
        message = f.signal_name() if f.exitcode < 0 else str(f.message)
        return RankFailure(rank, nproc, f.exitcode, message)
    except SignalException as exc:  # Ctrl-C or kill of this process: the workers were stopped
        return RankFailure(0, nproc, 128 + int(exc.sigval), exc.sigval.name, printed=True)
    finally:
        logging.disable(logging.NOTSET)
        if old_env is None:
            os.environ.pop(LAUNCHED_ENV, None)
        else:
            os.environ[LAUNCHED_ENV] = old_env
    return None


def record_failure(message: str) -> bool:
    """Leave a worker's one-line error where :func:`launch_here` reads it; False when not launched so.

    The file is torch's per-worker error file (``TORCHELASTIC_ERROR_FILE``, set by the
    agent) in its plain form ``{"message": ..., "timestamp": ...}``.
    """
    import json
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not os.environ.get(LAUNCHED_ENV):
        return False
    files.write_text(path, json.dumps({"message": message, "timestamp": int(time.time())}))
    return True
