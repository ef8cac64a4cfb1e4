"""Sharded evaluation: each attack's batches dealt out to the processes of a torchrun job.

``robustzoo eval RUN --nproc N`` and ``torchrun --nproc_per_node=N -m robustzoo eval RUN``
run one evaluation in N processes (one GPU each, NCCL; or CPU processes, gloo). Every process
loads the model and the examples and walks the same list of attacks; only the attacks' batches
are split. The rule that makes the outcome the same for any N:

* **the batches are those of one process.** An attack runs on the examples still robust before
  it (:func:`robustzoo.eval.run_keyed` gathers them, in order, as AutoAttack's
  ``run_standard_evaluation`` does); cut into blocks of ``--batch-size``, block k is the k-th
  batch one process would run, seeded from its position (``_batch_seed(seed, k * bs)``) and, for
  the AutoAttack components, by the authors' own per-call seeding. Which examples sit together,
  and the noise each one sees, is therefore a function of the examples, the seed, the batch
  size and the outcomes of the earlier attacks — never of N or of the process that runs it;
* **the processes take whole batches from a shared queue** (a counter in torch.distributed's
  key-value store): a free process takes the next unfinished batch, so work is balanced
  as it happens, and examples an earlier attack already broke are not in any batch at all;
* **rank 0 gathers**: every finished batch's outcomes are posted to the store; rank 0 merges
  them, saves them in its flag store (``RUN_DIR/eval_flags.safetensors``, at the usual
  checkpoint interval) and posts the merged outcome of the attack, which every process then
  holds before the next attack (the next attack's examples depend on it).

One process runs exactly these batches through :func:`robustzoo.eval.run_attack`, and each
batch here is run by that same function (``offset`` keeps its seed), so the per-example
outcomes — every accuracy, interval, worst case and health check — are the one-process
ones, bit for bit on the CPU; on GPUs as far as the kernels are deterministic (the same
holds between two one-GPU runs). Nothing crosses between processes but JSON and raw bytes
of bool tensors: no pickle.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..attacks import AttackContext
from ..data import TensorData
from ..distributed import DistInfo
from ..errors import RunError
from ..progress import Progress
from ._evaluate import AttackResult, run_attack
from ._flagstore import _jsonable

#: Distinct notes kept per attack (AutoAttack's warnings), as in one process.
MAX_NOTES = 10
#: Seconds between two looks at the store while waiting for other processes' batches.
POLL_SECONDS = 0.02

_evaluations = 0  # evaluations started in this process: each gets its own key space


def _default_store() -> Any:
    """The key-value store of the default process group (the one torchrun set up).

    torch exposes it only through this private accessor; every rank of the job reaches it,
    over TCP, whatever the backend (gloo or NCCL) and on several nodes.
    """
    from torch.distributed import distributed_c10d

    try:
        return distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError) as exc:
        raise RunError(f"sharded evaluation needs the store of an initialised process group ({exc}); "
                       f"launch with torchrun or `robustzoo eval --nproc N`") from None


def _pack(meta: dict[str, Any], tensors: list[torch.Tensor]) -> bytes:
    """JSON ``meta`` and bool tensors as bytes: a 4-byte length, the JSON, then the tensors."""
    arrays = [t.detach().cpu().to(torch.uint8).contiguous().numpy().tobytes() for t in tensors]
    head = json.dumps(dict(meta, sizes=[len(a) for a in arrays])).encode()
    return struct.pack("<I", len(head)) + head + b"".join(arrays)


def _unpack(blob: bytes) -> tuple[dict[str, Any], list[torch.Tensor]]:
    (size,) = struct.unpack("<I", blob[:4])
    meta = json.loads(blob[4:4 + size].decode())
    out, at = [], 4 + size
    for n in meta.pop("sizes"):
        out.append(torch.frombuffer(bytearray(blob[at:at + n]), dtype=torch.uint8).bool() if n else
                   torch.zeros(0, dtype=torch.bool))
        at += n
    return meta, out


def _digest(mask: torch.Tensor | None) -> str | None:
    if mask is None:
        return None
    return hashlib.sha256(mask.detach().cpu().to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def merge_notes(per_unit: dict[int, list[str]]) -> list[str]:
    """Distinct notes in batch order, at most :data:`MAX_NOTES` (what one process collects)."""
    out: list[str] = []
    for k in sorted(per_unit):
        for m in per_unit[k]:
            if m not in out and len(out) < MAX_NOTES:
                out.append(m)
    return out


class Shard:
    """This process's part of one sharded evaluation.

    Pass it to :func:`robustzoo.eval.evaluate_model` (``shard=``) on every rank, with the same
    arguments: each rank must make the same calls in the same order, since the keys of the
    store are numbered by call (the health checks too run on every rank, on the same merged
    outcomes: anything they may ever run through ``run_keyed`` is then sharded alike, never
    awaited by rank 0 alone). Only rank 0 should be given a flag store on disk and a progress
    object.

    Attributes:
        info: rank and world size.
        stats: per-process work of the last attack this process ran sharded (rank 0 only):
            ``{"processes", "batches", "examples", "busy_s", "slowest_over_mean"}``.
    """

    def __init__(self, info: DistInfo, store: Any, poll_seconds: float = POLL_SECONDS):
        self.info = info
        self.store = store
        self.poll_seconds = poll_seconds
        self.stats: dict[str, Any] = {}
        self._calls = 0

    @classmethod
    def join(cls, info: DistInfo) -> Shard:
        """The shard of a new evaluation in the process group that torchrun set up."""
        global _evaluations
        _evaluations += 1
        return cls(info, dist.PrefixStore(f"robustzoo-eval/{_evaluations}/", _default_store()))

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def _prefix(self, what: str) -> str:
        self._calls += 1
        return f"{self._calls}:{what}/"

    def _wait(self, keys: list[str]) -> None:
        """Until every key is in the store (no time limit: a dead rank ends the whole job)."""
        while not self.store.check(keys):
            time.sleep(self.poll_seconds)

    def finish(self) -> None:
        """Leave the evaluation: the others say so and go; rank 0 waits until they have.

        No collective (whose timeout rank 0's health probes and writes could outlast): the
        other ranks never wait for rank 0 here, and rank 0 keeps the process group (and, in a
        job it hosts, the store) up until every other rank is done with it.
        """
        if self.is_main:
            self._wait([f"left{r}" for r in range(1, self.info.world_size)])
        else:
            self.store.set(f"left{self.info.rank}", b"1")

    def agree(self, key: str, settings: dict[str, Any], after: list[str], block: int, only: torch.Tensor | None,
              n: int, saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]] | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]] | None:
        """Rank 0's saved outcomes of an attack, on every rank; a rank that set up another attack fails.

        Rank 0 alone reads the flag store; the others get what it found (complete, partial
        or nothing), so all of them skip, resume or start the attack alike.

        Raises:
            RunError: this rank's attack (settings, examples, batch size) is not rank 0's.
        """
        p = self._prefix("agree")
        self.stats = {}
        mine = {"key": key, "settings": _jsonable(settings), "after": list(after), "block": int(block), "n": int(n),
                "only": _digest(only)}
        if self.is_main:
            meta: dict[str, Any] = {"spec": mine, "entry": None}
            tensors: list[torch.Tensor] = []
            if saved is not None:
                meta["entry"] = _jsonable(saved[3])
                tensors = [saved[0], saved[1], saved[2]]
            self.store.set(p + "state", _pack(meta, tensors))
            return saved
        self._wait([p + "state"])
        meta, tensors = _unpack(self.store.get(p + "state"))
        if meta["spec"] != mine:
            diff = [k for k in mine if meta["spec"].get(k) != mine[k]]
            raise RunError(f"rank {self.info.rank} set up {key!r} unlike rank 0 (different {', '.join(diff)}): "
                           f"every process must see the same run directory, data and options")
        if meta["entry"] is None:
            return None
        return tensors[0], tensors[1], tensors[2], meta["entry"]

    def run_attack(self, model: nn.Module, data: TensorData, spec: Any, ctx: AttackContext,
                   batch_size: int = 256, progress: Progress | None = None, only: torch.Tensor | None = None, *,
                   resume: tuple[torch.Tensor, torch.Tensor] | None = None, checkpoint: Any = None,
                   label: str | None = None, checkpoint_interval: float = 0.0) -> AttackResult:
        """:func:`robustzoo.eval.run_attack` with its batches shared out among the ranks.

        Same arguments and result, on every rank: the outcomes of all examples. Batch k
        (examples ``k*bs .. (k+1)*bs - 1`` of ``data``) is run by whichever rank takes it
        from the queue, through ``run_attack`` with ``offset=k*bs``. Rank 0 merges the
        outcomes, reports ``progress`` and calls ``checkpoint`` (at most every
        ``checkpoint_interval`` seconds); the others pass None for both.
        """
        n = len(data)
        bs = spec.batch_size or batch_size
        attacked = torch.ones(n, dtype=torch.bool) if only is None else only.detach().cpu().bool().clone()
        flags = torch.zeros(n, dtype=torch.bool)
        done = torch.zeros(n, dtype=torch.bool)
        if resume is not None:
            flags, done = resume[0].detach().cpu().bool().clone(), resume[1].detach().cpu().bool().clone()
        units = [(s, min(s + bs, n)) for s in range(0, n, bs)]
        pending = [k for k, (a, b) in enumerate(units) if not bool(done[a:b].all())]
        p = self._prefix("run")
        t0 = time.perf_counter()
        main = self.is_main
        task = progress.task_start(label or spec.name, total=n, completed=int(done.sum())) \
            if main and progress is not None else None
        notes: dict[int, list[str]] = {}
        merged: set[int] = set()
        last_checkpoint = time.monotonic()

        def merge(k: int, unit_flags: torch.Tensor, unit_notes: list[str]) -> None:
            a, b = units[k]
            flags[a:b] = unit_flags
            done[a:b] = True
            notes[k] = unit_notes
            merged.add(k)

        posted = 0  # batches other ranks had posted at rank 0's last look

        def progressed() -> None:  # rank 0, after merging: the bar, and a save now and then
            nonlocal last_checkpoint
            if task is not None:
                progress.task_update(task, int(done.sum()))
            if checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_interval:
                checkpoint(flags.clone(), attacked, done.clone())
                last_checkpoint = time.monotonic()

        def collect() -> None:  # rank 0: the batches other ranks have posted since the last look
            nonlocal posted
            count = int(self.store.add(f"{p}posted", 0))  # one round trip when nothing is new
            if count == posted:
                return
            posted = count
            new = [k for k in pending if k not in merged and self.store.check([f"{p}u{k}"])]
            for k in new:
                meta, (unit_flags,) = _unpack(self.store.get(f"{p}u{k}"))
                merge(k, unit_flags, meta["notes"])
            if new:
                progressed()

        busy, mine, examples = 0.0, 0, 0
        while True:
            if main:
                collect()
            i = int(self.store.add(f"{p}next", 1)) - 1
            if i >= len(pending):
                break
            k = pending[i]
            a, b = units[k]
            t = time.perf_counter()
            rows = torch.arange(a, b, device=data.x.device)
            res = run_attack(model, data.take(rows), spec, ctx, bs, None, only=attacked[a:b],
                             resume=(flags[a:b], done[a:b]), offset=a)
            busy += time.perf_counter() - t
            mine += 1
            examples += int((attacked[a:b] & ~done[a:b]).sum())
            if main:
                merge(k, res.flags, res.notes)
                progressed()
            else:
                self.store.set(f"{p}u{k}", _pack({"notes": res.notes}, [res.flags]))
                self.store.add(f"{p}posted", 1)
        self.store.set(f"{p}busy{self.info.rank}",
                       json.dumps({"busy_s": busy, "batches": mine, "examples": examples}).encode())
        world = self.info.world_size
        if main:
            while len(merged) < len(pending):
                collect()
                if len(merged) < len(pending):
                    time.sleep(self.poll_seconds)
            self._wait([f"{p}busy{r}" for r in range(world)])
            work = [json.loads(self.store.get(f"{p}busy{r}").decode()) for r in range(world)]
            final_notes = merge_notes(notes)
            self.store.set(f"{p}final", _pack({"notes": final_notes}, [flags]))
            mean = sum(w["busy_s"] for w in work) / world
            self.stats = {"processes": world, "batches": [w["batches"] for w in work],
                          "examples": [w["examples"] for w in work],
                          "busy_s": [round(w["busy_s"], 3) for w in work],
                          "slowest_over_mean": round(max(w["busy_s"] for w in work) / mean, 3) if mean > 0 else 1.0}
            if task is not None:
                progress.task_update(task, n)
                progress.task_end(task)
        else:
            self._wait([f"{p}final"])
            meta, (flags,) = _unpack(self.store.get(f"{p}final"))
            final_notes = meta["notes"]
            self.stats = {}
        return AttackResult(attack=spec.name, correct=int(flags.sum()), n=n, settings=spec.settings(ctx),
                            seconds=time.perf_counter() - t0, flags=flags, attacked=attacked,
                            kind=getattr(spec, "kind", "white-box"), notes=list(final_notes))
