"""The run's evaluation record: every evaluation kept, eval.json the strongest protocol, and
push publishing only a real one."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from eval_helpers import trained_mlp, write_run
from helpers import assert_one_line_error, run_cli
from huggingface_hub import ModelCard

from robustzoo.eval import (
    HISTORY_DIR,
    SAMPLE_RULE,
    canonical_rank,
    choose_canonical,
    headline,
    history,
    publishable,
    record_id,
)
from robustzoo.eval._record import TIERS
from robustzoo.testing import fixtures
from robustzoo.testing.fixtures import TEST_TOKEN

hub_client_settings = fixtures.hub_client_settings
hub_server = fixtures.hub_server

FULL = "clean,fgsm,pgd20,pgd100,cw"  # the full record: five attacks on all 360 images


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A digits MLP run evaluated with five attacks on the whole test set (read-only)."""
    from robustzoo import api

    run = write_run(tmp_path_factory.mktemp("record") / "run", trained_mlp())
    api.evaluate(run, FULL)
    return run


def _copy(run, tmp_path):
    from eval_helpers import register_mlp

    register_mlp()  # plugins are reset between tests
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _eval_json(run):
    return json.loads((run / "eval.json").read_text())


def _attacks(report):
    return [r["attack"] for r in report["results"]]


# --- the replacement scenario of the issue -----------------------------------------------------

def test_quick_checks_never_replace_the_full_record(full_run, tmp_path, capsys):
    run = _copy(full_run, tmp_path)
    full = _eval_json(run)
    assert _attacks(full) == FULL.split(",") and full["n"] == 360 == full["examples"]["of"]
    assert full["record"]["canonical"] is True and full["record"]["records"] == 1

    code, out, err = run_cli(["eval", run, "--attacks", "clean,fgsm", "--n", "40", "--seed", "3"], capsys)
    assert code == 0, err
    (small_id,) = set(history(run)) - {full["record"]["id"]}
    assert f"wrote {run / HISTORY_DIR / small_id}.json" in err
    assert f"canonical record {run / 'eval.json'} = {HISTORY_DIR}/{full['record']['id']}.json (kept" in err
    code, out, err = run_cli(["eval", run, "--eps-sweep", "0,0.05,0.1", "--n", "20"], capsys)
    assert code == 0, err
    assert "(kept: a stronger protocol" in err

    now = _eval_json(run)
    assert now["record"]["id"] == full["record"]["id"] and now["record"]["records"] == 3
    assert {k: v for k, v in now.items() if k != "record"} == {k: v for k, v in full.items() if k != "record"}
    records = history(run)
    small = records[small_id]
    assert (small["n"], small["seed"], _attacks(small)) == (40, 3, ["clean", "fgsm"])
    assert small["source"] == "eval" and small["protocol"]["n"] == 40
    assert any(r.get("eps_sweep") for r in records.values())

    # The same protocol again rewrites its own record, nothing else.
    before = {i: (run / HISTORY_DIR / f"{i}.json").read_text() for i in records}
    code, _, err = run_cli(["eval", run, "--attacks", "clean,fgsm", "--n", "40", "--seed", "3"], capsys)
    assert code == 0, err
    assert set(history(run)) == set(records)
    for i, text in before.items():
        if i != small_id:
            assert (run / HISTORY_DIR / f"{i}.json").read_text() == text


