"""The scripts behind docs/results.md: benchmarks/fmnist_zoo.py plans the runs and their
evaluations, docs/make_results.py turns run directories into the page, figures and cards."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from helpers import load_script

from robustzoo.eval import wilson_interval

zoo = load_script("benchmarks/fmnist_zoo.py")


def _fake_run(root: Path, name: str, *, finished: bool = True) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    if finished:
        (run / "eval.json").write_text("{}")
    return run


def _opt(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def test_reduced_evaluation_runs_every_attack_on_one_seeded_sample(tmp_path):
    a = _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "trades-s0", finished=False)  # still training: not evaluated yet
    (a / "eval-sweep.json").write_text("{}")  # done before: kept, not repeated
    (paper,) = zoo.eval_commands(tmp_path, reduced=True, sweep="0,0.1", device="cpu")
    assert str(a) in paper
    # the training's own evaluation stays in the run's history: no copy is needed any more
    assert not (a / "eval-final.json").exists()
    # AutoAttack in the same evaluation as every other attack: the same 1,000 images
    assert _opt(paper, "--n") == "1000" and _opt(paper, "--attacks") == zoo.REDUCED_ATTACKS + ",autoattack"
    assert _opt(paper, "--json") == str(a / "eval-paper.json")
    assert "--seed" not in paper  # the default seed: the same images for every run
    (a / "eval-sweep.json").unlink()
    sweep = zoo.eval_commands(tmp_path, reduced=True, sweep="0,0.1", device="cpu")[1]
    assert _opt(sweep, "--n") == "1000" and _opt(sweep, "--eps-sweep") == "0,0.1" and "--seed" not in sweep


def test_large_autoattack_sample_only_for_the_chosen_methods(tmp_path):
    _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "mart-s0")
    cmds = zoo.eval_commands(tmp_path, reduced=True, sweep="0,0.1", device="cpu", aa_large_n=1000,
                             aa_large_methods=["at"])
    large = [c for c in cmds if _opt(c, "--json").endswith("eval-autoattack-large.json")]
    assert len(large) == 1 and str(tmp_path / "at-s0") in large[0]
    assert _opt(large[0], "--n") == "1000" and _opt(large[0], "--attacks") == "clean,pgd20,autoattack"
    assert len(cmds) == 2 * 2 + 1


def test_full_protocol_runs_the_suites_on_the_whole_test_set(tmp_path):
    _fake_run(tmp_path, "at-s0")
    _fake_run(tmp_path, "mart-s0")
    cmds = zoo.eval_commands(tmp_path, reduced=False, sweep="0,0.1", device="cuda")
    assert not any("--n" in c for c in cmds)
    assert [_opt(c, "--suite") for c in cmds[:4]] == ["paper", "paper", "autoattack", "autoattack"]
    # suite by suite: two parallel jobs never share a run directory
    assert [Path(c[4]).name for c in cmds[:2]] == ["at-s0", "mart-s0"]
    assert _opt(cmds[-1], "--eps-sweep") == "0,0.1"


def test_protocol_record_merges_invocations_and_refuses_mixing(tmp_path):
    zoo.record_protocol(tmp_path, "train", [0], ["trades", "at"], True, zoo.SWEEP)
    zoo.record_protocol(tmp_path, "train", [1], ["mart"], True, zoo.SWEEP)
    data = json.loads((tmp_path / "protocol.json").read_text())
    assert data["stages"]["train"] == {"seeds": [0, 1], "methods": ["at", "trades", "mart"]}
    assert data["reduced_train"] == zoo.REDUCED and data["reduced_eval"]["aa_n"] == 1000
    with pytest.raises(SystemExit, match="reduced"):
        zoo.record_protocol(tmp_path, "eval", [0], [], False, zoo.SWEEP)


def test_train_commands_carry_the_protocol_and_resume(tmp_path):
    (cmd,) = zoo.train_commands(tmp_path, [3], ["cat-cw-b5-0.05"], reduced=True, device="cpu")
    sets = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--set")
    assert (sets["beta"], sets["beta1"], sets["attack"], sets["seed"]) == ("5", "0.05", "cw", "3")
    assert sets["subset"] == zoo.REDUCED["subset"] and sets["eps"] == "0.1"
    run = tmp_path / "cat-cw-b5-0.05-s3"
    (run / "state").mkdir(parents=True)
    (run / "state" / "resume.pt").write_bytes(b"")
    (cmd,) = zoo.train_commands(tmp_path, [3], ["cat-cw-b5-0.05"], reduced=True, device="cpu")
    assert _opt(cmd, "--resume") == str(run)


# --- docs/make_results.py: the page from the exported records ---------------------------------

# The tiny protocol: every attack of the reduced one on the same 40 digits (Square with 10 queries).
TINY_ATTACKS = "clean,fgsm,pgd20,pgd100,cw,apgd-ce,apgd-dlr,autoattack"
TINY_N = 40


def _two_sided(b: int, c: int) -> float:
    """The exact McNemar test by hand: twice the binomial tail of the larger count, at most 1."""
    k, n = max(b, c), b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n) if n else 1.0


def _variant(records: Path, src: str, name: str, seed: int, *, aa_off=(), aa_on=(), clean_off=()) -> None:
    """Copy run ``src``'s records as run ``name`` of ``seed`` with some per-example outcomes
    changed (positions in the 40 shared images), its eval-paper.json counts kept consistent."""
    from robustzoo.eval import wilson_interval
    from robustzoo.runs import read_weights, save_weights

    dst = records / name
    shutil.copytree(records / src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["robustzoo"]["config"]["seed"] = seed
    (dst / "config.json").write_text(json.dumps(cfg))
    tensors, meta = read_weights(dst / "eval_flags.safetensors")
    aa_keys = [k for k in json.loads(meta["robustzoo.eval_flags"])["entries"] if k.startswith("autoattack/")]
    for positions, value in ((aa_off, 0), (aa_on, 1)):
        for k in aa_keys:
            tensors[f"flags::{k}"][list(positions)] = value
    tensors["flags::clean"][list(clean_off)] = 0
    save_weights(dst / "eval_flags.safetensors", tensors,
                 {k.removeprefix("robustzoo."): v for k, v in meta.items() if k.startswith("robustzoo.")})
    paper = json.loads((dst / "eval-paper.json").read_text())
    for row in paper["results"]:
        change = {"autoattack": len(aa_on) - len(aa_off), "clean": -len(clean_off)}.get(row["attack"], 0)
        row["correct"] += change
        row["accuracy"] = row["correct"] / row["n"]
        row["ci95"] = list(wilson_interval(row["correct"], row["n"]))
    (dst / "eval-paper.json").write_text(json.dumps(paper))


@pytest.fixture(scope="module")
def study(at_run, tmp_path_factory):
    """Exported records of a tiny study: a real digits AT run evaluated with the tiny protocol,
    exported as the study exports, and runs made from it with known per-example changes.

    R: images robust under AutoAttack for at-s0; B: correctly classified but broken. The
    changes make at-s1 (2 robust fewer), at-s2 (1 more), trades-sK (at-sK with 4 more each:
    no seed alone is real at this n, the pooled seeds are), mart-s0 (1 fewer, 1 more: a tie)
    and customized-ce-s0 (8 fewer correctly classified: a real clean difference, the same
    AutoAttack outcome).
    """
    import robustzoo

    base = tmp_path_factory.mktemp("study")
    runs, records = base / "runs", base / "records"
    run = runs / "at-s0"
    shutil.copytree(at_run, run)
    for name, attacks, kw in (("paper", TINY_ATTACKS, {"options": {"square_queries": 10}}),
                              ("sweep", "pgd20", {"eps_sweep": "0,0.1,0.3"})):
        report = robustzoo.evaluate(run, attacks, n=TINY_N, **kw)
        (run / f"eval-{name}.json").write_text(json.dumps(report))
    assert zoo.export_runs(runs, records) == ["at-s0"]
    zoo.record_protocol(records, "train", [0, 1, 2], ["at", "trades", "mart", "customized-ce"], True, zoo.SWEEP)

    from robustzoo.runs import read_weights

    tensors, meta = read_weights(records / "at-s0" / "eval_flags.safetensors")
    keys = [k for k in json.loads(meta["robustzoo.eval_flags"])["entries"] if k.startswith("autoattack/")]
    robust = tensors["flags::clean"].bool()
    for k in keys:
        robust &= tensors[f"flags::{k}"].bool()
    R = robust.nonzero().flatten().tolist()
    B = (tensors["flags::clean"].bool() & ~robust).nonzero().flatten().tolist()
    assert len(R) >= 3 and len(B) >= 16, (R, B)  # the tiny AT run is seeded: this holds
    _variant(records, "at-s0", "at-s1", 1, aa_off=R[1:3])
    _variant(records, "at-s0", "at-s2", 2, aa_on=B[6:7])
    for k in range(3):
        _variant(records, f"at-s{k}", f"trades-s{k}", k, aa_on=B[0:4])
    _variant(records, "at-s0", "mart-s0", 0, aa_off=R[0:1], aa_on=B[4:5])
    _variant(records, "at-s0", "customized-ce-s0", 0, clean_off=B[8:16])
    return {"runs": runs, "records": records, "R": R, "B": B}


def _generate(study: dict, tmp_path: Path, *extra: str) -> str:
    """make_results on the records into a preview folder; returns the page."""
    mr = load_script("docs/make_results.py")
    into = tmp_path / "site"
    page = into / "docs" / "results.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    if not page.exists():
        page.write_text("# Results\n\nintro\n\n<!-- generated:start -->\nold\n<!-- generated:end -->\n\nreading\n")
    assert mr.main([str(study["records"]), "--into", str(into), *extra]) == 0
    return page.read_text()


def _row(text: str, start: str, section: str | None = None) -> str:
    if section is not None:
        text = text[text.index(section):]
    return next(line for line in text.splitlines() if line.startswith(start))


def test_export_copies_the_records_and_the_weights_sha256_only(study):
    run, rec = study["runs"] / "at-s0", study["records"] / "at-s0"
    assert not (rec / "model.safetensors").exists() and not (rec / "state").exists()
    sha = dict(line.split("  ")[::-1] for line in (rec / "weights.sha256").read_text().splitlines())
    assert sha["model.safetensors"] == hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    assert (rec / "eval_flags.safetensors").read_bytes() == (run / "eval_flags.safetensors").read_bytes()
    assert any(json.loads(p.read_text()).get("source") == "train" for p in (rec / "evals").glob("*.json"))


def test_page_tables_come_from_the_records(study, tmp_path):
    text = _generate(study, tmp_path)
    assert text.startswith("# Results\n\nintro") and text.rstrip().endswith("reading") and "\nold\n" not in text
    records = study["records"]
    paper = {d.name: {r["attack"]: r for r in json.loads((d / "eval-paper.json").read_text())["results"]}
             for d in records.iterdir() if d.is_dir()}
    # protocol: AutoAttack on the same images as every other attack, read from the reports
    assert f"AutoAttack with custom settings (autoattack: square_queries = 10 (standard 5000)) on the same {TINY_N} " \
           "test images for every attack and every run" in text
    assert "the ε sweep (PGD-20) on the same images" in text and "seeds 0, 1, 2" in text
    # accuracy table: mean ± sample std over seeds; one seed: no ±
    at = [paper[f"at-s{k}"]["autoattack"]["accuracy"] for k in range(3)]
    row = _row(text, "| at | 3 |")
    assert f"| {100 * statistics.fmean(at):.1f} ± {100 * statistics.stdev(at):.1f} | none |" in row
    assert f"| {100 * paper['at-s0']['clean']['accuracy']:.1f} ± 0.0 |" in row
    mart = _row(text, "| mart | 1 |")
    assert mart.endswith(f"| {100 * paper['mart-s0']['autoattack']['accuracy']:.1f} | none |")
    assert "Square |" not in text.split("## Every run")[0]  # no standalone Square column
    # every run's AutoAttack with its Wilson interval
    aa = paper["at-s1"]["autoattack"]
    lo, hi = wilson_interval(aa["correct"], aa["n"])
    assert f"| {aa['correct']} / {TINY_N} | {100 * aa['accuracy']:.1f} ({100 * lo:.1f}–{100 * hi:.1f}) |" in \
        _row(text, "| at-s1 |", "## Every run")
    # the gap table: PGD-20 against AutoAttack on the same images; whole test set at the end
    gap = _row(text, "| at |", "## PGD-20 against")
    diffs = [paper[f"at-s{k}"]["pgd20"]["accuracy"] - paper[f"at-s{k}"]["autoattack"]["accuracy"] for k in range(3)]
    assert f"| {100 * statistics.fmean(diffs):.1f} ± {100 * statistics.stdev(diffs):.1f} |" in gap
    final = study["runs"] / "at-s0" / "evals"
    train = next(json.loads(p.read_text()) for p in final.glob("*.json") if json.loads(p.read_text()).get("source")
                 == "train")
    clean = next(r for r in train["results"] if r["attack"] == "clean")
    assert f"| {100 * clean['accuracy']:.1f} ± 0.0 / " in gap
    # the β × β1 table lists the points the study plans even before they run
    cal = text[text.index("## Calibrated AT: β and β1"):]
    assert _row(cal, "| cat-cw-b5-0.3 |").startswith("| cat-cw-b5-0.3 | CW (CATcw) | 5 | 0.3 | not run yet |")
    n_mean = round(statistics.fmean(at) * TINY_N)
    lo, hi = wilson_interval(n_mean, TINY_N)
    assert f"({100 * lo:.1f}–{100 * hi:.1f}) |" in _row(cal, "| at |")
    # the commands: one train command per set of seeds, then eval, export and this script
    assert "train --out runs/fmnist --reduced --seeds 0,1,2 --methods at,trades --jobs 2" in text
    assert "train --out runs/fmnist --reduced --seeds 0 --methods mart,customized-ce --jobs 2" in text
    assert f"export --out runs/fmnist --to {records}`" in text and f"make_results.py {records} --weights" in text
    assert (tmp_path / "site" / "docs" / "img" / "fmnist-eps-curve.png").read_bytes()[:4] == b"\x89PNG"
    # the same records give the same page
    assert _generate(study, tmp_path) == text


def test_each_method_against_at_image_by_image(study, tmp_path):
    text = _generate(study, tmp_path)
    sec = text[text.index("## Each method against AT"):text.index("## Ranking")]

    def cells(b: int, c: int, n: int = TINY_N) -> str:
        p = _two_sided(b, c)
        return f"{100 * (c - b) / n:+.1f} | {b} / {c} | " + (f"**{p:.2g}**" if p < 0.01 else f"{p:.2g}")

    for k in range(3):  # 4 more robust images per seed: p = 0.125, not real alone
        assert _row(sec, f"| trades | seed {k} vs at seed {k} |").endswith(f"| {cells(0, 4)} | {cells(0, 0)} |")
    pooled = _row(sec, "| trades | seeds 0–2 pooled |")
    # the seeds pooled: 0 / 12 discordant over 3 × 40 images, one test
    assert pooled.endswith(f"| {cells(0, 12, 3 * TINY_N)} | {cells(0, 0, 3 * TINY_N)} |") and "**0.00049**" in pooled
    assert _row(sec, "| mart | seed 0 vs at seed 0 |").endswith(f"| {cells(1, 1)} | {cells(0, 0)} |")
    # a real difference in clean accuracy with the same AutoAttack outcome
    assert _row(sec, "| customized-ce | seed 0 vs at seed 0 |").endswith(f"| {cells(0, 0)} | {cells(8, 0)} |")
    summary = _row(sec, "- **AutoAttack**")
    # three seeds, each +4 images: the images decide (pooled) and so do the seeds (all the same way)
    assert ("seed-level p < 0.05): trades +10.0 (images p = 0.00049, pooled over seeds; seeds +10.0, +10.0, "
            "+10.0: seed-level p = 0).") in summary
    assert "the seeds do not decide it: none." in summary
    assert "Not told apart from at: mart +0.0 (images p = 1, seed 0); customized-ce +0.0 (images p = 1, seed 0)." \
        in summary
    # one seed: the two models differ on these images, which does not make it the method's difference
    clean = _row(sec, "- **Clean accuracy**")
    assert "seed-level p < 0.05): none." in clean
    assert "the seeds do not decide it: customized-ce -20.0 (images p = 0.0078, seed 0)." in clean


def test_seeds_of_one_method_are_tested_against_each_other(study, tmp_path):
    text = _generate(study, tmp_path)
    sec = text[text.index("## Seed against seed, the same method"):text.index("## Ranking")]
    # at-s1: 2 robust images fewer than at-s0; at-s2: 1 more (see the study fixture)
    assert _row(sec, "| at | seed 1 − seed 0 |").startswith("| at | seed 1 − seed 0 | -5.0 | 2 / 0 | 0.5 | +0.0 | 0 / 0 | 1 |")
    assert _row(sec, "| at | seed 2 − seed 0 |").startswith("| at | seed 2 − seed 0 | +2.5 | 0 / 1 | 1 |")
    assert _row(sec, "| at | seed 2 − seed 1 |").startswith(f"| at | seed 2 − seed 1 | +7.5 | 0 / 3 | {_two_sided(0, 3):.2g} |")
    assert "| mart |" not in sec  # one seed: nothing to pair


def test_the_seed_level_test_against_hand_computed_values():
    make_results = load_script("docs/make_results.py")
    # df = 1: Student's t is the Cauchy distribution, p = 1 - 2 atan(|t|) / pi
    diffs = [0.034, 0.037]
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(2))
    assert make_results.SeedTest(diffs).p == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-9)
    assert make_results.SeedTest(diffs).p == pytest.approx(0.0269, abs=1e-4)
    assert make_results.SeedTest([-0.007, -0.036]).p == pytest.approx(0.38, abs=0.005)
    assert make_results.SeedTest([0.02, 0.02, 0.02]).p == 0.0  # no spread: as certain as the seeds allow
    assert make_results.SeedTest([0.0, 0.0]).p == 1.0
    assert not make_results.SeedTest([0.03, -0.01]).same_sign


def test_ranking_ties_what_the_paired_test_cannot_tell_apart(study, tmp_path):
    text = _generate(study, tmp_path)
    sec = text[text.index("## Ranking"):text.index("## PGD-20 against")]
    rows = [line.split(" | ") for line in sec.splitlines() if line.startswith("| ") and line[2].isdigit()]
    # leaderboard order trades, mart, customized-ce (same AutoAttack, less clean), at; only the
    # pooled trades-vs-at difference is real, so at alone ranks below the others
    assert [(r[0], r[1]) for r in rows] == [("| 1", "trades"), ("| 1", "mart"), ("| 1", "customized-ce"),
                                             ("| 2", "at")]
    assert rows[0][6] == "mart, customized-ce" and rows[3][6] == "mart, customized-ce"
    assert rows[1][6] == "trades, customized-ce, at"


def test_cards_are_rendered_from_the_records(study, tmp_path):
    cards = tmp_path / "site" / "model_cards" / "runs"
    cards.mkdir(parents=True)
    (cards / "fat-trades-cnn-fmnist-run.md").write_text("stale")
    text = _generate(study, tmp_path)
    assert not (cards / "fat-trades-cnn-fmnist-run.md").exists()  # its method is gone: removed
    card = (cards / "trades-cnn-fmnist-run.md").read_text()
    sha = (study["records"] / "at-s0" / "weights.sha256").read_text().split()[0]
    assert sha in card and "trades-s2" in card  # the best seed: the most robust under AutoAttack
    assert f"--n {TINY_N} --seed 0" in card and "[trades-cnn-fmnist-run.md](../model_cards/runs/" in text
    assert "## Calibrated AT masks" not in text  # no calibrated run


def test_a_protocol_record_that_disagrees_with_the_records_is_named(study):
    """protocol.json is what a reader reruns from: sizes other than the records' are reported."""
    mr = load_script("docs/make_results.py")
    runs = mr.collect(study["records"])
    same = {"reduced_eval": {"n": TINY_N, "aa_n": TINY_N, "sweep_n": TINY_N}}
    assert mr.protocol_mismatch(runs, same) == []
    stale = {"reduced_eval": {"n": TINY_N, "aa_n": 200, "sweep_n": TINY_N}}
    assert mr.protocol_mismatch(runs, stale) == [
        f"protocol.json's reduced_eval says aa_n = 200, the records were evaluated on {TINY_N} images"]


