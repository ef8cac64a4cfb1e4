"""Plugins: entry points loaded one at a time, third-party packages, disable/strict switches."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import install_dist, newest_record, run_cli

from robustzoo import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "robustzoo-example-plugin"
METHOD_PLUGINS = ("trades", "mart", "fat", "calibrated", "customized")


@pytest.fixture
def example_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "robustzoo_example", site / "robustzoo_example")
    install_dist(site, "robustzoo-example-plugin", "0.1.0", {"example": "robustzoo_example"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    yield site
    sys.modules.pop("robustzoo_example", None)


def test_third_party_plugin_is_listed_and_trains(example_site, tmp_path, capsys):
    code, out, _ = run_cli(["list", "objectives", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["at-ls"]["plugin"] == "example"
    code, out, _ = run_cli(["plugins", "--json"], capsys)
    info = {r["name"]: r for r in json.loads(out)}["example"]
    assert info["distribution"] == "robustzoo-example-plugin" and info["version"] == "0.1.0"
    assert info["registered"] == {"attacks": ["uniform-noise"], "objectives": ["at-ls"]}
    code, _, err = run_cli(["train", "--objective", "at-ls", "--smoothing", "0.2", "--subset", "200",
                            "--epochs", "1", "--steps", "2", "--out", tmp_path / "r", "--set",
                            "eval_attacks=clean,uniform-noise"], capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["robustzoo"]["objective_settings"]["smoothing"] == 0.2
    ev = newest_record(tmp_path / "r")  # uniform noise breaks nothing: a no-op, so maybe not canonical
    assert [r["attack"] for r in ev["results"]] == ["clean", "uniform-noise"]


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_rz_plugin.py").write_text("raise ImportError('needs a package that is not installed')\n")
    install_dist(site, "broken-plugin", "1.0", {"broken": "broken_rz_plugin"})
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    return site


def test_broken_plugin_warns_once_and_cli_still_works(broken_site, capsys, monkeypatch):
    code, out, err = run_cli(["list", "objectives"], capsys)
    assert code == 0 and "at" in out
    warn = [ln for ln in err.splitlines() if "broken" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning:") and "ImportError" in warn[0]
    monkeypatch.setenv("ROBUSTZOO_DISABLE_PLUGINS", "broken")
    plugins.reset()
    code, _, err = run_cli(["list", "objectives"], capsys)
    assert code == 0 and "broken" not in err


def test_strict_plugins_reraise(broken_site, monkeypatch):
    monkeypatch.setenv("ROBUSTZOO_STRICT_PLUGINS", "1")
    plugins.reset()
    with pytest.raises(ImportError, match="not installed"):
        plugins.registries()


TAKEN_NAMES = """
import click

from robustzoo import hookimpl


@hookimpl
def register_objectives(register):
    from robustzoo.objectives import MadryAT

    class SecondAT(MadryAT):
        description = "an objective called 'at' too"

    register(SecondAT)


@hookimpl
def register_recipes(register):
    from robustzoo.recipes import Recipe

    register(Recipe("at-prn18", "at", {}, description="a recipe name robustzoo has"))
    register(Recipe("taken-free", "at", {}, description="a name of its own"))


@hookimpl
def register_commands(cli):
    @cli.command("env")
    def env():
        click.echo("not the real env")
"""


@pytest.fixture
def taken_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "taken_rz_plugin.py").write_text(TAKEN_NAMES)
    install_dist(site, "taken-plugin", "0.3", {"taken": "taken_rz_plugin"})
    return site


def test_a_plugin_taking_a_name_is_skipped_with_one_warning_per_name(taken_site):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(taken_site), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "robustzoo", "env", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)  # the real env, not the plugin's
    assert info["plugins"]["taken"] == "taken-plugin 0.3"
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 3 and len(res.stderr.splitlines()) == 3, res.stderr
    for expected in ("plugin 'taken' adds a command 'env', which 'robustzoo' added first; skipped it",
                     "plugin 'taken' (taken-plugin 0.3) registers objective 'at', which 'robustzoo.builtins' "
                     "registered first; skipped it",
                     "registers recipe 'at-prn18', which 'robustzoo.builtins' registered first"):
        assert sum(expected in w for w in warnings) == 1, (expected, warnings)
    res = subprocess.run([sys.executable, "-m", "robustzoo", "list", "recipes", "taken", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and [r["name"] for r in json.loads(res.stdout)] == ["taken-free"], res.stderr
    res = subprocess.run([sys.executable, "-m", "robustzoo", "list", "objectives"],
                         env=dict(env, ROBUSTZOO_STRICT_PLUGINS="1"), capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: plugin 'taken' replaces the command 'env'"), res.stderr


def test_cli_works_with_every_method_plugin_disabled(tmp_path):
    # One fresh interpreter (torch is imported once): the registries hold only the core's
    # objectives, no method plugin module is imported, and `robustzoo train` still runs.
    env = dict(os.environ, ROBUSTZOO_DISABLE_PLUGINS=",".join(METHOD_PLUGINS))
    out = tmp_path / "r"
    code = ("import sys, robustzoo; from robustzoo.plugins import registry; "
            "names = registry('objectives').list(); "
            "assert not [m for m in sys.modules if m.startswith('robustzoo_')], sys.modules; "
            "print(','.join(names), flush=True); "
            "from robustzoo.cli import main; "
            f"main(['train', '--subset', '150', '--epochs', '1', '--steps', '1', '--out', {str(out)!r}, "
            "'--set', 'eval_n=20'])")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "at,erm" and "warning" not in res.stderr
    assert (out / "model.safetensors").is_file()


def test_core_never_imports_a_method_plugin():
    pattern = re.compile(r"^\s*(from|import)\s+robustzoo_(" + "|".join(METHOD_PLUGINS) + ")", re.M)
    offenders = [p for p in (ROOT / "robustzoo").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_every_hook_is_documented_with_its_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("register_")]
    assert len(hooks) >= 7
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"{name}({params})" in doc, f"docs/plugins.md lacks {name}({params})"


def test_plugin_manager_catches_misspelled_hooks():
    import pluggy

    class Bad:
        @hookspecs.hookimpl
        def register_objective(self, register):  # missing 's'
            pass

    pm = plugins.get_plugin_manager()
    pm.register(Bad(), name="bad")
    try:
        with pytest.raises(pluggy.PluginValidationError):
            pm.check_pending()
    finally:
        pm.unregister(name="bad")
