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

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
    # Files an error may leave (work kept before a failed write); every other file under the
    # test's folder must be byte for byte what it was before the command.
    may_write: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()  # what the line must not say (e.g. advice that does not fit)
    run: bool = False  # copy the trained run to {tmp}/run although no argument names it


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


def _edit_json(rel: str, edit: Callable[[dict], None]):
    def setup(tmp, mp):
        path = tmp / "run" / rel
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    setup.__name__ = f"{rel} edited"
    return setup


def _set_in(*keys_and_value):
    *keys, value = keys_and_value

    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _cfg_eps_abc(tmp, mp):
    _edit_json("config.json", _set_in("robustzoo", "threat_model", "eps", "abc"))(tmp, mp)


def _cfg_train_eps_abc(tmp, mp):
    _edit_json("config.json", _set_in("robustzoo", "config", "eps", "abc"))(tmp, mp)


def _cfg_model_args_oops(tmp, mp):
    _edit_json("config.json", _set_in("model_args", "oops"))(tmp, mp)


def _cfg_num_classes_text(tmp, mp):
    _edit_json("config.json", _set_in("num_classes", "10"))(tmp, mp)


def _cfg_objective_args_bad(tmp, mp):
    _edit_json("config.json", _set_in("robustzoo", "config", "objective_args", {"kappa": "big"}))(tmp, mp)


def _cfg_dataset_typo(tmp, mp):
    _edit_json("config.json", _set_in("robustzoo", "dataset", "digitz"))(tmp, mp)


def _cfg_architecture_typo(tmp, mp):
    _edit_json("config.json", _set_in("architecture", "cnn_mnis"))(tmp, mp)


def _eval_accuracy_null(tmp, mp):
    _edit_json("eval.json", lambda d: d["results"][0].__setitem__("accuracy", None))(tmp, mp)


def _eval_accuracy_high(tmp, mp):
    _edit_json("eval.json", lambda d: d["results"][0].__setitem__("accuracy", "high"))(tmp, mp)


def _eval_results_missing(tmp, mp):
    _edit_json("eval.json", lambda d: d.pop("results"))(tmp, mp)


def _history_damaged(tmp, mp):
    record = sorted((tmp / "run" / "evals").glob("*.json"))[0]
    record.write_text(record.read_text()[:40])


def _truncated_resume_state(tmp, mp):
    state = tmp / "run" / "state" / "resume.pt"
    state.write_bytes(state.read_bytes()[:1000])


def _resume_state_without_epoch(tmp, mp):
    import torch

    state = tmp / "run" / "state" / "resume.pt"
    blob = torch.load(state, weights_only=True)
    blob["epoch"] = "three"
    torch.save(blob, state)


def _garbage_metrics_line(tmp, mp):
    path = tmp / "run" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines.insert(1, "{garbage")
    path.write_text("\n".join(lines) + "\n")


def _metrics_epoch_text(tmp, mp):
    path = tmp / "run" / "metrics.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    rows[-1]["epoch"] = "last"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _idx(path, arr, magic=b"\x00\x00\x08"):
    import struct

    import numpy as np

    arr = np.asarray(arr, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())


def _fmnist_dir(what: str, n_train=60, n_labels=None, size=28, max_label=10, drop=(), magic=b"\x00\x00\x08"):
    """A --data-dir ``{tmp}/d`` of Fashion-MNIST IDX files made to order (what is wrong: the args)."""
    import numpy as np

    def setup(tmp, mp):
        rng = np.random.RandomState(0)
        d = tmp / "d"
        files = {"train-images-idx3-ubyte": rng.randint(0, 256, (n_train, size, size)),
                 "train-labels-idx1-ubyte": rng.randint(0, max_label, (n_labels or n_train,)),
                 "t10k-images-idx3-ubyte": rng.randint(0, 256, (20, 28, 28)),
                 "t10k-labels-idx1-ubyte": rng.randint(0, 10, (20,))}
        for name, arr in files.items():
            if name not in drop:
                _idx(d / name, arr, magic if name.startswith("train-labels") else b"\x00\x00\x08")

    setup.__name__ = what
    return setup


