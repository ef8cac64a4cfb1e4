"""Drawing a leaderboard: rich tables for the terminal, a single-file static HTML page.

The data comes from :mod:`robustzoo.leaderboard`; nothing here computes a number. The HTML
page needs no external asset (its CSS and the few lines of JavaScript that sort a column on a
click and filter the rows are inline), so it can be opened from disk or published as it is;
links to local runs are relative to the folder it is written to.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..cards import NORM_LABELS, attack_label, eps_text
from ..leaderboard import Board, Cell, Leaderboard, Row


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
            rank = f"{r.rank}*" if r.upper_bound else str(r.rank)
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
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1rem;color:#1b1b1b;line-height:1.35}
h1{font-size:1.35rem;margin:.2rem 0 .6rem}h2{font-size:1.05rem;margin:1.6rem 0 .4rem}
p.note{max-width:60rem}
.controls{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;align-items:center;margin:.8rem 0}
.controls input{width:18rem;max-width:100%;padding:.25rem .4rem}
table{border-collapse:collapse;font-size:.82rem;width:100%}
th,td{padding:.25rem .35rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f4f4f4;user-select:none;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.model{min-width:10rem;overflow-wrap:anywhere}td.model b{font-size:.9rem}td.status{min-width:6.2rem}
.sub,.n,.links,.why{color:#555;font-size:.72rem}.why{max-width:24rem}
.links a{margin-right:.45rem}
.ub{color:#b00020;font-weight:700}.suspect{color:#b00020;font-weight:600}
tr[hidden],section[hidden]{display:none}
"""

# Sorts a table by the clicked column (numeric cells carry data-sort, others sort by data-text),
# and filters every board by the typed text and the chosen status.
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
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny
              : (x.dataset.text || x.textContent).localeCompare(y.dataset.text || y.textContent);
        return asc ? c : -c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
var filterBox = document.getElementById("filter"), statusBox = document.getElementById("status");
function applyFilter(){
  var q = filterBox.value.trim().toLowerCase(), st = statusBox.value, shown = 0, total = 0;
  document.querySelectorAll("section.board").forEach(function(sec){
    var visible = 0;
    sec.querySelectorAll("tbody tr").forEach(function(tr){
      var ok = tr.dataset.search.indexOf(q) >= 0 && (!st || tr.dataset.status === st);
      tr.hidden = !ok; total += 1; if (ok) { visible += 1; shown += 1; }
    });
    sec.hidden = visible === 0;
  });
  document.getElementById("shown").textContent = shown + " of " + total + " models shown";
}
filterBox.addEventListener("input", applyFilter);
statusBox.addEventListener("change", applyFilter);
applyFilter();
"""

#: Row.status -> what the status column says.
STATUS_LABELS = {"published": "published", "measured": "measured only", "local": "local run"}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(target: str, out_dir: Path | None) -> str:
    """A URL as it is; a local path relative to the page's folder (or a file:// URI)."""
    if target.startswith(("https://", "http://")):
        return target
    if out_dir is None:
        return Path(target).as_uri()
    return quote(os.path.relpath(target, out_dir).replace(os.sep, "/"))


def _links(r: Row, out_dir: Path | None) -> str:
    labels = {"paper": "paper", "card": "card", "repo": f"repo@{r.location.rpartition('@')[2]}", "run": "run"}
    items = [f'<a class="{k}" href="{_esc(_href(r.links[k], out_dir))}">{_esc(label)}</a>'
             for k, label in labels.items() if k in r.links]
    return f'<div class="links">{"".join(items)}</div>' if items else ""


def _cell(cell: Cell | None) -> str:
    """An accuracy with its count (correct/n) beneath; missing values sort below every number."""
    if cell is None:
        return '<td class="num" data-sort="-1">—</td>'
    count = f"{cell.correct}/{cell.n}" if cell.correct is not None and cell.n else "n unknown"
    ci = f"; 95% CI {interval(cell)}" if cell.ci95 else ""
    return (f'<td class="num" data-sort="{cell.accuracy:.6f}" title="{_esc(count + ci)}">{pct(cell)}'
            f'<div class="n">{_esc(count)}</div></td>')


