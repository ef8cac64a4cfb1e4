"""The command line: outputs, and one-line errors for every kind of bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import assert_one_line_error, run_cli


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
    code, out, _ = run_cli(["eval", run, "--attacks", "clean,fgsm,cw", "--n", "40",
                            "--json", tmp_path / "e.json"], capsys)
    assert code == 0 and "fgsm" in out and "95% CI" in out
    data = json.loads((tmp_path / "e.json").read_text())
    assert [r["attack"] for r in data["results"]] == ["clean", "fgsm", "cw"]
    assert all(r["n"] == 40 and len(r["ci95"]) == 2 for r in data["results"])
    assert data["results"][2]["settings"]["kappa"] == 50.0


def test_train_cli_writes_a_run(tmp_path, capsys):
    out_dir = tmp_path / "cli-run"
    code, out, err = run_cli(["train", "--subset", "200", "--epochs", "1", "--steps", "2", "--out", out_dir,
                              "--set", "eval_n=30", "--rand-init", "none", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["run_dir"] == str(out_dir) and (out_dir / "eval.json").is_file()
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["robustzoo"]["objective_settings"]["rand_init"] == "none"


BAD = [
    (["train", "--objective", "tradez"], ["unknown objective", "robustzoo list objectives"]),
    (["train", "--dataset", "cifar"], ["unknown dataset", "cifar10"]),
    (["train", "--arch", "preact_resnet"], ["preact_resnet18"]),
    (["train", "--eps", "-0.1"], ["outside [0, 1]"]),
    (["train", "--eps", "8"], ["outside [0, 1]", "8/255"]),
    (["train", "--set", "betta=3"], ["unknown setting 'betta'"]),
    (["train", "--set", "epochs"], ["key=value"]),
    (["train", "--attack", "pgdd"], ["attack='pgdd'"]),
    (["train", "--dataset", "mnist", "--data-dir", "{tmp}/nothing"], ["mnist not found", "--data-dir"]),
    (["eval", "{tmp}", "--attacks", "clean"], ["not a robustzoo run"]),
    (["eval", "{tmp}/missing-dir"], ["neither a run directory"]),
    (["eval", "org/name", "--endpoint", "http://127.0.0.1:9"], ["org/name"]),
    (["list", "objectives", "--json", "--bogus"], []),
]


@pytest.mark.parametrize("args,needles", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_is_one_line(args, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(args, capsys)
    if not needles:  # click's own usage errors
        assert code == 2 and "Traceback" not in err
        return
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_truncated_and_mismatched_checkpoints(at_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    weights = run / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    code, _, err = run_cli(["eval", run, "--n", "10"], capsys)
    assert_one_line_error(code, err, "not a readable safetensors file")
    weights.write_bytes(b"\x00" * 100)
    code, _, err = run_cli(["eval", run, "--n", "10"], capsys)
    assert_one_line_error(code, err, "safetensors")
    weights.write_bytes(good)
    cfg = json.loads((run / "config.json").read_text())
    cfg["num_classes"] = 7
    (run / "config.json").write_text(json.dumps(cfg))
    code, _, err = run_cli(["eval", run, "--n", "10"], capsys)
    assert_one_line_error(code, err, "does not match the architecture", "shape")
    (run / "config.json").write_text("{not json")
    code, _, err = run_cli(["eval", run], capsys)
    assert_one_line_error(code, err, "not valid JSON")


def test_existing_run_is_not_overwritten(at_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    before = (run / "model.safetensors").read_bytes()
    code, _, err = run_cli(["train", "--out", run, "--epochs", "1"], capsys)
    assert_one_line_error(code, err, "already holds a run", "--resume")
    assert (run / "model.safetensors").read_bytes() == before


def test_resume_of_finished_run_and_of_non_run(at_run, tmp_path, capsys):
    code, _, err = run_cli(["train", "--resume", tmp_path], capsys)
    assert_one_line_error(code, err, "not a robustzoo run")
    code, _, err = run_cli(["train", "--resume", at_run, "--objective", "erm"], capsys)
    assert_one_line_error(code, err, "--resume")


def test_debug_shows_traceback(capsys):
    from robustzoo.errors import NotFoundError

    with pytest.raises(NotFoundError):
        run_cli(["--debug", "train", "--objective", "nope"], capsys)
