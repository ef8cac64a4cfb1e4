"""TRADES, MART and FAT end to end on tiny digits: the objective contract and one CLI run each."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from robustzoo.runs import CONFIG_FILE, EVAL_FILE, METRICS_FILE, MODEL_FILE
from robustzoo.testing import check_objective


def test_trades_contract(tmp_path):
    report = check_objective("trades", tmp_path, beta=3.0)
    assert report["n"] > 0
    cfg = json.loads((tmp_path / "full" / CONFIG_FILE).read_text())
    assert cfg["robustzoo"]["objective_settings"]["beta"] == 3.0


def test_mart_contract(tmp_path):
    report = check_objective("mart", tmp_path, lam=5.0)
    assert report["n"] > 0
    cfg = json.loads((tmp_path / "full" / CONFIG_FILE).read_text())
    assert cfg["robustzoo"]["objective_settings"]["lam"] == 5.0


def test_fat_contract_with_tau_schedule(tmp_path):
    # τ = 0 in epoch 1, 2 in epoch 2: the resumed run must pick the schedule up again.
    check_objective("fat", tmp_path, variant="mart", tau_schedule="0@1,2")
    rows = [json.loads(line) for line in (tmp_path / "full" / METRICS_FILE).read_text().splitlines()]
    assert [r["fat_tau"] for r in rows] == [0.0, 2.0]
    assert all(0 <= r["fat_steps"] <= 3 for r in rows)
    resumed = [json.loads(line) for line in (tmp_path / "part" / METRICS_FILE).read_text().splitlines()]
    assert [r["fat_tau"] for r in resumed] == [0.0, 2.0]
    cfg = json.loads((tmp_path / "full" / CONFIG_FILE).read_text())
    settings = cfg["robustzoo"]["objective_settings"]
    assert settings["tau_schedule"] == "0@1,2" and settings["omega"] == 0.0  # 'auto' recorded resolved


@pytest.mark.parametrize("objective,extra", [
    ("trades", ["--set", "beta=2"]),
    ("mart", ["--set", "lam=4"]),
    ("fat", ["--set", "variant=trades", "--set", "tau=1"]),
])
def test_cli_train(objective, extra, tmp_path, capsys):
    out = tmp_path / objective
    code, stdout, err = run_cli(["train", "--objective", objective, "--subset", "300", "--epochs", "1",
                                 "--steps", "2", "--out", out, "--json", *extra], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["run_dir"] == str(out)
    assert {r["attack"] for r in report["results"]} == {"clean", "pgd20", "cw"}
    for name in (CONFIG_FILE, MODEL_FILE, METRICS_FILE):
        assert (out / name).is_file(), name
    # One epoch on 300 digits may leave a degenerate model: its record is kept in evals/, and it
    # is the canonical eval.json only when its health did not fail.
    assert (out / "evals").is_dir()
    assert (out / EVAL_FILE).is_file() == (report["health"]["status"] != "failed")
    cfg = json.loads((out / CONFIG_FILE).read_text())["robustzoo"]
    assert cfg["objective"] == objective
    key, value = extra[-1].split("=")
    assert str(cfg["objective_settings"][key]) in (value, str(float(value)))


def test_cli_rejects_a_setting_of_another_method(tmp_path, capsys):
    from helpers import assert_one_line_error

    code, _, err = run_cli(["train", "--objective", "mart", "--set", "beta=6", "--subset", "100",
                            "--out", tmp_path / "x"], capsys)
    assert_one_line_error(code, err, "beta")
