"""Every bad input a user can give, as one table: command, what the message must say, exit code.

Each row runs the command line in-process and checks the contract of docs/cli.md: one line
on stderr (``error: ...``, click's ``Error: ...`` for its own usage errors, ``interrupted:
...`` after Ctrl-C, or exactly one ``warning: ...`` for a bad plugin that is skipped), no
traceback, the exit code, ``{"error": ...}`` on stdout when the command was asked for JSON
there, and nothing created by a typo: no ``missing/`` folder, no half-written run.

Add a row for every new kind of bad input: the count only grows. One-line errors that need a
fixture of their own live beside their feature: the Hub (tests/test_hub.py: tampered files,
offline pulls, unknown repos), Calibrated AT's ``viz masks`` and settings
(tests/test_calibrated.py), several processes (tests/test_distributed.py), the fast path's
switches (tests/test_fast.py) and the method plugins' settings (tests/test_methods_e2e_a.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from helpers import install_dist, run_cli

from robustzoo.cli import json_on_stdout

TRAIN = ["train", "--subset", "100", "--epochs", "2", "--steps", "1", "--set", "eval_n=10"]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    needles: tuple[str, ...]
    code: int | None = None  # None: any non-zero
    kind: str = "error"  # error | usage (click's own) | interrupted | warning (exit 0, one warning)
    setup: Callable[..., None] | None = None  # (tmp_path, monkeypatch) before the command
    after: Callable[..., None] | None = None  # (tmp_path, capsys, monkeypatch): checks afterwards


def row(*args: str, needles: tuple[str, ...] | str = (), **kw) -> pytest.param:
    needles = (needles,) if isinstance(needles, str) else needles
    shown = ["train(tiny)", *args[len(TRAIN):]] if list(args[:len(TRAIN)]) == TRAIN else list(args)
    name = " ".join(a.replace("{tmp}/", "").replace("{tmp}", "TMP").replace("{run}", "RUN") for a in shown)
    if kw.get("setup") is not None:
        name += f" [{kw['setup'].__name__.strip('_')}]"
    return pytest.param(Case(tuple(args), needles, **kw), id=name)


# -- setups ---------------------------------------------------------------------------------

def _a_file(tmp, mp):
    (tmp / "afile").write_text("not a directory")


def _notes_dir(tmp, mp):
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("mine")


def _keep_weights(tmp, mp):
    shutil.copy(tmp / "run" / "model.safetensors", tmp / "model.before")


def _truncated_weights(tmp, mp):
    w = tmp / "run" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _zeroed_weights(tmp, mp):
    (tmp / "run" / "model.safetensors").write_bytes(b"\x00" * 100)


def _wrong_num_classes(tmp, mp):
    path = tmp / "run" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["num_classes"] = 7
    path.write_text(json.dumps(cfg))


def _broken_config(tmp, mp):
    (tmp / "run" / "config.json").write_text("{not json")


def _duplicate_plugin(tmp, mp, strict=False):
    """A real third-party plugin (an installed distribution) whose objective is called 'at'."""
    from robustzoo import plugins

    site = tmp / "site"
    site.mkdir()
    (site / "dup_rz_plugin.py").write_text(
        "from robustzoo import hookimpl\n\n\n"
        "@hookimpl\n"
        "def register_objectives(register):\n"
        "    from robustzoo.objectives import MadryAT\n\n"
        "    class SecondAT(MadryAT):\n"
        "        description = 'a second at'\n\n"
        "    register(SecondAT)\n")
    install_dist(site, "dup-plugin", "2.0", {"dup": "dup_rz_plugin"})
    mp.syspath_prepend(str(site))
    if strict:
        mp.setenv("ROBUSTZOO_STRICT_PLUGINS", "1")
    plugins.reset()


def _strict_duplicate_plugin(tmp, mp):
    _duplicate_plugin(tmp, mp, strict=True)


def _interrupt_in_epoch(k: int):
    def setup(tmp, mp):  # named below, for the row's id
        from robustzoo.train import Trainer

        real = Trainer.train_epoch

        def train_epoch(self, epoch, progress=None):
            if epoch == k:
                raise KeyboardInterrupt  # Ctrl-C
            return real(self, epoch, progress)

        mp.setattr(Trainer, "train_epoch", train_epoch)

    setup.__name__ = f"ctrl-c in epoch {k + 1}"
    return setup


def _interrupting_attack(tmp, mp):
    from robustzoo import hookimpl, plugins
    from robustzoo.attacks import AttackSpec

    def ctrl_c(model, x, y, ctx):
        raise KeyboardInterrupt

    def register_attacks(register):
        register(AttackSpec("ctrl-c", ctrl_c, "raises KeyboardInterrupt, as Ctrl-C does"))

    plugins.register_plugin(SimpleNamespace(register_attacks=hookimpl(register_attacks)), name="ctrl-c-attack")


# -- checks afterwards -------------------------------------------------------------------------

def _run_unchanged(tmp, capsys, mp):
    assert (tmp / "run" / "model.safetensors").read_bytes() == (tmp / "model.before").read_bytes()


def _resume_finishes(tmp, capsys, mp):
    # "start it again with --resume": the message's command works (from epoch 0 here).
    mp.undo()  # no more Ctrl-C
    code, _, err = run_cli(["train", "--resume", tmp / "r"], capsys)
    assert code == 0, err
    rows = (tmp / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]


def _builtin_at_kept(tmp, capsys, mp):
    from robustzoo.objectives import MadryAT
    from robustzoo.plugins import registry

    assert registry("objectives").get("at") is MadryAT and registry("objectives").owner("at") == "robustzoo.builtins"


def _notes_untouched(tmp, capsys, mp):
    assert [p.name for p in (tmp / "notes").iterdir()] == ["todo.txt"]


CASES = [
    # registry names, with close matches
    row("train", "--objective", "tradez", needles=("unknown objective", "robustzoo list objectives"), code=1),
    row("train", "--dataset", "cifar", needles=("unknown dataset", "cifar10"), code=1),
    row("train", "--arch", "preact_resnet", needles="preact_resnet18", code=1),
    row("train", "--attack", "pgdd", needles="attack='pgdd'", code=2),
    row("train", "--set", "betta=3", needles="unknown setting 'betta'", code=2),
    row("train", "--set", "epochs", needles="key=value", code=2),
    # numbers: every bad number is a usage error, wherever it is given
    row("train", "--eps", "-0.1", needles=("eps=-0.1 is out of range", "> 0 and <= 1", "--eps 8/255"), code=2),
    row("train", "--eps", "8", needles=("eps=8 is out of range", "[0,1] pixel scale", "8/255"), code=2),
    row("train", "--eps", "8/0", needles=("eps '8/0' divides by zero", "8/255"), code=2),
    row("train", "--eps", "nan", needles="not a finite number", code=2),
    row("train", "--eps", "eight", needles="'eight' is not a number", code=2),
    row("train", "--alpha", "1/0", needles="alpha '1/0' divides by zero", code=2),
    row("train", "--set", "train_eps_factor=4/0", needles="train_eps_factor '4/0' divides by zero", code=2),
    row("train", "--set", "momentum=nan", needles="momentum 'nan' is not a finite number", code=2),
    row("train", "--set", "milestones=1,x", needles="milestones 'x' is not a number", code=2),
    row("train", "--lr", "nan", needles=("lr=nan is not a finite number", "learning rate"), code=2),
    row("train", "--lr", "inf", needles="lr=inf is not a finite number", code=2),
    row("train", "--lr", "-1", needles=("lr=-1.0 is out of range", "must be a number > 0", "--lr 0.1"), code=2),
    row("train", "--epochs", "0", needles=("epochs=0 is out of range", ">= 1"), code=2),
    row("eval", "{tmp}", "--batch-size", "0", needles="0 is not in the range x>=1", code=2, kind="usage"),
    row("eval", "{tmp}", "--n", "0", needles="0 is not in the range x>=1", code=2, kind="usage"),
    row("eval", "{tmp}", "--eps", "1/0", needles="--eps '1/0' divides by zero", code=2),
    row("eval", "{tmp}", "--eps-sweep", "0,1/0", needles="--eps-sweep value '1/0' divides by zero", code=2),
    row("list", "objectives", "--json", "--bogus", needles="No such option", code=2, kind="usage"),
    # run directories: train --out creates its last component only, never mixes with other files
    row(*TRAIN, "--out", "{tmp}/afile", needles=("is a file", "give a directory"), code=2, setup=_a_file),
    row(*TRAIN, "--out", "{tmp}/notes", needles=("is not empty and is not a run", "todo.txt"), code=2,
        setup=_notes_dir, after=_notes_untouched),
    row(*TRAIN, "--out", "{tmp}/missing/run", needles=("folder", "missing does not exist", "mkdir -p"),
        code=2),
    row(*TRAIN, "--out", "/proc/robustzoo-run", needles="cannot create a directory in /proc", code=2),
    row("train", "--out", "{run}", "--epochs", "1", needles=("already holds a run", "--resume"), code=2,
        setup=_keep_weights, after=_run_unchanged),
    row("train", "--resume", "{tmp}", needles="not a robustzoo run", code=1),
    row("train", "--resume", "{run}", "--objective", "erm", needles="--resume", code=2),
    # output files: the folder must exist (nothing is created by a typo); a directory is no file
    row("eval", "{tmp}", "--json", "{tmp}/missing/r.json", needles=("--json", "missing does not exist"),
        code=2),
    row("eval", "{tmp}", "--json", "{tmp}", needles=("--json", "is a directory"), code=2),
    row("eval", "{tmp}", "--eps-sweep", "0,0.1", "--plot", "{tmp}/missing/c.png",
        needles=("--plot", "missing does not exist"), code=2),
    row("viz", "masks", "{tmp}", "--out", "{tmp}/missing/m.png", needles=("--out", "missing does not exist"),
        code=2),
    row("export", "robustbench", "{tmp}", "--out", "{tmp}/missing/r.json",
        needles=("--out", "missing does not exist"), code=2),
    row("leaderboard", "{tmp}", "--html", "{tmp}/missing/l.html", needles=("--html", "missing does not exist"),
        code=2),
    row("zoo", "publish", "at-cnn-fmnist", "--org", "acme", "--cards-dir", "{tmp}/missing",
        needles=("--cards-dir", "does not exist"), code=2),
    row("zoo", "publish", "at-cnn-fmnist", "--org", "acme", "--cards-dir", "{tmp}", "--runs-dir",
        "{tmp}/missing/runs", needles=("--runs-dir", "missing does not exist"), code=2),
    # run directories and checkpoints that are not what they claim
    row("eval", "{tmp}", "--attacks", "clean", needles="not a robustzoo run", code=1),
    row("eval", "{tmp}/missing-dir", needles="neither a run directory", code=1),
    row("eval", "{run}", "--n", "10", needles="not a readable safetensors file", code=1,
        setup=_truncated_weights),
    row("eval", "{run}", "--n", "10", needles="safetensors", code=1, setup=_zeroed_weights),
    row("eval", "{run}", "--n", "10", needles=("does not match the architecture", "shape"), code=1,
        setup=_wrong_num_classes),
    row("eval", "{run}", needles="not valid JSON", code=1, setup=_broken_config),
    row("train", "--dataset", "mnist", "--data-dir", "{tmp}/nothing", needles=("mnist not found", "--data-dir"),
        code=1),
    # Hub names: huggingface_hub's own rules, before any request
    row("eval", "org/name", "--endpoint", "http://127.0.0.1:9", needles="org/name", code=1),
    row("pull", "acme/x.git", needles=("acme/x.git", "cannot end by '.git'"), code=1),
    row("pull", "hf-hub:acme/ok--dash", needles=("is not a Hub repo id", "--"), code=1),
    row("push", "{tmp}", "--repo-id", "acme/ok--dash", needles=("--repo-id", "Cannot have -- or .."), code=2),
    row("push", "{tmp}", "--repo-id", "acme/x.git", needles=("--repo-id", ".git"), code=2),
    row("push", "{tmp}", "--repo-id", "acme", needles=("--repo-id", "not org/name"), code=2),
    # --json: scripts reading stdout get {"error": ...} too
    row("pull", "acme/x.git", "--json", needles="cannot end by '.git'", code=1),
    row("push", "{tmp}", "--repo-id", "acme/x.git", "--json", needles=".git", code=2),
    row("train", "--eps", "8/0", "--json", needles="divides by zero", code=2),
    row("eval", "{tmp}", "--attacks", "clean", "--json", "-", needles="not a robustzoo run", code=1),
    row("export", "robustbench", "{tmp}", "--json", needles="not a robustzoo run", code=1),
    row("leaderboard", "{tmp}", "--json", needles="holds no run directories", code=2),
    row("zoo", "publish", "--org", "acme", "--cards-dir", "{tmp}", "--json", needles="name the zoo entries",
        code=2),
    row("list", "zoo", "--json", "--bogus", needles="No such option", code=2, kind="usage"),
    # a third-party plugin that takes a name already taken: skipped with one warning
    row("list", "objectives", needles=("plugin 'dup' (dup-plugin 2.0) registers objective 'at', which "
                                       "'robustzoo.builtins' registered first; skipped it",
                                       "ROBUSTZOO_STRICT_PLUGINS=1", "ROBUSTZOO_DISABLE_PLUGINS=dup"),
        code=0, kind="warning", setup=_duplicate_plugin, after=_builtin_at_kept),
    row("env", needles="plugin 'dup' (dup-plugin 2.0) registers objective 'at', which 'robustzoo.builtins'",
        code=0, kind="warning", setup=_duplicate_plugin),
    row("plugins", "--json", needles=("registered twice", "dup"), code=1, setup=_strict_duplicate_plugin),
    # Ctrl-C: what was kept, and the command that continues
    row(*TRAIN, "--out", "{tmp}/r", needles=("kept epoch 1 of 2", "robustzoo train --resume"), code=130,
        kind="interrupted", setup=_interrupt_in_epoch(1)),
    row(*TRAIN, "--out", "{tmp}/r", needles=("no epoch had finished", "robustzoo train --resume"), code=130,
        kind="interrupted", setup=_interrupt_in_epoch(0), after=_resume_finishes),
    row("eval", "{run}", "--attacks", "clean,ctrl-c", "--n", "40",
        needles=("eval_flags.safetensors", "run the same command again"), code=130, kind="interrupted",
        setup=_interrupting_attack),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    if any("{run}" in a for a in case.args):
        shutil.copytree(request.getfixturevalue("at_run"), tmp_path / "run")
    if case.setup is not None:
        case.setup(tmp_path, monkeypatch)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(tmp_path / "run")) for a in case.args]
    code, out, err = run_cli(args, capsys)

    assert "Traceback" not in err, err
    assert code == case.code if case.code is not None else code != 0, (code, err)
    prefix = {"error": "error:", "usage": "Error:", "interrupted": "interrupted:", "warning": "warning:"}
    lines = [ln for ln in err.splitlines() if ln.startswith(prefix[case.kind])]
    assert len(lines) == 1, err
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    if case.kind != "warning" and json_on_stdout(args):
        data = json.loads(out)
        assert set(data) == {"error", "type"} and case.needles[0] in data["error"], out
    assert not (tmp_path / "missing").exists(), "a missing folder was created"
    if case.kind in ("error", "usage"):
        assert not (tmp_path / "runs").exists()  # nothing half-written
    if case.after is not None:
        case.after(tmp_path, capsys, monkeypatch)


def test_the_table_has_every_row_once():
    ids = [c.id for c in CASES]
    assert all(ids)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 60  # the count only grows: add rows, do not remove them
