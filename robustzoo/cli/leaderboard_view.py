"""Drawing a leaderboard: rich tables for the terminal, a single-file static HTML page.

The data comes from :mod:`robustzoo.leaderboard`; nothing here computes a number. The HTML
page needs no external asset (its CSS and the few lines of JavaScript that sort a column on a
click are inline), so it can be opened from disk or published as it is.
"""

from __future__ import annotations

import html
from typing import Any

from ..cards import NORM_LABELS, attack_label, eps_text
from ..leaderboard import Board, Cell, Leaderboard


def board_title(board: Board) -> str:
    return f"{board.dataset} · {NORM_LABELS.get(board.norm, board.norm)} ε = {eps_text(board.eps)}"


def pct(cell: Cell | None) -> str:
    return "—" if cell is None else f"{100 * cell.accuracy:.2f}"


def interval(cell: Cell) -> str:
    if cell.ci95 is None:
        return "—"
    return f"{100 * cell.ci95[0]:.1f}–{100 * cell.ci95[1]:.1f}"


def rich_tables(lb: Leaderboard) -> list[Any]:
    """One rich Table per board (the method and the notes are in the caption, the JSON and the
    HTML page; a 'ranked by' column appears only when some row is not ranked by AutoAttack)."""
    from rich.table import Table

    tables = []
    for board in lb.boards:
        t = Table(title=board_title(board), title_justify="left")
        labels = [attack_label(a) for a in board.attacks]
        mixed = any(r.ranked_by != "autoattack" for r in board.rows)
        cols = ["#", "model", "arch", "clean", *labels, *(["ranked by"] if mixed else []), "n", "95% CI",
                "health"]
        for col in cols:
            numeric = col in ("#", "clean", "n", "95% CI", *labels)
            t.add_column(col, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=col in ("model", "95% CI"))
        for r in board.rows:
            health = f"[red]{r.health}[/red]" if r.health == "suspect" else r.health
            rank = f"{r.rank}*" if r.note else str(r.rank)
            t.add_row(rank, r.name, r.architecture, pct(r.clean), *[pct(r.attacks.get(a)) for a in board.attacks],
                      *([attack_label(r.ranked_by)] if mixed else []),
                      str(r.rank_cell.n) if r.rank_cell.n is not None else "—", interval(r.rank_cell), health)
        notes = [f"{r.rank}* {r.name}: {r.note}" for r in board.rows if r.note]
        if notes:
            t.caption = "\n".join(notes)
            t.caption_justify = "left"
        tables.append(t)
    return tables


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1b1b1b}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.9rem}
th,td{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th{cursor:pointer;background:#f4f4f4;user-select:none}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
.suspect{color:#b00020;font-weight:600}.note{color:#555;font-size:.85rem}
"""

# Sorts a table by the clicked column: numeric cells carry data-sort (a number), others sort as text.
_JS = """
document.querySelectorAll("table.board").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    th.addEventListener("click", function(){
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function(h){h.removeAttribute("aria-sort");});
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col], y = b.cells[col];
        var nx = parseFloat(x.dataset.sort), ny = parseFloat(y.dataset.sort);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.textContent.localeCompare(y.textContent);
        return asc ? c : -c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _td(text: str, sort: float | None = None, cls: str = "") -> str:
    attrs = f' data-sort="{sort:.6f}"' if sort is not None else ""
    klass = f' class="{cls}"' if cls else ""
    return f"<td{klass}{attrs}>{html.escape(text)}</td>"


def _num(cell: Cell | None) -> str:
    # Missing values sort below every number.
    return _td(pct(cell), -1.0 if cell is None else cell.accuracy, "num")


def html_page(lb: Leaderboard, *, title: str, generator: str) -> str:
    """A complete HTML document with one sortable table per board."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             '<p class="note">Accuracy in percent. Ranked by standard AutoAttack where it was run (those rows '
             "first); other rows by the strongest attack that was run, an upper bound on robust accuracy. "
             "The interval is the 95% Wilson interval of the ranking accuracy. Click a column to sort.</p>"]
    for board in lb.boards:
        heads = ["#", "model", "method", "arch", "clean", *[attack_label(a) for a in board.attacks],
                 "ranked by", "n", "95% CI", "health", "note"]
        numeric = {"#", "clean", "n", "95% CI", *[attack_label(a) for a in board.attacks]}
        parts.append(f"<h2>{html.escape(board_title(board))}</h2>")
        parts.append('<table class="board"><thead><tr>' + "".join(
            f'<th class="num">{html.escape(h)}</th>' if h in numeric else f"<th>{html.escape(h)}</th>"
            for h in heads) + "</tr></thead><tbody>")
        for r in board.rows:
            cells = [_td(str(r.rank), r.rank, "num"), _td(r.name), _td(r.method), _td(r.architecture),
                     _num(r.clean), *[_num(r.attacks.get(a)) for a in board.attacks],
                     _td(attack_label(r.ranked_by)),
                     _td(str(r.rank_cell.n) if r.rank_cell.n is not None else "—",
                         r.rank_cell.n if r.rank_cell.n is not None else -1, "num"),
                     _td(interval(r.rank_cell), r.rank_cell.ci95[0] if r.rank_cell.ci95 else -1, "num"),
                     _td(r.health, None, "suspect" if r.health == "suspect" else ""),
                     _td(r.note, None, "note")]
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if lb.skipped:
        parts.append("<h2>Not ranked</h2><ul>" + "".join(
            f"<li>{html.escape(s['name'])}: {html.escape(s['why'])}</li>" for s in lb.skipped) + "</ul>")
    parts.append(f'<p class="note">Generated by {html.escape(generator)}.</p>')
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"