def test_zoo_measured_blocks_follow_the_run_cards(study, tmp_path):
    """The zoo entries citing a run card get its numbers and the commands of that very seed; an
    entry the card cannot stand for is left alone, one whose card is gone loses its block."""
    config = json.loads((study["records"] / "at-s0" / "config.json").read_text())["robustzoo"]

    def entry(name: str, source: str, **kw) -> dict:
        return dict({"name": name, "status": "unpublished", "repo_id": "", "revision": "", "files": {},
                     "architecture": config["config"]["arch"], "dataset": config["dataset"],
                     "threat_model": {"norm": "linf", "eps": config["threat_model"]["eps"]}, "method": "at",
                     "settings": {}, "results": {}, "recipe": "", "card": f"model_cards/{name}.md",
                     "description": "d", "paper": "p", "license": "apache-2.0",
                     "measured": {"protocol": "old", "results": {"clean": 0.5, "pgd20": 0.25},
                                  "counts": {"clean": [1, 2], "pgd20": [1, 4]}, "train": "old", "eval": "old",
                                  "source": source, "health": "passed"}}, **kw)

    index = tmp_path / "site" / "robustzoo" / "zoo" / "index.json"
    index.parent.mkdir(parents=True)
    entries = [entry("at-tiny", "model_cards/runs/at-cnn-fmnist-run.md"),
               entry("at-other-data", "model_cards/runs/at-cnn-fmnist-run.md", dataset="fashion-mnist"),
               entry("fat-gone", "model_cards/runs/fat-trades-cnn-fmnist-run.md", method="fat"),
               entry("elsewhere", "model_cards/runs/at-elsewhere.md")]
    index.write_text(json.dumps({"entries": entries}))
    _generate(study, tmp_path)
    after = {e["name"]: e for e in json.loads(index.read_text())["entries"]}
    card = (tmp_path / "site" / "model_cards" / "runs" / "at-cnn-fmnist-run.md").read_text()
    from robustzoo.cards import front_matter

    rz = front_matter(card)["robustzoo"]
    m = after["at-tiny"]["measured"]
    assert m["counts"] == {a: [r["correct"], r["n"]] for a, r in rz["results"].items()}
    assert m["results"]["clean"] == round(rz["results"]["clean"]["correct"] / TINY_N, 4)
    # the best AT seed (at-s2: one more image robust) is the one the commands rebuild
    assert m["train"].endswith("--seeds 2 --methods at") and m["eval"].endswith("--seeds 2 --methods at")
    assert "seed 2 (the most robust of 3 seeds under AutoAttack" in m["protocol"]
    assert f"on the same {TINY_N:,} test images" in m["protocol"]
    assert after["at-other-data"]["measured"] == entries[1]["measured"]  # a digits card: not copied
    assert "measured" not in after["fat-gone"]
    assert after["elsewhere"]["measured"] == entries[3]["measured"]  # not this study's card
    written = {p.name for p in (tmp_path / "site" / "model_cards").glob("*.md")}
    assert written == {"at-tiny.md", "fat-gone.md"}  # the entries whose block changed
    assert "seed 2" in (tmp_path / "site" / "model_cards" / "at-tiny.md").read_text()


