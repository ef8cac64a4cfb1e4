"""benchmarks/gpu_check.py and gpu_check.sh: the prepared GPU run, checked on the CPU.

The smoke mode runs every phase with tiny sizes in this process and fills every key of the
JSON; the other tests cover each option: --phases (a rerun merged into the JSON), the data
folder (--data-dir, GPU_CHECK_DATA_DIR, the prepared one) and the drift phase's refusal, the
commit without .git, the slimmed wheel, the python3 fallback, and sync attribution.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of every phase (in this process, one torch thread), shared by the tests."""
    gc = _load("gpu_check")
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gc.main(["--smoke", "--out", str(out), "--budget-seconds", "900"])
    finally:
        torch.set_num_threads(threads)
    return out, json.loads(out.read_text())


def test_smoke_run_fills_every_figure(smoke):
    _, r = smoke
    gc = _load("gpu_check")
    assert r["schema"] == gc.SCHEMA and r["smoke"] and r["errors"] == {} and r["skipped"] == []
    assert set(r["seconds"]) == set(gc.PHASE_NAMES) == set(r["time_boxes"])
    assert sum(r["phase_budgets_s"].values()) + 20 <= 465 < 480  # the budgets fit under 8 minutes
    assert r["environment"]["commit"] and r["environment"]["commit_source"] == "git"
    t = r["throughput"]
    tp = _load("throughput")
    assert set(t["contenders"]) == set(tp.CONTENDERS)
    for c in t["contenders"].values():
        assert c["images_per_s"] > 0 and {"warmup_s", "step_ms", "rounds_images_per_s", "fast_path"} <= set(c)
    assert {"paper_default", "strict_fp32", "flop_ratio_33F_over_23F"} <= set(t["breakdown"])
    for name in ("paper_default", "strict_fp32"):  # compile joined the split after its phase
        assert {"loop_33F_to_23F_and_data", "precision", "layout", "compile", "total_compiled"} <= set(
            t["breakdown"][name])
    assert set(t["speedup_vs_reference"]) == {"paper_default", "strict_fp32"} and "epoch_50k_s" in t
    assert r["host_syncs"]["available"] is False and "CUDA" in r["host_syncs"]["reason"]
    e = r["eval_batch"]
    assert [row["batch"] for row in e["rows"]] == [2, 4] and e["recommended"] in (2, 4)
    assert e["pgd20_10k_s"] > 0 and e["current_default"] >= 256
    w = r["wrn34"]
    assert w["epoch_50k_s"]["extrapolated"] and w["pgd20_10k_s"]["extrapolated"] and "from" in w["epoch_50k_s"]
    d = r["precision_drift"]
    assert d["data"]["dataset"] == "digits" and d["n"] == 16 and d["resolution_points"] == 6.25
    assert d["resolved"] is False and d["ok"] is None and "unresolved" in d  # 16 images cannot resolve 0.1
    assert [x["attack"] for x in d["results"]] == ["clean", "pgd20"] and all("flipped" in x for x in d["results"])
    assert d["decision"] == "fp32" and d["auto_eval"] == {"precision": "fp32", "fallback": None}
    assert d["trained"]["epochs"] == 1 and d["trained"]["train_seconds"] > 0
    a = r["autoattack"]
    assert a["attack"] == "square" and a["n"] == 8 and a["seconds_per_10k"]["extrapolated"]
    assert set(a["cifar_estimates"]) == {"preact_resnet18", "wrn34_10"}
    assert all(v["estimate"] for v in a["cifar_estimates"].values())
    f = r["fat_compaction"]
    for k in ("untrained", "learning"):
        assert {"on", "off", "time_ratio_compact_over_full", "flop_ratio_compact_over_full"} <= set(f[k])
        assert f[k]["on"]["forward_equivalents_per_image"] <= f[k]["off"]["forward_equivalents_per_image"]
    assert f["data"]["dataset"] == "digits" and len(f["training"]["epochs"]) == 1
    cm = r["compile"]
    assert cm["reached"] == "done" and cm["images_per_s"] > 0
    assert cm["graphs_after_warmup"] == {"train": 0, "eval": 0} and cm["cudagraph_skips_after_warmup"] == 0
    assert {"graphs", "recompiles", "at_limit", "cudagraph_skips", "graph_breaks"} <= set(cm["stats"])
    assert len(r["runs"]) == 1


