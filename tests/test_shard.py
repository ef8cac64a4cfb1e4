"""Sharded evaluation (robustzoo.eval.Shard) on the CPU: gloo, one, two and three processes;
and benchmarks/eval_scaling.py, which times it.

The processes are forked from the test (they inherit the imported modules and the test MLP's
plugin) and each calls ``robustzoo.evaluate`` as ``torchrun -m robustzoo eval`` would, with
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set. The records they write must be those of
one plain process, byte for byte once the timings are set aside.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from eval_helpers import register_mlp, trained_mlp, write_run
from helpers import load_script

from robustzoo import distributed
from robustzoo.attacks import AttackSpec, pgd
from robustzoo.errors import RunError
from robustzoo.eval import FLAGS_FILE, Shard, evaluate_model
from robustzoo.runs import read_weights

ATTACKS = ["clean", "pgd20", "cw", "apgd-ce"]
# 48 examples in batches of 8: six batches for clean, fewer for the attacks after it.
SETTINGS = dict(n=48, batch_size=8, seed=3, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run: str, attacks: list[str], kw: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import robustzoo

    robustzoo.evaluate(run, attacks, **kw)


def _evaluate(run: Path, world: int, attacks: list[str], **kw) -> None:
    """``robustzoo.evaluate(run, attacks)`` in ``world`` processes (one: in this process)."""
    kw = dict(SETTINGS, **kw)
    register_mlp()  # the run's architecture (plugins are reset after every test)
    if world == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the workers
        try:
            import robustzoo

            robustzoo.evaluate(run, attacks, **kw)
        finally:
            torch.set_num_threads(threads)
        return
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(world, _free_port(), str(run), attacks, kw), nprocs=world, join=True,
                       start_method="fork")


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: (None if k == "seconds" else _without_timings(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _record(run: Path) -> str:
    """The run's canonical record and history entry as text, timings blanked."""
    hist = sorted((run / "evals").glob("*.json"))
    assert len(hist) == 1
    texts = [json.dumps(_without_timings(json.loads(p.read_text())), indent=1) for p in (run / "eval.json", hist[0])]
    return "\n".join(texts)


def _flags(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_weights(run / FLAGS_FILE)
    return tensors


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("shard") / "base", trained_mlp())


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to


@pytest.mark.parametrize("attacks, kw", [
    (ATTACKS, dict(eps=0.15)),
    # AutoAttack's four components, each on what the last left robust, with a few Square
    # queries. FAB-T's 9 targets x 100 iterations cost most: of 32 examples a larger ε leaves
    # it 6, one batch of 8 (APGD-CE and clean are shared out, the later components run on
    # one rank); in batches of 4 every component is shared out, at twice the cost (slow).
    # (10 queries make a custom protocol: --allow-custom lets it be the canonical record compared here)
    (["clean", "autoattack"], dict(eps=0.2, n=32, batch_size=8, options={"square_queries": 10}, allow_custom=True)),
    pytest.param(["clean", "autoattack"], dict(eps=0.2, n=32, batch_size=4, options={"square_queries": 10},
                                               allow_custom=True), marks=pytest.mark.slow),
], ids=["clean-pgd20-cw-apgd", "autoattack", "autoattack-every-component-shared"])
def test_one_two_and_three_processes_write_the_same_record(tmp_path, base_run, attacks, kw):
    records, flags = {}, {}
    for world in (1, 2, 3):
        run = _copy(base_run, tmp_path / f"world{world}")
        _evaluate(run, world, attacks, **kw)
        records[world], flags[world] = _record(run), _flags(run)
    assert records[2] == records[1]
    assert records[3] == records[1]
    for world in (2, 3):
        assert flags[world].keys() == flags[1].keys()
        for k, v in flags[1].items():
            assert torch.equal(flags[world][k], v), (world, k)
    report = json.loads((tmp_path / "world1" / "eval.json").read_text())
    rows = {r["attack"]: r for r in report["results"]}
    # Not a degenerate comparison: the attacks break some examples and leave others robust.
    assert 0 < report["worst_case"]["correct"] < rows["clean"]["correct"]
    assert report["health"]["status"] in ("passed", "suspect") and report["health"]["checks"]
    assert report["batch_size"] == kw.get("batch_size", SETTINGS["batch_size"])
    if "autoattack" in rows:
        comps = rows["autoattack"]["components"]
        assert rows["clean"]["correct"] > comps[0]["correct"] and comps[-1]["correct"] > 0  # broke some, not all
        if kw["batch_size"] == 4:  # each component after the first ran on more than one batch
            assert all(c["correct"] > kw["batch_size"] for c in comps[:-1])


