"""Start-up: the light commands import neither torch nor timm, and timm still finds the nets.

Each check runs in a fresh interpreter (this process has imported torch long ago) and reads
``sys.modules`` there. docs/performance.md has the timings.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Runs the commands in-process, one after another, then prints which heavy libraries loaded.
_RUN = """
import contextlib, io, json, sys
from robustzoo.cli import main
loaded = {{}}
for args in {commands!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, (args, exc.code)
    loaded[" ".join(args)] = sorted(m for m in ("torch", "timm", "torchvision", "huggingface_hub")
                                    if m in sys.modules)
print(json.dumps(loaded))
"""


def _loaded_after(commands: list[list[str]]) -> dict[str, list[str]]:
    res = subprocess.run([sys.executable, "-c", _RUN.format(commands=commands)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_import_and_help_import_neither_torch_nor_timm():
    code = ("import sys, robustzoo, robustzoo.cli; "
            "print(sorted(m for m in ('torch', 'timm', 'huggingface_hub') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    loaded = _loaded_after([["--help"], ["train", "--help"], ["plugins", "--help"], ["list", "recipes"],
                            ["list", "zoo", "--json"]])
    assert all(libs == [] for libs in loaded.values()), loaded


def test_list_plugins_and_env_do_not_import_timm():
    loaded = _loaded_after([["list", "objectives"], ["list", "architectures"], ["plugins", "--json"],
                            ["env", "--json"]])
    assert all("timm" not in libs and "torchvision" not in libs for libs in loaded.values()), loaded


def test_timm_finds_the_nets_once_robustzoo_is_imported():
    code = ("import robustzoo, sys\n"
            "assert 'timm' not in sys.modules\n"
            "import timm  # the post-import hook registers the nets now\n"
            "m = timm.create_model('preact_resnet18', num_classes=10)\n"
            "from robustzoo.models import timm_bridge\n"
            "assert timm_bridge._verifier is not None  # hf-hub: weights are checked as pull does\n"
            "print(type(m).__name__, m.pretrained_cfg['classifier'], timm.is_model('smallcnn'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["PreActResNet18", "fc", "True"]


def test_when_imported_runs_after_the_module_and_once(tmp_path, monkeypatch):
    from robustzoo.lazy import when_imported

    (tmp_path / "rz_hooked_mod.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    finders = len(sys.meta_path)
    when_imported("rz_hooked_mod", lambda mod: seen.append(mod.VALUE))
    assert seen == [] and len(sys.meta_path) == finders + 1  # nothing imported yet
    import rz_hooked_mod

    assert seen == [42] and rz_hooked_mod.__spec__.loader.__class__.__name__ == "SourceFileLoader"
    assert len(sys.meta_path) == finders  # the finder stepped aside
    when_imported("rz_hooked_mod", lambda mod: seen.append(-mod.VALUE))  # imported already: at once
    assert seen == [42, -42]
    sys.modules.pop("rz_hooked_mod")


def test_the_api_functions_survive_the_submodule_of_the_same_name():
    import robustzoo
    from robustzoo.train import Trainer  # the training loop's module is robustzoo.train too

    assert callable(robustzoo.train) and robustzoo.train.__module__ == "robustzoo.api"
    assert Trainer.__module__ == "robustzoo.train"
    assert sys.modules["robustzoo.train"].Trainer is Trainer