def test_phases_rerun_only_what_was_cut_and_merge(smoke, tmp_path):
    """--phases runs only the named phases and keeps the other phases' figures of the JSON
    already there (a rerun after a cut run); both runs are listed."""
    gc = _load("gpu_check")
    out = tmp_path / "check.json"
    first = dict(smoke[1], compile=None, skipped=["compile: a 30 s box left (budget 100 s) ..."])
    first["seconds"] = {k: v for k, v in first["seconds"].items() if k != "compile"}
    out.write_text(json.dumps(first))
    rep = gc.main(["--smoke", "--out", str(out), "--phases", "compile,host_syncs"])
    r = json.loads(out.read_text())
    assert r == json.loads(json.dumps(rep, default=str))
    assert r["compile"]["reached"] == "done" and r["skipped"] == []
    assert r["precision_drift"] == smoke[1]["precision_drift"]
    t = r["throughput"]  # kept, its compile factor now from the rerun's compile phase
    assert t["contenders"] == smoke[1]["throughput"]["contenders"]
    assert t["breakdown"]["paper_default"]["compile"] == pytest.approx(
        r["compile"]["images_per_s"] / t["contenders"]["fast"]["images_per_s"])
    assert [run["phases"] for run in r["runs"]] == [list(gc.PHASE_NAMES), ["host_syncs", "compile"]]
    assert set(r["seconds"]) == set(gc.PHASE_NAMES)
    with pytest.raises(SystemExit):
        gc.parse_args(["--phases", "compile,warp"])
    assert gc.parse_args(["--only", "wrn34", "--phases", "compile"]).phases == ["compile", "wrn34"]


def test_data_folder_and_the_drift_phases_refusal(tmp_path, monkeypatch):
    """--data-dir, then GPU_CHECK_DATA_DIR, then the prepared folder; without Fashion-MNIST or
    CIFAR-10 the drift phase refuses (the digits cannot resolve 0.1 points) and says why."""
    from robustzoo.data import sources

    gc = _load("gpu_check")
    monkeypatch.setattr(gc, "PAYLOAD", tmp_path / "payload")
    monkeypatch.setattr(sources, "FMNIST_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("GPU_CHECK_DATA_DIR", raising=False)

    def check(argv):
        return gc.Check(gc.parse_args(["--out", str(tmp_path / "c.json"), *argv]))

    c = check([])
    assert (c.data_dir, c.data_dir_from) == (None, None)
    plan = gc.drift_plan(c)
    assert "refused" in plan and "0.28 points" in plan["refused"] and "--data-dir" in plan["refused"]
    out: dict = {}
    gc.precision_drift(c, out)
    assert out["refused"] == plan["refused"] and c.workers == {}  # nothing trained
    fm = tmp_path / "fm"
    fm.mkdir()
    (fm / "train-images-idx3-ubyte.gz").write_bytes(b"")
    monkeypatch.setenv("GPU_CHECK_DATA_DIR", str(fm))
    c = check([])
    assert c.data_dir_from == "GPU_CHECK_DATA_DIR"
    plan = gc.drift_plan(c)
    assert plan["dataset"] == "fashion-mnist" and plan["source"] == str(fm) and plan["n"] is None
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(b"")
    c = check(["--data-dir", str(cifar.parent)])
    assert c.data_dir_from == "--data-dir" and gc.drift_plan(c)["dataset"] == "cifar10"
    monkeypatch.delenv("GPU_CHECK_DATA_DIR")
    (tmp_path / "payload" / "fashion-mnist").mkdir(parents=True)
    assert check([]).data_dir_from.startswith("prepared")


def test_commit_is_recorded_without_git(tmp_path, monkeypatch):
    """A tree that travelled without .git: the commit comes from .gpu_check/commit.json."""
    gc = _load("gpu_check")
    bare = tmp_path / "tree"
    bare.mkdir()
    monkeypatch.setattr(gc, "ROOT", bare)
    monkeypatch.setattr(gc, "PAYLOAD", bare / ".gpu_check")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git finds no repository above
    assert gc.environment()["commit"] is None
    (bare / ".gpu_check").mkdir()
    (bare / ".gpu_check" / "commit.json").write_text(json.dumps(
        {"commit": "a" * 40, "dirty": False, "prepared": "2026-01-01T00:00:00+00:00"}))
    env = gc.environment()
    assert env["commit"] == "a" * 40 and env["tree_differed_from_commit"] is False
    assert env["commit_source"].startswith(".gpu_check/commit.json")


def test_prepared_wheel_leaves_out_the_example_weights(tmp_path):
    """--prepare's wheel: the same package without pyautoattack/examples/ (45 MB of weights)."""
    gc = _load("gpu_check")
    src, dest = tmp_path / "pkg-1.0-py3-none-any.whl", tmp_path / "out.whl"
    record = "pkg/__init__.py,sha256=x,1\npyautoattack/examples/model_test.pt,sha256=y,9\npkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pyautoattack/examples/model_test.pt", b"\0" * 1000)
        z.writestr("pkg-1.0.dist-info/RECORD", record)
    gc.slim_wheel(src, dest)
    with zipfile.ZipFile(dest) as z:
        assert z.namelist() == ["pkg/__init__.py", "pkg-1.0.dist-info/RECORD"]
        assert "examples" not in z.read("pkg-1.0.dist-info/RECORD").decode()
    assert gc.WHEELS == ("pyautoattack==0.2.0",) and "pyautoattack==0.2.0" in gc.__doc__


