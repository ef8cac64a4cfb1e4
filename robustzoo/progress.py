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

Running figures (a training epoch's loss and accuracy) cost a host sync on a GPU each
time they are read, so the trainer sends them at most once per ``refresh_seconds`` (an
optional attribute of the progress object; default :data:`REFRESH_SECONDS`) and at the
end of the task. A progress object that shows nothing while a task runs (bars on a
stderr that is not a terminal) sets ``refresh_seconds = None``: it then gets only the
task's final update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

#: Seconds between a task's running updates when the progress object sets no
#: ``refresh_seconds`` of its own: a few a second, each a host sync on a GPU.
REFRESH_SECONDS = 0.25


def refresh_seconds(progress: Any) -> float | None:
    """How often ``progress`` wants running figures, in seconds (None: only at the end)."""
    if progress is None:
        return None
    value = getattr(progress, "refresh_seconds", REFRESH_SECONDS)
    return None if value is None else max(float(value), 0.0)


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