def _six_byte_idx(tmp, mp):
    _fmnist_dir("")(tmp, mp)
    (tmp / "d" / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0]))


def _padded_idx(tmp, mp):
    _fmnist_dir("")(tmp, mp)
    p = tmp / "d" / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes() + b"\x00" * 7)


def _plugin_site(tmp, mp, name: str, source: str, strict: bool = False):
    from robustzoo import plugins

    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}_rz_plugin.py").write_text("from robustzoo import hookimpl\n\n\n@hookimpl\n" + source)
    install_dist(site, f"{name}-plugin", "1.0", {name: f"{name}_rz_plugin"})
    mp.syspath_prepend(str(site))
    if strict:
        mp.setenv("ROBUSTZOO_STRICT_PLUGINS", "1")
    plugins.reset()


def _misspelt_hook(tmp, mp, strict=False):
    """A hook named register_objective (no s): pluggy's check_pending used to fail every command."""
    _plugin_site(tmp, mp, "misspelt", "def register_objective(register):\n    pass\n", strict)


def _strict_misspelt_hook(tmp, mp):
    _misspelt_hook(tmp, mp, strict=True)


def _wrong_hook_argument(tmp, mp):
    _plugin_site(tmp, mp, "wrongarg", "def register_objectives(reg):\n    pass\n")


def _string_objective(tmp, mp):
    _plugin_site(tmp, mp, "stringobj", "def register_objectives(register):\n    register('oops')\n")


def _dataset_of_wrong_kind(tmp, mp):
    _plugin_site(tmp, mp, "dictdata", "def register_datasets(register):\n    register({'name': 'mine'})\n")


def _arch_for_28x28(tmp, mp):
    """An architecture that takes 28x28 images only (a Linear on 784 inputs)."""
    import torch.nn as nn

    from robustzoo import hookimpl, plugins

    def register_architectures(register):
        register("fixed28", lambda num_classes, in_chans, **kw: nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * 28 * 28, num_classes)), description="28x28 only")

    plugins.register_plugin(SimpleNamespace(register_architectures=hookimpl(register_architectures)),
                            name="fixed28-arch")


def _run_dirs_beside(tmp, mp):
    (tmp / "exp" / "at-digits-1").mkdir(parents=True)


def _oserror(err: int, when: Callable[[str], bool], what: str = "replace"):
    """Make the OS refuse (errno ``err``) the rename (or mkstemp) of the files ``when`` picks."""
    import os
    import tempfile

    def setup(tmp, mp):
        if what == "replace":
            real = os.replace

            def replace(src, dst, *a, **kw):
                if when(str(dst)):
                    raise OSError(err, os.strerror(err), str(src))  # names the temporary file, as the OS does
                return real(src, dst, *a, **kw)

            mp.setattr(os, "replace", replace)
        elif what == "mkstemp":
            real_mk = tempfile.mkstemp

            def mkstemp(*a, **kw):
                if when(str(kw.get("prefix", ""))):
                    raise OSError(err, os.strerror(err), str(kw.get("dir", ".")) + "/.x.tmp")
                return real_mk(*a, **kw)

            mp.setattr(tempfile, "mkstemp", mkstemp)
        else:  # the run directory's lock file
            real_open = os.open

            def open_(path, *a, **kw):
                if when(str(path)):
                    raise OSError(err, os.strerror(err), str(path))
                return real_open(path, *a, **kw)

            mp.setattr(os, "open", open_)

    import errno as _errno
    setup.__name__ = f"{_errno.errorcode[err]} on {what}"
    return setup


