"""What may be published (issues 20 and 26): a standard attack that really ran, in full precision,
on the real test set, that a margin loss and a black box cannot beat.

No-op settings are refused where they enter; an attack that does nothing fails the health report;
custom settings, failed health and too-small test sets never become the canonical record or a
published number; the randomness probe measures randomness, not rounding; CE attacks are checked
against margin-loss attacks on the same examples, and Square against the best white-box attack.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from eval_helpers import ALPHA, EPS, NoisyLogits, ScaledLogits, digits, trained_mlp
from helpers import assert_one_line_error, run_cli

from robustzoo.errors import RunError, UsageError
from robustzoo.eval import (
    apply_health,
    canonical_problems,
    choose_canonical,
    evaluate_model,
    history,
    parse_attack_options,
    publishable,
    randomness_probe,
    whole_test_set,
)


@pytest.fixture(scope="module")
def test_set():
    return digits().test


def _row(report, attack):
    return next(r for r in report["results"] if r["attack"] == attack)


def _check(report, name):
    return next(c for c in report["health"]["checks"] if c["name"] == name)


def _copy(at_run, tmp_path):
    run = tmp_path / "run"  # evaluations write into the run: never into the shared fixture
    shutil.copytree(at_run, run)
    return run


# --- settings that would make an attack a no-op are refused where they enter ------------------

@pytest.mark.parametrize("pair,needle", [
    ("kappa=nan", "not a finite number"), ("kappa=inf", "not a finite number"), ("kappa=-1", ">= 0"),
    ("apgd_restarts=0", ">= 1"), ("square_queries=0", ">= 1"), ("eot_iter=0", ">= 1"),
    ("apgd_restarts=1.5", "whole number"), ("cw_rand_init=gaussian", "choose one of none, uniform"),
    # An extra digit's worth of runtime is refused too, with both bounds named.
    ("square_queries=50000000", ">= 1 and <= 1000000"), ("apgd_restarts=1001", "<= 1000"),
    ("eot_iter=20000", "<= 1000"),
])
def test_attack_options_refuse_nonsense_with_key_value_and_range(pair, needle):
    with pytest.raises(UsageError, match=needle) as exc:
        parse_attack_options([pair])
    assert pair.split("=")[0] in str(exc.value)


def test_the_api_applies_the_same_rules(test_set):
    model = trained_mlp()
    kw = dict(eps=EPS, alpha=ALPHA, num_classes=10, n=8)
    with pytest.raises(UsageError, match="apgd_restarts"):
        evaluate_model(model, test_set, ["clean", "apgd-ce"], options={"apgd_restarts": 0}, **kw)
    with pytest.raises(UsageError, match="kappa"):
        evaluate_model(model, test_set, ["clean", "cw"], options={"kappa": float("nan")}, **kw)
    with pytest.raises(UsageError, match="no attacks to run"):
        evaluate_model(model, test_set, [], **kw)
    with pytest.raises(UsageError, match="α = 0"):
        evaluate_model(model, test_set, ["clean", "pgd20"], eps=EPS, alpha=0.0, num_classes=10, n=8)


@pytest.mark.parametrize("args,needles", [
    (["--set", "kappa=nan"], ("kappa", "finite")),
    (["--set", "apgd_restarts=0"], ("apgd_restarts", ">= 1")),
    (["--eps", "0"], ("--eps", "no-op")),
    (["--attacks", ","], ("no attacks",)),
])
def test_eval_cli_refuses_noop_settings_in_one_line(at_run, args, needles, capsys):
    code, _, err = run_cli(["eval", str(at_run), "--device", "cpu", *args], capsys)
    assert_one_line_error(code, err, *needles)


# --- an attack that does nothing fails the report: never canonical, never published ------------

@pytest.fixture
def noop_apgd(monkeypatch):
    """APGD-CE as zero restarts made it: it returns its input (what `apgd_restarts=0` did)."""
    import robustzoo.attacks.autoattack as aa

    real = aa.run_component
    monkeypatch.setattr(aa, "run_component", lambda adv, name, x, y: x.clone() if name == "apgd-ce"
                        else real(adv, name, x, y))


def test_a_noop_attack_fails_health_and_never_becomes_the_canonical_record(at_run, tmp_path, noop_apgd):
    from robustzoo.api import evaluate
    from robustzoo.hub import check_publishable

    run = _copy(at_run, tmp_path)
    before = json.loads((run / "eval.json").read_text())
    rep = evaluate(run, ["clean", "apgd-ce"], device="cpu", n=120)
    assert _row(rep, "apgd-ce")["correct"] == _row(rep, "clean")["correct"]  # robust = clean: a no-op
    noop = _check(rep, "noop")
    assert rep["health"]["status"] == "failed" and noop["status"] == "failed" and noop["affects"] == ["apgd-ce"]
    assert "PGD-10 at ε" in noop["explanation"] and noop["evidence"]["probe"]["broken"] >= 7
    # APGD's tier would have made it canonical; a failed report never is.
    assert rep["record"]["is_canonical"] is False and rep["record"]["not_canonical"]
    after = json.loads((run / "eval.json").read_text())
    assert after["record"]["id"] == before["record"]["id"]
    with pytest.raises(RunError, match="health report failed"):
        check_publishable(rep, run, allow_partial=True, allow_custom=True)
    assert canonical_problems(rep) and "noop" in canonical_problems(rep)[0]


def test_an_old_eval_json_holding_a_noop_is_not_exported_or_ranked(at_run, tmp_path, noop_apgd, capsys):
    from robustzoo.api import evaluate
    from robustzoo.leaderboard import leaderboard

    run = _copy(at_run, tmp_path)
    rep = evaluate(run, ["clean", "apgd-ce"], device="cpu", n=120, write=False)
    rep.update(dataset="digits", split="test")
    (run / "eval.json").write_text(json.dumps(rep))  # as an older robustzoo made it canonical
    code, _, err = run_cli(["export", "robustbench", str(run)], capsys)
    assert_one_line_error(code, err, "health report failed")
    lb = leaderboard(tmp_path)
    assert not lb.boards and "health report failed" in lb.skipped[0]["why"]


def test_an_attack_masked_by_a_saturated_softmax_is_suspect_not_a_noop(test_set):
    """Logits × 1e4 stall PGD on CE exactly as a no-op would; the probes tell masking apart."""
    rep = evaluate_model(ScaledLogits(trained_mlp()), test_set, ["clean", "pgd20", "cw"], eps=EPS, alpha=ALPHA,
                         num_classes=10, n=150)
    assert _row(rep, "pgd20")["correct"] == _row(rep, "clean")["correct"]
    assert _check(rep, "noop")["status"] == "passed" and "masked" in _check(rep, "noop")["explanation"]
    # issue 26: the new CE-versus-margin comparison flags it without any APGD
    ce = _check(rep, "ce_vs_margin")
    assert ce["status"] == "flagged" and ce["affects"] == ["pgd20"] and ce["evidence"]["reference"] == "cw"
    assert rep["health"]["status"] == "suspect" and _row(rep, "pgd20")["suspect"] and not _row(rep, "cw").get("suspect")


# --- a protocol is standard or custom -----------------------------------------------------------

def test_custom_settings_are_recorded_and_kept_out_of_the_canonical_record(at_run, tmp_path, capsys):
    from robustzoo.api import evaluate
    from robustzoo.cards import render_run_card
    from robustzoo.hub import check_publishable

    run = _copy(at_run, tmp_path)
    before = json.loads((run / "eval.json").read_text())["record"]["id"]
    rep = evaluate(run, ["clean", "pgd20", "cw"], device="cpu", n=100, options={"kappa": 10.0})
    cw = _row(rep, "cw")
    assert cw["standard"] is False and cw["custom"] == {"kappa": {"value": 10.0, "standard": 50.0}}
    assert _row(rep, "pgd20")["standard"] is True and rep["standard"] is False
    assert rep["custom_settings"] == {"cw": cw["custom"]}
    assert rep["record"]["id"] in history(run)  # kept in the history ...
    assert json.loads((run / "eval.json").read_text())["record"]["id"] == before  # ... never canonical
    assert "custom attack settings" in rep["record"]["not_canonical"][0]
    # --allow-custom: it may become canonical (more examples than training's own record) ...
    rep = evaluate(run, ["clean", "pgd20", "cw", "apgd-dlr"], device="cpu", n=100, options={"kappa": 10.0},
                   allow_custom=True)
    assert rep["allow_custom"] and rep["record"]["is_canonical"]
    canonical = json.loads((run / "eval.json").read_text())
    # ... but push and export still need their own --allow-custom, and then say so.
    ok, why = publishable(canonical, run)
    assert not ok and "custom attack settings (cw: kappa=10.0 (standard 50.0))" in why and "--allow-custom" in why
    with pytest.raises(RunError, match="custom attack settings"):
        check_publishable(canonical, run, allow_partial=True)
    published = check_publishable(canonical, run, allow_partial=True, allow_custom=True)
    assert published["custom"] == {"cw": {"kappa": {"value": 10.0, "standard": 50.0}}}
    cfg = json.loads((run / "config.json").read_text())
    card = render_run_card(cfg, published, repo_id="org/x", files={"model.safetensors": "0" * 64})
    assert "**Custom protocol**: CW∞: kappa = 10 (standard 50)" in card and "custom settings" in card
    code, out, err = run_cli(["export", "robustbench", str(run), "--json"], capsys)
    assert_one_line_error(code, err, "custom attack settings", "--allow-custom")
    # A RobustBench record needs standard AutoAttack: a custom one (fewer Square queries) is
    # exported only with --allow-custom, and its footnote says so.
    rep = evaluate(run, ["clean", "autoattack"], device="cpu", n=24, options={"square_queries": 20},
                   allow_custom=True)
    assert rep["record"]["is_canonical"] and _row(rep, "autoattack")["custom"]["square_queries"] == {
        "value": 20, "standard": 5000}
    code, out, err = run_cli(["export", "robustbench", str(run), "--json"], capsys)
    assert_one_line_error(code, err, "custom attack settings", "--allow-custom")
    code, out, err = run_cli(["export", "robustbench", str(run), "--json", "--allow-custom"], capsys)
    assert code == 0, err
    assert ("Custom attack settings (not the standard protocol): autoattack square_queries=20 (standard 5000)"
            in json.loads(out)["footnote"])


def test_an_old_record_is_judged_by_its_settings(test_set):
    """A report written before the `standard` field: its settings are compared with today's standard."""
    rep = evaluate_model(trained_mlp(), test_set, ["clean", "cw"], eps=EPS, alpha=ALPHA, num_classes=10, n=16,
                         health=False)
    old = json.loads(json.dumps(rep))
    for key in ("standard", "custom_settings"):
        old.pop(key, None)
    for r in old["results"]:
        r.pop("standard", None)
    assert canonical_problems(old) == []
    _row(old, "cw")["settings"]["kappa"] = 0.5
    assert "cw: kappa=0.5 (standard 50.0)" in canonical_problems(old)[0]


