"""Evaluation: attacks agree with independent computations, stay in the ball, resume, sweep."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from eval_helpers import ALPHA, EPS, digits, trained_mlp, write_run

from robustzoo.attacks import AttackContext, AttackSpec
from robustzoo.data import select_examples
from robustzoo.errors import NotFoundError, UsageError
from robustzoo.eval import FLAGS_FILE, evaluate_model


@pytest.fixture(scope="module")
def test_set():
    return digits().test


def _xy(data, n, seed=0):
    sub = select_examples(data, n, seed)
    x, y, _ = next(iter(sub.batches(len(sub))))
    return x, y


def _evaluate(model, data, attacks, **kw):
    kw.setdefault("eps", EPS)
    kw.setdefault("alpha", ALPHA)
    kw.setdefault("num_classes", 10)
    kw.setdefault("health", False)
    return evaluate_model(model, data, attacks, **kw)


def _row(report, attack):
    return next(r for r in report["results"] if r["attack"] == attack)


def _saved_flags(path):
    from robustzoo.runs import read_weights

    tensors, meta = read_weights(path)
    return tensors, json.loads(meta["robustzoo.eval_flags"])


# --- agreement with independent computations ---------------------------------------------------

def _independent_pgd(model, x, y, eps, alpha, steps):
    """Textbook L-inf PGD written from scratch: δ-parametrised, no random start, CE."""
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, [delta])
        delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return x + delta


def test_pgd20_agrees_with_an_independent_pgd_loop(test_set):
    model = trained_mlp()
    n = 120
    report = _evaluate(model, test_set, ["clean", "pgd20"], n=n, flags_path=None)
    x, y = _xy(test_set, n)
    x_ref = _independent_pgd(model, x, y, EPS, ALPHA, 20)
    with torch.no_grad():
        ours = report["results"][1]["correct"]
        ref = int((model(x_ref).argmax(1) == y).sum())
        clean = int((model(x).argmax(1) == y).sum())
    assert report["results"][0]["correct"] == clean
    assert ref < clean - 5, "the reference attack must actually work on this model"
    assert abs(ours - ref) <= 1, (ours, ref)


@pytest.mark.parametrize("attack,component", [("apgd-ce", "apgd-ce"), ("apgd-dlr", "apgd-dlr")])
def test_apgd_agrees_with_calling_pyautoattack_directly(tmp_path, test_set, attack, component):
    from pyautoattack import AutoAttack

    model = trained_mlp()
    n = 64
    path = tmp_path / FLAGS_FILE
    report = _evaluate(model, test_set, ["clean", attack], n=n, seed=3, batch_size=n, flags_path=path)
    x, y = _xy(test_set, n, seed=3)
    aa = AutoAttack(model, attacks=[component], version="custom", eps=EPS, seed=3, norm="Linf")
    aa.verbose = False
    aa.apgd.n_restarts = 1  # the standard version's setting (custom keeps the class default 5)
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=n)
    tensors, _ = _saved_flags(path)
    ours = tensors[f"flags::{attack}"].bool()
    assert torch.equal(ours, y_adv == y)
    assert _row(report, attack)["correct"] == int((y_adv == y).sum())
    assert _row(report, attack)["correct"] < _row(report, "clean")["correct"]


def test_square_agrees_with_calling_pyautoattack_directly(tmp_path, test_set):
    from pyautoattack import AutoAttack

    model = trained_mlp()
    n, q = 32, 150
    path = tmp_path / FLAGS_FILE
    report = _evaluate(model, test_set, ["square"], n=n, seed=1, batch_size=n, flags_path=path,
                       options={"square_queries": q}, eps=0.2)
    x, y = _xy(test_set, n, seed=1)
    aa = AutoAttack(model, attacks=["square"], version="custom", eps=0.2, seed=1, norm="Linf")
    aa.verbose = False
    aa.square.n_queries = q
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=n)
    tensors, _ = _saved_flags(path)
    assert torch.equal(tensors["flags::square"].bool(), y_adv == y)
    row = _row(report, "square")
    assert row["settings"]["queries"] == q and row["settings"]["p_init"] == 0.8
    assert row["kind"] == "black-box"


def test_autoattack_cascades_components_like_the_authors_code(tmp_path, test_set):
    """At ε=0.25 the undefended MLP falls mostly to APGD-CE, so all four components run fast."""
    from pyautoattack import AutoAttack

    model = trained_mlp(adversarial=False)
    n = 32
    path = tmp_path / FLAGS_FILE
    report = _evaluate(model, test_set, ["clean", "autoattack"], n=n, seed=2, batch_size=n, eps=0.25,
                       flags_path=path, options={"square_queries": 100})
    x, y = _xy(test_set, n, seed=2)
    aa = AutoAttack(model, version="standard", eps=0.25, seed=2, norm="Linf")
    aa.verbose = False
    aa.square.n_queries = 100
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=n)
    row = _row(report, "autoattack")
    assert [c["attack"] for c in row["components"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    running = [c["correct"] for c in row["components"]]
    assert running == sorted(running, reverse=True)
    assert row["correct"] == running[-1] == int((y_adv == y).sum())
    tensors, _ = _saved_flags(path)
    assert torch.equal(tensors["flags::autoattack/square"].bool(), y_adv == y)
    assert report["worst_case"]["correct"] == row["correct"]


@pytest.mark.slow
def test_standard_autoattack_agrees_with_pyautoattack_on_a_robust_model(tmp_path, test_set):
    from pyautoattack import AutoAttack

    model = trained_mlp()
    n = 32
    report = _evaluate(model, test_set, ["autoattack"], n=n, seed=0, batch_size=n,
                       flags_path=tmp_path / FLAGS_FILE)
    x, y = _xy(test_set, n)
    aa = AutoAttack(model, version="standard", eps=EPS, seed=0, norm="Linf")
    aa.verbose = False
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=n)
    assert _row(report, "autoattack")["correct"] == int((y_adv == y).sum())


# --- every attack: in the ball, in [0,1], ε = 0 is clean ------------------------------------

ALL_ATTACKS = ["fgsm", "pgd", "pgd20", "pgd100", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square",
               "autoattack"]


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_every_attack_stays_in_the_eps_ball_and_in_range(test_set, name):
    from robustzoo.plugins import registry

    model = trained_mlp(adversarial=False)
    x, y = _xy(test_set, 16, seed=4)
    eps = 0.25  # large enough that every attack succeeds quickly on the undefended MLP
    ctx = AttackContext(eps=eps, alpha=0.05, num_classes=10, seed=0, options={"square_queries": 200})
    spec = registry("attacks").get(name)
    x_adv = spec.run(model, x, y, ctx)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        fooled = int((model(x_adv).argmax(1) != y).sum())
    assert fooled > 0, f"{name} changed nothing: the test would not notice a broken projection"


def test_attacks_with_eps_zero_equal_clean(test_set):
    model = trained_mlp()
    attacks = ["clean", "fgsm", "pgd", "pgd20", "cw", "apgd-ce", "apgd-dlr", "square"]
    report = _evaluate(model, test_set, attacks, eps=0.0, n=64, options={"square_queries": 20})
    clean = _row(report, "clean")["correct"]
    assert clean > 50
    for a in attacks:
        assert _row(report, a)["correct"] == clean, a
    assert report["worst_case"]["correct"] == clean


# --- suites and example choice ---------------------------------------------------------------

def test_suites_resolve_and_unknown_suite_suggests_close_matches():
    from robustzoo.eval import get_suite
    from robustzoo.eval import resolve_suite as resolve

    assert resolve("quick", None, None) == (["clean", "pgd20", "apgd-dlr"], 1000)
    assert resolve("quick", None, 50) == (["clean", "pgd20", "apgd-dlr"], 50)
    assert resolve("paper", None, None) == (["clean", "fgsm", "pgd20", "pgd100", "cw", "square"], None)
    assert resolve("autoattack", None, None) == (["clean", "autoattack"], None)
    assert resolve(None, "clean, fgsm", 10) == (["clean", "fgsm"], 10)
    assert resolve(None, None, None) == (["clean", "pgd20", "cw"], None)  # CE and a margin loss
    with pytest.raises(NotFoundError, match="quick"):
        get_suite("quik")
    with pytest.raises(UsageError, match="not both"):
        resolve("quick", "clean", None)


def test_n_and_seed_choose_the_examples_deterministically(tmp_path, test_set):
    model = trained_mlp()
    a = tmp_path / "a.safetensors"
    b = tmp_path / "b.safetensors"
    c = tmp_path / "c.safetensors"
    _evaluate(model, test_set, ["clean"], n=40, seed=5, flags_path=a)
    _evaluate(model, test_set, ["clean"], n=40, seed=5, flags_path=b)
    _evaluate(model, test_set, ["clean"], n=40, seed=6, flags_path=c)
    ia, ib, ic = (_saved_flags(p)[0]["index"] for p in (a, b, c))
    assert torch.equal(ia, ib) and len(ia) == 40
    assert not torch.equal(ia, ic)


# --- resume -------------------------------------------------------------------------------------

class _Counter:
    def __init__(self, fail_on_call: int | None = None):
        self.calls = 0
        self.examples = 0
        self.fail_on_call = fail_on_call

    def __call__(self, model, x, y, ctx):
        from robustzoo.attacks import fgsm

        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # an interrupted evaluation
        self.examples += len(y)
        return fgsm(model, x, y, eps=ctx.eps)


def _register_attacks(specs):
    from types import SimpleNamespace

    from robustzoo import hookimpl, plugins

    def register_attacks(register):
        for s in specs:
            register(s)

    plugins.register_plugin(SimpleNamespace(register_attacks=hookimpl(register_attacks)), name="eval-test-attacks")


def test_interrupted_evaluation_resumes_without_rerunning_finished_attacks(tmp_path, test_set):
    first, boom = _Counter(), _Counter(fail_on_call=1)
    _register_attacks([AttackSpec("first", first, settings=lambda c: {"eps": c.eps}),
                       AttackSpec("boom", boom)])
    model = trained_mlp()
    path = tmp_path / FLAGS_FILE
    with pytest.raises(KeyboardInterrupt):
        _evaluate(model, test_set, ["clean", "first", "boom"], n=48, flags_path=path)
    assert first.calls == 1
    done = _evaluate(model, test_set, ["clean", "first", "pgd20"], n=48, flags_path=path)
    assert first.calls == 1, "the finished attack ran again"
    assert set(done["resumed"]) == {"clean", "first"}
    fresh = _evaluate(model, test_set, ["clean", "first", "pgd20"], n=48)
    assert first.calls == 2
    assert [r["correct"] for r in done["results"]] == [r["correct"] for r in fresh["results"]]


def test_an_attack_interrupted_mid_way_resumes_at_the_next_batch(tmp_path, test_set):
    flaky = _Counter(fail_on_call=3)
    _register_attacks([AttackSpec("flaky", flaky)])
    model = trained_mlp()
    path = tmp_path / FLAGS_FILE
    kw = dict(n=64, batch_size=16, flags_path=path, checkpoint_interval=0.0)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(model, test_set, ["flaky"], **kw)
    tensors, meta = _saved_flags(path)
    assert meta["entries"]["flaky"]["complete"] is False
    clean_ok = tensors["flags::clean"].bool()
    # The correctly classified examples are gathered into full batches: two batches of 16 of
    # them finished; the misclassified ones are final from the start (never attacked).
    done = tensors["done::flaky"].bool()
    assert int((done & clean_ok).sum()) == 32 and bool(done[~clean_ok].all())
    attacked_before = flaky.examples
    assert attacked_before == 32
    flaky.fail_on_call = None
    report = _evaluate(model, test_set, ["flaky"], **kw)
    # Only the remaining correctly classified examples were attacked on resume.
    assert flaky.examples - attacked_before == int(clean_ok.sum()) - 32
    whole = _evaluate(model, test_set, ["flaky"], n=64, batch_size=16)
    assert _row(report, "flaky")["correct"] == _row(whole, "flaky")["correct"]


def test_saved_flags_are_not_reused_for_other_examples_budget_or_model(tmp_path, test_set):
    counted = _Counter()
    _register_attacks([AttackSpec("counted", counted)])
    model = trained_mlp()
    path = tmp_path / FLAGS_FILE
    _evaluate(model, test_set, ["counted"], n=32, flags_path=path)
    _evaluate(model, test_set, ["counted"], n=32, flags_path=path)
    assert counted.calls == 1
    _evaluate(model, test_set, ["counted"], n=32, eps=0.05, flags_path=path)
    assert counted.calls == 2
    _evaluate(model, test_set, ["counted"], n=33, eps=0.05, flags_path=path)
    assert counted.calls == 3
    _evaluate(trained_mlp(adversarial=False), test_set, ["counted"], n=33, eps=0.05, flags_path=path)
    assert counted.calls == 4


def test_progress_events_per_attack_and_a_note_when_saved_flags_are_not_reused(tmp_path, test_set,
                                                                              capsys):
    from helpers import Recorder

    model, path = trained_mlp(), tmp_path / FLAGS_FILE
    _evaluate(model, test_set, ["clean", "fgsm"], n=40, batch_size=16, flags_path=path)
    assert capsys.readouterr().err == ""  # no progress object: silent
    rec = Recorder()
    _evaluate(model, test_set, ["clean", "fgsm"], n=40, eps=0.05, batch_size=16, flags_path=path,
              progress=rec)
    assert rec.of("note") == [("note", f"{path}: not reused (made with a different eps); evaluating afresh (the "
                                       "file is replaced by this evaluation's outcomes; its records in evals/ are "
                                       "kept)")]
    # fgsm runs on (and counts) only the correctly classified examples, gathered into full batches.
    ok = _row(_evaluate(model, test_set, ["clean"], n=40, eps=0.05), "clean")["correct"]
    assert ok < 40
    assert [e[1:] for e in rec.of("start")] == [("clean", 40, 0), ("fgsm", ok, 0)]
    for task, total in (("clean", 40), ("fgsm", ok)):  # a batch of 16 at a time, then the end
        assert [c for c, _ in rec.updates(task)] == [16, 32, total]
        assert rec.events.index(("end", task)) > rec.events.index(("update", task, total, {}))
    assert capsys.readouterr().err == ""  # the engine reports, it does not print
    rec = Recorder()  # another --n: said as such, not "unreadable"
    _evaluate(model, test_set, ["clean"], n=24, eps=0.05, batch_size=16, flags_path=path, progress=rec)
    assert rec.of("note")[0][1].startswith(f"{path}: not reused (made on 40 examples, not these 24)")


def test_cascade_attacks_only_what_is_still_robust(test_set):
    model = trained_mlp()
    attacks = ["clean", "fgsm", "pgd20", "cw"]
    full = _evaluate(model, test_set, attacks, n=100)
    casc = _evaluate(model, test_set, attacks, n=100, cascade=True)
    acc = [_row(casc, a)["correct"] for a in attacks]
    assert acc == sorted(acc, reverse=True)
    assert acc[-1] == casc["worst_case"]["correct"] == full["worst_case"]["correct"]
    assert _row(casc, "pgd20")["cascaded"] and _row(casc, "pgd20")["after"] == ["fgsm"]
    assert "cascaded" not in _row(full, "pgd20")
    assert _row(casc, "fgsm")["correct"] == _row(full, "fgsm")["correct"]  # first attack: standalone
    assert casc["mode"] == "cascade" and full["mode"] == "standalone"


# --- command line: eval with health, json, eps sweep and plot --------------------------------

def test_cli_eps_sweep_json_and_plot(tmp_path):
    from click.testing import CliRunner

    from robustzoo.cli import cli

    run = write_run(tmp_path / "run", trained_mlp())
    png = tmp_path / "curve.png"
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(cli, ["eval", str(run), "--attacks", "clean,pgd20", "--n", "100",
                                   "--eps-sweep", "0,0.05,0.1,0.2,0.4", "--plot", str(png),
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    sweep = rep["eps_sweep"]
    assert [r["eps"] for r in sweep] == [0.0, 0.05, 0.1, 0.2, 0.4]
    acc = [r["accuracy"] for r in sweep]
    assert acc == sorted(acc, reverse=True) and acc[0] > 0.85 and acc[-1] < 0.1
    assert acc[0] == _row(rep, "clean")["accuracy"]
    assert abs(acc[2] - _row(rep, "pgd20")["accuracy"]) <= 0.03  # ε = budget, cascaded vs standalone
    assert all(len(r["ci95"]) == 2 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] for r in sweep)
    assert rep["eps_sweep_attack"] == "pgd20"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy vs ε" in res.output and "gradient-masking health" in res.output
    assert (run / FLAGS_FILE).is_file() and (run / "eval.json").is_file()


def test_cli_writes_the_json_file_before_printing_tables(tmp_path, monkeypatch):
    """`robustzoo eval ... --json F | head`: the reader goes away while the tables print (a
    broken pipe); the file the user asked for is written by then."""
    from click.testing import CliRunner

    from robustzoo.cli import cli, commands

    def broken_pipe(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(commands, "results_table", broken_pipe)
    run = write_run(tmp_path / "run", trained_mlp())
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(cli, ["eval", str(run), "--attacks", "clean", "--n", "20", "--json", str(out)])
    assert res.exit_code != 0  # the broken pipe ends the command
    assert [r["attack"] for r in json.loads(out.read_text())["results"]] == ["clean"]


def test_cli_suite_json_to_stdout_and_unknown_suite(tmp_path):
    from click.testing import CliRunner

    from robustzoo.cli import cli

    run = write_run(tmp_path / "run", trained_mlp())
    res = CliRunner().invoke(cli, ["eval", str(run), "--suite", "quick", "--n", "60", "--json", "-"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)  # stderr names the record written and the canonical one
    assert "canonical record" in res.stderr
    assert [r["attack"] for r in rep["results"]] == ["clean", "pgd20", "apgd-dlr"]
    assert rep["suite"] == "quick" and rep["n"] == 60
    assert rep["health"]["status"] in ("passed", "suspect")
    assert {c["name"] for c in rep["health"]["checks"]} >= {"pgd_vs_apgd", "zero_grad", "eps0"}


def test_cli_errors_are_one_line_with_close_matches(tmp_path, capsys):
    from robustzoo.cli import main

    run = write_run(tmp_path / "run", trained_mlp())
    for args, expect in [(["--suite", "quik"], "quick"), (["--set", "square_queris=5"], "square_queries"),
                         (["--attacks", "apgd-dl"], "apgd-dlr"), (["--plot", "x.png"], "--eps-sweep")]:
        with pytest.raises(SystemExit) as exc:
            main(["eval", str(run), *args])
        assert exc.value.code != 0
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and expect in lines[0] and "Traceback" not in err, err


def test_python_api_suite_sweep_and_resume(tmp_path):
    import robustzoo

    run = write_run(tmp_path / "run", trained_mlp())
    rep = robustzoo.evaluate(run, suite="quick", n=40, eps_sweep="0,0.1,0.2")
    assert rep["suite"] == "quick" and rep["n"] == 40 and rep["eps_sweep_attack"] == "pgd20"
    assert [r["eps"] for r in rep["eps_sweep"]] == [0.0, 0.1, 0.2]
    again = robustzoo.evaluate(run, suite="quick", n=40)
    assert set(again["resumed"]) == {"clean", "pgd20", "apgd-dlr"}
    assert [r["correct"] for r in again["results"]] == [r["correct"] for r in rep["results"]]
    saved = json.loads((run / "eval.json").read_text())
    assert saved["health"]["status"] in ("passed", "suspect") and saved["suite"] == "quick"
    with pytest.raises(UsageError, match="eps-sweep"):
        robustzoo.evaluate(run, plot=tmp_path / "x.png")


# --- AutoAttack: no duplicate work, the authors' batches -------------------------------------

def test_apgd_ce_runs_once_when_autoattack_is_asked_for_too(monkeypatch, test_set):
    """APGD-CE's outcome is shared with AutoAttack's first component (same examples, seed and
    settings), in either order; the numbers equal two separate evaluations'."""
    from robustzoo.attacks import autoattack

    calls = []
    real = autoattack.run_component

    def counting(aa, name, x, y):
        calls.append((name, len(y)))
        return real(aa, name, x, y)

    monkeypatch.setattr(autoattack, "run_component", counting)
    model = trained_mlp(adversarial=False)
    kw = dict(n=32, seed=2, batch_size=32, eps=0.25, options={"square_queries": 100})
    for order in (["clean", "apgd-ce", "autoattack"], ["clean", "autoattack", "apgd-ce"]):
        calls.clear()
        both = _evaluate(model, test_set, order, **kw)
        assert [c for c, _ in calls].count("apgd-ce") == 1, calls
        comp = _row(both, "autoattack")["components"][0]
        assert comp["attack"] == "apgd-ce" and (comp.get("reused") or _row(both, "apgd-ce").get("reused"))
    apgd = _evaluate(model, test_set, ["clean", "apgd-ce"], **kw)
    aa = _evaluate(model, test_set, ["clean", "autoattack"], **kw)
    assert _row(both, "apgd-ce")["correct"] == _row(apgd, "apgd-ce")["correct"]
    assert _row(both, "autoattack")["correct"] == _row(aa, "autoattack")["correct"]
    assert [c["correct"] for c in _row(both, "autoattack")["components"]] == \
        [c["correct"] for c in _row(aa, "autoattack")["components"]]
    assert both["worst_case"]["correct"] == aa["worst_case"]["correct"]