def _rank_cell(r: Row) -> str:
    c = r.rank_cell
    mark = '<span class="ub" title="upper bound: no AutoAttack">*</span>' if r.upper_bound else ""
    n = f"n = {c.n}" if c.n else "n unknown"
    ci = f"; 95% CI {interval(c)}" if c.ci95 else ""
    return (f'<td class="num rankval" data-sort="{c.accuracy:.6f}" title="{_esc(n + ci)}">{pct(c)}{mark}'
            f'<div class="n">{_esc(_ranked_by(r.ranked_by))}, {_esc(n)}</div></td>')


def _ranked_by(name: str) -> str:
    return "per-example worst case" if name == "worst-case" else attack_label(name)


def _row(r: Row, attacks: list[str], out_dir: Path | None) -> str:
    status = STATUS_LABELS.get(r.status, r.status)
    search = " ".join([r.name, r.method, r.architecture, status, r.health, r.note, r.location]).lower()
    health = f'<div class="n{" suspect" if r.health == "suspect" else ""}">health: {_esc(r.health)}</div>'
    model = (f'<td class="model" data-text="{_esc(r.name)}"><b>{_esc(r.name)}</b>'
             f'<div class="sub">{_esc(r.method)} · {_esc(r.architecture)}</div>{_links(r, out_dir)}'
             + (f'<div class="why">{_esc(r.note)}</div>' if r.note else "") + "</td>")
    return (f'<tr data-status="{_esc(status)}" data-search="{_esc(search)}">'
            f'<td class="num" data-sort="{r.rank}">{r.rank}{"*" if r.upper_bound else ""}</td>{model}'
            f'<td class="status" data-text="{_esc(status)}">{_esc(status)}{health}</td>{_cell(r.clean)}'
            + "".join(_cell(r.attacks.get(a)) for a in attacks) + _rank_cell(r) + "</tr>")


def html_page(lb: Leaderboard, *, title: str, generator: str, out_dir: str | Path | None = None) -> str:
    """A complete, self-contained HTML document: one sortable table per board, a filter box.

    Each row links to the method's paper, the model card, the Hub repo at its commit and the
    run (local paths relative to ``out_dir``, the folder the page is written to); it shows its
    status, every accuracy with its count, and the value it is ranked by with its n, marked
    ``*`` when that is an upper bound (no AutoAttack).
    """
    out = Path(out_dir).resolve() if out_dir is not None else None
    statuses = sorted({STATUS_LABELS.get(r.status, r.status) for b in lb.boards for r in b.rows})
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             '<p class="note">Accuracy in percent, with correct/n beneath. Ranked by standard AutoAttack where it '
             "was run (those rows first); other rows by the strongest attack that was run, an upper bound on "
             "robust accuracy, marked *. The ranking value gives its attack and n; hover a number for its 95% "
             "Wilson interval. Click a column to sort.</p>",
             '<div class="controls"><label>Filter <input id="filter" type="search" '
             'placeholder="model, method, architecture, status, note"></label>'
             '<label>Status <select id="status"><option value="">all</option>'
             + "".join(f'<option value="{_esc(s)}">{_esc(s)}</option>' for s in statuses)
             + '</select></label><span id="shown" aria-live="polite"></span></div>']
    for board in lb.boards:
        labels = [attack_label(a) for a in board.attacks]
        heads = ['<th class="num">#</th>', "<th>model</th>", "<th>status</th>", '<th class="num">clean</th>',
                 *[f'<th class="num">{_esc(x)}</th>' for x in labels], '<th class="num">ranking value</th>']
        parts.append(f'<section class="board"><h2>{_esc(board_title(board))}</h2>')
        parts.append('<table class="board"><thead><tr>' + "".join(heads) + "</tr></thead><tbody>")
        parts += [_row(r, board.attacks, out) for r in board.rows]
        parts.append("</tbody></table></section>")
    if lb.skipped:
        parts.append("<h2>Not ranked</h2><ul>" + "".join(
            f"<li>{_esc(s['name'])}: {_esc(s['why'])}</li>" for s in lb.skipped) + "</ul>")
    parts.append(f'<p class="note">Generated by {_esc(generator)}.</p>')
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"