def test_an_autoattack_version_switch_is_recorded_and_shown(test_set):
    from rich.console import Console

    from robustzoo.ui import results_table

    rep = evaluate_model(NoisyLogits(trained_mlp(), sigma=0.5), test_set, ["clean", "autoattack"], eps=EPS,
                         alpha=ALPHA, num_classes=10, n=12, options={"square_queries": 5})
    assert rep["autoattack_version"] == {"version": "rand", "chosen": "auto",
                                         "reason": "chosen by the randomness probe: the model is randomised"}
    assert _row(rep, "autoattack")["standard"] is True  # the authors' protocol for a randomised model
    console = Console(record=True, width=200)
    console.print(results_table(rep))
    text = console.export_text()
    assert "(rand version)" in text and "AutoAttack rand version" in text


# --- the canonical rule decides with health -----------------------------------------------------

def _rep(attacks, n, status="passed", check="ran"):
    rows = [{"attack": a, "accuracy": 0.5, "correct": n // 2, "n": n, "ci95": [0.4, 0.6], "settings": {}}
            for a in attacks]
    verdict = {"failed": "failed", "suspect": "flagged"}.get(status, "passed" if check == "ran" else "skipped")
    return {"eps": 0.03, "n": n, "seed": 0, "results": rows, "examples": {"n": n, "of": 10000},
            "standard": True, "health": {"status": status, "checks": [
                {"name": "noop" if status == "failed" else "ce_vs_margin", "status": verdict}]}}


def test_the_canonical_rule_with_failed_suspect_and_passed_reports():
    reports = {"aa-failed": _rep(["clean", "autoattack"], 1000, "failed"),
               "apgd-suspect": _rep(["clean", "apgd-dlr", "pgd20"], 1000, "suspect"),
               "apgd-passed": _rep(["clean", "apgd-dlr"], 1000),
               "pgd-passed": _rep(["clean", "pgd20"], 1000)}
    # failed: never; within a tier (APGD) a passed report that ran the same checks beats a suspect
    # one even with fewer attacks ...
    assert choose_canonical(reports) == "apgd-passed"
    # ... but not one that passed by skipping the check that flagged the other, nor a smaller one
    reports["apgd-passed"] = _rep(["clean", "apgd-dlr"], 1000, check="skipped")
    assert choose_canonical(reports) == "apgd-suspect"
    reports["apgd-passed"] = _rep(["clean", "apgd-dlr"], 500)
    assert choose_canonical(reports) == "apgd-suspect"
    del reports["apgd-passed"]
    # across tiers the stronger protocol wins though suspect: its flags come from checks only it can run
    assert choose_canonical(reports) == "apgd-suspect"
    assert choose_canonical({"aa-failed": reports["aa-failed"]}) is None  # nothing eligible: no eval.json


def test_a_report_without_health_checks_is_never_published_nor_preferred():
    """`eval --no-health`: nothing shows its attacks acted. It never replaces a report whose
    checks ran (even a suspect one of a lower tier), is refused for publishing with the command
    that evaluates with the checks, and the leaderboard does not rank it."""
    blind = _rep(["clean", "autoattack"], 1000)
    del blind["health"]
    reports = {"aa-blind": blind, "pgd-suspect": _rep(["clean", "pgd20"], 1000, "suspect")}
    assert choose_canonical(reports) == "pgd-suspect"
    assert choose_canonical({"aa-blind": blind}) == "aa-blind"  # alone it is the record, but ...
    ok, why = publishable(blind, "RUN")
    assert not ok and "--no-health" in why and "robustzoo eval RUN --suite quick" in why
    ok, why = publishable(dict(blind, n=16, examples={"n": 16, "of": 16, "test_size": 10000}), "RUN")
    assert not ok and "no health checks" in why and "fewer than 1,000 examples" in why


def test_the_leaderboard_skips_a_blind_report_and_bounds_a_custom_one(at_run, tmp_path):
    from robustzoo.leaderboard import from_runs, row_from_report
    from robustzoo.runs import read_config

    run = _copy(at_run, tmp_path)
    report = json.loads((run / "eval.json").read_text())
    blind = {k: v for k, v in report.items() if k != "health"}
    (run / "eval.json").write_text(json.dumps(blind))
    rows, skipped = from_runs(run)
    assert not rows and "no health checks (evaluated with --no-health)" in skipped[0]["why"]
    aa = {"attack": "autoattack", "accuracy": 0.4, "correct": 4, "n": 10, "ci95": [0.1, 0.7],
          "settings": {"square_queries": 20}, "standard": False,
          "custom": {"square_queries": {"value": 20, "standard": 5000}}}
    custom = dict(report, results=[*report["results"], aa], allow_custom=True, standard=False,
                  custom_settings={"autoattack": aa["custom"]})
    _, row = row_from_report("x", read_config(run), custom, location=str(run))
    assert row.ranked_by == "autoattack" and row.upper_bound
    assert "custom settings (autoattack: square_queries=20 (standard 5000))" in row.note


def test_no_eligible_record_leaves_no_eval_json(at_run, tmp_path):
    from robustzoo.eval import read_canonical, write_record

    run = _copy(at_run, tmp_path)
    for p in (run / "evals").glob("*.json"):
        p.unlink()
    (run / "eval.json").unlink()
    info = write_record(run, dict(_rep(["clean", "autoattack"], 1000, "failed"), model=None))
    assert info["canonical"] is None and not (run / "eval.json").exists()
    with pytest.raises(RunError, match="no canonical evaluation"):
        read_canonical(run)
    # publishing says why, so that its advice does not send the user round in a circle
    from robustzoo.hub import read_eval

    with pytest.raises(RunError, match=r"its only evaluation cannot be the record \(evals/.*health report "
                                       r"failed \(noop\)"):
        read_eval(run)


def test_the_leaderboard_says_why_an_evaluated_run_is_not_ranked(at_run, tmp_path, capsys):
    from robustzoo import leaderboard as lb
    from robustzoo.eval import write_record

    run = _copy(at_run, tmp_path)
    for p in (run / "evals").glob("*.json"):
        p.unlink()
    (run / "eval.json").unlink()
    write_record(run, dict(_rep(["clean", "autoattack"], 1000, "failed"), model=None))
    (skipped,) = lb.leaderboard(tmp_path).skipped
    assert skipped["why"].startswith("its only evaluation cannot be the record (evals/")
    assert "health report failed (noop)" in skipped["why"] and "not evaluated" not in skipped["why"]
    assert skipped["why"].endswith(f"then evaluate again: `robustzoo eval {run} --suite autoattack`")
    code, _, err = run_cli(["leaderboard", str(tmp_path)], capsys)
    assert code == 0 and f"not ranked: run: {skipped['why']}" in err  # one line: the command stays whole
    # eval.json deleted by hand beside an eligible record: said as such, with the same way out
    (run / "evals" / next(run.glob("evals/*.json")).name).unlink()
    shutil.copytree(at_run / "evals", run / "evals", dirs_exist_ok=True)
    (skipped,) = lb.leaderboard(tmp_path).skipped
    assert "eligible, but eval.json is missing (deleted, or the record is of other weights)" in skipped["why"]


def test_export_robustbench_says_why_an_autoattack_record_is_not_the_record(tmp_path):
    from robustzoo.robustbench import _autoattack

    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "aa.json").write_text(json.dumps(_rep(["clean", "autoattack"], 1000, "failed")))
    with pytest.raises(RunError, match=r"its AutoAttack evaluation \(evals/aa.json\) cannot be the record: its "
                                       r"health report failed \(noop\)"):
        _autoattack(_rep(["clean", "pgd20"], 1000), str(tmp_path))