class _Killer:
    """PGD-5 that kills rank 1 in its first batch, once rank 0 has saved a batch of the attack."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, model, x, y, ctx):
        with open(self.root / f"attacked.{os.environ.get('PHASE')}.{os.getpid()}", "a") as fh:
            fh.write(f"{len(y)}\n")
        time.sleep(0.2)  # batches long enough for rank 1 to take one before rank 0 took them all
        if os.environ.get("PHASE") == "killed" and os.environ.get("RANK") == "1":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self._saved():
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return pgd(model, x, y, eps=ctx.eps, alpha=ctx.alpha, steps=5, rand_init="uniform")

    def _saved(self) -> bool:
        try:
            tensors, _ = read_weights(self.root / "run" / FLAGS_FILE)
        except Exception:  # noqa: BLE001 - not written yet, or being replaced
            return False
        return int(tensors.get("done::killer", torch.zeros(0)).sum()) > 0


def test_a_killed_rank_fails_the_job_and_another_count_resumes_it(tmp_path, base_run, monkeypatch):
    from types import SimpleNamespace

    from robustzoo import hookimpl, plugins

    killer = _Killer(tmp_path)
    plugin = SimpleNamespace(register_attacks=hookimpl(lambda register: register(
        AttackSpec("killer", killer, "PGD-5 with a random start", settings=lambda c: {"eps": c.eps}))))
    plugins.register_plugin(plugin, name="shard-test-killer")
    attacks = ["clean", "killer"]
    kw = dict(n=64, eps=0.15)
    run = _copy(base_run, tmp_path / "run")
    monkeypatch.setenv("PHASE", "killed")
    # Save after every batch, so what rank 0 merged before the kill is on disk.
    import robustzoo.api

    monkeypatch.setattr(robustzoo.api, "evaluate_model", functools.partial(evaluate_model, checkpoint_interval=0.0))
    import torch.multiprocessing as mp

    with pytest.raises(mp.ProcessExitedException, match="signal SIGKILL"):
        _evaluate(run, 2, attacks, **kw)
    saved = _flags(run)
    clean_ok, done = saved["flags::clean"].bool(), saved["done::killer"].bool()
    finished = int((done & clean_ok).sum())
    assert 0 < finished < int(clean_ok.sum()), "the kill came before any batch was saved, or after the last"
    monkeypatch.setenv("PHASE", "resumed")
    _evaluate(run, 3, attacks, **kw)
    attacked = sum(int(n) for p in tmp_path.glob("attacked.resumed.*") for n in p.read_text().split())
    assert attacked == int(clean_ok.sum()) - finished, "finished examples were attacked again"
    monkeypatch.setenv("PHASE", "fresh")
    one = _copy(base_run, tmp_path / "one")
    _evaluate(one, 1, attacks, **kw)
    a, b = json.loads((run / "eval.json").read_text()), json.loads((one / "eval.json").read_text())
    assert a.pop("resumed") == ["clean", "killer"]  # killer: from its saved batches
    assert [r.pop("resumed") for r in a["results"]] == [True, True]
    assert _without_timings(a) == _without_timings(b)
    assert torch.equal(_flags(run)["flags::killer"], _flags(one)["flags::killer"])


# -- fast checks ---------------------------------------------------------------------------------

def _store():
    return torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def test_ranks_that_set_up_another_attack_fail_naming_the_rank():
    store = _store()
    r0, r1 = Shard(distributed.DistInfo(0, 2), store), Shard(distributed.DistInfo(1, 2), store)
    mask = torch.tensor([True, False, True])
    flags = (torch.tensor([True, False, False]), mask.clone(), torch.tensor([True, True, False]), {"complete": False})
    assert r0.agree("pgd20", {"eps": 0.1}, ["clean"], 8, mask, 3, flags) is flags
    got = r1.agree("pgd20", {"eps": 0.1}, ["clean"], 8, mask, 3, None)  # what rank 0 found
    assert [torch.equal(a, b) for a, b in zip(got[:3], flags[:3])] == [True] * 3 and got[3] == flags[3]
    assert r0.agree("cw", {"eps": 0.1}, ["clean"], 8, None, 3, None) is None
    with pytest.raises(RunError, match=r"rank 1 set up 'cw' unlike rank 0 \(different settings, block\)"):
        r1.agree("cw", {"eps": 0.2}, ["clean"], 16, None, 3, None)


def test_the_queue_deals_every_batch_once_and_rank0_merges_them(test_set_small):
    """Two ranks in two threads on one store: every batch runs once, both get all outcomes."""
    from robustzoo.plugins import registry

    store = _store()
    model = trained_mlp()
    spec = registry("attacks").get("clean")  # no randomness: threads may share torch's RNG
    from robustzoo.attacks import AttackContext

    ctx = AttackContext(eps=0.1, alpha=0.015)
    out, ran = {}, {0: [], 1: []}

    import robustzoo.eval._shard as shard_mod

    real = shard_mod.run_attack

    def counting(model, data, spec, ctx, bs, progress, *, only, resume, offset):
        ran[int(threading.current_thread().name)].append(offset)
        return real(model, data, spec, ctx, bs, progress, only=only, resume=resume, offset=offset)

    shard_mod.run_attack = counting
    try:
        def go(rank):
            s = Shard(distributed.DistInfo(rank, 2), store, poll_seconds=0.001)
            out[rank] = s.run_attack(model, test_set_small, spec, ctx, 5)
            if rank == 0:
                out["stats"] = s.stats

        threads = [threading.Thread(target=go, args=(r,), name=str(r)) for r in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        shard_mod.run_attack = real
    assert sorted(ran[0] + ran[1]) == list(range(0, 23, 5))  # 23 examples: five batches of 5
    with torch.no_grad():
        x = test_set_small.x.float() / 255
        expected = model(x).argmax(1) == test_set_small.y
    assert torch.equal(out[0].flags, expected) and torch.equal(out[1].flags, expected)
    assert out["stats"]["processes"] == 2 and sum(out["stats"]["batches"]) == 5
    assert sum(out["stats"]["examples"]) == 23 and out["stats"]["slowest_over_mean"] >= 1.0


@pytest.fixture
def test_set_small():
    from eval_helpers import digits

    return digits().test.take(torch.arange(23))


def test_saved_outcomes_of_another_batch_size_are_recomputed(tmp_path, base_run):
    from eval_helpers import digits

    test = digits().test
    calls = []
    spec = AttackSpec("counted", lambda m, x, y, c: (calls.append(len(y)), x)[1])
    from types import SimpleNamespace

    from robustzoo import hookimpl, plugins

    plugins.register_plugin(SimpleNamespace(register_attacks=hookimpl(lambda register: register(spec))),
                            name="shard-test-counted")
    kw = dict(eps=0.1, alpha=0.015, num_classes=10, n=32, health=False, flags_path=tmp_path / FLAGS_FILE)
    evaluate_model(trained_mlp(), test, ["counted"], batch_size=16, **kw)
    first = sum(calls)
    evaluate_model(trained_mlp(), test, ["counted"], batch_size=16, **kw)
    assert sum(calls) == first  # same batch size: reused
    evaluate_model(trained_mlp(), test, ["counted"], batch_size=8, **kw)
    assert sum(calls) == 2 * first  # another batch size: run again, not mixed
    _, meta = read_weights(tmp_path / FLAGS_FILE)
    assert json.loads(meta["robustzoo.eval_flags"])["entries"]["counted"]["block"] == 8


def test_rank_failures_read_as_one_line(tmp_path, monkeypatch):
    killed = distributed.RankFailure(1, 2, -9, "SIGKILL")
    assert killed.describe() == "rank 1 of 2 was killed by SIGKILL"
    failed = distributed.RankFailure(2, 3, 1, "RunError: bad")
    assert failed.describe() == "rank 2 of 3 failed (exit code 1): RunError: bad"
    path = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    monkeypatch.delenv(distributed.LAUNCHED_ENV, raising=False)
    assert distributed.record_failure("x") is False and not path.exists()  # plain torchrun: the rank prints
    monkeypatch.setenv(distributed.LAUNCHED_ENV, "1")
    assert distributed.record_failure("no such attack 'pgd21'") is True
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    f = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=str(path))
    assert f.message == "no such attack 'pgd21'"  # what the launcher reads back
    cmd = distributed.here_command(2, ["eval", "RUN", "--n=64"])
    from torch.distributed.run import parse_args

    ns = parse_args(cmd)  # --n is not taken for torchrun's --nnodes / --nproc-per-node
    assert ns.training_script == "robustzoo" and ns.training_script_args == ["eval", "RUN", "--n=64"]


def test_eval_nproc_checks_then_relaunches_with_the_same_arguments(monkeypatch, tmp_path, base_run, capsys):
    from helpers import assert_one_line_error, run_cli

    seen = {}

    def fake(nproc, args, debug=False):
        seen.update(nproc=nproc, args=args)
        return None

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "launch_here", fake)
    code, _, err = run_cli(["eval", str(base_run), "--nproc", "3", "--attacks", "clean,pgd20", "--n", "64",
                            "--set", "kappa=10", "--device", "cpu", "--no-health"], capsys)
    assert code == 0, err
    assert seen["nproc"] == 3 and seen["args"][:2] == ["eval", str(base_run)]
    assert {"--attacks=clean,pgd20", "--n=64", "--set=kappa=10", "--device=cpu", "--no-health"} <= set(seen["args"])
    assert "--nproc" not in " ".join(seen["args"])
    seen.clear()
    code, _, err = run_cli(["eval", str(base_run), "--nproc", "2", "--attacks", "clean,pgd21"], capsys)
    assert_one_line_error(code, err, "pgd21")
    assert not seen  # checked before any process started
    monkeypatch.setattr(distributed, "launch_here", lambda *a, **k: distributed.RankFailure(1, 2, -9, "SIGKILL"))
    code, _, err = run_cli(["eval", str(base_run), "--nproc", "2", "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "rank 1 of 2 was killed by SIGKILL; nothing had been saved")
    monkeypatch.setattr(distributed, "launch_here", lambda *a, **k: distributed.RankFailure(0, 2, 2, "x", printed=True))
    code, _, err = run_cli(["eval", str(base_run), "--nproc", "2", "--device", "cpu"], capsys)
    assert code == 2 and "error:" not in err  # rank 0 printed its own error line
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = run_cli(["eval", str(base_run), "--nproc", "3"], capsys)
    assert_one_line_error(code, err, "--nproc 3 disagrees with WORLD_SIZE=2")
    # A rank other than 0 under the launcher: its error goes to the launcher, not the terminal.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(distributed.LAUNCHED_ENV, "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    code, out, err = run_cli(["eval", str(base_run), "--set", "kapa=3"], capsys)
    assert code == 2 and not err.strip() and not out.strip()
    assert "unknown attack option 'kapa'" in json.loads((tmp_path / "error.json").read_text())["message"]


@pytest.mark.slow
def test_cli_nproc_kill_names_the_rank_and_resumes_with_another_count(tmp_path):
    """`robustzoo eval --nproc 2` end to end: a killed rank is one line; `--nproc 3` resumes."""
    import subprocess
    import sys

    from helpers import install_dist

    site = tmp_path / "site"
    site.mkdir()
    (site / "rz_shard_fault.py").write_text(
        "import os, signal, time\n"
        "from robustzoo import hookimpl\n"
        "from robustzoo.attacks import AttackSpec, pgd\n"
        "def run(model, x, y, ctx):\n"
        "    time.sleep(0.3)  # long enough batches for both ranks to take some\n"
        "    if os.environ.get('RANK') == os.environ.get('FAULT_RANK'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return pgd(model, x, y, eps=ctx.eps, alpha=ctx.alpha, steps=5, rand_init='uniform')\n"
        "@hookimpl\n"
        "def register_attacks(register):\n"
        "    register(AttackSpec('faulty', run, 'PGD-5', settings=lambda c: {'eps': c.eps}))\n")
    install_dist(site, "rz-shard-fault", "0.1", {"fault": "rz_shard_fault"})
    from robustzoo.testing import train_tiny

    run, _ = train_tiny(tmp_path / "run", "at", subset=None, epochs=3)  # ~90% clean on the digits
    one = _copy(run, tmp_path / "one")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               FAULT_RANK="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    args = ["--attacks", "clean,faulty", "--n", "96", "--batch-size", "8", "--device", "cpu", "--no-health"]

    def cli(target, *extra, fault="1"):
        return subprocess.run([sys.executable, "-m", "robustzoo", "eval", str(target), *args, *extra],
                              capture_output=True, text=True, env=dict(env, FAULT_RANK=fault), timeout=600)

    proc = cli(run, "--nproc", "2")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and "rank 1 of 2 was killed by SIGKILL" in errors[0], proc.stderr
    proc = cli(run, "--nproc", "3", "--json", "-", fault="none")
    assert proc.returncode == 0, proc.stderr
    sharded = json.loads(proc.stdout)
    proc = cli(one, "--json", "-", fault="none")
    single = json.loads(proc.stdout)
    for r in (sharded, single):
        r.pop("record")
        for row in (r, *r["results"]):
            row.pop("resumed", None)  # clean (complete) and faulty (its saved batches) were resumed
    assert _without_timings(sharded) == _without_timings(single)


def test_eval_scaling_summary_medians_speedups_and_balance(tmp_path):
    import torch

    from robustzoo.eval import FlagStore

    bench = load_script("benchmarks/eval_scaling.py")
    store = FlagStore(tmp_path / "flags.safetensors", {"n": 2}, torch.arange(2))
    ones = torch.ones(2, dtype=torch.bool)
    store.put("pgd20", {}, ["clean"], ones, ones, ones, complete=True,
              ranks={"processes": 2, "busy_s": [1.0, 1.2], "slowest_over_mean": 1.091})
    store.put("clean", {}, [], ones, ones, ones, complete=True)  # not sharded: no entry
    assert bench.balance(tmp_path / "flags.safetensors") == {"pgd20": 1.091}
    same = [("clean", 9), ("pgd20", 4)]
    runs = {1: [{"wall": w, "attacks": w - 1, "balance": {}, "counts": same} for w in (10.0, 12.0, 11.0)],
            2: [{"wall": w, "attacks": w - 1, "balance": {"pgd20": b}, "counts": same}
                for w, b in ((6.0, 1.2), (5.0, 1.0), (7.0, 1.1))]}
    out = bench.summarise(runs)
    assert out["same_counts"] is True
    one, two = out["per_nproc"][1], out["per_nproc"][2]
    assert (one["median_wall_s"], two["median_wall_s"], two["speedup_wall"]) == (11.0, 6.0, round(11 / 6, 3))
    assert two["speedup_attacks"] == 2.0 and two["slowest_over_mean"] == {"pgd20": 1.1}
    runs[2][0]["counts"] = [("clean", 9), ("pgd20", 5)]
    assert bench.summarise(runs)["same_counts"] is False


@pytest.mark.slow
def test_eval_scaling_runs_one_and_two_processes(tmp_path, capsys):
    from robustzoo.testing import train_tiny

    bench = load_script("benchmarks/eval_scaling.py")
    run, _ = train_tiny(tmp_path / "run", "at", subset=None, epochs=2)
    out = tmp_path / "scaling.json"
    assert bench.main(["--run", str(run), "--n", "48", "--batch-size", "8", "--repeats", "1",
                       "--attacks", "clean,pgd20", "--threads-per-process", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["same_counts"] and set(data["per_nproc"]) == {"1", "2"}
    assert set(data["per_nproc"]["2"]["slowest_over_mean"]) == {"clean", "pgd20"}
    assert "--nproc 2" in capsys.readouterr().out
