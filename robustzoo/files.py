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

The operating system's refusals (disk full, read-only, permission, not a directory, name too
long) end as one line naming the file as the user's path composed it (never a temporary
name) and the cause (:func:`os_error`). A run directory has one writer at a time
(:func:`run_lock`: an OS file lock on ``RUN_DIR/.robustzoo.lock``, released when the process
ends however it ends, so ``kill -9`` leaves nothing stale).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunBusyError, StorageError, UsageError

try:  # POSIX; elsewhere (Windows) run directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

#: The file a directory must hold to be a run (what ``robustzoo train`` writes first).
RUN_MARKER = "config.json"
#: The lock file of a run directory (:func:`run_lock`); not part of the run's contents.
LOCK_FILE = ".robustzoo.lock"

#: errno -> (cause, what to do), for :func:`os_error`.
_CAUSES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full (no space left on the device)", "free some space, or write to another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or write to another disk"),
    errno.EROFS: ("the file system is read-only", "choose a folder you can write to"),
    errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
    errno.EPERM: ("the operation is not permitted", "choose a folder you can write to, or fix its permissions"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.ENAMETOOLONG: ("a file name or the path is too long for the file system",
                         "use a shorter name or a shallower folder"),
    errno.EISDIR: ("it is a folder, not a file", "check the path"),
    errno.ENOENT: ("a folder on the path does not exist", "check the path"),
    errno.EIO: ("an input/output error (a failing disk or a lost network mount)", "check the disk and try again"),
    errno.EMFILE: ("too many open files", "raise the limit (ulimit -n) and try again"),
}


def os_error(exc: OSError, path: str | Path | None = None, action: str = "write",
             fix: str | None = None) -> StorageError:
    """The one-line error for an OSError on ``path``: the path as given, the cause, the fix.

    ``path`` is the file robustzoo meant (a run's eval.json), never the temporary file beside
    it that the OS error names; None falls back to the error's own file name. ``fix``
    replaces the generic advice.
    """
    cause, advice = _CAUSES.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check the path and try again"))
    fix = fix or advice
    where = path if path is not None else (exc.filename or "a file")
    return StorageError(f"cannot {action} {where}: {cause}; {fix}")


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
    The operating system's refusal (disk full, read-only, ...) at any step, the caller's
    own write included, is a :class:`StorageError` naming ``path`` (:func:`os_error`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        yield Path(tmp)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise os_error(exc, path) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    try:
        Path(tmp).unlink(missing_ok=True)
    except OSError:  # the folder went read-only meanwhile: the original error is the one to report
        pass


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
    try:
        return _check_output_file(Path(path), path, option)
    except OSError as exc:  # a name too long, a path through a file, ...: what stat() refuses
        raise UsageError(f"{option} {path}: {_CAUSES.get(exc.errno or -1, (exc.strerror,))[0]}") from None


def _check_output_file(p: Path, path: str | Path, option: str) -> bool:
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
    try:
        _check_run_dir(Path(path), path, option, create_parent)
    except OSError as exc:  # a name too long, a path through a file, ...: what stat() refuses
        raise UsageError(f"{option} {path}: {_CAUSES.get(exc.errno or -1, (exc.strerror,))[0]}; give "
                         f"another directory") from None


def _check_run_dir(p: Path, path: str | Path, option: str, create_parent: bool) -> None:
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path} is a file; give a directory for the run (it is created)")
    if p.is_dir():
        if (p / RUN_MARKER).exists():
            raise UsageError(f"{path} already holds a run; continue it with `robustzoo train --resume {path}` "
                             f"or choose another {option}")
        present = sorted(e.name + ("/" if e.is_dir() else "") for e in p.iterdir() if e.name != LOCK_FILE)
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
        cause, fix = _CAUSES.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check the path"))
        raise UsageError(f"{option} {path}: cannot create it ({cause}); {fix}") from None


def replaced_note(path: str | Path, existed: bool) -> str:
    """'wrote PATH', saying so when it replaced a file that was there."""
    return f"wrote {path}" + (" (replaced the file that was there)" if existed else "")


# -- one writer per run directory -----------------------------------------------------------

@contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[None]:
    """Hold the run directory's lock while the block runs: one writer (train or eval) at a time.

    An exclusive, non-blocking ``flock`` on ``RUN_DIR/.robustzoo.lock``. The kernel drops it
    when the file is closed or the process ends, however it ends (Ctrl-C, ``kill -9``, a
    crash), so a lock is never stale; the file itself stays (it only says who held it last).
    A second writer gets one line naming the process that holds the lock.

    Args:
        run_dir: an existing run directory.
        command: what this process does there ('train', 'eval'), recorded for the message.

    Raises:
        RunBusyError: another process holds the lock.
        StorageError: the lock file cannot be created (read-only folder, ...).
    """
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None:  # pragma: no cover - no flock on this platform
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    except OSError as exc:
        refused = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        raise os_error(exc, run_dir, "write in", f"robustzoo {command} writes into the run directory: copy it to a "
                                                 f"folder you can write to" if refused else None) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise os_error(exc, path, "lock") from None
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "a process that did not say"
            raise RunBusyError(f"{run_dir} is in use: another robustzoo process is writing it ({holder}); wait for "
                               f"it to end, or train into another --out (two writers would mix their files)"
                               ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        args = " ".join(sys.argv[1:])[:200] if Path(sys.argv[0]).name in ("robustzoo", "__main__.py") else ""
        note = f"pid {os.getpid()}: robustzoo {command}" + (f" ({args})" if args else "") + f", since {stamp}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode("utf-8") + b"\n", 0)
        except OSError:  # the note is a courtesy; the lock is what counts
            pass
        yield
    finally:
        os.close(fd)  # releases the lock