# --- the randomness probe measures randomness, not rounding -------------------------------------

class BF16Jitter(nn.Module):
    """A deterministic model computed in bf16 whose last bit flips from call to call, as a
    nondeterministic bf16 GPU kernel's would (logits returned in bf16)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x).to(torch.bfloat16)
        ulp = torch.finfo(torch.bfloat16).eps * out.float().abs().clamp_min(1e-3)
        jitter = torch.randint(-1, 2, out.shape).float() * ulp
        return (out.float() + jitter).to(torch.bfloat16)


class AutocastJitter(nn.Module):
    """fp32 logits that carry bf16-sized noise only while autocast is on (the old probe ran
    inside the evaluation's bf16 scope and saw it)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x).float()
        if torch.is_autocast_enabled("cpu"):
            out = out * (1 + 4e-3 * torch.randn_like(out))
        return out


def test_rounding_noise_is_not_randomness_and_real_noise_is(test_set):
    model = trained_mlp()
    x, y, _ = next(iter(test_set.batches(128)))
    jitter = randomness_probe(BF16Jitter(model), x, y)
    assert jitter["dtype"] == "bfloat16" and jitter["max_logit_diff"] > 1e-4  # AutoAttack's rule would fire
    assert not jitter["randomised"] and jitter["threshold"] == pytest.approx(8 * 2 ** -7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = randomness_probe(AutocastJitter(model), x, y)
    assert inside["exact_fp32"] and inside["max_logit_diff"] == 0.0 and not inside["randomised"]
    noisy = randomness_probe(NoisyLogits(model, sigma=0.05), x, y)
    assert noisy["randomised"] and noisy["threshold"] == 1e-4 and noisy["dtype"] == "float32"
    # a model returning bf16 logits that really draws noise is still caught
    assert randomness_probe(BF16Jitter(NoisyLogits(model, sigma=3.0)), x, y)["randomised"]


# --- precision: what each evaluation would run in ------------------------------------------------

def test_published_evaluations_run_in_fp32_on_a_cuda_device(monkeypatch, tmp_path):
    """On a (faked) CUDA device: eval, train's final evaluation and `zoo publish` all take exact fp32."""
    from robustzoo import fast, publish

    for prec in ("auto", "fp32", None):
        assert fast.eval_precision(prec, "cuda", None, attacks=["clean", "autoattack"]) == ("fp32", None)
    with pytest.raises(UsageError, match="needs a precision check"):
        fast.eval_precision("bf16", "cuda", None, attacks=["autoattack"])
    seen = {}

    def fake_evaluate(run_dir, **kw):
        seen.update(kw)
        return {}

    monkeypatch.setattr("robustzoo.api.evaluate", fake_evaluate)
    monkeypatch.setattr(publish, "canonical_done", lambda report, n: bool(seen))
    publish.evaluate_entry(tmp_path, n=10, data_dir=None, device="cuda")
    assert seen["suite"] == publish.CANONICAL_SUITE and seen.get("precision", "auto") in ("auto", "fp32")


def test_the_final_evaluation_of_a_bf16_training_is_fp32(tmp_path, monkeypatch):
    import importlib

    from robustzoo.testing import train_tiny

    train_mod = importlib.import_module("robustzoo.train")  # `robustzoo.train` is also the API function

    scopes = []
    real = train_mod.precision_scope
    monkeypatch.setattr(train_mod, "precision_scope", lambda d, p: scopes.append(p) or real(d, p))
    _, report = train_tiny(tmp_path / "r", "at", precision="bf16", subset=120, eval_attacks=["clean"], eval_n=16)
    assert scopes == ["fp32"] and report["precision"] == "fp32"


# --- evaluation needs only the test split; the whole test set is the dataset's --------------------

def _write_idx(path, arr):
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
                     + arr.astype(np.uint8).tobytes())


def test_eval_of_a_small_val_size_run_on_a_16_image_test_set(tmp_path):
    """A local MNIST copy with 120 training and 16 test images: a run trained with val_size=20 is
    evaluated (no train/val split is rebuilt), and all 16 test images are not 'the whole test set'."""
    from robustzoo.api import evaluate, train

    rng = np.random.RandomState(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", rng.randint(0, 256, (120, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", rng.randint(0, 10, (120,)))
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.randint(0, 256, (16, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", rng.randint(0, 10, (16,)))
    run, _ = train("at", dataset="mnist", data_dir=str(tmp_path / "data"), out=tmp_path / "run", epochs=1,
                   steps=1, val_size=20, batch_size=50, eval_attacks=["clean"], device="cpu")
    rep = evaluate(run, ["clean", "pgd20"], device="cpu", health=False)
    assert rep["n"] == 16 and rep["examples"]["of"] == 16 and rep["examples"]["test_size"] == 10_000
    assert not whole_test_set(rep)
    ok, why = publishable(rep, run)
    assert not ok and "fewer than 1,000 examples and not the whole test set" in why
    assert "pgd20 on 16 of 10,000 test images" in why
    # the embedded digits: its 360 test images are its whole test set
    assert whole_test_set({"n": 360, "examples": {"n": 360, "of": 360, "test_size": 360}})
    # `zoo publish` does not rebuild the train/val split either, and refuses an incomplete test set
    from robustzoo import publish
    from robustzoo.errors import RunError

    with pytest.raises(RunError, match="has 16 images, not the dataset's 10,000"):
        publish._test_size(run, str(tmp_path / "data"))


# --- issue 26: CE attacks against margin losses and the black box -------------------------------

class PartialPlant(nn.Module):
    """Logits × 1e4 on a fixed set of images and everything within ε of them: the CE loss is
    saturated there (every CE attack stalls), elsewhere the model is untouched."""

    def __init__(self, model, planted: torch.Tensor, eps: float):
        super().__init__()
        self.model, self.eps = model, eps
        self.register_buffer("planted", planted.flatten(1))

    def forward(self, x):
        out = self.model(x)
        with torch.no_grad():  # which inputs are planted: a fixed set, not something to differentiate
            near = (torch.cdist(x.flatten(1), self.planted, p=float("inf")) <= self.eps + 1e-4).any(1)
        return torch.where(near[:, None], out * 1e4, out)




def test_a_partial_plant_is_flagged_under_the_paper_suite():
    """The issue's plant: CE saturated on a fixed 4% of 1,000 Fashion-MNIST test images, so every
    CE attack overstates robustness by 3-4 points; health used to say "passed"."""
    import torch.nn.functional as F

    from robustzoo.attacks import AttackContext, pgd
    from robustzoo.data import load_splits, select_examples
    from robustzoo.plugins import registry

    eps, alpha, n = 0.05, 0.005, 1000
    torch.manual_seed(0)
    splits = load_splits(registry("datasets").get("fashion-mnist"), subset=2000)
    # An honest base in seconds: a linear classifier, PGD-5 adversarially trained (its CE and CW
    # attacks agree within about a point, as the Fashion-MNIST `at` run does).
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for x, y, _ in splits.train.batches(200, shuffle=True, generator=g):
            x = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=5, rand_init="uniform")
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    sample = select_examples(splits.test, n, 0)  # the 1,000 examples the evaluation then takes whole
    x, y, _ = next(iter(sample.batches(n)))
    ctx = AttackContext(eps=eps, alpha=alpha, num_classes=10)
    reg = registry("attacks")
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        broken = (model(reg.get("pgd20").run(model, x, y, ctx)).argmax(1) != y) & \
                 (model(reg.get("cw").run(model, x, y, ctx)).argmax(1) != y)
    pick = (ok & broken).nonzero().flatten()[:40]
    assert len(pick) == 40
    planted = PartialPlant(model, x[pick], eps).eval()
    paper = ["clean", "fgsm", "pgd20", "pgd100", "cw", "square"]  # --suite paper (fewer Square queries)
    rep = evaluate_model(planted, sample, paper, eps=eps, alpha=alpha, num_classes=10, batch_size=500,
                         options={"square_queries": 50})
    unplanted = evaluate_model(model, sample, ["clean", "pgd20", "cw"], eps=eps, alpha=alpha, num_classes=10,
                               batch_size=500)
    assert _check(unplanted, "ce_vs_margin")["status"] == "passed" and unplanted["health"]["status"] == "passed"
    # the plant moves PGD-20 up by (nearly) its 40 examples, 3-4 points (an example whose margin is
    # below ~1e-3 is not saturated by ×1e4), and leaves CW where it was
    assert 30 <= _row(rep, "pgd20")["correct"] - _row(unplanted, "pgd20")["correct"] <= 40
    assert _row(rep, "cw")["correct"] == _row(unplanted, "cw")["correct"]
    gap = _row(rep, "pgd20")["accuracy"] - _row(rep, "cw")["accuracy"]
    assert 0.03 <= gap <= 0.07
    check = _check(rep, "ce_vs_margin")
    assert check["status"] == "flagged" and {"pgd20", "pgd100"} <= set(check["affects"])
    assert rep["health"]["status"] == "suspect" and _check(rep, "noop")["status"] == "passed"


def test_square_below_the_best_white_box_attack_is_flagged_with_its_paired_test():
    n = 400
    rows = [{"attack": "clean", "accuracy": 0.9, "correct": 360, "n": n, "ci95": [0.87, 0.93], "kind": "none"},
            {"attack": "pgd20", "accuracy": 0.6, "correct": 240, "n": n, "ci95": [0.55, 0.65], "kind": "white-box",
             "settings": {"steps": 20}},
            {"attack": "cw", "accuracy": 0.55, "correct": 220, "n": n, "ci95": [0.50, 0.60], "kind": "white-box"},
            {"attack": "square", "accuracy": 0.5, "correct": 200, "n": n, "ci95": [0.45, 0.55], "kind": "black-box"}]

    def flags(idx):
        f = torch.zeros(n, dtype=torch.bool)
        f[list(idx)] = True
        return f

    # Square holds 200 of CW's 220 robust examples and breaks 20 more; nothing else differs.
    fl = {"clean": flags(range(360)), "pgd20": flags(range(240)), "cw": flags(range(220)),
          "square": flags(range(200))}
    rep = apply_health({"n": n, "num_classes": 10, "eps": 0.1, "results": [dict(r) for r in rows]}, flags=fl,
                       probes={})
    check = _check(rep, "blackbox_vs_whitebox")
    vs = check["evidence"]["square"]["vs_best_whitebox"]
    assert check["status"] == "flagged" and vs["attack"] == "cw" and vs["whitebox_only_robust"] == 20
    assert vs["blackbox_only_robust"] == 0 and vs["p_value"] < 0.01
    assert "below cw's 55.0%" in check["explanation"]
    # Square at CW's own level: no flag from this rule
    fl["square"] = flags(range(220))
    rows[3].update(correct=220, accuracy=0.55)
    rep = apply_health({"n": n, "num_classes": 10, "eps": 0.1, "results": [dict(r) for r in rows]}, flags=fl,
                       probes={})
    assert _check(rep, "blackbox_vs_whitebox")["status"] == "passed"


def test_skipped_checks_name_the_attacks_that_would_run_them(at_run, tmp_path, capsys):
    run = _copy(at_run, tmp_path)
    code, out, err = run_cli(["eval", str(run), "--attacks", "clean,pgd20", "--n", "32", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "add cw to --attacks to run it" in " ".join(out.split())
    assert f"to run the skipped checks: robustzoo eval {run} --attacks clean,pgd20,apgd-dlr,cw,square --n 32" \
        in " ".join(err.split())
