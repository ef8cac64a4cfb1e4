"""The settings schema (robustzoo.settings, config.SCHEMA, Objective.ranges) and the storage
translation of robustzoo.files: what the one-line errors of tests/test_bad_input.py stand on."""

from __future__ import annotations

import dataclasses
import errno
import json
import warnings
from pathlib import Path

import pytest

from robustzoo import files, runs
from robustzoo.config import SCHEMA, TrainConfig, apply_sets, check_config
from robustzoo.errors import RunError, SettingWarning, StorageError, UsageError
from robustzoo.plugins import registry
from robustzoo.settings import Setting


def test_every_config_key_has_a_rule_and_the_defaults_pass_it():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"objective_args"}
    assert set(SCHEMA) == fields
    check_config(TrainConfig())
    assert all(rule.meaning for rule in SCHEMA.values())  # train --help lists each with its meaning


@pytest.mark.parametrize("name", registry("recipes").list())
def test_every_recipe_passes_the_schema(name):
    from robustzoo.train import build_config, resolve

    resolve(build_config(None, name, {}))


@pytest.mark.parametrize("name", registry("objectives").list())
def test_every_objectives_defaults_pass_its_own_ranges(name):
    cls = registry("objectives").get(name)
    assert set(cls.ranges) <= set(cls.defaults)
    cls.resolve_settings({})


@pytest.mark.parametrize("key,text,value", [
    ("eps", "8/255", 8 / 255), ("seed", "4294967295", 2**32 - 1), ("subset", "none", None),
    ("eval_attacks", "clean, pgd20", ["clean", "pgd20"]), ("milestones", "0.5,30", [0.5, 30.0]),
    ("nesterov", "yes", True), ("augment", "none", "none"), ("arch", "none", None),
])
def test_values_as_typed_become_typed_values(key, text, value):
    cfg = TrainConfig()
    apply_sets(cfg, {key: text}, {})
    assert getattr(cfg, key) == value


def test_python_values_are_checked_like_strings():
    cfg = TrainConfig()
    apply_sets(cfg, {"epochs": 3, "lr": 1}, {})
    assert cfg.epochs == 3 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    for key, value, why in [("epochs", 2.5, "is not an integer"), ("epochs", True, "is not an integer"),
                            ("lr", float("nan"), "is not a finite number"), ("eval_attacks", "", "is empty"),
                            ("momentum", 1.0, "is out of range"), ("device", "", "is empty")]:
        with pytest.raises(UsageError, match=why) as e:
            apply_sets(TrainConfig(), {key: value}, {})
        assert str(e.value).startswith(f"{key}=") and "\n" not in str(e.value)


def test_a_trainconfig_built_in_python_is_checked_before_anything_loads(tmp_path):
    from robustzoo.train import Trainer

    with pytest.raises(UsageError, match="val_size=0 is out of range"):
        Trainer(TrainConfig(val_size=0), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_setting_describes_its_range():
    assert Setting("float", min=0.0, max=1.0, min_open=True).describe() == "a number > 0 and <= 1"
    assert Setting("int", min=1, none_means="all").describe() == "an integer >= 1 or none (all)"
    assert Setting("str", choices=("a", "b")).describe() == "one of a, b"


def test_config_json_values_are_blamed_on_the_file():
    with pytest.raises(RunError, match=r"run/config.json: robustzoo.config.steps: steps='3' is not an integer"):
        TrainConfig.from_dict({"steps": "3"}, source="run/config.json")
    with pytest.raises(RunError, match="unknown config key 'stpes'"):
        TrainConfig.from_dict({"stpes": 3}, source="run/config.json")


def test_trades_beta_zero_is_allowed_with_a_warning():
    from robustzoo.train import build_config, resolve

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve(build_config("trades", None, {"beta": "0"}))
    assert [str(w.message) for w in caught if w.category is SettingWarning] == [
        "trades: beta=0 drops the KL term: this trains on clean images only (no robustness); the paper uses beta=6"]


@pytest.mark.parametrize("err,cause", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                       (errno.ENAMETOOLONG, "too long"), (errno.ENOTDIR, "not a folder"),
                                       (errno.EACCES, "permission denied")])
def test_a_refused_write_names_the_file_not_the_temporary_one(tmp_path, monkeypatch, err, cause):
    import os

    def replace(src, dst):
        raise OSError(err, os.strerror(err), src)

    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "eval.json"
    with pytest.raises(StorageError) as e:
        files.write_json(target, {"a": 1})
    assert str(e.value).startswith(f"cannot write {target}: ") and cause in str(e.value)
    assert ".tmp" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone, nothing half-written


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs Linux's /dev/full")
def test_torch_save_on_a_full_disk_is_an_os_error(tmp_path, monkeypatch):
    """torch.save to a path reports ENOSPC as 'enforce fail at inline_container.cc'; to a file
    object (what save_state uses) as the OSError it is. /dev/full is a disk that is always full."""
    import torch

    with pytest.raises(OSError) as e, open("/dev/full", "wb") as f:
        torch.save({"w": torch.zeros(100_000)}, f)
    assert e.value.errno == errno.ENOSPC
    real_open = open

    def full_open(path, mode="r", *a, **kw):
        return real_open("/dev/full", mode) if "w" in mode and ".resume.pt." in str(path) else real_open(path, mode,
                                                                                                      *a, **kw)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(StorageError, match=r"cannot write .*state/resume.pt: the disk is full"):
        runs.save_state(tmp_path / "state" / "resume.pt", {"w": torch.zeros(100_000)})


def test_the_lock_is_released_with_the_block_and_says_who_held_it(tmp_path):
    from robustzoo.errors import RunBusyError

    with files.run_lock(tmp_path, "train"):
        with pytest.raises(RunBusyError, match=rf"pid {__import__('os').getpid()}: robustzoo train"):
            with files.run_lock(tmp_path, "eval"):
                pass
    with files.run_lock(tmp_path, "eval"):  # released: the next writer gets it
        pass
    files.check_run_dir(tmp_path)  # the lock file alone does not make a folder "not empty"


def test_eval_record_and_metrics_name_the_field(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"eps": 0.1, "results": [
        {"attack": "clean", "accuracy": 0.9, "correct": 9, "n": 10}, {"attack": "pgd20", "accuracy": 0.5,
                                                                      "correct": 11, "n": 10}]}))
    with pytest.raises(RunError, match=r"results\[1\] \(pgd20\).correct is 11; expected an integer in \[0, n = 10\]"):
        runs.eval_record(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n')
    with pytest.raises(RunError, match="metrics.jsonl line 2 is \\[1, 2\\], expected a JSON object"):
        runs.read_metrics(tmp_path)
