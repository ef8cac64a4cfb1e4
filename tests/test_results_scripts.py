"""The scripts behind docs/results.md: benchmarks/fmnist_zoo.py plans the runs and their
evaluations, docs/make_results.py turns run directories into the page, figures and cards."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import load_script

zoo = load_script("benchmarks/fmnist_zoo.py")


def _fake_run(root: Path, name: str, *, finished: bool = True) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    if finished:
        (run / "eval.json").write_text("{}")
    return run


def _opt(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def test_reduced_evaluations_use_one_seeded_sample_at_three_sizes(tmp_path):
    a = _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "trades-s0", finished=False)  # still training: not evaluated yet
    (a / "eval-sweep.json").write_text("{}")  # done before: kept, not repeated
    cmds = zoo.eval_commands(tmp_path, reduced=True, sweep="0,0.1", device="cpu")
    assert all(str(a) in c for c in cmds) and len(cmds) == 2
    # the training's own evaluation stays in the run's history: no copy is needed any more
    assert not (a / "eval-final.json").exists()
    paper, aa = cmds
    assert _opt(paper, "--n") == "1000" and _opt(paper, "--attacks") == zoo.REDUCED_ATTACKS
    assert _opt(paper, "--json") == str(a / "eval-paper.json")
    # AutoAttack with PGD-20 beside it, so their gap is on the same images
    assert _opt(aa, "--n") == "200" and _opt(aa, "--attacks") == "clean,pgd20,autoattack"
    assert "--seed" not in paper + aa  # the same default seed: the 200 are the first of the 1,000


def test_large_autoattack_sample_only_for_the_chosen_methods(tmp_path):
    _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "mart-s0")
    cmds = zoo.eval_commands(tmp_path, reduced=True, sweep="0,0.1", device="cpu", aa_large_n=1000,
                             aa_large_methods=["at"])
    large = [c for c in cmds if _opt(c, "--json").endswith("eval-autoattack-large.json")]
    assert len(large) == 1 and str(tmp_path / "at-s0") in large[0]
    assert _opt(large[0], "--n") == "1000" and _opt(large[0], "--attacks") == "clean,pgd20,autoattack"
    assert len(cmds) == 2 * 3 + 1


def test_full_protocol_runs_the_suites_on_the_whole_test_set(tmp_path):
    _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "mart-s0")
    cmds = zoo.eval_commands(tmp_path, reduced=False, sweep="0,0.1", device="cuda")
    assert not any("--n" in c for c in cmds)
    assert [_opt(c, "--suite") for c in cmds[:4]] == ["paper", "paper", "autoattack", "autoattack"]
    # suite by suite: two parallel jobs never share a run directory
    assert [Path(c[4]).name for c in cmds[:2]] == ["at-s0", "mart-s0"]
    assert _opt(cmds[-1], "--eps-sweep") == "0,0.1"


def test_protocol_record_merges_invocations_and_refuses_mixing(tmp_path):
    zoo.record_protocol(tmp_path, "train", [0], ["trades", "at"], True, zoo.SWEEP)
    zoo.record_protocol(tmp_path, "train", [1], ["mart"], True, zoo.SWEEP)
    data = json.loads((tmp_path / "protocol.json").read_text())
    assert data["stages"]["train"] == {"seeds": [0, 1], "methods": ["at", "trades", "mart"]}
    assert data["reduced_train"] == zoo.REDUCED and data["reduced_eval"]["aa_n"] == 200
    with pytest.raises(SystemExit, match="reduced"):
        zoo.record_protocol(tmp_path, "eval", [0], [], False, zoo.SWEEP)


def test_train_commands_carry_the_protocol_and_resume(tmp_path):
    (cmd,) = zoo.train_commands(tmp_path, [3], ["cat-cw-b5-0.05"], reduced=True, device="cpu")
    sets = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--set")
    assert (sets["beta"], sets["beta1"], sets["attack"], sets["seed"]) == ("5", "0.05", "cw", "3")
    assert sets["subset"] == zoo.REDUCED["subset"] and sets["eps"] == "0.1"
    run = tmp_path / "cat-cw-b5-0.05-s3"
    (run / "state").mkdir(parents=True)
    (run / "state" / "resume.pt").write_bytes(b"")
    (cmd,) = zoo.train_commands(tmp_path, [3], ["cat-cw-b5-0.05"], reduced=True, device="cpu")
    assert _opt(cmd, "--resume") == str(run)


def test_make_results_builds_page_cards_and_figure(at_run, tmp_path, monkeypatch):
    """Real evaluations of a tiny digits run, at the reduced protocol's two sample sizes."""
    import robustzoo

    root = tmp_path / "runs"
    run = root / "at-s0"
    shutil.copytree(at_run, run)
    final = {r["attack"]: r for r in json.loads((run / "eval.json").read_text())["results"]}
    for name, attacks, n in (("paper", "clean,fgsm,pgd20,apgd-ce,apgd-dlr", 40),
                             ("autoattack", "clean,pgd20,autoattack", 8), ("sweep", None, 40)):
        kw = {"eps_sweep": "0,0.1,0.3"} if name == "sweep" else {}
        report = robustzoo.evaluate(run, attacks or "pgd20", n=n, options={"square_queries": 10}, **kw)
        (run / f"eval-{name}.json").write_text(json.dumps(report))
    # The larger AutoAttack sample of the key runs (here the same 8 images, to keep it cheap).
    shutil.copyfile(run / "eval-autoattack.json", run / "eval-autoattack-large.json")
    zoo.record_protocol(root, "train", [0], ["at"], True, zoo.SWEEP)
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nintro\n\n<!-- generated:start -->\nold\n<!-- generated:end -->\n\nreading\n")
    mr = load_script("docs/make_results.py")
    monkeypatch.setattr(mr, "PAGE", page)
    monkeypatch.setattr(mr, "IMG", tmp_path / "img")
    monkeypatch.setattr(mr, "CARDS", tmp_path / "cards")
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "mart-cnn-fmnist-run.md").write_text("stale")
    assert mr.main([str(root)]) == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nintro") and text.rstrip().endswith("reading") and "old" not in text
    paper = {r["attack"]: r for r in json.loads((run / "eval-paper.json").read_text())["results"]}
    aa = {r["attack"]: r for r in json.loads((run / "eval-autoattack.json").read_text())["results"]}
    row = next(line for line in text.splitlines() if line.startswith("| at | 1 |"))
    assert f"| {100 * paper['pgd20']['accuracy']:.1f} |" in row
    flags = sorted({c["name"] for f in ("paper", "autoattack")
                    for c in json.loads((run / f"eval-{f}.json").read_text())["health"]["checks"]
                    if c["status"] == "flagged"})
    assert row.endswith(f"| {100 * aa['autoattack']['accuracy']:.1f} | {', '.join(flags) or 'none'} |")
    gap = 100 * (aa["pgd20"]["accuracy"] - aa["autoattack"]["accuracy"])
    gap_row = [line for line in text.splitlines() if line.startswith("| at |")][1]
    assert f"| {gap:.1f} |" in gap_row
    assert gap_row.endswith(f"| {100 * final['clean']['accuracy']:.1f} / {100 * final['pgd20']['accuracy']:.1f} |")
    assert "Clean to APGD-DLR on 40 test images, AutoAttack on 8" in text
    assert "## Calibrated AT: β and β1" not in text  # no calibrated run here
    large = text[text.index("## Standard AutoAttack on 8 images"):]
    big = next(line for line in large.splitlines() if line.startswith("| at |"))
    assert f"| {100 * aa['autoattack']['accuracy']:.1f} (" in big and big.endswith("| — | — | — |")
    ranked = next(line for line in text.splitlines() if line.startswith("| 1 | at |"))
    assert f"| {100 * aa['autoattack']['accuracy']:.1f} | AutoAttack | 8 |" in ranked
    assert f"python benchmarks/fmnist_zoo.py train --out {root} --reduced --seeds 0 --methods at --jobs 2" in text
    assert (tmp_path / "img" / "fmnist-eps-curve.png").read_bytes()[:4] == b"\x89PNG"
    card = (tmp_path / "cards" / "at-cnn-fmnist-run.md").read_text()
    assert "--attacks autoattack --n 8 --seed 0" in card and "--n 40 --seed 0" in card
    assert not (tmp_path / "cards" / "mart-cnn-fmnist-run.md").exists()  # stale card removed


def test_the_training_evaluation_is_found_in_old_and_new_run_directories(tmp_path):
    mr = load_script("docs/make_results.py")
    run = tmp_path / "run"
    (run / "evals").mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"n": 8, "results": [], "source": "eval"}))
    (run / "evals" / "b.json").write_text(json.dumps({"n": 8, "results": [], "source": "eval"}))
    (run / "evals" / "a.json").write_text(json.dumps({"n": 360, "results": [], "migrated": True}))
    assert mr.training_eval(run)["n"] == 360  # migrated from the first eval.json: the training's
    (run / "evals" / "c.json").write_text(json.dumps({"n": 100, "results": [], "source": "train"}))
    assert mr.training_eval(run)["n"] == 100
    (run / "eval-final.json").write_text(json.dumps({"n": 7, "results": []}))  # before the history
    assert mr.training_eval(run)["n"] == 7


def test_make_results_without_runs_is_a_one_line_error(tmp_path, capsys):
    mr = load_script("docs/make_results.py")
    assert mr.main([str(tmp_path / "missing")]) == 1
    assert mr.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "fmnist_zoo.py" in err[0] and "fmnist_zoo.py" in err[1]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