def test_sync_sites_name_the_call_site():
    """Each sync warning is attributed to the innermost frames in the given folders."""
    tp = _load("throughput")

    def synchronising_call():
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)

    sites = tp.SyncSites(roots=(str(Path(__file__).parent),), depth=2)
    with sites.recording():
        for _ in range(2):
            synchronising_call()  # one call site, twice
        synchronising_call()  # another
        warnings.warn("something else", stacklevel=1)  # not a sync: not counted
    inner = synchronising_call.__code__.co_firstlineno + 1
    outer = inner + 5
    assert sites.total == 3
    assert sites.table() == {f"tests/test_gpu_check.py:{inner} < tests/test_gpu_check.py:{outer}": 2,
                             f"tests/test_gpu_check.py:{inner} < tests/test_gpu_check.py:{outer + 1}": 1}


def test_script_is_valid_bash():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_script_falls_back_to_python3_and_passes_options(tmp_path):
    """Without $PYTHON it runs python3 (the GPU image's name), else python; the output file,
    the environment's data folder and every other option reach gpu_check.py."""
    import shutil

    bash = shutil.which("bash")
    bins = {}
    for names in (("python3", "python"), ("python",)):
        d = tmp_path / "-".join(names)  # a PATH of its own: the tools the script uses, and these pythons
        d.mkdir()
        for n in names:
            (d / n).symlink_to(sys.executable)
        for tool in ("date", "dirname", "git"):
            (d / tool).symlink_to(shutil.which(tool))
        bins[names] = d
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "GPU_CHECK_SMOKE")}
    for names, want in ((("python3", "python"), "python3"), (("python",), "python")):
        env = dict(base, PATH=str(bins[names]), GPU_CHECK_DATA_DIR="/data/fm")
        res = subprocess.run([bash, str(SCRIPT), "--dry-run", "o.json", "--phases", "compile"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stderr
        lines = dict(line.split(": ", 1) for line in res.stdout.splitlines())
        assert lines["python"].startswith(want + " ")
        assert lines["data"].startswith("/data/fm")
        assert lines["run"].startswith(f"{want} {ROOT}/benchmarks/gpu_check.py --out o.json --started ")
        assert lines["run"].endswith("--phases compile")
    res = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60,
                         env=dict(base, PYTHON=sys.executable, OUT=str(tmp_path)))
    assert f"--out {tmp_path}/gpu_check.json" in res.stdout and res.stdout.startswith(f"python: {sys.executable}")


@pytest.mark.slow
def test_smoke_with_a_process_per_contender(tmp_path):
    """The smoke sizes through the GPU run's path: every worker in a process of its own."""
    gc = _load("gpu_check")
    out = tmp_path / "check.json"
    gc.main(["--smoke", "--processes", "--out", str(out), "--budget-seconds", "900"])
    r = json.loads(out.read_text())
    assert r["errors"] == {} and r["skipped"] == [], (r["errors"], r["skipped"])
    assert all(r[p] for p in gc.PHASE_NAMES)
    assert r["compile"]["graphs_after_warmup"] == {"train": 0, "eval": 0}


@pytest.mark.slow
def test_script_passes_smoke_and_writes_the_json(tmp_path):
    out = tmp_path / "o" / "check.json"
    env = dict(os.environ, GPU_CHECK_SMOKE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHON", None)
    res = subprocess.run(["bash", str(SCRIPT), str(out), "--phases", "host_syncs"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["smoke"] and r["host_syncs"]["available"] is False and r["throughput"] is None
    assert "installing" not in res.stderr and "pip" not in res.stderr  # pyautoattack is here: nothing installed
