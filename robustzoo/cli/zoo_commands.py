"""Commands around the zoo: ``leaderboard``, ``export robustbench`` and ``zoo publish``.

Registered on the main group by :func:`register` (called from ``robustzoo.cli``). Heavy
imports (torch, timm, huggingface_hub) happen inside the commands, so ``robustzoo --help``
does not pay for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .. import files
from ..errors import Interrupted, UsageError
from .commands import CONTEXT, err, stdout, write_file


def _consoles():
    return stdout, err


@click.command(context_settings=CONTEXT)
@click.argument("runs_dir", required=False, type=click.Path())
@click.option("--zoo", "with_zoo", is_flag=True,
              help="rank the zoo entries too (published ones, and the recorded runs of unpublished ones)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output on stdout")
@click.option("--html", "html_out", metavar="FILE", type=click.Path(),
              help="also write a single-file HTML page: sortable, filterable, linked to papers, cards, repos, runs")
def leaderboard(runs_dir, with_zoo, as_json, html_out) -> None:
    """Rank the evaluated runs under RUNS_DIR (and/or the zoo entries) by robust accuracy.

    One board per dataset and threat model. Runs evaluated with standard AutoAttack come
    first, ranked by it; the others follow, ranked by the strongest attack they were
    evaluated with (an upper bound, marked with a note). Columns: clean accuracy, every
    attack, n and the 95% interval of the ranking accuracy, and the health verdict of the
    gradient-masking checks.

    \b
    Examples:
      robustzoo leaderboard runs/
      robustzoo leaderboard --zoo
      robustzoo leaderboard runs/ --html leaderboard.html
      robustzoo leaderboard runs/ --json
    """
    from .. import __version__
    from ..leaderboard import leaderboard as build_leaderboard
    from ..leaderboard import run_dirs
    from .leaderboard_view import html_page, rich_tables

    if runs_dir is None and not with_zoo:
        raise UsageError("give a folder of run directories (robustzoo leaderboard runs/) or --zoo")
    if html_out:
        files.check_output_file(html_out, "--html")
    if runs_dir is not None and not run_dirs(runs_dir):
        raise UsageError(f"{runs_dir} holds no run directories (a run has a config.json); train one with "
                         f"`robustzoo train --out {Path(runs_dir) / 'NAME'}`")
    lb = build_leaderboard(runs_dir, zoo=with_zoo)
    stdout, err = _consoles()
    if html_out:
        title = "robustzoo leaderboard" + (f": {runs_dir}" if runs_dir else ": zoo")
        page = html_page(lb, title=title, generator=f"robustzoo {__version__}", out_dir=Path(html_out).parent)
        write_file(html_out, page, "--html")
    if as_json:
        click.echo(json.dumps(lb.to_dict(), indent=2))
        return
    for table in rich_tables(lb):
        stdout.print(table)
    for s in lb.skipped:
        err.print(f"not ranked: {s['name']}: {s['why']}", soft_wrap=True)  # commands stay whole
    if not lb.boards:
        err.print("nothing to rank yet: evaluate a run with `robustzoo eval RUN_DIR --suite autoattack`")


@click.group(context_settings=CONTEXT)
def export() -> None:
    """Export a run's results in another project's format."""


@export.command("robustbench", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.option("--out", metavar="FILE", type=click.Path(), help="write the record to FILE (JSON)")
@click.option("--json", "as_json", is_flag=True, help="print the record as JSON on stdout (what you submit)")
@click.option("--allow-custom", is_flag=True,
              help="export an evaluation whose attacks used non-standard settings (the record says so)")
def export_robustbench(run_dir, out, as_json, allow_custom) -> None:
    """RUN_DIR's record in RobustBench's model_info format (robustbench.json).

    The same record `robustzoo push` writes into the repository. RobustBench ranks by standard
    AutoAttack: a run evaluated without it has no record (run `robustzoo eval RUN_DIR --suite
    autoattack`). The name says the weights are a robustzoo reproduction; `reported` is the
    paper's own number where robustzoo knows it; `unreliable` is true when the health checks
    flagged the evaluation. The file name RobustBench's README prescribes is printed on stderr.

    \b
    Examples:
      robustzoo export robustbench runs/trades-wrn34
      robustzoo export robustbench runs/trades-wrn34 --json > Zhang2019Theoretically_robustzoo_wrn34_10.json
      robustzoo export robustbench runs/trades-wrn34 --out robustbench/model_info/cifar10/Linf/mine.json
    """
    from rich.table import Table

    from .. import runs
    from ..hub import check_publishable, read_eval
    from ..robustbench import board_note, record_path, robustbench_record

    if out:
        files.check_output_file(out, "--out")
    config = runs.read_config(run_dir)
    report = check_publishable(read_eval(Path(run_dir)), Path(run_dir), allow_partial=True,
                               allow_custom=allow_custom)  # never a failed or (silently) custom record
    record = robustbench_record(config, report, where=str(run_dir))
    text = json.dumps(record, indent=2) + "\n"
    stdout, err = _consoles()
    if out:
        write_file(out, text, "--out")
    if note := board_note(record["dataset"]):
        err.print(f"note: {note}")
    else:
        err.print(f"RobustBench file: {record_path(config, report)}")
    if record["unreliable"]:
        err.print("warning: the health checks flagged this evaluation: the record says unreliable: true")
    if as_json:
        click.echo(text, nl=False)
        return
    t = Table(title=f"RobustBench record of {run_dir}", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in record.items():
        t.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    stdout.print(t)


@click.group(context_settings=CONTEXT)
def zoo() -> None:
    """Publish zoo entries (see also `robustzoo list zoo`)."""


@zoo.command("publish", context_settings=CONTEXT)
@click.argument("names", nargs=-1)
@click.option("--org", required=True, metavar="ORG", help="Hub organisation or user: repos are ORG/<alias>")
@click.option("--all", "every", is_flag=True, help="every unpublished entry of the index")
@click.option("--index", "index_path", type=click.Path(), help="zoo index file (default: the package's "
              "robustzoo/zoo/index.json)")
@click.option("--runs-dir", default="runs/zoo", show_default=True, type=click.Path(),
              help="run directories go to RUNS_DIR/<alias> (an interrupted run resumes there)")
@click.option("--cards-dir", default="model_cards", show_default=True, type=click.Path(),
              help="the published card is copied to CARDS_DIR/<alias>.md")
@click.option("--endpoint", help="Hub endpoint URL (default HF_ENDPOINT or huggingface.co)")
@click.option("--token", help="write token (default: the one stored by `hf auth login`, for huggingface.co only)")
@click.option("--cache-dir", type=click.Path(), help="Hugging Face cache for the verifying pull")
@click.option("--private", is_flag=True, help="create the repos private")
@click.option("--data-dir", type=click.Path(), help="where dataset files live")
@click.option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a recipe setting (smoke tests; recorded in the pinned entry)")
@click.option("--n", type=int, help="evaluate on N test images instead of all (smoke tests; recorded)")
@click.option("--republish", is_flag=True, help="publish entries that are published already")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output on stdout")
def zoo_publish(names, org, every, index_path, runs_dir, cards_dir, endpoint, token, cache_dir, private,
                data_dir, device, sets, n, republish, as_json) -> None:
    """Train, evaluate, push and pin zoo entries: the zoo one command away from live.

    For each NAME: trains its recipe into RUNS_DIR/NAME (resumable), evaluates it with
    standard AutoAttack on the whole test set (with the health checks), pushes the run with
    its model card and robustbench.json to ORG/NAME, pulls it back to verify every sha256,
    copies the card to CARDS_DIR/NAME.md, and pins the entry (commit, sha256s, results) in the
    zoo index, atomically. Steps already done are skipped when the command runs again.

    \b
    Examples:
      robustzoo zoo publish cat-cw-wrn34 --org my-org --data-dir data --device cuda
      robustzoo zoo publish --all --org my-org --data-dir data
    """
    from ..config import parse_set_options
    from ..publish import publish_entries

    if n is not None and n < 1:
        raise UsageError(f"--n {n} must be a positive number of test images")
    if every and names:
        raise UsageError("give entry names or --all, not both")
    # Before any training: the cards go into an existing folder; the runs folder may be created,
    # as robustzoo's own default runs/zoo is, but a folder you name needs an existing parent.
    if not Path(cards_dir).is_dir():
        raise UsageError(f"--cards-dir {cards_dir}: folder does not exist; create it (mkdir -p {cards_dir}) "
                         f"or run from the repository, which has model_cards/")
    given = click.get_current_context().get_parameter_source("runs_dir") == ParameterSource.COMMANDLINE
    if given and not Path(runs_dir).is_dir() and not Path(runs_dir).parent.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: folder {Path(runs_dir).parent} does not exist; create it "
                         f"first (mkdir -p {Path(runs_dir).parent}) or check the path")
    stdout, err = _consoles()
    try:
        results = publish_entries(names, org=org, every=every, index_path=index_path, runs_dir=runs_dir,
                                  cards_dir=cards_dir, endpoint=endpoint, token=token, cache_dir=cache_dir,
                                  private=private, data_dir=data_dir, device=device,
                                  train_overrides=parse_set_options(sets), n=n, republish=republish,
                                  progress=lambda name, msg: err.print(f"{name}: {msg}"))
    except KeyboardInterrupt:
        raise Interrupted(f"entries pinned so far stay pinned, and a run in {runs_dir}/<alias> keeps its "
                          f"finished epochs and evaluated batches; run the same command again: it skips "
                          f"what is done and resumes the rest") from None
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    _publish_table(results, stdout)


def _publish_table(results: list[Any], stdout: Any) -> None:
    from rich.table import Table

    t = Table(title="zoo publish")
    for col in ("entry", "action", "repo@commit", "clean", "AutoAttack", "card"):
        t.add_column(col, overflow="fold")
    for r in results:
        res = r.entry.get("results", {})
        clean, aa = (f"{100 * res[k]:.2f}" if k in res else "—" for k in ("clean", "autoattack"))
        where = f"{r.entry.get('repo_id')}@{r.entry.get('revision', '')[:12]}" if r.entry.get("revision") else "—"
        t.add_row(r.name, r.action, where, clean, aa, r.card or "—")
    stdout.print(t)
    if any(r.action == "published" for r in results):
        stdout.print("next: review and commit the index and the cards (git diff robustzoo/zoo/index.json "
                     "model_cards/), then `pytest tests/test_zoo.py`")


def register(cli: click.Group) -> None:
    """Add the commands of this module to the ``robustzoo`` group."""
    for command in (leaderboard, export, zoo):
        cli.add_command(command)