def test_run_directories_serve_as_records(study, tmp_path):
    """The run directories themselves (with their weights, without weights.sha256) give the same
    tables, and the cards name the weights' sha256."""
    text = _generate({"records": study["runs"]}, tmp_path)
    card = (tmp_path / "site" / "model_cards" / "runs" / "at-cnn-fmnist-run.md").read_text()
    assert hashlib.sha256((study["runs"] / "at-s0" / "model.safetensors").read_bytes()).hexdigest() in card
    exported = _generate(study, tmp_path / "exported")
    assert _row(text, "| at-s0 |", "## Every run") == _row(exported, "| at-s0 |", "## Every run")


def test_outcomes_that_do_not_match_the_report_are_not_used(study, tmp_path):
    records = tmp_path / "records"
    shutil.copytree(study["records"], records)
    paper = json.loads((records / "mart-s0" / "eval-paper.json").read_text())
    next(r for r in paper["results"] if r["attack"] == "autoattack")["correct"] += 1
    (records / "mart-s0" / "eval-paper.json").write_text(json.dumps(paper))
    (records / "trades-s1" / "eval_flags.safetensors").unlink()
    text = _generate({"records": records}, tmp_path)
    sec = text[text.index("## Each method against AT"):text.index("## Ranking")]
    assert _row(sec, "| mart | seed 0 vs at seed 0 |").endswith("| — | — | — | — | — | — |")
    assert _row(sec, "| trades | seed 1 vs at seed 1 |").endswith("| — | — | — | — | — | — |")
    assert _row(sec, "| trades | seeds 0–2 pooled |").endswith("| — | — | — | — | — | — |")
    note = _row(sec, "- Not tested")
    assert "mart-s0: eval_flags.safetensors counts" in note and "trades-s1: no eval_flags.safetensors" in note


