from __future__ import annotations

import json

import pytest
import torch

from robustzoo import runs
from robustzoo.config import TrainConfig
from robustzoo.testing import check_objective, train_tiny
from robustzoo.train import build_config, lr_factor


def test_at_objective_contract_resume_is_exact(tmp_path):
    report = check_objective("at", tmp_path)
    assert report["n"] == 64


def test_run_directory_layout(at_run):
    names = {p.name for p in at_run.iterdir()}
    assert {"config.json", "model.safetensors", "last.safetensors", "metrics.jsonl", "eval.json", "state"} <= names
    cfg = json.loads((at_run / "config.json").read_text())
    assert cfg["architecture"] == "cnn_mnist" and cfg["num_classes"] == 10
    assert cfg["pretrained_cfg"]["input_size"] == [1, 8, 8]
    rz = cfg["robustzoo"]
    assert rz["objective"] == "at" and rz["dataset"] == "digits"
    assert rz["config"]["seed"] == 0 and rz["config"]["steps"] == 3
    assert rz["objective_settings"]["attack_bn"] == "train"
    lines = (at_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]
    _, meta = runs.read_weights(at_run / "model.safetensors")
    assert meta["robustzoo.architecture"] == "cnn_mnist" and meta["robustzoo.objective"] == "at"
    ev = json.loads((at_run / "eval.json").read_text())
    assert [r["attack"] for r in ev["results"]] == ["clean", "pgd20"]
    assert not list(at_run.glob("**/*.tmp"))


def test_default_at_learns_robustness_above_chance(tmp_path):
    # A short version of `robustzoo train` (which runs 15 epochs on all digits).
    _, report = train_tiny(tmp_path / "r", "at", subset=None, epochs=4, steps=5, eval_n=200)
    acc = {r["attack"]: r["accuracy"] for r in report["results"]}
    assert acc["clean"] > 0.6 and acc["pgd20"] > 0.3  # chance is 0.1


def test_erm_is_not_robust(tmp_path):
    _, report = train_tiny(tmp_path / "r", "erm", subset=None, epochs=4, eval_n=200, eps=0.2)
    acc = {r["attack"]: r["accuracy"] for r in report["results"]}
    assert acc["clean"] > 0.6 and acc["pgd20"] < acc["clean"] - 0.3


def test_schedules():
    c = TrainConfig(epochs=10, milestones=[0.5, 0.75])
    assert [lr_factor(c, e, 0) for e in (0, 4, 5, 7, 8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    c = TrainConfig(epochs=76, milestones=[75])  # TRADES: x0.1 from epoch 75 (1-based)
    assert lr_factor(c, 73, 0) == 1 and lr_factor(c, 74, 0) == pytest.approx(0.1)
    c = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(c, 0, 0) == 1 and lr_factor(c, 5, 0) == pytest.approx(0.5)
    c = TrainConfig(epochs=10, schedule="constant", warmup_epochs=2)
    assert lr_factor(c, 1, 0) == pytest.approx(0.5) and lr_factor(c, 3, 0) == 1


def test_set_values_are_typed_and_fractions_parse():
    cfg = build_config("at", None, {"eps": "8/255", "rand_init": "none", "nesterov": "true",
                                    "milestones": "30,40", "kappa": "10"})
    assert cfg.eps == pytest.approx(8 / 255) and cfg.nesterov is True and cfg.milestones == [30, 40]
    assert cfg.objective_args == {"rand_init": "none", "kappa": "10"}


def test_adam_and_sgd_optimisers(tmp_path):
    from robustzoo.train import make_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(p, TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0)), torch.optim.Adam)
    sgd = make_optimizer(p, TrainConfig(optimizer="sgd", lr=0.1, weight_decay=5e-4, nesterov=True))
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9


@pytest.mark.slow
def test_default_train_command_under_a_minute(tmp_path):
    """`robustzoo train` with no options: at on digits, < 60 s on 2 CPU cores, robust above chance."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "robustzoo", "train", "--out", str(tmp_path / "r"), "--json"],
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2"})
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    acc = {r["attack"]: r["accuracy"] for r in json.loads(res.stdout)["results"]}
    assert acc["pgd20"] > 0.5 and seconds < 60, (acc, seconds)


def test_the_python_api_is_quiet_unless_asked_and_reports_progress_events(tmp_path, capsys):
    from helpers import Recorder

    import robustzoo
    from robustzoo.errors import UsageError
    from robustzoo.testing import TINY

    opts = dict(TINY, subset=200, epochs=2, eval_attacks=["clean"], eval_n=32)
    capsys.readouterr()
    robustzoo.train("at", out=tmp_path / "quiet", **opts)
    assert capsys.readouterr().err == ""
    rec = Recorder()
    run_dir, report = robustzoo.train("at", out=tmp_path / "told", progress=rec, **opts)
    epochs = [e[1] for e in rec.of("epoch")]
    rows = [json.loads(line) for line in (run_dir / runs.METRICS_FILE).read_text().splitlines()]
    assert epochs == rows and [r["epoch"] for r in epochs] == [1, 2]
    labels = [e[1] for e in rec.of("start")]
    assert labels == ["epoch 1/2", "epoch 2/2", "clean"]  # the final evaluation reports too
    last, fields = rec.updates("epoch 2/2")[-1]
    assert last == rec.of("start")[1][2] and set(fields) == {"loss", "acc"}  # every batch done
    assert ("end", "epoch 1/2") in rec.events and report["n"] == 32
    assert capsys.readouterr().err == ""
    with pytest.raises(UsageError, match="not both"):
        robustzoo.train("at", out=tmp_path / "both", show_progress=True, progress=rec, **opts)


@pytest.mark.parametrize("refresh,expected", [(None, "last"), (0.0, "every"), (3600.0, "first and last")])
def test_running_figures_are_read_only_as_often_as_they_are_shown(tmp_path, refresh, expected):
    """Each running update reads the loss (a host sync on a GPU): none for a progress object
    that shows nothing but the end, at most one per refresh_seconds otherwise."""
    from helpers import Recorder

    import robustzoo
    from robustzoo.testing import TINY

    rec = Recorder()
    rec.refresh_seconds = refresh
    robustzoo.train("at", out=tmp_path / "r", progress=rec, **dict(TINY, subset=200, epochs=1,
                                                                  batch_size=30, eval_attacks=["clean"], eval_n=8))
    total = rec.of("start")[0][2]
    done = [c for c, fields in rec.updates("epoch 1/1")]
    assert total == 6 and all(set(f) == {"loss", "acc"} for _, f in rec.updates("epoch 1/1"))
    assert done == {"last": [6], "every": [1, 2, 3, 4, 5, 6], "first and last": [1, 6]}[expected]


def test_rich_bars_off_a_terminal_ask_for_no_running_figures():
    import io

    from rich.console import Console

    from robustzoo.progress import REFRESH_SECONDS, refresh_seconds
    from robustzoo.ui import RichProgress

    assert refresh_seconds(RichProgress(Console(file=io.StringIO()))) is None
    assert refresh_seconds(object()) == REFRESH_SECONDS and refresh_seconds(None) is None
