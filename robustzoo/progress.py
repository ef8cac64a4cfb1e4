"""How the engines report progress: events, not drawing.

Training and evaluation never print. They take an optional ``progress`` object and call
the methods below on it; the command line passes one that draws rich progress bars
(:class:`robustzoo.ui.RichProgress`), the Python API passes none unless asked
(``show_progress=True`` or ``progress=...``), and a test or a notebook can pass its own::

    class Log:
        def task_start(self, label, total, completed=0):
            print("start", label, total)
            return label
        def task_update(self, task, completed, **fields): ...
        def task_end(self, task): print("done", task)
        def epoch_end(self, row): print(row)
        def note(self, message): print("note:", message)

    robustzoo.evaluate(run_dir, attacks=["clean", "pgd20"], progress=Log())

A task is one pass over examples (a training epoch, one attack); its handle is whatever
:meth:`Progress.task_start` returned. The engines report only from one process (rank 0
under ``torchrun``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Progress(Protocol):
    """The events training and evaluation report (see the module docstring)."""

    def task_start(self, label: str, total: int, completed: int = 0) -> Any:
        """A task of ``total`` units (batches of an epoch, examples of an attack) begins;
        ``completed`` of them are already done (a resumed attack). Returns a handle."""

    def task_update(self, task: Any, completed: int, **fields: float) -> None:
        """``completed`` units of ``task`` are done; ``fields`` are running figures
        (training: ``loss`` and ``acc``, averages over the epoch so far)."""

    def task_end(self, task: Any) -> None:
        """``task`` is finished (or stopped by an error)."""

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        """A training epoch is finished; ``row`` is its line of metrics.jsonl."""

    def note(self, message: str) -> None:
        """Something the user should know that is not an error, in one line (e.g. saved
        per-example outcomes that could not be reused)."""
