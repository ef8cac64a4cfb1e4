"""Zoo entries: alias -> Hub repo pinned to a commit, with the sha256 of every file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ZooEntry:
    """A published model.

    Attributes:
        name: alias, ``<method>[-<variant>]-<arch>[-<dataset>]``.
        repo_id: Hub repo ``org/name`` (empty when no weights are published yet).
        revision: 40-hex commit sha the entry is pinned to.
        files: filename -> sha256 of each file to download.
        architecture, dataset, threat_model, method, settings, recipe: what it is and how to
            reproduce it.
        results: headline accuracies, e.g. {"clean": 0.86, "autoattack": 0.55}.
        card: path of its model card under model_cards/.
    """

    name: str
    repo_id: str = ""
    revision: str = ""
    files: dict[str, str] = field(default_factory=dict)
    architecture: str = ""
    dataset: str = ""
    threat_model: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    results: dict[str, float] = field(default_factory=dict)
    recipe: str = ""
    card: str = ""
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooEntry:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def published(self) -> bool:
        return bool(self.repo_id and self.revision and self.files)
