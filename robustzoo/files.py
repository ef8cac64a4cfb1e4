"""Writing files: atomically, with the user's umask, and only where the user meant.

Every file robustzoo writes goes to a temporary file beside it and is renamed over the target
when complete (:func:`atomic_path`), so a crash or Ctrl-C never leaves half a file. The new
file gets the permissions any other program would give it (``0o666`` less the umask), or
keeps those of the file it replaces.

The output-path convention (docs/cli.md, "Output files"), checked before any work starts:

* a file you name (``--json FILE``, ``--plot``, ``--html``, ``--out FILE``) goes into a
  folder that exists: a missing folder is refused with its name, not created (a typo would
  make a tree somewhere); an existing file is replaced, atomically, and the command says so;
* a run directory you name (``train --out DIR``) may be created, but only its last
  component; it must be new, empty, or (for ``--resume``) a run: a folder holding other
  files is refused rather than mixed with a run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UsageError

#: The file a directory must hold to be a run (what ``robustzoo train`` writes first).
RUN_MARKER = "config.json"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads are safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The parent folder is created if needed (run directories hold subfolders such as
    ``state/``); paths a user names are checked first with :func:`check_output_file`.
    ``mkstemp`` creates the temporary file with mode 0600; before the rename it gets the
    mode of the file it replaces, or ``0o666`` less the umask for a new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_file(path: str | Path, option: str) -> bool:
    """Check a file path a user gave for output; True when a file is there (it will be replaced).

    Raises:
        UsageError: the path is a directory, its folder does not exist or is not a folder, or
            the folder is not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name (e.g. {p / 'out.json'})")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{option} {path}: folder {parent} does not exist; create it first "
                         f"(mkdir -p {parent}) or check the path for a typo")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write into {parent} (permission denied)")
    if p.exists() and not p.is_file():
        raise UsageError(f"{option} {path}: exists and is not a regular file")
    return p.exists()


def check_run_dir(path: str | Path, option: str = "--out", *, create_parent: bool = False) -> None:
    """Check a directory a new run will be written to.

    Args:
        path: the run directory.
        option: how the user named it, for the message.
        create_parent: allow missing folders above it (robustzoo's own default ``runs/``).

    Raises:
        UsageError: the path is a file, already holds a run (continue it with ``--resume``),
            holds other files, or its parent folder does not exist (unless ``create_parent``).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path} is a file; give a directory for the run (it is created)")
    if p.is_dir():
        if (p / RUN_MARKER).exists():
            raise UsageError(f"{path} already holds a run; continue it with `robustzoo train --resume {path}` "
                             f"or choose another {option}")
        present = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir())
        if present:
            more = f" and {len(present) - 3} more" if len(present) > 3 else ""
            raise UsageError(f"{option} {path} is not empty and is not a run (it holds "
                             f"{', '.join(present[:3])}{more}); give a new or empty directory, which "
                             f"robustzoo creates")
        return
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        if create_parent:
            return
        raise UsageError(f"{option} {path}: folder {parent} does not exist; robustzoo creates only the "
                         f"run directory itself: create {parent} first (mkdir -p {parent}) or check the path")
    try:  # can a directory be made there (read-only file systems, /proc)? A private probe, removed
        os.rmdir(tempfile.mkdtemp(prefix=".robustzoo-probe-", dir=parent))
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create a directory in {parent} "
                         f"({exc.strerror or type(exc).__name__}); choose a directory you can write to") from None


def make_dir(path: str | Path, option: str = "--out", *, parents: bool = True) -> None:
    """Create a directory (existing is fine), turning the operating system's refusal into one line."""
    try:
        Path(path).mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create it ({exc.strerror or type(exc).__name__}); "
                         f"choose a directory you can write to") from None


def replaced_note(path: str | Path, existed: bool) -> str:
    """'wrote PATH', saying so when it replaced a file that was there."""
    return f"wrote {path}" + (" (replaced the file that was there)" if existed else "")
