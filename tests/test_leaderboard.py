"""`robustzoo leaderboard` and `robustzoo export robustbench`: ranking, tables, JSON, HTML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from robustzoo import leaderboard as lb
from robustzoo import runs
from robustzoo.errors import RunError
from robustzoo.robustbench import FIELDS, record_path, robustbench_record


def _result(attack: str, correct: int, n: int, **extra) -> dict:
    from robustzoo.eval import wilson_interval

    return {"attack": attack, "accuracy": round(correct / n, 6), "correct": correct, "n": n,
            "ci95": list(wilson_interval(correct, n)), **extra}


@pytest.fixture
def runs_dir(at_run, tmp_path) -> Path:
    """Three evaluated copies of the tiny AT run and one that was never evaluated.

    ``plain`` keeps its real eval.json (clean, PGD-20, worst case); ``strong`` and ``masked``
    get AutoAttack rows written into their records, ``masked`` with a flagged health check.
    """
    root = tmp_path / "runs"
    for name in ("plain", "strong", "masked", "untested"):
        shutil.copytree(at_run, root / name)
    (root / "untested" / "eval.json").unlink()
    shutil.rmtree(root / "untested" / "evals")
    real = json.loads((at_run / "eval.json").read_text())
    for name, (aa, health) in {"strong": (20, "passed"), "masked": (30, "suspect")}.items():
        report = json.loads(json.dumps(real))
        report["results"].append(_result("autoattack", aa, 64))
        report["health"] = {"status": health, "flagged": ["pgd_vs_apgd"] if health == "suspect" else [],
                            "checks": []}
        runs.write_json(root / name / "eval.json", report)
    return root


def test_runs_are_ranked_by_autoattack_first_then_by_their_strongest_attack(runs_dir, at_run):
    board_set = lb.leaderboard(runs_dir)
    (board,) = board_set.boards
    assert (board.dataset, board.norm, board.eps) == ("digits", "linf", 0.1)
    assert [r.name for r in board.rows] == ["masked", "strong", "plain"]
    assert [r.rank for r in board.rows] == [1, 2, 3]
    masked, strong, plain = board.rows
    assert masked.ranked_by == strong.ranked_by == "autoattack" and masked.note == ""
    assert (masked.rank_cell.correct, masked.rank_cell.n) == (30, 64)
    assert masked.health == "suspect" and strong.health == "passed"
    # No AutoAttack: ranked after every AutoAttack row, even with a higher number, and says why.
    real = json.loads((at_run / "eval.json").read_text())
    assert plain.ranked_by == "worst-case" and "no AutoAttack" in plain.note
    assert plain.rank_cell.accuracy == real["worst_case"]["accuracy"]
    assert board.attacks == ["pgd20", "cw", "autoattack"]
    assert plain.clean.accuracy == next(r["accuracy"] for r in real["results"] if r["attack"] == "clean")
    assert board_set.skipped == [{"name": "untested", "path": str(runs_dir / "untested"),
                                  "why": f"not evaluated; run `robustzoo eval {runs_dir / 'untested'} "
                                         f"--suite autoattack`"}]


def test_leaderboard_cli_table_json_and_html(runs_dir, tmp_path, capsys):
    code, out, err = run_cli(["leaderboard", str(runs_dir)], capsys)
    assert code == 0, err
    for needle in ("masked", "strong", "plain", "AutoAttack", "PGD-20", "suspect", "no AutoAttack"):
        assert needle in out
    assert "not ranked: untested" in err

    code, out, err = run_cli(["leaderboard", str(runs_dir), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data == json.loads(json.dumps(lb.leaderboard(runs_dir).to_dict()))
    rows = data["boards"][0]["rows"]
    assert [r["name"] for r in rows] == ["masked", "strong", "plain"]
    assert rows[0]["rank_cell"]["ci95"] and rows[0]["attacks"]["autoattack"]["n"] == 64

    page = tmp_path / "board.html"
    code, out, err = run_cli(["leaderboard", str(runs_dir), "--html", str(page), "--json"], capsys)
    assert code == 0 and f"wrote {page}" in err
    text = page.read_text()
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert text.count('<table class="board">') == 1 and "<script>" in text and "aria-sort" in text
    _assert_self_contained(text)
    assert text.index(">masked<") < text.index(">strong<") < text.index(">plain<")
    assert f'data-sort="{30 / 64:.6f}"' in text  # numeric sort keys for the sortable columns
    assert 'href="runs/strong"' in text  # the run, relative to the page's folder


def test_leaderboard_ranks_zoo_entries(capsys):
    code, out, err = run_cli(["leaderboard", "--zoo", "--json"], capsys)
    assert code == 0, err
    boards = json.loads(out)["boards"]
    rows = [r for b in boards for r in b["rows"]]
    assert rows and all(r["source"] == "zoo" for r in rows)
    # Nothing is published yet: the rows are the recorded runs of unpublished entries, said so.
    assert {r["status"] for r in rows} == {"measured"}
    assert all("not published" in r["note"] and r["ranked_by"] == "autoattack" for r in rows)
    fm = next(b for b in boards if b["dataset"] == "fashion-mnist")
    assert fm["rows"][0]["rank_cell"]["accuracy"] >= fm["rows"][-1]["rank_cell"]["accuracy"]


def test_leaderboard_errors_are_one_line(tmp_path, capsys):
    code, _, err = run_cli(["leaderboard"], capsys)
    assert code == 2 and err.startswith("error:") and "--zoo" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["leaderboard", str(tmp_path / "empty")], capsys)
    assert code == 2 and "holds no run directories" in err
    code, _, err = run_cli(["leaderboard", str(tmp_path / "missing")], capsys)
    assert code != 0 and "is not a directory" in err


# -- RobustBench ----------------------------------------------------------------------------

def test_export_robustbench_json_out_and_table(runs_dir, tmp_path, capsys):
    run = runs_dir / "strong"
    expected = robustbench_record(runs.read_config(run), runs.eval_record(run))
    code, out, err = run_cli(["export", "robustbench", str(run), "--json"], capsys)
    assert code == 0, err
    # `at` on the digits: no reported number of the paper for it, so no `reported` (RobustBench omits it too).
    assert json.loads(out) == expected and tuple(expected) == tuple(f for f in FIELDS if f != "reported")
    assert expected["autoattack_acc"] == f"{100 * 20 / 64:.2f}" and expected["unreliable"] is False
    assert expected["name"] == "Towards Deep Learning Models Resistant to Adversarial Attacks (robustzoo reproduction)"
    assert "reproduction" in expected["footnote"] and "RobustBench has no digits leaderboard" in expected["footnote"]
    assert "note: RobustBench has no digits leaderboard" in err
    target = tmp_path / "Madry2018Towards.json"
    code, out, err = run_cli(["export", "robustbench", str(run), "--out", str(target)], capsys)
    assert code == 0 and json.loads(target.read_text()) == expected and f"wrote {target}" in err
    assert "autoattack_acc" in out and "clean_acc" in out  # the human view is a table
    code, out, err = run_cli(["export", "robustbench", str(runs_dir / "masked"), "--json"], capsys)
    assert json.loads(out)["unreliable"] is True and "pgd_vs_apgd" in json.loads(out)["footnote"]
    code, _, err = run_cli(["export", "robustbench", str(runs_dir / "untested")], capsys)
    assert code != 0 and "has no eval.json" in err and "Traceback" not in err


def test_export_robustbench_refuses_a_run_without_autoattack(runs_dir, capsys):
    """RobustBench ranks by AutoAttack and reads every accuracy as a number: no record at all."""
    code, out, err = run_cli(["export", "robustbench", str(runs_dir / "plain"), "--json"], capsys)
    assert code != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert "no standard AutoAttack result" in line and "--suite autoattack" in line
    with pytest.raises(RunError, match="--suite autoattack"):
        robustbench_record(runs.read_config(runs_dir / "plain"), runs.eval_record(runs_dir / "plain"))


def _cifar_config(at_run, objective: str, arch: str, **settings) -> dict:
    cfg = runs.read_config(at_run)
    cfg["architecture"] = arch
    cfg["robustzoo"].update(dataset="cifar10", objective=objective, objective_settings=settings)
    return cfg


def test_robustbench_record_notes_eps_and_sample_size(at_run):
    """A CIFAR-10 TRADES model at ε = 0.031 (the TRADES code's value) evaluated on part of the
    test set: both are said in the footnote, as RobustBench does; `reported` is the paper's number."""
    cfg = _cifar_config(at_run, "trades", "wrn34_10", beta=6.0)
    report = {"eps": 0.031, "dataset": "cifar10", "n": 1000, "seed": 0,
              "results": [_result("clean", 850, 1000), _result("autoattack", 105, 200)],
              "health": {"status": "passed", "flagged": [], "checks": []}}
    record = robustbench_record(cfg, report)
    assert tuple(record) == FIELDS
    assert record["eps"] == "0.031" and record["architecture"] == "WideResNet-34-10"
    assert "ε = 0.031 ≈ 7.9/255 instead of 8/255" in record["footnote"]
    assert "AutoAttack on 200 of the 10,000 test images" in record["footnote"]
    assert record["name"] == "Theoretically Principled Trade-off between Robustness and Accuracy (robustzoo reproduction)"
    assert record["clean_acc"] == "85.00" and record["autoattack_acc"] == "52.50"
    assert record["reported"] == "56.43"  # RobustBench's Zhang2019Theoretically record: the paper's number
    assert "leaderboard" not in record["footnote"]  # CIFAR-10 has one
    assert record_path(cfg, report) == "model_info/cifar10/Linf/Zhang2019Theoretically_robustzoo_wrn34_10.json"
    at8 = robustbench_record(cfg, dict(report, eps=8 / 255))
    assert at8["eps"] == "8/255" and "instead of" not in at8["footnote"] and "reported" not in at8
    other = robustbench_record(_cifar_config(at_run, "trades", "wrn34_10", beta=1.0), report)
    assert "reported" not in other  # the paper's number is for β = 6 only
    prn = _cifar_config(at_run, "calibrated", "preact_resnet18")
    assert robustbench_record(prn, report)["architecture"] == "PreActResNet-18"
    assert record_path(prn, report) == "model_info/cifar10/Linf/Huang2021Calibrated_robustzoo_preact_resnet18.json"


def test_robustbench_record_is_what_robustbenchs_own_code_reads(at_run, tmp_path):
    """What RobustBench's generators need, checked without its code: the fields its records
    have, no nulls, accuracies and ε as its strings, a file name whose part before '_' is the
    <Name><Year><FirstWord> citation key, a venue ending in the year (its bibtex generator)."""
    import re

    cfg = _cifar_config(at_run, "fat", "wrn34_10")
    report = {"eps": 8 / 255, "dataset": "cifar10", "n": 10000, "seed": 0,
              "results": [_result("clean", 8450, 10000), _result("autoattack", 5300, 10000)],
              "health": {"status": "passed", "flagged": [], "checks": []}}
    record = robustbench_record(cfg, report)
    assert set(record) <= set(FIELDS) and None not in record.values()
    for key in ("clean_acc", "autoattack_acc", *(["reported"] if "reported" in record else [])):
        assert re.fullmatch(r"\d{1,3}\.\d\d", record[key]) and 0 <= float(record[key]) <= 100
    assert isinstance(record["additional_data"], bool) and record["number_forward_passes"] == 1
    assert record["venue"].split(" ")[-1] == "2020" and record["authors"].startswith("Jingfeng Zhang")
    stem = record_path(cfg, report).split("/")[-1].removesuffix(".json")
    assert stem.split("_")[0] == "Zhang2020Attacks" and record_path(cfg, report).startswith("model_info/cifar10/Linf/")


# -- the HTML page ------------------------------------------------------------------------

def _assert_self_contained(text: str) -> None:
    """One file: no script, style sheet, image or font from anywhere else."""
    lowered = text.lower()
    for needle in (" src=", "<link", "@import", "url(", "<iframe", "<img"):
        assert needle not in lowered, needle


REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def page(runs_dir, tmp_path, monkeypatch) -> tuple[Path, lb.Leaderboard]:
    """The page of the runs plus two zoo entries (a published one, and the registry's recorded
    runs), written into a folder of its own: run links are relative to it."""
    from robustzoo.cli.leaderboard_view import html_page
    from robustzoo.plugins import registry
    from robustzoo.zoo import ZooEntry

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    published = ZooEntry(
        name="trades-demo-digits", repo_id="demo-org/trades-demo", revision=REV, status="published",
        files={"model.safetensors": "0" * 64}, architecture="cnn_mnist", dataset="digits",
        threat_model={"norm": "linf", "eps": 0.1}, method="trades",
        results={"clean": 330 / 360, "pgd20": 200 / 360, "autoattack": 150 / 360},
        evaluation={"health": "passed", "counts": {"clean": [330, 360], "pgd20": [200, 360],
                                                   "autoattack": [150, 360]}})
    board = lb.leaderboard(runs_dir, entries=[published, *(e for _, e in registry("zoo").items())])
    site = tmp_path / "site"
    site.mkdir()
    path = site / "index.html"
    path.write_text(html_page(board, title="test board", generator="robustzoo test", out_dir=site))
    return path, board


def test_page_rows_link_and_mark_what_they_are(page, runs_dir):
    path, board = page
    text = path.read_text()
    _assert_self_contained(text)
    digits = next(b for b in board.boards if b.dataset == "digits")
    assert [r.name for r in digits.rows] == ["masked", "trades-demo-digits", "strong", "plain"]
    plain = digits.rows[-1]
    assert plain.upper_bound and not any(r.upper_bound for r in digits.rows[:-1])
    assert set(plain.links) == {"paper", "run"} and plain.links["run"] == str((runs_dir / "plain").resolve())
    demo = digits.rows[1]
    assert demo.links == {"paper": "https://arxiv.org/abs/1901.08573",
                          "card": f"https://huggingface.co/demo-org/trades-demo/blob/{REV}/README.md",
                          "repo": f"https://huggingface.co/demo-org/trades-demo/tree/{REV}"}
    # Every row: its status, its ranking value with the attack and n, the upper bound marked.
    assert text.count('class="num rankval"') == sum(len(b.rows) for b in board.boards)
    assert "local run" in text and "measured only" in text and ">published<" in text
    assert "AutoAttack, n = 64" in text and "per-example worst case, n = " in text
    assert 'title="upper bound: no AutoAttack">*</span>' in text
    assert f"repo@{REV[:12]}" in text and "../runs/plain" in text


def _browser():
    """Headless Debian chromium through playwright, or a skip when either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[browser]'")
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium)")
    return sync_api.sync_playwright()


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_page_in_a_real_browser_sorts_filters_links_and_fits_1000px(page, runs_dir):
    """Loaded in headless chromium at 1000 px: no horizontal overflow, a click sorts, typed
    text and the status box filter, and the links point where they should."""
    path, board = page
    with _browser() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 800})
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(path.as_uri())
            assert tab.title() == "test board" and errors == []
            total = sum(len(b.rows) for b in board.boards)
            assert tab.inner_text("#shown") == f"{total} of {total} models shown"
            widths = tab.evaluate("""() => ({page: document.documentElement.scrollWidth,
                view: document.documentElement.clientWidth,
                tables: Array.from(document.querySelectorAll('table')).map(
                    t => t.scrollWidth - t.parentElement.clientWidth)})""")
            assert widths["page"] <= widths["view"] == 1000 and max(widths["tables"]) <= 0, widths

            digits = tab.locator("section.board", has_text="digits").first
            names = lambda: digits.locator("tbody tr td.model b").all_inner_texts()  # noqa: E731
            assert names() == ["masked", "trades-demo-digits", "strong", "plain"]
            digits.locator("th", has_text="clean").click()
            clean = {r.name: r.clean.accuracy for b in board.boards if b.dataset == "digits" for r in b.rows}
            assert [clean[n] for n in names()] == sorted(clean.values())  # ascending
            digits.locator("th", has_text="clean").click()
            assert [clean[n] for n in names()] == sorted(clean.values(), reverse=True)
            digits.locator("th", has_text="model").click()
            assert names() == sorted(names())

            tab.fill("#filter", "MASKED")
            assert tab.locator("tbody tr:visible td.model b").all_inner_texts() == ["masked"]
            assert tab.inner_text("#shown") == f"1 of {total} models shown"
            assert tab.locator("section.board:visible").count() == 1  # boards without a match hide
            tab.fill("#filter", "")
            tab.select_option("#status", "published")
            assert tab.locator("tbody tr:visible td.model b").all_inner_texts() == ["trades-demo-digits"]
            tab.select_option("#status", "")

            row = lambda name: tab.locator("tbody tr", has=tab.locator(f"b:text-is('{name}')"))  # noqa: E731
            run_href = row("strong").locator("a.run").evaluate("a => a.href")
            assert run_href == (runs_dir / "strong").resolve().as_uri()
            assert row("strong").locator("a.paper").evaluate("a => a.href") == "https://arxiv.org/abs/1706.06083"
            demo = row("trades-demo-digits")
            assert demo.locator("a.repo").inner_text() == f"repo@{REV[:12]}"
            assert demo.locator("a.repo").evaluate("a => a.href") == (
                f"https://huggingface.co/demo-org/trades-demo/tree/{REV}")
            measured = tab.locator("tbody tr[data-status='measured only']").first
            for link in ("a.card", "a.run"):  # files of this checkout: the card, the run's record
                target = measured.locator(link).evaluate("a => a.href")
                assert target.startswith("file://") and Path(target[len("file://"):]).is_file()
            tab.goto(run_href)  # a local run link opens the run directory
            assert "config.json" in tab.content()
        finally:
            browser.close()
