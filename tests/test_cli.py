"""The command line: outputs (bad input: the table of tests/test_bad_input.py)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_cli


def test_help_on_every_command_has_examples(capsys):
    for cmd in ([], ["train"], ["eval"], ["list"]):
        code, out, _ = run_cli([*cmd, "--help"], capsys)
        assert code == 0 and "Usage" in out
        if cmd:
            assert "Examples" in out
    for cmd in (["plugins"], ["env"]):
        code, out, _ = run_cli([*cmd, "--help"], capsys)
        assert code == 0 and "--json" in out


def test_list_json_and_patterns(capsys):
    code, out, _ = run_cli(["list", "attacks", "pgd*", "--json"], capsys)
    names = [r["name"] for r in json.loads(out)]
    assert code == 0 and names[:2] == ["pgd", "pgd20"] and "pgd100" in names
    code, out, _ = run_cli(["list", "datasets"], capsys)
    assert code == 0 and "fashion-mnist" in out


def test_env_json(capsys):
    code, out, _ = run_cli(["env", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["torch"] and "robustzoo.builtins" in info["plugins"]


def test_plugins_json(capsys):
    code, out, _ = run_cli(["plugins", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["robustzoo.builtins"]["distribution"] == "robustzoo"
    assert "at" in rows["robustzoo.builtins"]["registered"]["objectives"]


def test_eval_table_and_json(at_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    code, out, err = run_cli(["eval", run, "--attacks", "clean,fgsm,cw", "--n", "40",
                              "--json", tmp_path / "e.json"], capsys)
    assert code == 0 and "fgsm" in out and "95% CI" in out
    data = json.loads((tmp_path / "e.json").read_text())
    assert [r["attack"] for r in data["results"]] == ["clean", "fgsm", "cw"]
    assert all(r["n"] == 40 and len(r["ci95"]) == 2 for r in data["results"])
    assert data["results"][2]["settings"]["kappa"] == 50.0
    assert f"wrote {tmp_path / 'e.json'}" in err and "replaced" not in err
    code, _, err = run_cli(["eval", run, "--attacks", "clean", "--n", "40", "--json", tmp_path / "e.json"], capsys)
    assert code == 0 and "replaced the file that was there" in err  # never silently
    assert [r["attack"] for r in json.loads((tmp_path / "e.json").read_text())["results"]] == ["clean"]


def test_eval_says_when_n_is_more_than_the_test_set(at_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    code, out, err = run_cli(["eval", run, "--attacks", "clean", "--n", "100000000", "--no-health",
                              "--json", tmp_path / "e.json"], capsys)
    size = json.loads((tmp_path / "e.json").read_text())["n"]
    assert code == 0 and size < 100000000
    assert f"note: --n 100,000,000 is more than the {size:,} test images; all of them were evaluated" in err
    code, _, err = run_cli(["eval", run, "--attacks", "clean", "--n", str(size), "--no-health"], capsys)
    assert code == 0 and "is more than" not in err


def test_train_cli_writes_a_run(tmp_path, capsys):
    out_dir = tmp_path / "cli-run"
    code, out, err = run_cli(["train", "--subset", "200", "--epochs", "1", "--steps", "2", "--out", out_dir,
                              "--set", "eval_n=30", "--rand-init", "none", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["run_dir"] == str(out_dir) and (out_dir / "evals").is_dir()
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["robustzoo"]["objective_settings"]["rand_init"] == "none"


def test_resuming_a_finished_run_says_only_the_evaluation_runs(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(["train", "--subset", "100", "--epochs", "1", "--steps", "1", "--out", out_dir,
                            "--set", "eval_n=20"], capsys)
    assert code == 0 and "training had finished" not in err
    code, _, err = run_cli(["train", "--resume", out_dir], capsys)
    assert code == 0, err
    assert "training had finished (epoch 1 of 1): only the final evaluation" in err


def test_debug_shows_traceback(capsys):
    from robustzoo.errors import NotFoundError

    with pytest.raises(NotFoundError):
        run_cli(["--debug", "train", "--objective", "nope"], capsys)