def _disk_full_in_safetensors(tmp, mp):
    """safetensors reports a full disk as its own error type with the OS error inside."""
    from robustzoo import runs

    def save_file(*a, **kw):
        # safetensors 0.8's own wording on a real full disk (a 300 KiB tmpfs); older versions
        # printed the Debug form "IoError(Os { code: 28, kind: StorageFull, ... })".
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    mp.setattr(runs, "save_file", save_file)


_disk_full_in_safetensors.__name__ = "ENOSPC in safetensors"


@pytest.mark.parametrize(("name", "gpus", "expected"), [
    ("cuda:7", 0, "--device cuda:7 was asked for but no CUDA GPU is available; use --device cpu"),
    ("cuda:7", 2, "--device cuda:7: this machine has 2 CUDA GPUs (cuda:0 to cuda:1)"),
    ("cuda:1", 1, "--device cuda:1: this machine has 1 CUDA GPU (cuda:0 to cuda:0)"),
    ("meta", 0, "unknown device 'meta'; use auto, cpu, cuda or cuda:N"),
    ("gpu", 0, "unknown device 'gpu'"),
])
def test_a_device_this_machine_does_not_have_is_named(name, gpus, expected, monkeypatch):
    import torch

    from robustzoo.devices import resolve_device
    from robustzoo.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(UsageError, match="^" + re.escape(expected)):
        resolve_device(name)


def test_a_device_this_machine_has_is_kept(monkeypatch):
    import torch

    from robustzoo.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_both_safetensors_wordings_of_an_os_error_are_understood():
    from robustzoo.runs import _os_error_of

    for text in ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "x" })',
                 "Error while serializing: I/O error: No space left on device (os error 28)"):
        err = _os_error_of(RuntimeError(text))
        assert isinstance(err, OSError) and err.errno == 28
    other = RuntimeError("something else")
    assert _os_error_of(other) is other


