"""Recipes: named training configurations with the settings of a paper or its code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named configuration for ``robustzoo train --recipe NAME``.

    Attributes:
        name: e.g. 'cat-cw-wrn34'.
        objective: objective name.
        settings: config keys and objective settings (same namespace as ``--set``).
        source: where the numbers come from (paper table or code file).
        description: one line.
    """

    name: str
    objective: str
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    description: str = ""