def test_mask_figures_need_the_weights_and_stay_linked_without(tmp_path):
    """A tiny Calibrated AT run: the β × β1 row from its config, its mask figure drawn from the
    weights, kept and linked without them, refused with weights that are not the measured ones."""
    import robustzoo
    from robustzoo.testing import train_tiny

    runs, records = tmp_path / "runs", tmp_path / "records"
    runs.mkdir()
    # lr 0.01: 300 digits and one epoch give a model that is not degenerate (so it has eval.json)
    run, _ = train_tiny(runs / "cat-cw-b5-0.05-s0", "calibrated", subset=300, steps=2, lr=0.01, attack="cw",
                        beta=5.0, beta1=0.05)
    assert (run / "eval.json").is_file(), "the tiny calibrated run failed its health checks"
    report = robustzoo.evaluate(run, "clean,pgd20", n=16)  # no AutoAttack: ranked by PGD-20
    (run / "eval-paper.json").write_text(json.dumps(report))
    zoo.export_runs(runs, records)
    study = {"records": records}
    text = _generate(study, tmp_path)
    assert "**cat-cw-b5-0.05** (`cat-cw-b5-0.05-s0`): no figure of these weights yet" in text
    assert _row(text, "| cat-cw-b5-0.05 |", "## Calibrated AT: β").startswith(
        "| cat-cw-b5-0.05 | CW (CATcw) | 5 | 0.05 | 1 |")
    assert "| PGD-20 | — |" in _row(text, "| 1 | cat-cw-b5-0.05 |")
    assert "and no AutoAttack on the same 16 test images" in text
    text = _generate(study, tmp_path, "--weights", str(runs))
    img = tmp_path / "site" / "docs" / "img"
    info = json.loads((img / "fmnist-masks.json").read_text())["cat-cw-b5-0.05"]
    assert (img / "fmnist-masks-cat-cw-b5-0.05.png").read_bytes()[:4] == b"\x89PNG"
    line = f"**cat-cw-b5-0.05** (`cat-cw-b5-0.05-s0`, best epoch 1): mean of M over these 8 test images " \
           f"{info['mask_mean']:.3f}."
    assert line in text and "![cat-cw-b5-0.05 masks](img/fmnist-masks-cat-cw-b5-0.05.png)" in text
    assert _generate(study, tmp_path) == text  # without the weights: the figure kept and linked
    other = tmp_path / "other"
    shutil.copytree(runs, other)
    (other / "cat-cw-b5-0.05-s0" / "model.safetensors").write_bytes(
        (other / "cat-cw-b5-0.05-s0" / "last.safetensors").read_bytes()[:-1] + b" ")
    mr = load_script("docs/make_results.py")
    assert mr.main([str(records), "--into", str(tmp_path / "site"), "--weights", str(other)]) == 1