def test_a_disk_that_fills_inside_torch_save_is_a_full_disk(tmp_path, monkeypatch):
    """torch's writer fails its position check on a short write ("unexpected pos"): with the
    disk full that is ENOSPC, named with the file."""
    import shutil as _shutil

    import torch

    from robustzoo import runs
    from robustzoo.errors import StorageError

    def short_write(*a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 258")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(_shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10 << 20, 10 << 20, 4096))
    with pytest.raises(StorageError, match=r"cannot write .*resume\.pt: the disk is full"):
        runs.save_state(tmp_path / "resume.pt", {"x": 1})
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def _lock_held(tmp, mp):
    """Another writer holds the run directory: the lock of robustzoo.files, taken in this process."""
    from contextlib import ExitStack

    from robustzoo.files import run_lock

    stack = ExitStack()
    stack.enter_context(run_lock(tmp / "run", "train"))
    mp.setattr(_lock_held, "stack", stack, raising=False)


def _offline(tmp, mp):
    import huggingface_hub

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


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


def _no_data_folder_left(tmp, capsys, mp):
    assert not (tmp / "data").exists(), "a failed download left data/ behind"


def _release_lock(tmp, capsys, mp):
    _lock_held.stack.close()


def _flags_kept_and_resumed(tmp, capsys, mp):
    # The finished attacks' outcomes were saved before the record: the same command resumes them.
    assert (tmp / "run" / "eval_flags.safetensors").is_file()
    mp.undo()
    code, out, err = run_cli(["eval", tmp / "run", "--attacks", "clean,fgsm", "--n", "20", "--no-health",
                              "--json", "-"], capsys)
    assert code == 0, err
    assert set(json.loads(out)["resumed"]) == {"clean", "fgsm"}


CASES = [
    # registry names, with close matches
    row("train", "--objective", "tradez", needles=("unknown objective", "robustzoo list objectives"), code=1),
    row("train", "--dataset", "cifar", needles=("unknown dataset", "cifar10"), code=1),
    row("train", "--arch", "preact_resnet", needles="preact_resnet18", code=1),
    row("train", "--arch", "timm/resnt18", needles="(did you mean 'timm/resnet18'", code=1),
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
    row("train", "--lr", "-1", needles=("lr=-1 is out of range", "must be a number > 0", "--lr 0.1"), code=2),
    row("train", "--epochs", "0", needles=("epochs=0 is out of range", ">= 1"), code=2),
    row("eval", "{tmp}", "--batch-size", "0", needles="0 is not in the range x>=1", code=2, kind="usage"),
    row("list", "attackz", needles=("'attackz' is not one of", "(did you mean 'attacks'?)"), code=2, kind="usage"),
    row("eval", "{run}", "--precision", "fp23", needles="(did you mean 'fp32'?)", code=2, kind="usage"),
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
    row("eval", "{tmp}/missing-dir", needles="no such run directory", code=1),
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
    # settings that are nonsense: refused where they enter (the schema), before data or a model
    row("train", "--set", "val_size=-1", needles=("val_size=-1 is out of range", "an integer >= 1"), code=2),
    row("train", "--alpha", "0", needles=("alpha=0 is out of range", "> 0", "--alpha 2/255"), code=2),
    row("train", "--objective", "trades", "--beta", "-6", needles=("trades: beta=-6 is out of range", ">= 0",
                                                                  "--set beta=6"), code=2),
    row("train", "--out", "", needles=("--out is empty", "unset shell variable"), code=2),
    row("train", "--resume", "", needles="--resume is empty", code=2),
    row("train", "--data-dir", "", needles="--data-dir is empty", code=2),
    row("train", "--set", "eval_attacks=", needles=("eval_attacks='' is empty", "at least one", "clean,pgd20"),
        code=2),
    row("train", "--set", "val_every=0", needles=("val_every=0 is out of range", ">= 1"), code=2),
    row("train", "--set", "kappa=-1", needles=("kappa=-1 is out of range", ">= 0"), code=2),
    row("eval", "{run}", "--seed", "-1", "--n", "10", needles=("seed=-1 is out of range", ">= 0"), code=2),
    # local paths before Hub ids: pull is told what it was given before anything asks the Hub
    row("pull", "{run}", needles=("is a local run directory", "needs no pull", "robustzoo eval"), code=2),
    row("pull", "{tmp}/runz/at-digits", needles=("no such run directory", "pull takes a zoo alias"), code=1),
    row("pull", "{tmp}", needles=("is a folder but not a run directory (no config.json)", "pull takes a zoo alias"),
        code=1),
    row("eval", "{run}", "--seed", "123456789012345678901", "--n", "10", needles="is out of range", code=2),
    row("eval", "{run}", "--eps", "2", "--n", "10", needles=("--eps 2", "above 1 allows every image"), code=2),
    row("train", "--set", "eval_n=-5", needles=("eval_n=-5 is out of range", "or none (all)"), code=2),
    row("train", "--seed", "123456789012345678901",
        needles=("seed=123456789012345678901 is out of range", "<= 4294967295"), code=2),
    row("train", "--steps", "0", needles=("steps=0 is out of range", "PGD steps"), code=2),
    # A typo's extra digits would train until killed: the upper bounds name the limit.
    row("train", "--steps", "99999999999999999999", needles=("steps=99999999999999999999 is out of range",
                                                             "<= 10000"), code=2),
    row("train", "--epochs", "20000", needles=("epochs=20000 is out of range", "<= 10000"), code=2),
    row("train", "--set", "val_steps=100000", needles=("val_steps=100000 is out of range", "<= 10000"), code=2),
    row("train", "--set", "epochs=2.5", needles=("epochs=2.5 is not an integer", "e.g. --epochs 10"), code=2),
    row("train", "--set", "nesterov=maybe", needles="nesterov=maybe is not true or false", code=2),
    row("train", "--set", "gamma=0", needles=("gamma=0 is out of range", "> 0"), code=2),
    row("train", "--objective", "customized", "--set", "dirichlet=0",
        needles=("customized: dirichlet=0 is out of range", "> 0"), code=2),
    row("train", "--objective", "calibrated", "--set", "mask_momentum=1",
        needles=("calibrated: mask_momentum=1 is out of range", "< 1"), code=2),
    row("train", "--objective", "at", "--set", "kappa=inf", needles=("kappa 'inf' is not a finite number",), code=2),
    row("train", "--resume", "{run}", "--epochs", "5", needles=("drop --epochs", "start a new run"), code=2),
    row("train", "--nproc", "0", needles="0 is not in the range x>=1", code=2, kind="usage"),
    row("train", "--arch", "fixed28", needles=("--arch fixed28 cannot take the 1×8×8 images of digits",
                                               "robustzoo list architectures"), code=2, setup=_arch_for_28x28),
    row(*TRAIN, "--objective", "trades", "--beta", "0", "--out", "{tmp}/r",
        needles=("trades: beta=0 drops the KL term", "clean images only"), code=0, kind="warning"),
    row(*TRAIN, "--objective", "mart", "--set", "lam=0", "--out", "{tmp}/r",
        needles=("mart: lam=0 drops the misclassification-aware KL term", "not MART"), code=0, kind="warning"),
    # data files: checked on load, named in the message; --data-dir is one folder with every file
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("d lacks t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "one folder"), code=1,
        setup=_fmnist_dir("train files only", drop=("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("train-images-idx3-ubyte holds 60 images", "train-labels-idx1-ubyte holds 30 labels"), code=1,
        setup=_fmnist_dir("60 images, 30 labels", n_labels=30)),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/afile",
        needles=("--data-dir", "afile is a file, not a folder"), code=2, setup=_a_file),
    row("train", "--data-dir", "{tmp}/afile", needles=("--data-dir", "afile is a file, not a folder"), code=2,
        setup=_a_file),
    row("eval", "{run}", "--n", "10", "--data-dir", "{tmp}/afile",
        needles=("--data-dir", "afile is a file, not a folder"), code=2, setup=_a_file),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("train-labels-idx1-ubyte: label 1", "outside 0..9", "10 classes"), code=1,
        setup=_fmnist_dir("labels up to 12", max_label=13)),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("train-images-idx3-ubyte holds 10×10 images", "28×28"), code=1, setup=_fmnist_dir("10x10 images", size=10)),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("train-labels-idx1-ubyte is cut short", "8 bytes", "6 bytes"), code=1, setup=_six_byte_idx),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("train-labels-idx1-ubyte is not a uint8 IDX file", "bad magic number"), code=1,
        setup=_fmnist_dir("bad magic", magic=b"\x00\x00\x0d")),
    row("train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/d",
        needles=("t10k-labels-idx1-ubyte is longer than its header says", "20 bytes"), code=1, setup=_padded_idx),
    row("train", "--recipe", "at-prn18", needles=("cifar10 not found", "--data-dir"), code=1,
        after=_no_data_folder_left),
    # run files damaged or edited by hand: the file, the field, what was expected
    row("eval", "{run}", "--n", "10", needles=("config.json: robustzoo.threat_model.eps is \"abc\"",
                                               "a number in [0, 1]"), code=1, setup=_cfg_eps_abc),
    row("train", "--resume", "{run}", needles=("config.json: robustzoo.config.eps", "'abc'", "a number > 0"),
        code=1, setup=_cfg_train_eps_abc),
    row("eval", "{run}", "--n", "10", needles=("config.json: model_args is \"oops\"", "an object"), code=1,
        setup=_cfg_model_args_oops),
    row("eval", "{run}", "--n", "10", needles=("config.json: num_classes is \"10\"", "an integer >= 1"), code=1,
        setup=_cfg_num_classes_text),
    row("train", "--resume", "{run}", needles=("config.json: robustzoo.config.objective_args", "kappa"), code=1,
        setup=_cfg_objective_args_bad),
    row("eval", "{run}", "--n", "10", needles=("config.json: unknown dataset 'digitz'", "did you mean 'digits'"),
        code=1, setup=_cfg_dataset_typo),
    row("eval", "{run}", "--n", "10", needles=("config.json: unknown architecture 'cnn_mnis'",
                                               "did you mean 'cnn_mnist'"), code=1, setup=_cfg_architecture_typo),
    row("train", "--resume", "{run}", needles=("state/resume.pt is not a readable resume state",
                                               "start a new run"), code=1, setup=_truncated_resume_state),
    row("train", "--resume", "{run}", needles=("state/resume.pt: epoch is \"three\"", "an integer >= 0"), code=1,
        setup=_resume_state_without_epoch),
    row("train", "--resume", "{run}", needles=("metrics.jsonl line 2 is not valid JSON", "'{garbage'"), code=1,
        setup=_garbage_metrics_line),
    row("train", "--resume", "{run}", needles=("metrics.jsonl: row 3 'epoch' is \"last\"", "an integer >= 1"),
        code=1, setup=_metrics_epoch_text),
    row("export", "robustbench", "{run}", "--json",
        needles=("eval.json: results[0] (clean).accuracy is null", "a number in [0, 1]"), code=1,
        setup=_eval_accuracy_null),
    row("export", "robustbench", "{run}", needles=("eval.json: results[0] (clean).accuracy is \"high\"",),
        code=1, setup=_eval_accuracy_high),
    row("push", "{run}", "--repo-id", "acme/x", needles=("eval.json: results is missing", "a list of attack rows"),
        code=1, setup=_eval_results_missing),
    row("eval", "{run}", "--attacks", "clean", "--n", "10", "--no-health",
        needles=("evals/", "is not valid JSON", "move it out of"), code=1, setup=_history_damaged,
        may_write=("eval_flags.safetensors", "evals")),
    # the operating system refuses: one line, the path as given (no temporary name), the cause
    row(*TRAIN, "--out", "{tmp}/r", needles=("cannot write", "r/last.safetensors", "the disk is full",
                                            "robustzoo train --resume"), code=1, setup=_disk_full_in_safetensors,
        may_write=("r",)),
    row("eval", "{run}", "--attacks", "clean,fgsm", "--n", "20", "--no-health",
        needles=("cannot write", "run/eval.json", "read-only", "eval_flags.safetensors", "resumes from them"),
        code=1, setup=_oserror(30, lambda p: p.endswith("/eval.json")), after=_flags_kept_and_resumed,
        may_write=("eval_flags.safetensors", "evals")),
    row("eval", "{run}", "--attacks", "clean", "--n", "10", "--json", "{tmp}/out.json",
        needles=("cannot write", "out.json", "a part of the path is a file"), code=1,
        setup=_oserror(20, lambda prefix: prefix.startswith(".out.json"), "mkstemp"),
        may_write=("eval_flags.safetensors", "evals", "eval.json")),
    row("leaderboard", "{tmp}", "--html", "{tmp}/board.html", needles=("cannot write", "board.html",
                                                                      "permission denied"),
        code=1, setup=_oserror(13, lambda prefix: prefix.startswith(".board.html"), "mkstemp"), run=True),
    row("eval", "{run}", "--n", "10", needles=("cannot write in", "run: the file system is read-only"), code=1,
        setup=_oserror(30, lambda p: p.endswith(".robustzoo.lock"), "open")),
    row(*TRAIN, "--out", "{tmp}/" + "r" * 300, needles=("--out", "too long"), code=2),
    # plugins that pluggy refuses, or that register the wrong kind: skipped with one warning
    row("list", "objectives", needles=("plugin 'misspelt' (misspelt-plugin 1.0) was skipped",
                                       "register_objective, which is not a robustzoo hook",
                                       "did you mean register_objectives", "ROBUSTZOO_DISABLE_PLUGINS=misspelt"),
        code=0, kind="warning", setup=_misspelt_hook),
    row("env", "--json", needles=("register_objective, which is not a robustzoo hook",), code=0, kind="warning",
        setup=_misspelt_hook),
    row("list", "objectives", needles=("plugin 'wrongarg'", "register_objectives(reg) does not match robustzoo's "
                                       "register_objectives(register)", "ROBUSTZOO_DISABLE_PLUGINS=wrongarg"),
        code=0, kind="warning", setup=_wrong_hook_argument),
    row("list", "objectives", needles=("plugin 'stringobj'", "registers 'oops' (str) in register_objectives",
                                       "an Objective subclass", "ROBUSTZOO_DISABLE_PLUGINS=stringobj"),
        code=0, kind="warning", setup=_string_objective, after=_builtin_at_kept),
    row("list", "datasets", needles=("plugin 'dictdata'", "in register_datasets", "a robustzoo.data.DatasetSpec"),
        code=0, kind="warning", setup=_dataset_of_wrong_kind),
    row("plugins", needles=("register_objective, which is not a robustzoo hook",), code=1,
        setup=_strict_misspelt_hook),
    # names: a local path before a Hub id; messages suggest the command that fits
    row("eval", "{tmp}/exp/at-digts-1", needles=("no such run directory", "exp/at-digits-1"), code=1,
        setup=_run_dirs_beside),
    row("eval", "exp/at-digitz-1", needles=("no such run directory exp/at-digitz-1", "did you mean exp/at-digits-1"),
        code=1, setup=_run_dirs_beside),
    row("train", "--resume", "exp/at-digitz-1", needles=("no such run directory", "exp/at-digits-1",
                                                         "--resume continues a run directory"), code=1,
        setup=_run_dirs_beside),
    row("push", "exp/at-digitz-1", "--repo-id", "acme/x", needles=("no such run directory", "exp/at-digits-1"),
        code=1, setup=_run_dirs_beside),
    row("eval", "cat-cw-wrn3", needles=("no such run directory cat-cw-wrn3", "did you mean 'cat-cw-wrn34'"), code=1),
    row("eval", "", needles="the model name is empty", code=2),
    row("push", "{run}", "--repo-id", "acme/x", "--allow-partial",
        needles=("pushing to acme/x needs", "offline mode is on", "unset HF_HUB_OFFLINE", "robustzoo push"),
        code=1, setup=_offline, absent=("robustzoo pull",)),
    # one writer per run directory: the second gets one line naming the holder
    row("eval", "{run}", "--n", "10", needles=("is in use", "another robustzoo process", "robustzoo train"),
        code=1, setup=_lock_held, after=_release_lock),
    row("train", "--resume", "{run}", needles=("is in use", "robustzoo train"), code=1, setup=_lock_held,
        after=_release_lock),
]


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the plugin site and the lock file aside)."""
    from robustzoo.files import LOCK_FILE

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.parts[0] != "site" and p.name != LOCK_FILE and "__pycache__" not in rel.parts:
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir() and not any(p.iterdir()):
            out[str(rel) + "/"] = "empty folder"
    return out


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path, capsys, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    if case.run or any("{run}" in a for a in case.args):
        shutil.copytree(request.getfixturevalue("at_run"), tmp_path / "run")
    if case.setup is not None:
        case.setup(tmp_path, monkeypatch)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(tmp_path / "run")) for a in case.args]
    before = _snapshot(tmp_path)
    code, out, err = run_cli(args, capsys)

    assert "Traceback" not in err, err
    assert code == case.code if case.code is not None else code != 0, (code, err)
    prefix = {"error": "error:", "usage": "Error:", "interrupted": "interrupted:", "warning": "warning:"}
    lines = [ln for ln in err.splitlines() if ln.startswith(prefix[case.kind])]
    assert len(lines) == 1, err
    for needle in case.needles:
        assert needle in lines[0], (needle, lines[0])
    for wrong in case.absent:
        assert wrong not in lines[0], (wrong, lines[0])
    assert ".tmp" not in lines[0], lines[0]  # the file the user meant, never a temporary one
    if case.kind != "warning" and json_on_stdout(args):
        data = json.loads(out)
        assert set(data) == {"error", "type"} and case.needles[0] in data["error"], out
    assert not (tmp_path / "missing").exists(), "a missing folder was created"
    if case.kind in ("error", "usage"):
        assert not (tmp_path / "runs").exists()  # nothing half-written
        changed = {p for p in set(before) | set(_snapshot(tmp_path))
                   if before.get(p) != _snapshot(tmp_path).get(p)
                   and not any(part in case.may_write for part in Path(p).parts)}
        assert not changed, f"the error changed files on disk: {sorted(changed)}"
    if case.after is not None:
        case.after(tmp_path, capsys, monkeypatch)


def test_the_table_has_every_row_once():
    ids = [c.id for c in CASES]
    assert all(ids)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 60  # the count only grows: add rows, do not remove them


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["env", "--json"], ["train", "--help"]])
def test_a_plugin_pluggy_refuses_does_not_break_any_command(args, tmp_path, monkeypatch):
    """In a fresh process (as a user runs it): one warning, and the command works."""
    import os
    import subprocess
    import sys

    _misspelt_hook(tmp_path, monkeypatch)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(root), str(root / "plugins")]))
    res = subprocess.run([sys.executable, "-m", "robustzoo", *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "register_objective, which is not a robustzoo hook" in warnings[0], res.stderr
    assert "ROBUSTZOO_DISABLE_PLUGINS=misspelt" in warnings[0] and "Traceback" not in res.stderr
    assert res.stdout.strip()


def test_two_trainings_into_one_out_never_mix(tmp_path):
    """The issue's data loss: two `train --out r` at once. One writes the run; the other stops
    with one line (the run is in use, or already holds a run) and writes nothing into it."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "plugins")]))
    cmd = [sys.executable, "-m", "robustzoo", "train", "--subset", "100", "--epochs", "2", "--steps", "1",
           "--set", "eval_n=10", "--set", "eval_attacks=clean", "--set", "val_steps=1", "--out", "r"]
    procs = [subprocess.Popen([*cmd, "--seed", str(seed)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser_err = results[1 - winner][2]
    lines = [ln for ln in loser_err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and ("is in use" in lines[0] or "already holds a run" in lines[0]), loser_err
    assert "Traceback" not in loser_err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["robustzoo"]["config"]["seed"] == winner + 1  # the config of the run that wrote the weights
    rows = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one run's rows, not two interleaved


def test_a_second_writer_is_told_which_process_holds_the_run(at_run, tmp_path, capsys):
    """A writer in another process holds the lock: the message names its pid and command."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "plugins")]))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom robustzoo.files import run_lock\n"
         f"with run_lock({str(run)!r}, 'eval'):\n    print('locked', flush=True)\n    time.sleep(60)\n"],
        env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(["eval", run, "--n", "10"], capsys)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code != 0 and len(lines) == 1, err
        assert f"pid {holder.pid}: robustzoo eval" in lines[0] and "is in use" in lines[0]
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    code, _, err = run_cli(["eval", run, "--n", "10", "--attacks", "clean", "--no-health"], capsys)
    assert code == 0, err  # nothing stale is left behind


def test_two_evaluations_one_after_the_other_keep_both_records(at_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(at_run, run)
    before = {p.name for p in (run / "evals").glob("*.json")}
    for attacks in ("clean", "clean,fgsm"):
        code, _, err = run_cli(["eval", run, "--n", "10", "--attacks", attacks, "--no-health"], capsys)
        assert code == 0, err
    added = {p.name for p in (run / "evals").glob("*.json")} - before
    assert len(added) == 2, added
