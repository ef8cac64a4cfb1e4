from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from robustzoo import runs
from robustzoo.config import TrainConfig
from robustzoo.testing import TINY, check_objective, train_tiny
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
    assert [r["attack"] for r in ev["results"]] == ["clean", "pgd20", "cw"]
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


# -- checkpoints --------------------------------------------------------------------------------
CKPT = dict(subset=200, epochs=4, batch_size=60, steps=2, val_steps=1, eval_attacks=["clean"], eval_n=16)


class _Killed(Exception):
    """Stands for a kill -9 right after an epoch's files were written."""


class _KillAt:
    """A progress object that ends the process (raises) when epoch ``epoch`` is logged."""

    refresh_seconds = None

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def task_start(self, label, total, completed=0):
        return label

    def task_update(self, task, completed, **fields):
        pass

    def task_end(self, task):
        pass

    def note(self, message):
        pass

    def epoch_end(self, row):
        if row["epoch"] == self.epoch:
            raise _Killed


def _rows(run) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / runs.METRICS_FILE).read_text().splitlines()]


def _weights(path) -> dict[str, torch.Tensor]:
    return runs.read_weights(path)[0]


def test_resume_every_n_epochs_replays_from_the_last_state_bit_exactly(tmp_path):
    from robustzoo.train import Trainer

    cfg = build_config("at", None, {"resume_every": "2"}, **dict(TINY, **CKPT))
    full = Trainer(cfg, tmp_path / "full")
    full.fit()
    with pytest.raises(_Killed):  # killed after epoch 3: the resume state is epoch 2's
        Trainer(cfg, tmp_path / "part", progress=_KillAt(3)).fit()
    part = tmp_path / "part"
    assert torch.load(part / runs.RESUME_FILE, weights_only=True)["epoch"] == 2
    assert len(_rows(part)) == 3
    Trainer(cfg, part, resume=True).fit()
    assert _rows(part) == _rows(tmp_path / "full")  # epoch 3's row was dropped, then trained again
    for name in (runs.LAST_FILE, runs.MODEL_FILE):
        a, b = _weights(tmp_path / "full" / name), _weights(part / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # the same weights as a run that wrote its resume state every epoch (the default)
    every = Trainer(build_config("at", None, {}, **dict(TINY, **CKPT)), tmp_path / "every")
    every.fit()
    a, b = _weights(tmp_path / "every" / runs.LAST_FILE), _weights(part / runs.LAST_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_cpu_run_records_its_thread_count_and_a_resume_with_another_says_so(tmp_path, monkeypatch):
    from robustzoo.errors import SettingWarning
    from robustzoo.train import Trainer

    cfg = build_config("at", None, {}, **dict(TINY, **CKPT))
    with pytest.raises(_Killed):
        Trainer(cfg, tmp_path / "run", progress=_KillAt(1)).fit()
    machine = json.loads((tmp_path / "run" / runs.CONFIG_FILE).read_text())["robustzoo"]["machine"]
    assert machine == {"device": "cpu", "torch_threads": torch.get_num_threads()}
    threads = machine["torch_threads"]
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 3)
    with pytest.warns(SettingWarning, match=f"trained with {threads} torch thread.*this process has {threads + 3}.*"
                                            f"OMP_NUM_THREADS={threads} to continue it exactly"), \
            pytest.raises(_Killed):
        Trainer(cfg, tmp_path / "run", resume=True, progress=_KillAt(2)).fit()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)  # the same count: no warning
        Trainer(cfg, tmp_path / "run", resume=True).fit()