def test_autoattack_sees_the_authors_batches_over_several_batches(tmp_path, test_set):
    """With the same batch size the still-robust examples are batched as in run_standard_evaluation,
    so every example's outcome matches the authors' code, not only the count."""
    from pyautoattack import AutoAttack

    model = trained_mlp(adversarial=False)
    n, bs = 48, 16
    path = tmp_path / FLAGS_FILE
    _evaluate(model, test_set, ["clean", "autoattack"], n=n, seed=5, batch_size=bs, eps=0.2,
              flags_path=path, options={"square_queries": 50})
    x, y = _xy(test_set, n, seed=5)
    aa = AutoAttack(model, version="standard", eps=0.2, seed=5, norm="Linf")
    aa.verbose = False
    aa.square.n_queries = 50
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=bs)
    tensors, _ = _saved_flags(path)
    assert torch.equal(tensors["flags::autoattack/square"].bool(), y_adv == y)


# --- CW without random start; options ----------------------------------------------------------

def test_cw_starts_without_random_noise_by_default(test_set):
    model = trained_mlp()
    a = _evaluate(model, test_set, ["cw"], n=60, seed=0)
    b = _evaluate(model, test_set, ["cw"], n=60, seed=0, batch_size=7)  # other batches, same numbers
    assert _row(a, "cw")["settings"]["rand_init"] == "none"
    assert _row(a, "cw")["correct"] == _row(b, "cw")["correct"]
    u = _evaluate(model, test_set, ["cw"], n=60, seed=0, options={"cw_rand_init": "uniform"})
    assert _row(u, "cw")["settings"]["rand_init"] == "uniform"


def test_attack_options_with_choices_are_checked():
    from robustzoo.eval import parse_attack_options

    assert parse_attack_options(["cw_rand_init=uniform", "aa_version=rand", "eot_iter=5"]) == {
        "cw_rand_init": "uniform", "aa_version": "rand", "eot_iter": 5}
    with pytest.raises(UsageError, match="uniform"):
        parse_attack_options(["cw_rand_init=unifrom"])
