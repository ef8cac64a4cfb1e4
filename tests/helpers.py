"""Helpers for tests: run the CLI in-process and capture its output."""

from __future__ import annotations

from pathlib import Path

import pytest


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``robustzoo ARGS`` in-process; return (exit code, stdout, stderr)."""
    from robustzoo.cli import main

    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A user error: non-zero exit, one 'error:' line, no traceback, mentioning each needle."""
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def install_dist(site: Path, dist: str, version: str, eps: dict[str, str]) -> None:
    """Make ``site`` hold an installed-distribution record with robustzoo entry points."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{k} = {v}" for k, v in eps.items())
    (info / "entry_points.txt").write_text(f"[robustzoo]\n{lines}\n")


class Recorder:
    """A :class:`robustzoo.progress.Progress` that records the events it receives."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def task_start(self, label: str, total: int, completed: int = 0) -> str:
        self.events.append(("start", label, total, completed))
        return label  # the handle the engine passes back

    def task_update(self, task: str, completed: int, **fields: float) -> None:
        self.events.append(("update", task, completed, fields))

    def task_end(self, task: str) -> None:
        self.events.append(("end", task))

    def epoch_end(self, row) -> None:
        self.events.append(("epoch", dict(row)))

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]

    def updates(self, task: str) -> list[tuple[int, dict]]:
        return [(e[2], e[3]) for e in self.of("update") if e[1] == task]


def load_script(path: str):
    """Import a script of the repository (benchmarks/..., docs/...) as a module, by its path."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
    mod = importlib.util.module_from_spec(spec)
    # registered first, as importlib's recipe does: dataclasses look their module up while defined
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def newest_record(run_dir: Path) -> dict:
    """The run's most recent evaluation record in RUN_DIR/evals/ (eval.json holds only a canonical
    one, and a tiny degenerate test run has none)."""
    import json

    paths = sorted(Path(run_dir, "evals").glob("*.json"), key=lambda p: p.stat().st_mtime)
    assert paths, f"{run_dir} has no evaluation record"
    return json.loads(paths[-1].read_text())
