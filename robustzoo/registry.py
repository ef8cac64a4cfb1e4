"""Name -> entry registries with wildcard listing and close-match errors."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import NotFoundError, RobustzooError, did_you_mean

T = TypeVar("T")


def natural_key(name: str) -> list[object]:
    """Sort key that orders 'pgd20' before 'pgd100' (digits compare as numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class DuplicateNameError(RobustzooError):
    """Two plugins registered the same name in one registry."""


class Registry(Generic[T]):
    """A registry of named entries of one kind (datasets, attacks, ...).

    Args:
        kind: plural noun used in messages and in ``robustzoo list KIND``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, name: str, entry: T, owner: str = "?") -> None:
        """Add ``entry`` under ``name``; a second entry with the same name is an error."""
        if not name or not isinstance(name, str):
            raise RobustzooError(f"{self.kind}: invalid name {name!r} from plugin {owner!r}")
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind[:-1]} {name!r} is registered twice (by {self._owners[name]!r} and "
                f"{owner!r}); disable one with ROBUSTZOO_DISABLE_PLUGINS"
            )
        self._entries[name] = entry
        self._owners[name] = owner

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise :class:`NotFoundError` with close matches."""
        try:
            return self._entries[name]
        except KeyError:
            raise NotFoundError(
                f"unknown {self.kind[:-1]} {name!r}{did_you_mean(name, self._entries)}; "
                f"see `robustzoo list {self.kind}`"
            ) from None

    def owner(self, name: str) -> str:
        """Name of the plugin that registered ``name``."""
        return self._owners[name]

    def list(self, pattern: str | None = None) -> list[str]:
        """Names matching a shell-style wildcard ``pattern`` (all when None), naturally sorted."""
        names = self._entries.keys()
        if pattern:
            if not any(ch in pattern for ch in "*?["):
                pattern = f"*{pattern}*"
            names = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        return sorted(names, key=natural_key)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in natural order."""
        return [(n, self._entries[n]) for n in self.list()]