def test_the_training_evaluation_is_found_in_the_history(tmp_path):
    mr = load_script("docs/make_results.py")
    run = tmp_path / "run"
    (run / "evals").mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"n": 8, "results": [], "source": "eval"}))
    (run / "evals" / "b.json").write_text(json.dumps({"n": 8, "results": [], "source": "eval"}))
    assert mr.training_eval(run) is None  # a later evaluation is not the training's
    (run / "evals" / "a.json").write_text(json.dumps({"n": 360, "results": [], "migrated": True}))
    assert mr.training_eval(run)["n"] == 360  # migrated from the first eval.json: the training's
    (run / "evals" / "c.json").write_text(json.dumps({"n": 100, "results": [], "source": "train"}))
    assert mr.training_eval(run)["n"] == 100


def test_bad_records_are_one_line_errors(tmp_path, capsys, study):
    mr = load_script("docs/make_results.py")
    assert mr.main([str(tmp_path / "missing")]) == 1
    (tmp_path / "empty").mkdir()
    assert mr.main([str(tmp_path / "empty")]) == 1
    records = tmp_path / "records"
    shutil.copytree(study["records"] / "at-s0", records / "at-s0")
    (records / "at-s0" / "eval-paper.json").write_text("{")
    assert mr.main([str(records), "--into", str(tmp_path / "site")]) == 1
    assert mr.main([str(study["records"]), "--into", str(tmp_path / "site"), "--weights", str(tmp_path / "no")]) == 1
    twins = tmp_path / "twins"
    for name in ("at-s0", "at-s0-again"):
        shutil.copytree(study["records"] / "at-s0", twins / name)
    assert mr.main([str(twins), "--into", str(tmp_path / "site")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(e.startswith("error: ") for e in err), err
    assert "fmnist_zoo.py export" in err[0] and "fmnist_zoo.py export" in err[1]
    assert "eval-paper.json is not valid JSON" in err[2] and "--weights" in err[3]
    assert "both at with seed 0" in err[4]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


def test_study_status_says_what_is_left(tmp_path):
    """`fmnist_zoo.py status`: each planned run's state and the commands that finish the study."""
    evaluated = _fake_run(tmp_path, "at-s0")
    for name in ("eval-paper.json", "eval-sweep.json"):
        (evaluated / name).write_text("{}")
    _fake_run(tmp_path, "trades-s0")
    _fake_run(tmp_path, "at-s1", finished=False)
    status = zoo.study_status(tmp_path)
    assert len(status) == sum(len(s) for s in zoo.STUDY.values())
    assert (status["at-s0"], status["trades-s0"], status["at-s1"], status["at-s2"]) == (
        "evaluated", "trained", "training", "not started")
    cmds = zoo.remaining_commands(tmp_path, reduced=True)
    seed1 = next(c for c in cmds if "--seeds 1 " in c)
    assert "at," in seed1 and "--reduced" in seed1  # the partial at-s1 is resumed by train
    assert "--methods trades," not in next(c for c in cmds if "--seeds 0 " in c)
    assert cmds[-1].startswith("python benchmarks/fmnist_zoo.py eval")


def test_page_says_which_planned_runs_are_missing(study, tmp_path):
    """With study.json (written by export) the page states how much of the plan its tables cover,
    and says nothing once every planned run is evaluated."""
    records = tmp_path / "records"
    shutil.copytree(study["records"], records)
    plan = {"at": [0, 1, 2], "trades": [0, 1, 2], "mart": [0], "customized-ce": [0]}
    (records / "study.json").write_text(json.dumps({"plan": plan}))
    assert "## Study status" not in _generate({"records": records}, tmp_path / "a")
    (records / "study.json").write_text(json.dumps({"plan": dict(plan, **{"cat-cw": [0], "at": [0, 1, 2, 3]})}))
    text = _generate({"records": records}, tmp_path / "b")
    assert "**The study is not finished: 8 of its 10 planned runs are evaluated**" in text
    assert _row(text, "| `at` |", "## Study status") == "| `at` | 0, 1, 2, 3 | 0, 1, 2 | — | 3 |"
    assert _row(text, "| `cat-cw` |", "## Study status") == "| `cat-cw` | 0 | — | — | 0 |"
    assert "--seeds 0 --methods cat-cw --jobs 2`" in text and "--seeds 3 --methods at --jobs 2`" in text
