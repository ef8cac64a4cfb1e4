"""Errors that the command line turns into one-line messages.

Every error a user can cause derives from :class:`RobustzooError`; the CLI prints
``error: <message>`` and exits with a non-zero code (traceback only with ``--debug``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobustzooError(Exception):
    """Base class of every error robustzoo reports to a user."""

    exit_code = 1


class UsageError(RobustzooError, ValueError):
    """Bad option value (epsilon out of range, unknown ``--set`` key, ...)."""

    exit_code = 2


class NotFoundError(RobustzooError, LookupError):
    """A registry name, run directory, dataset or Hub file that does not exist."""


class RunError(RobustzooError):
    """A run directory or checkpoint that is incomplete, corrupt or inconsistent."""


class DataError(RunError):
    """A dataset file that is damaged or does not fit its dataset (counts, labels, image size)."""


class IntegrityError(RobustzooError):
    """A downloaded file whose sha256 does not match the pinned one."""


class HubError(RobustzooError):
    """Talking to the Hugging Face Hub failed."""


class Interrupted(RobustzooError):
    """Ctrl-C: the message says what was kept and how to continue."""

    exit_code = 130  # 128 + SIGINT, as a shell reports it


class StorageError(RobustzooError):
    """The operating system refused a write or a read: disk full, read-only, permission, name too long."""


class RunBusyError(RobustzooError):
    """Another process is writing the same run directory (train or eval holds its lock)."""


class SettingWarning(UserWarning):
    """An allowed setting that changes what a method is (e.g. TRADES with β = 0: clean training)."""


class UnvouchedModelWarning(UserWarning):
    """A model was loaded that no robustzoo record vouches for (no robustzoo card, pin or
    ``--expect-sha256``): its files were checked against the server's hashes only."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (for 'did you mean')."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    out = [lowered[h] for h in hits]
    # Substring hits catch prefixes such as 'pgd' -> 'pgd20' that difflib ranks low.
    for c in candidates:
        if len(out) >= n:
            break
        if name and name.lower() in c.lower() and c not in out:
            out.append(c)
    return out


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Format a ' (did you mean 'a' or 'b'?)' suffix, or '' when nothing is close."""
    hits = close_matches(name, candidates)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(repr(h) for h in hits) + "?)"


def first_sentence(error: BaseException | str, limit: int = 160) -> str:
    """The first sentence of a library's error message, for a one-line message of ours.

    Cut at a word (``…``) when longer than ``limit`` characters, never inside one; an exception
    without a message gives its type's name.
    """
    text = str(error).strip()
    line = (text.splitlines() or [""])[0]
    end = line.find(". ")
    line = line[:end + 1] if end >= 0 else line
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0] + " …"
    if not line and isinstance(error, BaseException):
        return type(error).__name__
    return line
