"""Per-example attack outcomes saved next to a run, so an evaluation can resume.

``RUN_DIR/eval_flags.safetensors`` holds, for every attack (key), three bool vectors over the
evaluated examples, stored as uint8:

* ``flags::KEY``    – still correctly classified after the attack (robust so far);
* ``attacked::KEY`` – the attack ran on the example (the rest was already known to be wrong);
* ``done::KEY``     – the example's outcome is final (lets an interrupted attack resume
  at the next unfinished batch);

plus ``index`` (the examples' rows in the test split). The header (safetensors metadata
``robustzoo.eval_flags``) names the model fingerprint, ε, α, seed, n, norm and the number of
classes; an entry also records the attack's settings and ``after`` (the keys whose robust
examples it was run on). Entries are reused only when all of these match, so a changed
model, example choice, budget or setting never leaks old outcomes into a new table.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import RunError
from ..fast import FastModel
from ..runs import read_weights, save_weights

FLAGS_FILE = "eval_flags.safetensors"
FORMAT = 1


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's state (names, dtypes, shapes and bytes), 16 hex digits.

    The same weights give the same fingerprint with or without the evaluation's fast-path
    wrapper (:class:`robustzoo.fast.FastModel`, channels_last on CUDA).
    """
    if isinstance(model, FastModel):
        model = model.model
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _jsonable(v: Any) -> Any:
    """Settings as they compare after a JSON round trip (tuples become lists, ...)."""
    return json.loads(json.dumps(v, default=str))


class FlagStore:
    """Saved per-example outcomes of one evaluation (see the module docstring).

    Args:
        path: the safetensors file, or None to keep everything in memory only.
        header: what the outcomes depend on besides the attack itself.
        index: the evaluated examples' rows in the test split.
        min_interval: seconds between partial (mid-attack) saves; 0 saves every batch.
    """

    def __init__(self, path: str | Path | None, header: dict[str, Any], index: torch.Tensor,
                 min_interval: float = 10.0):
        self.path = Path(path) if path is not None else None
        self.header = _jsonable(dict(header, format=FORMAT))
        self.index = index.detach().cpu().long()
        self.min_interval = min_interval
        self.tensors: dict[str, torch.Tensor] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.discarded: str | None = None  # why a file on disk was not reused
        self._last_save = 0.0
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            tensors, meta = read_weights(self.path)
            info = json.loads(meta.get("robustzoo.eval_flags", "{}"))
        except (RunError, json.JSONDecodeError) as exc:
            self.discarded = f"unreadable ({exc})"
            return
        entries = info.get("entries", {}) if isinstance(info, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("header"), dict) or not isinstance(entries, dict) \
                or not all(isinstance(e, dict) for e in entries.values()):
            self.discarded = ("unreadable (its metadata robustzoo.eval_flags is not an object with a 'header' and "
                              "'entries' objects)")
            return
        bad = [k for k, t in tensors.items() if t.dim() != 1 or len(t) != len(self.index)]
        if bad and "index" in tensors and tensors["index"].dim() == 1 and all(
                t.dim() == 1 and len(t) == len(tensors["index"]) for t in tensors.values()):
            self.discarded = f"made on {len(tensors['index'])} examples, not these {len(self.index)}"
            return
        if bad:
            self.discarded = f"unreadable ({bad[0]} holds {tuple(tensors[bad[0]].shape)} values, not one per example)"
            return
        if info.get("header") != self.header:
            old = info.get("header", {})
            diff = [k for k in sorted(set(old) | set(self.header)) if old.get(k) != self.header.get(k)]
            self.discarded = "made with a different " + ", ".join(diff)
            return
        if "index" not in tensors or not torch.equal(tensors["index"].long(), self.index):
            self.discarded = "made on different examples"
            return
        self.tensors = {k: v for k, v in tensors.items() if k != "index"}
        self.entries = info.get("entries", {})

    def get(self, key: str, settings: dict[str, Any], after: list[str]
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]] | None:
        """(flags, attacked, done, entry) saved for ``key`` with these settings, or None."""
        e = self.entries.get(key)
        if e is None or e.get("settings") != _jsonable(settings) or e.get("after") != list(after):
            return None
        try:
            return (self.tensors[f"flags::{key}"].bool(), self.tensors[f"attacked::{key}"].bool(),
                    self.tensors[f"done::{key}"].bool(), e)
        except KeyError:
            return None

    def put(self, key: str, settings: dict[str, Any], after: list[str], flags: torch.Tensor,
            attacked: torch.Tensor, done: torch.Tensor, *, complete: bool, force: bool = True,
            **extra: Any) -> None:
        """Record an attack's outcomes; saves now when ``force`` or ``min_interval`` passed."""
        self.entries[key] = _jsonable(dict(extra, settings=settings, after=list(after), complete=complete))
        for name, t in (("flags", flags), ("attacked", attacked), ("done", done)):
            self.tensors[f"{name}::{key}"] = t.detach().cpu().to(torch.uint8)
        if force or time.monotonic() - self._last_save >= self.min_interval:
            self.save()

    def save(self) -> None:
        """Write the file atomically (no-op for an in-memory store)."""
        if self.path is None:
            return
        tensors = dict(self.tensors, index=self.index)
        save_weights(self.path, tensors, {"eval_flags": json.dumps(
            {"header": self.header, "entries": self.entries})})
        self._last_save = time.monotonic()