def test_push_refuses_a_partial_record_with_one_line_and_allow_partial_marks_the_card(
        full_run, tmp_path, hub_server, capsys):
    from robustzoo import api

    run = write_run(tmp_path / "small", trained_mlp())
    api.evaluate(run, "clean,fgsm", n=40, seed=3)
    args = ["push", run, "--repo-id", "me/x", "--endpoint", hub_server.endpoint, "--token", TEST_TOKEN]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "partial protocol", "fgsm on 40 of 360 test images",
                          f"robustzoo eval {run} --suite quick", "--allow-partial")
    with pytest.raises(KeyError):  # refused before anything was sent: no repo was created
        hub_server.commits("me/x")

    code, out, err = run_cli(args + ["--allow-partial", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    from robustzoo import hub

    local = hub.pull(f"hf-hub:me/x@{res['revision']}", endpoint=hub_server.endpoint,
                     cache_dir=str(tmp_path / "cache"))
    text = (local / "README.md").read_text(encoding="utf-8")
    assert "**Partial evaluation.** The evaluation is fgsm on 40 of 360 test images (no PGD-20/100" in text
    assert str(tmp_path) not in text  # no local path on a public card
    assert "robust accuracy (FGSM) on 40 images (95% CI" in text
    meta = ModelCard(text).data.to_dict()
    assert meta["robustzoo"]["partial"] is True and "40 of 360" in meta["robustzoo"]["partial_reason"]
    assert "partial-evaluation" in meta["tags"]
    assert meta["robustzoo"]["headline"]["attack"] == "fgsm" and meta["robustzoo"]["headline"]["n"] == 40

    # The full record is a real protocol: no flag needed, no partial mark.
    full = _copy(full_run, tmp_path / "full")
    code, out, err = run_cli(["push", full, "--repo-id", "me/full", "--endpoint", hub_server.endpoint,
                              "--token", TEST_TOKEN, "--json"], capsys)
    assert code == 0, err
    local = hub.pull(f"hf-hub:me/full@{json.loads(out)['revision']}", endpoint=hub_server.endpoint,
                     cache_dir=str(tmp_path / "cache"))
    text = (local / "README.md").read_text(encoding="utf-8")
    assert "Partial evaluation" not in text
    assert "robust accuracy (worst case over FGSM, PGD-20, PGD-100, CW∞) on 360 images (95% CI" in text
    assert ModelCard(text).data.to_dict()["robustzoo"]["partial"] is False


# --- migration, training, the rule ------------------------------------------------------------

def test_an_eval_json_from_before_the_history_is_migrated(full_run, tmp_path):
    from robustzoo import api

    run = _copy(full_run, tmp_path)
    legacy = _eval_json(run)
    for k in ("record", "examples", "model"):
        legacy.pop(k)
    shutil.rmtree(run / HISTORY_DIR)
    (run / "eval.json").write_text(json.dumps(legacy))
    rep = api.evaluate(run, "clean,fgsm", n=40, seed=3)
    migrated = rep["record"]["migrated"]
    assert migrated and rep["record"]["canonical"] == migrated and not rep["record"]["is_canonical"]
    records = history(run)
    assert records[migrated]["migrated"] is True and records[migrated]["examples"]["of"] == 360
    assert records[migrated]["model"] == rep["model"]  # the weights it was made for
    assert _attacks(_eval_json(run)) == FULL.split(",")


def test_training_writes_its_evaluation_into_the_history(at_run):
    records = history(at_run)
    (rid,) = records
    assert records[rid]["source"] == "train"
    assert _eval_json(at_run)["record"]["id"] == rid


def _rep(attacks, n, of=10000, migrated=False):
    rows = [{"attack": a, "accuracy": 0.5, "correct": n // 2, "n": n, "ci95": [0.4, 0.6], "settings": {}}
            for a in attacks]
    out = {"eps": 0.03, "n": n, "seed": 0, "results": rows, "examples": {"n": n, "of": of}, "standard": True,
           "health": {"status": "passed", "checks": []}}
    if migrated:
        out["migrated"] = True
    return out


def test_the_canonical_rule_is_size_then_tier_then_n_never_recency():
    reports = {
        "aa-200": _rep(["clean", "autoattack"], 200),
        "pgd-1000": _rep(["clean", "pgd20"], 1000),
        "apgd-1000": _rep(["clean", "apgd-dlr"], 1000),
        "apgd-5000": _rep(["clean", "apgd-dlr", "pgd20"], 5000),
        "fgsm-40": _rep(["clean", "fgsm"], 40),
        "noclean-10000": _rep(["autoattack"], 10000),
    }
    order = sorted(reports, key=lambda i: canonical_rank(reports[i], i))
    assert order == ["apgd-5000", "apgd-1000", "pgd-1000", "aa-200", "fgsm-40", "noclean-10000"]
    assert choose_canonical(reports) == "apgd-5000"
    # AutoAttack on the publishable size beats everything; the whole test set counts as one.
    reports["aa-1000"] = _rep(["clean", "autoattack"], 1000)
    assert choose_canonical(reports) == "aa-1000"  # the tier decides before n
    whole = {"aa-whole": _rep(["clean", "autoattack"], 360, of=360), "pgd-1000": reports["pgd-1000"]}
    assert choose_canonical(whole) == "aa-whole"  # the whole test set is a publishable size
    # Ties: measured beats migrated, then the id — whatever order the records are read in.
    a, b = _rep(["clean", "pgd20"], 1000), _rep(["clean", "pgd20"], 1000, migrated=True)
    assert choose_canonical({"z": a, "a": b}) == "z" and choose_canonical({"a": b, "z": a}) == "z"
    assert choose_canonical({"b": dict(a), "a": dict(a)}) == "a"
    assert TIERS["autoattack"] > TIERS["apgd-ce"] > TIERS["pgd20"] > TIERS["fgsm"]


def test_records_of_other_weights_are_never_canonical():
    old = dict(_rep(["clean", "autoattack"], 1000), model="aaaa")
    new = dict(_rep(["clean", "fgsm"], 40), model="bbbb")
    assert choose_canonical({"old": old, "new": new}, model="bbbb") == "new"


def test_record_id_follows_the_protocol_key():
    a = _rep(["clean", "pgd20"], 100)
    assert record_id(a) == record_id(json.loads(json.dumps(a)))
    assert record_id(a).startswith("clean+pgd20-n100-s0-")
    assert record_id(dict(a, seed=1)) != record_id(a)
    assert record_id(dict(a, options={"kappa": 10.0})) != record_id(a)
    b = json.loads(json.dumps(a))
    b["results"][1]["settings"] = {"rand_init": "uniform"}
    assert record_id(b) != record_id(a)  # an attack's settings change the numbers


def test_publishable_and_headline():
    ok, reason = publishable(_rep(["clean", "pgd20"], 1000))
    assert ok and reason == ""
    ok, reason = publishable(_rep(["clean", "pgd20"], 360, of=360))
    assert ok
    ok, reason = publishable(_rep(["clean", "fgsm", "cw"], 5000), "runs/x")
    assert not ok and "no PGD-20/100, APGD or AutoAttack" in reason and "robustzoo eval runs/x" in reason
    ok, reason = publishable(_rep(["pgd20"], 5000))
    assert not ok and "no clean accuracy" in reason
    failed = dict(_rep(["clean", "pgd20"], 1000), health={"status": "failed", "checks": [
        {"name": "degenerate", "status": "failed"}]})
    ok, reason = publishable(failed)
    assert not ok and "degenerate" in reason
    rep = _rep(["clean", "pgd20", "autoattack"], 1000)
    assert headline(rep)["attack"] == "autoattack"
    rep = dict(_rep(["clean", "pgd20", "cw"], 1000),
               worst_case={"accuracy": 0.4, "correct": 400, "n": 1000, "ci95": [0.37, 0.43],
                           "attacks": ["pgd20", "cw"]})
    assert headline(rep)["attack"] == "worst-case" and headline(rep)["label_attacks"] == ["pgd20", "cw"]
    assert headline(_rep(["clean"], 10)) is None


def test_every_report_names_its_examples(full_run, tmp_path):
    from robustzoo import api
    from robustzoo.data import load_splits
    from robustzoo.plugins import registry

    run = _copy(full_run, tmp_path)
    rep = api.evaluate(run, "clean", n=25, seed=4)
    ex = rep["examples"]
    assert (ex["n"], ex["of"], ex["seed"], ex["rule"]) == (25, 360, 4, SAMPLE_RULE)
    # The rule regenerates the rows, and the hash checks them.
    rows = torch.randperm(ex["of"], generator=torch.Generator().manual_seed(ex["seed"]))[:ex["n"]].sort().values
    assert hashlib.sha256(rows.numpy().astype("<i8").tobytes()).hexdigest() == ex["index_sha256"]
    test = load_splits(registry("datasets").get("digits")).test
    assert len(test) == ex["of"]


def test_a_subset_split_is_not_the_whole_test_set():
    """Training with --subset evaluates a seeded subset of the test set: n == of is not enough."""
    from eval_helpers import ALPHA, EPS, digits

    from robustzoo.eval import evaluate_model

    test = digits().test
    rows = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:100]
    sub = test.take(rows)  # as load_splits(subset=100) builds it
    rep = evaluate_model(trained_mlp(), sub, ["clean", "pgd20"], eps=EPS, alpha=ALPHA, num_classes=10,
                         health=False)
    assert rep["examples"]["of"] == rep["n"] == 100 and rep["examples"]["split_is_subset"] is True
    checked = {"status": "passed", "checks": []}  # health=False: judge the size alone
    assert not publishable(dict(rep, health=checked))[0]
    whole = evaluate_model(trained_mlp(), test, ["clean", "pgd20"], eps=EPS, alpha=ALPHA, num_classes=10,
                           health=False)
    assert "split_is_subset" not in whole["examples"] and publishable(dict(whole, health=checked))[0]
