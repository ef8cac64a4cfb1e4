"""The drawing: rich tables of results and rich progress bars on stderr.

The only module that turns the engines' data and events into pictures for a terminal.
The command line uses it; the Python API uses it only when a caller asks for bars
(``robustzoo.train(..., show_progress=True)``); the engines never import it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# --- progress -------------------------------------------------------------------------------


class _FiguresColumn(ProgressColumn):
    """A training epoch's running loss and accuracy; the elapsed time of any other task."""

    def __init__(self) -> None:
        super().__init__()
        self._elapsed = TimeElapsedColumn()

    def render(self, task: Task) -> Text:
        f = task.fields
        if "loss" in f:
            return Text(f"loss {f['loss']:.3f} acc {f.get('acc', 0.0):.3f}")
        return self._elapsed.render(task)


class RichProgress:
    """A :class:`robustzoo.progress.Progress` that draws transient rich bars on stderr.

    The bars appear on the first task and vanish when the object is closed (use it as a
    context manager around the call that reports to it). A finished attack keeps its bar,
    with its final count and time, until the evaluation ends; a finished epoch's bar gives
    way to the epoch's line. On a stderr that is not a terminal (logs, CI) no bars are drawn;
    epoch lines and notes are written in both cases.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(file=sys.stderr)
        self._bars: Progress | None = None
        self._finished: list[Any] = []

    @property
    def refresh_seconds(self) -> float | None:
        """Running figures four times a second on a terminal; none when no bar is drawn."""
        return 0.25 if self._console.file.isatty() else None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (the bars are transient: they leave nothing behind)."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        self._finished.clear()

    def _started(self) -> Progress:
        if self._bars is None:
            self._bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  _FiguresColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                  console=self._console, transient=True,
                                  disable=not self._console.file.isatty())
            self._bars.start()
        return self._bars

    def task_start(self, label: str, total: int, completed: int = 0) -> Any:
        return self._started().add_task(label, total=total, completed=completed)

    def task_update(self, task: Any, completed: int, **fields: float) -> None:
        if self._bars is not None:
            self._bars.update(task, completed=completed, **fields)

    def task_end(self, task: Any) -> None:
        if self._bars is not None:
            self._bars.stop_task(task)
            self._finished.append(task)

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        if self._bars is not None:
            for task in self._finished:
                self._bars.remove_task(task)
        self._finished.clear()
        sys.stderr.write(epoch_line(row) + "\n")

    def note(self, message: str) -> None:
        sys.stderr.write(message + "\n")


def epoch_line(row: Mapping[str, Any]) -> str:
    """One line for a finished training epoch (a row of metrics.jsonl)."""
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.3f}", f"train acc {row['train_acc']:.3f}"]
    if "val_clean" in row:
        parts += [f"val clean {row['val_clean']:.3f}", f"val pgd {row['val_pgd']:.3f}"]
    parts.append(f"{row['seconds']:.1f}s" + (" *best*" if row.get("best") else ""))
    return "  ".join(parts)


# --- tables ---------------------------------------------------------------------------------

def _ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * lo:.1f}–{100 * hi:.1f}"


def results_table(report: dict[str, Any], title: str = "Evaluation") -> Table:
    """A rich Table of an eval.json dictionary (health summary in the caption)."""
    t = Table(title=title)
    for col in ("attack", "accuracy", "95% CI", "n", "settings"):
        t.add_column(col, justify="right" if col in ("accuracy", "n") else "left")
    for r in report["results"]:
        sett = ", ".join(f"{k}={_fmt(v, k in PIXEL_KEYS)}" for k, v in r.get("settings", {}).items())
        label = r["attack"] + (" [dim](cascaded)[/dim]" if r.get("cascaded") else "")
        label += " [red](suspect)[/red]" if r.get("suspect") else ""
        label += " [yellow](rand version)[/yellow]" if r.get("settings", {}).get("version") == "rand" else ""
        label += " [yellow](custom)[/yellow]" if r.get("standard") is False else ""
        t.add_row(label, f"{100 * r['accuracy']:.2f}%", _ci(r), str(r["n"]), sett)
        for c in r.get("components", []):
            t.add_row(f"  [dim]after {c['attack']}[/dim]", f"[dim]{100 * c['accuracy']:.2f}%[/dim]",
                      f"[dim]{_ci(c)}[/dim]", f"[dim]{c['n']}[/dim]", "[dim]running worst case[/dim]")
    if "worst_case" in report:
        w = report["worst_case"]
        label = "[bold]worst case[/bold]" + (" [red](suspect)[/red]" if w.get("suspect") else "")
        t.add_row(label, f"{100 * w['accuracy']:.2f}%", _ci(w), str(w["n"]),
                  "per example, over " + ",".join(w["attacks"]))
    h = report.get("health")
    if h:
        skipped = [c["name"] + (f" (needs {', '.join(c['needs'])})" if c.get("needs") else "")
                   for c in h.get("checks", []) if c["status"] == "skipped"]
        not_checked = f"not checked: {', '.join(skipped)}" if skipped else ""
        if h.get("failed"):
            why = {"degenerate": "the model is degenerate", "noop": "an attack did not act"}
            t.caption = (f"[red]health: FAILED[/red] — {', '.join(h['failed'])}: "
                         f"{'; '.join(why.get(c, c) for c in h['failed'])}: these robust numbers mean nothing; "
                         "see the health table / eval.json")
        elif h.get("flagged"):
            t.caption = (f"[red]health: suspect[/red] — {', '.join(h['flagged'])} flagged (possible "
                         f"gradient masking){'; ' + not_checked if skipped else ''}; see the health table / eval.json")
        else:
            t.caption = "health: no sign of gradient masking" + (f" ({not_checked})" if skipped else "")
    notes = []
    if not report.get("standard", True):
        custom = report.get("custom_settings") or {}
        notes.append("[yellow]custom protocol[/yellow]: " + "; ".join(
            f"{a} " + ", ".join(f"{k}={v['value']} (standard {v['standard']})" for k, v in d.items())
            for a, d in custom.items()))
    aa = report.get("autoattack_version")
    if aa and aa.get("version") != "standard":
        notes.append(f"[yellow]AutoAttack {aa['version']} version[/yellow] ({aa.get('reason', '')})")
    if report.get("precision"):
        notes.append(f"precision: {report['precision']}")
    if notes:
        t.caption = "\n".join(([t.caption] if t.caption else []) + notes)
    return t


def sweep_table(report: dict[str, Any]) -> Table:
    """A rich Table of ``report['eps_sweep']``."""
    t = Table(title=f"accuracy vs ε ({report.get('eps_sweep_attack', '')}, cascaded over ε)")
    for col in ("ε", "accuracy", "95% CI", "n"):
        t.add_column(col, justify="right")
    for r in report.get("eps_sweep", []):
        t.add_row(_fmt(float(r["eps"]), True) if r["eps"] else "0", f"{100 * r['accuracy']:.2f}%", _ci(r), str(r["n"]))
    return t


def attacks_for_skipped_checks(report: dict[str, Any]) -> list[str]:
    """The attacks a report did not run that its skipped health checks need (in check order)."""
    ran = {r["attack"] for r in report.get("results", [])}
    needs = [a for c in (report.get("health") or {}).get("checks", []) if c.get("status") == "skipped"
             for a in c.get("needs", [])]
    return [a for a in dict.fromkeys(needs) if a not in ran]


def health_table(report: dict[str, Any]) -> Table:
    """A rich Table of ``report['health']``: one row per check."""
    h = report.get("health") or {}
    status = h.get("status", "not run")
    colour = {"suspect": "red", "failed": "bold red", "passed": "green"}.get(status, "yellow")
    t = Table(title=f"gradient-masking health: [{colour}]{status}[/{colour}]")
    for col in ("check", "status", "finding", "detects"):
        t.add_column(col, overflow="fold")
    style = {"flagged": "[red]flagged[/red]", "failed": "[bold red]FAILED[/bold red]",
             "passed": "[green]passed[/green]", "skipped": "[dim]skipped[/dim]"}
    for c in h.get("checks", []):
        finding = c["explanation"]
        if c["status"] == "skipped" and c.get("needs"):
            finding += f" — add {', '.join(c['needs'])} to --attacks to run it"
        t.add_row(c["name"], style.get(c["status"], c["status"]), finding, _detectable(c))
    return t


def _detectable(check: Mapping[str, Any]) -> str:
    """'≥ 5.0 pts at n=1000': the smallest gap a check could detect at the n it had."""
    d = check.get("detectable") or {}
    if d.get("gap") is None:
        return "—"
    return f"≥ {100 * d['gap']:.1f} pts at n={d.get('n')}"


#: Settings on the [0,1] pixel scale, shown as k/255 when they are whole multiples of 1/255.
PIXEL_KEYS = ("eps", "alpha")


def _fmt(v: Any, pixels: bool = False) -> str:
    if isinstance(v, float):
        # 8/255 reads better than 0.0314, but 0.2 better than 51/255: fractions only when
        # the decimal is not short.
        if pixels and 0 < v < 1 and abs(v * 255 - round(v * 255)) < 1e-5 and abs(v - round(v, 3)) > 1e-9:
            return f"{round(v * 255)}/255"
        return f"{v:g}"
    return str(v)
