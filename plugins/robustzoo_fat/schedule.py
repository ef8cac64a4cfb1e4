"""The τ schedule of FAT: which early-stop budget each epoch uses.

Written as ``τ@E,...,τ``: "use τ while the (1-based) epoch is ≤ E", the last bare τ for the
rest. ``0@50,1@90,2`` is the FAT paper's AT schedule (τ = 0 up to epoch 50, 1 up to 90, then 2);
a single number (``3``) is a constant τ. Bounds below 1 are fractions of the run, like the
trainer's lr milestones: ``0@0.25,1@0.5,2`` on a 40-epoch run switches after epochs 10 and 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustzoo.errors import UsageError

FORMAT_HINT = "write it as τ@last_epoch,...,τ, e.g. 0@50,1@90,2 (or one integer for a constant τ)"


@dataclass(frozen=True)
class TauSchedule:
    """A parsed τ schedule.

    Attributes:
        pieces: (τ, last epoch or fraction of the run) pairs in increasing order.
        final: τ after the last bound.
    """

    pieces: tuple[tuple[int, float], ...]
    final: int

    @classmethod
    def parse(cls, text: str) -> TauSchedule:
        """Parse ``"0@50,1@90,2"``; raise :class:`UsageError` naming the bad part."""
        items = [t.strip() for t in str(text).split(",")]
        pieces: list[tuple[int, float]] = []
        try:
            for item in items[:-1]:
                tau, _, bound = item.partition("@")
                pieces.append((int(tau), float(bound)))
            if "@" in items[-1]:
                raise ValueError("the last part needs no @epoch")
            final = int(items[-1])
        except ValueError as exc:
            raise UsageError(f"fat: tau_schedule={text!r} is not valid ({exc}); {FORMAT_HINT}") from None
        taus = [t for t, _ in pieces] + [final]
        bounds = [b for _, b in pieces]
        if any(t < 0 for t in taus):
            raise UsageError(f"fat: tau_schedule={text!r} has a negative τ; budgets are >= 0")
        if any(not b > 0 or not math.isfinite(b) for b in bounds) or any(
                b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
            raise UsageError(f"fat: tau_schedule={text!r} needs positive, increasing epoch bounds; "
                             f"{FORMAT_HINT}")
        if bounds and min(bounds) < 1 <= max(bounds):
            raise UsageError(f"fat: tau_schedule={text!r} mixes fractions (< 1) and epoch numbers; "
                             f"use one kind")
        return cls(tuple(pieces), final)

    def at(self, epoch: int, epochs: int) -> int:
        """τ for the 1-based ``epoch`` of a run of ``epochs`` epochs."""
        for tau, bound in self.pieces:
            last = bound * epochs if bound < 1 else bound
            if epoch <= last:
                return tau
        return self.final

    def __str__(self) -> str:
        return ",".join([f"{t}@{b:g}" for t, b in self.pieces] + [str(self.final)])