def test_reset_optimizer_starts_each_lr_stage_with_a_fresh_optimiser_and_resumes_bit_exactly(tmp_path, monkeypatch):
    """reset_optimizer: the released Customized AT script builds a new SGD for each lr stage."""
    from robustzoo.errors import UsageError
    from robustzoo.train import Trainer, resolve, starts_stage

    # Clearing an SGD's state is a new SGD: the next step starts its momentum from that gradient.
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    old = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for g in (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 0.5, -1.0])):
        p.grad = g
        old.step()
    q.data.copy_(p.data)
    old.state.clear()
    new = torch.optim.SGD([q], lr=0.1, momentum=0.9, weight_decay=5e-4)
    p.grad = q.grad = torch.tensor([2.0, 1.0, -1.0])
    old.step()
    new.step()
    assert torch.equal(p, q)

    base = dict(TINY, **CKPT, optimizer="sgd", lr=0.05)  # 4 epochs; ×0.1 from epoch 3 (1-based)
    cfg = build_config("at", None, {"reset_optimizer": "true", "milestones": "3"}, **base)
    assert [starts_stage(resolve(cfg).config, e) for e in range(4)] == [False, False, True, False]
    resets: list[tuple[int, int]] = []  # (0-based epoch, momentum buffers held before the reset)
    real_epoch, real_reset = Trainer.train_epoch, Trainer.reset_optimizers

    def train_epoch(self, epoch, progress=None):
        self.epoch_now = epoch
        return real_epoch(self, epoch, progress)

    def reset_optimizers(self):
        resets.append((self.epoch_now, len(self.optimizer.state)))
        real_reset(self)
        assert not self.optimizer.state

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    monkeypatch.setattr(Trainer, "reset_optimizers", reset_optimizers)
    Trainer(cfg, tmp_path / "full").fit()
    assert len(resets) == 1 and resets[0][0] == 2 and resets[0][1] > 0
    monkeypatch.undo()
    with pytest.raises(_Killed):  # killed after epoch 2: the resume state still holds the momentum
        Trainer(cfg, tmp_path / "part", progress=_KillAt(2)).fit()
    Trainer(cfg, tmp_path / "part", resume=True).fit()
    a, b = _weights(tmp_path / "full" / runs.LAST_FILE), _weights(tmp_path / "part" / runs.LAST_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
    keep = Trainer(build_config("at", None, {"milestones": "3"}, **base), tmp_path / "keep")
    keep.fit()
    c = _weights(tmp_path / "keep" / runs.LAST_FILE)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the reset changes the run
    with pytest.raises(UsageError, match="reset_optimizer"):
        resolve(build_config("at", None, {"reset_optimizer": "true", "schedule": "cosine"}, **base))


@pytest.mark.parametrize("sets,resume_epochs", [
    ({}, [1, 2, 3, 4]),                                                 # the default: every epoch
    ({"resume_every": "2"}, [2, 4]),
    ({"resume_every": "0", "resume_every_minutes": "1e6"}, [4]),         # only after the last epoch
    ({"resume_every": "0", "resume_every_minutes": "1e-9"}, [1, 2, 3, 4]),
])
def test_checkpoint_files_written_per_epoch(tmp_path, monkeypatch, sets, resume_epochs):
    """last.safetensors once per epoch, model.safetensors never written again (a hard link to
    last when the epoch is the best), the resume state as often as asked."""
    import os

    from robustzoo.train import Trainer

    writes: list[tuple[str, int]] = []
    for fn in ("save_weights", "link_file", "save_state"):
        real = getattr(runs, fn)

        def counted(path, *args, _real=real, _fn=fn, **kwargs):
            if _fn == "save_state":
                writes.append(("resume", args[0]["epoch"]))
            elif _fn == "link_file":
                writes.append(("link " + Path(args[0]).name, 0))
            else:
                writes.append((Path(path).name, 0))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(runs, fn, counted)
    out = tmp_path / "r"
    trainer = Trainer(build_config("at", None, sets, **dict(TINY, **CKPT)), out)
    trainer.fit()
    names = [w for w, _ in writes]
    assert names.count(runs.LAST_FILE) == 4 and runs.MODEL_FILE not in names
    best = [r["epoch"] for r in _rows(out) if r["best"]]
    assert names.count(f"link {runs.MODEL_FILE}") == len(best) >= 1
    assert [e for w, e in writes if w == "resume"] == resume_epochs
    same = os.stat(out / runs.MODEL_FILE).st_ino == os.stat(out / runs.LAST_FILE).st_ino
    assert same == (best[-1] == 4)
    _, meta = runs.read_weights(out / runs.MODEL_FILE)
    assert int(meta["robustzoo.epoch"]) == best[-1] == trainer.best_epoch


def test_a_failed_background_write_stops_training(tmp_path, monkeypatch):
    from robustzoo.train import Trainer

    def full_disk(path, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "save_state", full_disk)
    trainer = Trainer(build_config("at", None, {}, **dict(TINY, **CKPT)), tmp_path / "r")
    with pytest.raises(OSError, match="No space"):
        trainer.fit()
    assert len(_rows(tmp_path / "r")) <= 2  # stopped at the next epoch's write at the latest


@pytest.mark.parametrize("sets", [{"resume_every": "-1"}, {"resume_every_minutes": "-5"}])
def test_resume_every_must_not_be_negative(sets):
    from robustzoo.errors import UsageError
    from robustzoo.train import resolve

    with pytest.raises(UsageError, match="resume_every"):
        resolve(build_config("at", None, sets, **TINY))
