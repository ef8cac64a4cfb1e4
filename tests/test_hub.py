"""Push, pull, verify and evaluate through the real huggingface_hub client and a local Hub server."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from helpers import run_cli
from huggingface_hub import HfApi, ModelCard

from robustzoo import api, cards, hub, runs
from robustzoo.errors import HubError, IntegrityError, NotFoundError, RunError, UsageError
from robustzoo.testing import fixtures
from robustzoo.testing.fixtures import TEST_TOKEN

# The fixture kit plugin authors use (robustzoo.testing.fixtures), bound here for pytest.
hub_client_settings = fixtures.hub_client_settings
hub_server = fixtures.hub_server
hf_cache = fixtures.hf_cache
hub_offline = fixtures.hub_offline
zoo_plugin = fixtures.zoo_plugin

REPO = "robustzoo-test/tiny-at"




def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """A non-zero exit with exactly one 'error:' line (no traceback) containing ``needles``."""
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def evaluated_run(at_run, tmp_path_factory) -> Path:
    """The shared tiny AT run evaluated on the whole digits test set: a publishable record.

    (Its training evaluated only 64 images, which ``push`` refuses as a partial protocol.)
    """
    dst = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(at_run, dst)
    api.evaluate(dst, "clean,pgd20")
    return dst


@pytest.fixture
def run_dir(evaluated_run, tmp_path) -> Path:
    """A private copy of the evaluated tiny AT run (with its eval.json)."""
    dst = tmp_path / "run"
    shutil.copytree(evaluated_run, dst)
    return dst


@pytest.fixture
def aux_run(run_dir) -> Path:
    """The run with an aux.safetensors, as Calibrated AT (mask net) or Customized AT (ε table) write."""
    runs.save_weights(run_dir / runs.AUX_FILE, {"state.eps": torch.linspace(0, 0.1, 7)}, {"format": "1"})
    return run_dir


@pytest.fixture
def pushed(aux_run, hub_server):
    """The aux run published to the test server: (run_dir, PushResult)."""
    return aux_run, hub.push(aux_run, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)


def pinned_entry(res, name: str = "tiny-at-digits", files: dict[str, str] | None = None) -> dict:
    entry = dict(res.zoo_entry)
    entry.update(name=name, card=f"model_cards/{name}.md", recipe="at-cnn-fmnist")
    if files is not None:
        entry["files"] = files
    return entry


# -- push ----------------------------------------------------------------------------------

def test_push_uploads_everything_in_one_commit(pushed, hub_server):
    run_dir, res = pushed
    commits = hub_server.commits(REPO)
    assert commits[0] == res.revision and len(commits) == 2  # the repo's initial commit + ours
    assert len(res.revision) == 40
    assert [m for m, p in hub_server.requests if p.endswith("/commit/main")] == ["POST"]
    # No robustbench.json: the tiny run has no AutoAttack result, which RobustBench ranks by.
    assert set(res.files) == {"config.json", "model.safetensors", "aux.safetensors", "README.md"}
    for name in ("config.json", "model.safetensors", "aux.safetensors"):
        assert res.files[name]["sha256"] == sha256(run_dir / name)
        assert res.files[name]["size"] == (run_dir / name).stat().st_size
    listed = HfApi(endpoint=hub_server.endpoint).list_repo_files(REPO, revision=res.revision)
    assert set(listed) >= set(res.files)
    # The suggested zoo entry pins exactly this commit and these bytes.
    assert res.zoo_entry["revision"] == res.revision
    assert res.zoo_entry["files"] == {k: v["sha256"] for k, v in res.files.items()}


def test_card_parses_back_with_modelcard(pushed, hub_server, hf_cache):
    """The pushed card round-trips through huggingface_hub: ModelCard.load, then the model-index
    through model_index_to_eval_results. Robust results have their own metric type, the attack
    and the threat model in args, and every result names robustzoo and its version as source."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    import robustzoo

    run_dir, res = pushed
    path = hub.pull(f"hf-hub:{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert sha256(path / "README.md") == res.files["README.md"]["sha256"]
    card = ModelCard.load(path / "README.md")
    text = card.content
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == REPO
    assert [(r.metric_type, r.metric_value) for r in results] == [
        (r.metric_type, r.metric_value) for r in card.data.eval_results]
    report = json.loads((run_dir / "eval.json").read_text())
    attacks = [r["attack"] for r in report["results"]]
    assert len(results) == len(attacks) + 1  # one per attack, plus the worst case
    for er in results:
        assert er.source_name == f"robustzoo {robustzoo.__version__}"
        assert er.source_url == f"{hub_server.endpoint}/{REPO}"
    for er, r in zip(results, report["results"]):
        assert er.metric_value == round(100 * r["accuracy"], 2)
        assert er.metric_args["n"] == r["n"] and er.metric_args["seed"] == report["seed"]
        assert er.dataset_split == "test" and er.task_type == "image-classification"
        if r["attack"] == "clean":
            assert er.metric_type == "accuracy"
            assert er.metric_name == "Clean accuracy" and er.metric_config == "clean"
            assert "norm" not in er.metric_args
        else:
            assert er.metric_type == "robust_accuracy"
            assert er.metric_name == f"Robust accuracy ({cards.attack_label(r['attack'])})"
            assert er.metric_config == f"{r['attack']}/linf/{cards.eps_text(report['eps']).replace('/', '-')}"
            assert er.metric_args["attack"] == r["attack"]
            assert er.metric_args["eps"] == report["eps"] and er.metric_args["norm"] == "linf"
            assert er.metric_args["threat_model"] == {"norm": "linf", "eps": report["eps"],
                                                       "eps_text": cards.eps_text(report["eps"])}
            assert er.metric_args["version"]
    worst = results[-1]
    assert worst.metric_type == "robust_accuracy" and worst.metric_args["attack"] == "worst-case"
    assert worst.metric_value == round(100 * report["worst_case"]["accuracy"], 2)
    data = card.data.to_dict()
    assert data["library_name"] == "robustzoo" and data["pipeline_tag"] == "image-classification"
    assert data["metrics"] == ["accuracy", "robust_accuracy"]
    assert {"robustzoo", "adversarial-robustness", "adversarial-training", "at", "linf"} <= set(data["tags"])
    rz = data["robustzoo"]
    assert rz["architecture"] == "cnn_mnist" and rz["method"] == "at" and rz["dataset"] == "digits"
    assert rz["status"] == "published" and rz["repo_id"] == REPO
    assert rz["extra_data"] is False and rz["input_range"] == [0, 1]
    assert rz["sha256"] == {f: v["sha256"] for f, v in res.files.items() if f != "README.md"}
    assert sha256(run_dir / "model.safetensors") in text
    assert "empirical robustness under the listed attacks only" in text.lower()
    # Every setting needed to retrain is on the card.
    assert cards.retrain_command(json.loads((run_dir / "config.json").read_text())["robustzoo"]["config"]) \
        in text


def test_card_shows_health_and_suspect_results(run_dir):
    from robustzoo.eval import apply_health

    cfg = json.loads((run_dir / "config.json").read_text())
    report = apply_health(json.loads((run_dir / "eval.json").read_text()))  # the real health report
    report["results"][-1].update(suspect=True, suspect_because=["pgd_vs_apgd"])
    text = cards.render_run_card(cfg, report, repo_id=REPO, files={"model.safetensors": "0" * 64})
    assert report["health"]["checks"]
    for check in report["health"]["checks"]:
        assert f"| {check['name']} | {check['status']} |" in text
    attack = report["results"][-1]["attack"]
    assert f"**{cards.attack_label(attack)} is suspect** (pgd_vs_apgd)" in text
    card = ModelCard(text)
    args = card.data.eval_results[len(report["results"]) - 1].metric_args
    assert args["suspect"] is True and args["suspect_because"] == ["pgd_vs_apgd"]
    rz = card.data.to_dict()["robustzoo"]
    assert rz["suspect_attacks"] == [attack] and rz["health"]["status"] == report["health"]["status"]


def test_card_of_a_merged_report_names_each_sample_size(run_dir):
    """Gradient attacks on n images and AutoAttack on fewer: each row keeps its own n, and the
    card gives one reproduce command per sample size instead of claiming one n for all."""
    cfg = json.loads((run_dir / "config.json").read_text())
    report = json.loads((run_dir / "eval.json").read_text())
    big = report["n"]
    small = {"attack": "autoattack", "accuracy": 0.5, "correct": 5, "n": 10, "ci95": [0.2, 0.8],
             "settings": {"eps": report["eps"]}}
    report["results"].append(small)
    report["worst_case"] = {"accuracy": 0.5, "correct": 5, "n": 10, "ci95": [0.2, 0.8],
                            "attacks": ["autoattack"]}
    text = cards.render_run_card(cfg, report, repo_id=REPO, files={"model.safetensors": "0" * 64})
    first = [r["attack"] for r in report["results"][:-1]]
    assert f"--attacks {','.join(first)} --n {big} --seed" in text
    assert "--attacks autoattack --n 10 --seed" in text
    assert f"clean accuracy on {big} images" in text and "on 10 images" in text
    assert f"{big} or 10" in text or f"10 or {big}" in text
    assert "| 5/10 |" in text


def test_retrain_command_reproduces_the_config(run_dir):
    import shlex

    from robustzoo.config import parse_set_options
    from robustzoo.train import build_config, resolve

    config = json.loads((run_dir / "config.json").read_text())["robustzoo"]["config"]
    argv = shlex.split(cards.retrain_command(config))
    assert argv[:2] == ["robustzoo", "train"]
    objective = argv[argv.index("--objective") + 1]
    sets = parse_set_options([argv[i + 1] for i, a in enumerate(argv) if a == "--set"])
    again = resolve(build_config(objective, None, sets)).config.to_dict()
    for key in ("device", "data_dir"):
        again.pop(key), config.pop(key)
    assert again == config


def test_push_cli_prints_commit_and_hashes(run_dir, hub_server, capsys):
    code, out, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                              "--token", TEST_TOKEN, "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["revision"] == hub_server.commits(REPO)[0]
    assert data["files"]["model.safetensors"]["sha256"] == sha256(run_dir / "model.safetensors")
    assert "aux.safetensors" not in data["files"]
    from robustzoo.zoo import validate_entry

    assert validate_entry(data["zoo_entry"]) == []  # paste-ready for the index
    code, out, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                              "--token", TEST_TOKEN], capsys)
    assert code == 0, err
    assert hub_server.commits(REPO)[0] in out and sha256(run_dir / "model.safetensors") in out


def test_push_refuses_a_run_without_eval_json(run_dir, hub_server, capsys):
    (run_dir / "eval.json").unlink()
    code, _, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                            "--token", TEST_TOKEN], capsys)
    assert_one_line_error(code, err, "eval.json", f"robustzoo eval {run_dir} --suite paper")
    assert hub_server.requests == []  # refused before any upload


def test_second_push_removes_files_the_run_no_longer_has(pushed, hub_server):
    run_dir, first = pushed
    (run_dir / runs.AUX_FILE).unlink()
    second = hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)
    api_ = HfApi(endpoint=hub_server.endpoint)
    assert "aux.safetensors" not in api_.list_repo_files(REPO, revision=second.revision)
    assert "aux.safetensors" in api_.list_repo_files(REPO, revision=first.revision)
    assert len(hub_server.commits(REPO)) == 3


def test_push_rejects_bad_repo_id_and_foreign_architecture(run_dir, hub_server):
    with pytest.raises(UsageError, match="org/name"):
        hub.push(run_dir, "no-slash", endpoint=hub_server.endpoint, token=TEST_TOKEN)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["architecture"] = "timm/resnet18"
    runs.write_json(run_dir / "config.json", cfg)
    with pytest.raises(RunError, match="not a registered robustzoo architecture"):
        hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)


# -- pull ----------------------------------------------------------------------------------

def test_push_pull_eval_round_trip(pushed, hub_server, hf_cache):
    run_dir, res = pushed
    out = hub.pull_model(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache, verify=True)
    assert out.revision == res.revision  # 'main' was resolved to the commit sha first
    assert out.path == hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / res.revision
    for name in ("config.json", "model.safetensors", "aux.safetensors", "README.md"):
        assert out.files[name] == res.files[name]["sha256"] == sha256(out.path / name)
        # Every file but the card itself is also checked against the card's sha256 list.
        assert out.checked[name] == ("server hash" if name == "README.md" else "server hash + card sha256")
    # Downloads asked for fixed names, by commit sha; config.json by the branch, so that the
    # cache records branch -> commit for offline pulls (checked to be the same commit).
    gets = [p for m, p in hub_server.requests if m == "GET" and "/resolve/" in p]
    assert gets and all(f"/resolve/{res.revision}/" in p or p.endswith("/resolve/main/config.json")
                        for p in gets)
    here = api.evaluate(run_dir, ["clean"], write=False, health=False)
    there = api.evaluate(f"hf-hub:{REPO}", ["clean"], endpoint=hub_server.endpoint, cache_dir=str(hf_cache),
                         health=False)
    assert there["results"][0]["accuracy"] == here["results"][0]["accuracy"]
    assert there["n"] == here["n"]
    assert not (out.path / "eval.json").exists()  # evaluating a pulled model never writes into the cache


def test_pull_is_served_from_the_cache_when_the_server_is_gone(pushed, hub_server, hf_cache, zoo_plugin):
    _, res = pushed
    zoo_plugin(pinned_entry(res))
    first = hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert hub.pull("tiny-at-digits", endpoint=hub_server.endpoint, cache_dir=hf_cache) == first
    n = len(hub_server.requests)
    # A pinned commit that is cached makes no request at all.
    assert hub.pull(f"{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache) == first
    assert len(hub_server.requests) == n
    hub_server.stop()
    again = hub.pull_model(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert again.path == first and again.offline and again.revision == res.revision
    pinned = hub.pull_model("tiny-at-digits", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert pinned.path == first and all(c.startswith("pinned sha256") for c in pinned.checked.values())
    model = api.load("tiny-at-digits", endpoint=hub_server.endpoint, cache_dir=str(hf_cache))
    assert not model.training


def test_pinned_alias_checks_every_sha256(pushed, hub_server, hf_cache, zoo_plugin, capsys):
    _, res = pushed
    zoo_plugin(pinned_entry(res))
    code, out, err = run_cli(["pull", "tiny-at-digits", "--endpoint", hub_server.endpoint,
                              "--cache-dir", str(hf_cache), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["revision"] == res.revision and data["files"] == res.zoo_entry["files"]
    assert all(c.startswith("pinned sha256") for c in data["checked"].values())
    assert data["checked"]["model.safetensors"] == "pinned sha256 + server hash + card sha256"
    code, out, err = run_cli(["pull", "tiny-at-digits", "--endpoint", hub_server.endpoint,
                              "--cache-dir", str(hf_cache)], capsys)
    assert code == 0 and out.strip() == data["path"]


def test_tampered_file_is_refused(pushed, hub_server, hf_cache, zoo_plugin, capsys):
    run_dir, res = pushed
    zoo_plugin(pinned_entry(res))
    good = (run_dir / "model.safetensors").read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 0xFF  # same length: the client's size check cannot notice
    hub_server.tamper(REPO, "model.safetensors", bytes(bad))
    code, _, err = run_cli(["pull", "tiny-at-digits", "--endpoint", hub_server.endpoint,
                            "--cache-dir", str(hf_cache)], capsys)
    line = assert_one_line_error(code, err, "model.safetensors", hashlib.sha256(bad).hexdigest(),
                                 res.files["model.safetensors"]["sha256"])
    assert "pins" in line
    snapshot = hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / res.revision
    assert not (snapshot / "model.safetensors").exists()  # evicted: never served from the cache later
    with pytest.raises(IntegrityError):
        api.load("tiny-at-digits", endpoint=hub_server.endpoint, cache_dir=str(hf_cache))
    # Without a pin, the hash the server announced (the LFS sha256) still catches it.
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)


def test_branch_moves_but_a_pin_does_not(pushed, hub_server, hf_cache):
    run_dir, first = pushed
    tensors, meta = runs.read_weights(run_dir / "model.safetensors")
    runs.save_weights(run_dir / "model.safetensors", {k: v + 1 if v.is_floating_point() else v
                                                      for k, v in tensors.items()}, {"epoch": 99})
    second = hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)
    assert second.revision != first.revision
    old = hub.pull_model(f"hf-hub:{REPO}", revision=first.revision, endpoint=hub_server.endpoint,
                         cache_dir=hf_cache)
    new = hub.pull_model(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert old.files["model.safetensors"] == first.files["model.safetensors"]["sha256"]
    assert new.files["model.safetensors"] == second.files["model.safetensors"]["sha256"]


@pytest.mark.parametrize("case", ["repo", "revision", "file", "unpublished", "unknown-alias", "offline",
                                  "cache-is-a-file"])
def test_pull_errors_are_one_line(case, run_dir, hub_server, hf_cache, zoo_plugin, monkeypatch, capsys):
    ep = ["--endpoint", hub_server.endpoint, "--cache-dir", str(hf_cache)]
    if case == "cache-is-a-file":
        # The cache on this machine, not the network: named as such, not "cannot reach".
        hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)
        (afile := hf_cache.parent / "afile").write_text("not a folder")
        args = ["pull", f"hf-hub:{REPO}", "--endpoint", hub_server.endpoint, "--cache-dir", str(afile / "hub")]
        code, _, err = run_cli(args, capsys)
        assert_one_line_error(code, err, "cannot write", "HF_HOME (or --cache-dir)")
        assert "cannot reach" not in err
        return
    if case == "repo":
        args, needles = ["pull", "hf-hub:nobody/nothing", *ep], ["nobody/nothing", "no Hub repo"]
    elif case == "revision":
        hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)
        args, needles = ["pull", f"hf-hub:{REPO}@no-such-branch", *ep], ["no-such-branch", "no such revision"]
    elif case == "file":
        # A repo that is not a robustzoo model: no model.safetensors.
        HfApi(endpoint=hub_server.endpoint, token=TEST_TOKEN).create_repo("other/model")
        HfApi(endpoint=hub_server.endpoint, token=TEST_TOKEN).upload_file(
            path_or_fileobj=(run_dir / "config.json").read_bytes(), path_in_repo="config.json",
            repo_id="other/model")
        args, needles = ["pull", "hf-hub:other/model", *ep], ["model.safetensors", "robustzoo push"]
    elif case == "unpublished":
        args, needles = ["pull", "cat-cw-wrn34", *ep], [
            "no published weights yet", "robustzoo train --recipe cat-cw-wrn34"]
    elif case == "unknown-alias":
        args, needles = ["pull", "cat-cw-wrn43", *ep], ["unknown zoo alias", "cat-cw-wrn34"]
    else:
        res = hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        args, needles = ["pull", f"hf-hub:{REPO}@{res.revision}", *ep], ["not in the cache", "offline"]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, *needles)


def test_offline_branch_without_cache_and_with_cache(pushed, hub_server, hf_cache, hub_offline):
    _, res = pushed
    with pytest.raises(HubError, match="offline mode is on"):
        hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    # Also offline: a cache filled while online serves both the branch and the pinned commit.
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    path = hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    n = len(hub_server.requests)
    assert hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache) == path
    assert hub.pull(f"hf-hub:{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache) == path
    assert len(hub_server.requests) == n


def test_pull_refuses_foreign_architectures_without_executing_anything(run_dir, hub_server, hf_cache):
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["architecture"] = "resnet50"  # a timm model: robustzoo only builds its registered nets
    api_ = HfApi(endpoint=hub_server.endpoint, token=TEST_TOKEN)
    api_.create_repo("evil/model")
    from huggingface_hub import CommitOperationAdd

    api_.create_commit("evil/model", [
        CommitOperationAdd("config.json", json.dumps(cfg).encode()),
        CommitOperationAdd("model.safetensors", str(run_dir / "model.safetensors")),
        CommitOperationAdd("modeling.py", b"raise SystemExit('executed!')\n"),
        CommitOperationAdd("pytorch_model.bin", b"not a pickle we would ever read"),
    ], commit_message="x")
    with pytest.raises(RunError, match="'resnet50', which is not a registered robustzoo architecture"):
        hub.pull("hf-hub:evil/model", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    asked = {p.rsplit("/", 1)[-1] for m, p in hub_server.requests if "/resolve/" in p}
    assert asked <= {"config.json", "model.safetensors", "aux.safetensors", "README.md"}


def test_parse_name_rejects_bad_names():
    with pytest.raises(UsageError, match="revision"):
        hub.parse_name("hf-hub:org/name@../../etc")
    with pytest.raises(UsageError, match="give one"):
        hub.parse_name("hf-hub:org/name@a", revision="b")
    with pytest.raises(NotFoundError, match="not a run directory"):
        hub.parse_name("hf-hub:a/b/c")
    t = hub.parse_name("org/name@v1.0")
    assert (t.repo_id, t.revision, t.entry) == ("org/name", "v1.0", None)
    assert hub.parse_name("hf-hub:org/name").revision == "main"


def test_alias_pins_refuse_another_revision(pushed, zoo_plugin):
    _, res = pushed
    zoo_plugin(pinned_entry(res))
    with pytest.raises(UsageError, match="pinned to commit"):
        hub.parse_name("tiny-at-digits", revision="main")
    broken = pinned_entry(res, name="tiny-broken")
    broken["revision"] = "main"
    zoo_plugin(broken)
    with pytest.raises(RunError, match="40-hex"):
        hub.parse_name("tiny-broken")


def test_eval_cli_accepts_alias_and_hub_id(pushed, hub_server, hf_cache, zoo_plugin, capsys):
    run_dir, res = pushed
    zoo_plugin(pinned_entry(res))
    ep = ["--endpoint", hub_server.endpoint, "--cache-dir", str(hf_cache)]
    quick = ["--attacks", "clean", "--no-health", "--json", "-", *ep]
    code, out, err = run_cli(["eval", "tiny-at-digits", *quick], capsys)
    assert code == 0, err
    local = api.evaluate(run_dir, ["clean"], write=False, health=False)
    assert json.loads(out)["results"][0]["accuracy"] == local["results"][0]["accuracy"]
    code, out, err = run_cli(["eval", f"hf-hub:{REPO}@{res.revision}", *quick], capsys)
    assert code == 0, err
    assert json.loads(out)["results"][0]["accuracy"] == local["results"][0]["accuracy"]
    code, _, err = run_cli(["eval", "cat-cw-wrn34", *quick], capsys)
    assert_one_line_error(code, err, "no published weights yet")


# -- timm interop --------------------------------------------------------------------------

def test_timm_create_model_loads_a_published_model(pushed, hub_server, hf_cache, monkeypatch):
    """timm has no endpoint argument: it uses huggingface_hub's import-time ENDPOINT, so point
    that (and the URL template derived from it) at the test server."""
    import timm

    run_dir, res = pushed
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    ref, _ = runs.load_run(run_dir)
    x = torch.rand(5, 1, 8, 8)
    model = timm.create_model(f"hf-hub:{REPO}", pretrained=True, cache_dir=str(hf_cache)).eval()
    torch.testing.assert_close(model(x), ref(x))


def test_timm_loads_a_pulled_model_offline(pushed, hub_server, hf_cache, monkeypatch):
    """The other route: `robustzoo pull` fills the cache; timm then reads the pinned commit
    from it with HF_HUB_OFFLINE semantics and makes no request."""
    import timm

    run_dir, res = pushed
    hub.pull(f"hf-hub:{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    hub_server.stop()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ref, _ = runs.load_run(run_dir)
    x = torch.rand(5, 1, 8, 8)
    model = timm.create_model(f"hf-hub:{REPO}@{res.revision}", pretrained=True, cache_dir=str(hf_cache)).eval()
    torch.testing.assert_close(model(x), ref(x))


def test_metric_slugs_and_labels_are_stable():
    assert cards.eps_text(8 / 255) == "8/255" and cards.eps_text(0.1) == "0.1"
    assert cards.metric_slug("pgd20", "linf", 8 / 255) == "pgd20/linf/8-255"
    assert cards.metric_slug("autoattack", "linf", 8 / 255, "standard") == "autoattack-standard/linf/8-255"
    assert cards.metric_slug("clean", "linf", 0.3) == "clean"
    assert cards.attack_label("cw") == "CW∞" and cards.attack_label("my-attack") == "my-attack"


def test_pushed_entry_and_card_pass_the_zoo_checks(run_dir, hub_server, hf_cache):
    """The maintainer flow of docs/zoo.md: push --alias, paste zoo_entry, keep the README card."""
    from robustzoo.plugins import registry
    from robustzoo.zoo import ZooEntry, validate_entry

    res = hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN, alias="at-cnn-digits")
    entry = res.zoo_entry  # as printed by `push --json`: valid without any editing
    known = {k: registry(k).list() for k in ("architectures", "datasets", "objectives", "recipes")}
    assert validate_entry(entry, known) == []
    # The tiny run was trained without a recipe: the entry carries the command that retrains it.
    config = json.loads((run_dir / "config.json").read_text())["robustzoo"]["config"]
    assert entry["recipe"] == cards.retrain_command(config) and entry["recipe"].startswith("robustzoo train ")
    assert entry["status"] == "published" and entry["card"] == "model_cards/at-cnn-digits.md"
    report = json.loads((run_dir / "eval.json").read_text())
    assert entry["results"] == {r["attack"]: r["accuracy"] for r in report["results"]}
    assert entry["evaluation"]["counts"] == {r["attack"]: [r["correct"], r["n"]] for r in report["results"]}
    assert entry["evaluation"]["health"] == report["health"]["status"]
    path = hub.pull(f"hf-hub:{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    meta = cards.front_matter((path / "README.md").read_text(encoding="utf-8"))
    rz = meta["robustzoo"]
    e = ZooEntry.from_dict(entry)
    assert (rz["alias"], rz["architecture"], rz["dataset"], rz["method"]) == (
        e.name, e.architecture, e.dataset, e.method)
    assert rz["sha256"]["model.safetensors"] == e.files["model.safetensors"]


def test_stored_tokens_only_go_to_huggingface_co():
    assert hub._token_for("http://127.0.0.1:8080", None) is False
    assert hub._token_for("http://127.0.0.1:8080", "explicit") == "explicit"
    assert hub._token_for("https://huggingface.co", None) is None


# -- integrity of pulls by repo id ----------------------------------------------------------

def _swap_weights(run_dir: Path, hub_server, announce: bool = True) -> bytes:
    """Serve other bytes (same length) for model.safetensors under the same commit sha."""
    bad = bytearray((run_dir / "model.safetensors").read_bytes())
    bad[-1] ^= 0xFF
    hub_server.tamper(REPO, "model.safetensors", bytes(bad), announce=announce)
    return bytes(bad)


def test_blob_swapped_under_the_same_commit_is_refused(pushed, hub_server, hf_cache, capsys):
    """A server (or its storage) that swaps the weights and announces the new hash passes the
    size and ETag checks; the sha256 list of the card of the same commit catches it."""
    run_dir, res = pushed
    bad = _swap_weights(run_dir, hub_server)
    code, _, err = run_cli(["pull", f"hf-hub:{REPO}@{res.revision}", "--endpoint", hub_server.endpoint,
                            "--cache-dir", str(hf_cache)], capsys)
    assert_one_line_error(code, err, "model.safetensors", hashlib.sha256(bad).hexdigest(),
                          res.files["model.safetensors"]["sha256"], "model card")
    snapshot = hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / res.revision
    assert not (snapshot / "model.safetensors").exists()  # the whole commit is evicted from the cache
    with pytest.raises(IntegrityError, match="model card"):  # and again: never served from the cache
        hub.pull(f"hf-hub:{REPO}", endpoint=hub_server.endpoint, cache_dir=hf_cache)


def test_timm_hub_route_goes_through_the_same_checks(pushed, hub_server, hf_cache, monkeypatch):
    import timm

    run_dir, _ = pushed
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    _swap_weights(run_dir, hub_server)
    with pytest.raises(IntegrityError, match="model card"):
        timm.create_model(f"hf-hub:{REPO}", pretrained=True, cache_dir=str(hf_cache))


def test_expect_sha256_pins_files_from_a_script(pushed, hub_server, hf_cache, capsys):
    run_dir, res = pushed
    ep = ["--endpoint", hub_server.endpoint, "--cache-dir", str(hf_cache)]
    good = res.files["model.safetensors"]["sha256"]
    code, out, err = run_cli(["pull", f"hf-hub:{REPO}", "--expect-sha256", good, "--expect-sha256",
                              f"config.json={res.files['config.json']['sha256']}", "--json", *ep], capsys)
    assert code == 0, err
    checked = json.loads(out)["checked"]
    assert checked["model.safetensors"] == "expected sha256 + server hash + card sha256"
    assert checked["config.json"].startswith("expected sha256")
    code, _, err = run_cli(["pull", f"hf-hub:{REPO}", "--expect-sha256", "0" * 64, *ep], capsys)
    assert_one_line_error(code, err, "--expect-sha256 says " + "0" * 64, good)
    code, _, err = run_cli(["pull", f"hf-hub:{REPO}", "--expect-sha256", "modle.safetensors=" + good, *ep],
                           capsys)
    assert_one_line_error(code, err, "modle.safetensors", "model.safetensors")
    code, _, err = run_cli(["pull", f"hf-hub:{REPO}", "--expect-sha256", "abc", *ep], capsys)
    assert_one_line_error(code, err, "64 hex digits")


def test_a_repo_without_a_robustzoo_card_loads_with_one_note(run_dir, hub_server, hf_cache, capsys):
    """Nothing vouches for a repo without a robustzoo card (a timm push, a repo made by hand):
    it is pulled with one note saying so, its files checked against the server's hashes only;
    a pin from the caller vouches for it."""
    from huggingface_hub import CommitOperationAdd

    from robustzoo.errors import UnvouchedModelWarning

    api_ = HfApi(endpoint=hub_server.endpoint, token=TEST_TOKEN)
    api_.create_repo("other/bare")
    api_.create_commit("other/bare", [
        CommitOperationAdd("config.json", str(run_dir / "config.json")),
        CommitOperationAdd("model.safetensors", str(run_dir / "model.safetensors")),
    ], commit_message="by hand")
    with pytest.warns(UnvouchedModelWarning, match="no robustzoo record vouches for other/bare@"):
        res = hub.pull_model("hf-hub:other/bare", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    assert res.vouched_by == "" and res.checked["model.safetensors"] == "server hash"
    code, out, err = run_cli(["pull", "hf-hub:other/bare", "--endpoint", hub_server.endpoint,
                              "--cache-dir", str(hf_cache)], capsys)
    assert code == 0 and out.strip() == str(res.path)
    assert [ln for ln in err.splitlines() if "vouches" in ln] == [
        f"warning: {res.note}"]
    pinned = hub.pull_model("hf-hub:other/bare", endpoint=hub_server.endpoint, cache_dir=hf_cache,
                            expect_sha256={"model.safetensors": sha256(run_dir / "model.safetensors")})
    assert pinned.checked["model.safetensors"] == "expected sha256 + server hash"
    assert pinned.vouched_by == "expected sha256" and pinned.note == ""


def test_robustbench_record_is_published_only_with_autoattack(pushed, hub_server, hf_cache, capsys):
    """RobustBench ranks by AutoAttack and reads its numbers as floats: a run evaluated without
    it gets no robustbench.json (and the push says why); with it, the record is in the commit."""
    from robustzoo.robustbench import robustbench_record

    run_dir, res = pushed
    assert "robustbench.json" not in res.files  # the tiny run was evaluated with clean, PGD-20
    code, _, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                            "--token", TEST_TOKEN], capsys)
    assert code == 0 and "note: no robustbench.json" in err and "--suite autoattack" in err
    report = json.loads((run_dir / "eval.json").read_text())
    n = report["n"]
    report["results"].append({"attack": "autoattack", "accuracy": 0.4, "correct": int(0.4 * n), "n": n,
                              "ci95": [0.35, 0.45]})
    runs.write_json(run_dir / "eval.json", report)
    code, out, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                              "--token", TEST_TOKEN, "--json"], capsys)
    assert code == 0, err
    again = json.loads(out)
    path = hub.pull(f"hf-hub:{REPO}@{again['revision']}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    record = json.loads((path / "robustbench.json").read_text())
    assert record == robustbench_record(json.loads((run_dir / "config.json").read_text()), report)
    assert record["autoattack_acc"] == "40.00" and None not in record.values()
    assert record["eps"] == "0.1" and record["dataset"] == "digits" and "reported" not in record
    assert record["architecture"] == "4-conv/2-FC CNN" and record["number_forward_passes"] == 1
    assert record["link"] == "https://arxiv.org/abs/1706.06083" and record["venue"] == "ICLR 2018"
    assert record["unreliable"] is (report["health"]["status"] != "passed")


# -- fine-tuning in timm -------------------------------------------------------------------

def test_timm_fine_tunes_a_pulled_model_with_a_new_head(pushed, hub_server, hf_cache, monkeypatch, tmp_path):
    """The most common reason to download a robust backbone: a new 5-class head on the pulled
    features, trained a few steps, exported with timm's save_for_hf and loaded back."""
    import timm
    from timm.models import save_for_hf

    run_dir, res = pushed
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    model = timm.create_model(f"hf-hub:{REPO}@{res.revision}", pretrained=True, num_classes=5,
                              cache_dir=str(hf_cache))
    # Loaded from the file robustzoo's pull checked, not one timm downloaded by name.
    assert model.pretrained_cfg["file"].endswith(f"snapshots/{res.revision}/model.safetensors")
    assert model.num_classes == 5 and model.get_classifier().out_features == 5
    ref, _ = runs.load_run(run_dir)
    theirs, ours = model.state_dict(), ref.state_dict()
    for key, value in ours.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(theirs[key], value, rtol=0, atol=0)  # backbone + Normalize buffers
    assert list(model.state_dict())[:2] == ["normalize.mean", "normalize.std"]  # normalisation in front
    x = torch.rand(16, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(model.forward_features(x), ref.forward_features(x))
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                               ref.forward_head(ref.forward_features(x), pre_logits=True))

    # Fine-tune only the new head on 5 classes of the digits.
    from robustzoo.data import load_splits
    from robustzoo.plugins import registry

    data = load_splits(registry("datasets").get("digits"), seed=0).train
    keep = data.y[:400] < 5
    xs, ys = data.x[:400][keep].float() / 255, data.y[:400][keep]  # uint8 -> [0, 1]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.get_classifier().parameters(), lr=0.01)
    before = torch.nn.functional.cross_entropy(model(xs), ys).item()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    after = torch.nn.functional.cross_entropy(model(xs), ys).item()
    assert after < 0.7 * before

    out = tmp_path / "export"
    save_for_hf(model, str(out), safe_serialization=True)
    exported = json.loads((out / "config.json").read_text())
    assert exported["architecture"] == "cnn_mnist" and exported["num_classes"] == 5
    assert exported["pretrained_cfg"]["classifier"] == "fc"
    assert exported["pretrained_cfg"]["first_conv"] == "features.0"
    again = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    torch.testing.assert_close(again(x), model(x))


def _timm_at(hub_server, monkeypatch) -> None:
    """timm has no endpoint argument: point huggingface_hub's import-time ENDPOINT (and the URL
    template derived from it) at the test server."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def test_a_timm_fine_tune_comes_back(pushed, hub_server, hf_cache, monkeypatch, tmp_path, capsys):
    """Fine-tune in timm, measure robustness in robustzoo: a robustzoo net fine-tuned with timm
    and saved with save_for_hf, or pushed with push_to_hf_hub, loads in timm (robustzoo
    imported), in robustzoo.load, `robustzoo eval --dataset` and `robustzoo pull`; the pushed
    repo has no robustzoo card, so it loads with one note saying nothing vouches for it."""
    import timm
    from timm.models import push_to_hf_hub, save_for_hf

    from robustzoo.errors import UnvouchedModelWarning

    run_dir, res = pushed
    _timm_at(hub_server, monkeypatch)
    model = timm.create_model(f"hf-hub:{REPO}@{res.revision}", pretrained=True, cache_dir=str(hf_cache))
    x = torch.rand(8, 1, 8, 8)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):  # a few steps of further training: the weights differ from the published ones
        opt.zero_grad()
        model(x).logsumexp(1).mean().backward()
        opt.step()
    model.eval()
    want = model(x)

    folder = tmp_path / "ft"
    save_for_hf(model, str(folder), safe_serialization=True)
    assert "robustzoo" not in json.loads((folder / "config.json").read_text())  # timm writes its own config
    torch.testing.assert_close(api.load(folder)(x), want)
    torch.testing.assert_close(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), want)
    code, out, err = run_cli(["eval", str(folder), "--attacks", "clean", "--n", "64", "--no-health",
                              "--dataset", "digits", "--json", "-"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["dataset"] == "digits" and report["n"] == 64 and report["eps"] == pytest.approx(0.1)
    assert not (folder / "eval.json").exists()  # a timm export is not a run: no record written into it
    code, _, err = run_cli(["eval", str(folder), "--attacks", "clean"], capsys)
    assert_one_line_error(code, err, "records no dataset", "--dataset NAME")
    save_for_hf(model, str(tmp_path / "pickled"))  # timm's default: pytorch_model.bin only
    with pytest.raises(RunError, match="only pytorch_model.bin, a pickle, which robustzoo never loads"):
        api.load(tmp_path / "pickled")
    code, _, err = run_cli(["eval", str(folder), "--attacks", "clean", "--dataset", "fashion-mnist"], capsys)
    assert_one_line_error(code, err, "1x8x8 images into 10 classes", "fashion-mnist has 1x28x28")

    push_to_hf_hub(model, "robustzoo-test/ft", token=TEST_TOKEN)  # timm's own push: safetensors + .bin
    with pytest.warns(UnvouchedModelWarning, match="no robustzoo record vouches for robustzoo-test/ft@"):
        again = timm.create_model("hf-hub:robustzoo-test/ft", pretrained=True, cache_dir=str(hf_cache)).eval()
    torch.testing.assert_close(again(x), want)
    code, out, err = run_cli(["pull", "hf-hub:robustzoo-test/ft", "--endpoint", hub_server.endpoint,
                              "--cache-dir", str(hf_cache), "--json"], capsys)
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["vouched_by"] == "" and "pytorch_model.bin" not in pulled["files"]  # never a pickle
    assert err.count("warning:") == 1 and "vouches" in err
    with pytest.warns(UnvouchedModelWarning):
        loaded = api.load("hf-hub:robustzoo-test/ft", endpoint=hub_server.endpoint, cache_dir=str(hf_cache))
    torch.testing.assert_close(loaded(x), want)
    code, out, err = run_cli(["eval", "hf-hub:robustzoo-test/ft", "--endpoint", hub_server.endpoint,
                              "--cache-dir", str(hf_cache), "--attacks", "clean", "--n", "64", "--no-health",
                              "--dataset", "digits", "--json", "-"], capsys)
    assert code == 0, err
    assert [(r["attack"], r["correct"]) for r in json.loads(out)["results"]] == [
        (r["attack"], r["correct"]) for r in report["results"]]


def test_push_records_the_licence_in_config_json_too(run_dir, hub_server, hf_cache):
    res = hub.push(run_dir, REPO, endpoint=hub_server.endpoint, token=TEST_TOKEN, license="cc-by-4.0")
    path = hub.pull(f"hf-hub:{REPO}@{res.revision}", endpoint=hub_server.endpoint, cache_dir=hf_cache)
    pulled = json.loads((path / "config.json").read_text())
    assert pulled["pretrained_cfg"]["license"] == "cc-by-4.0"
    assert cards.front_matter((path / "README.md").read_text())["license"] == "cc-by-4.0"
    local = json.loads((run_dir / "config.json").read_text())
    assert local["pretrained_cfg"]["license"] == "apache-2.0"  # the run itself is not changed
    pulled["pretrained_cfg"]["license"] = "apache-2.0"
    assert pulled == local


def test_huggingface_hubs_own_progress_bars_are_off_during_push_and_pull(run_dir, hub_server, hf_cache,
                                                                       monkeypatch, capsys):
    from huggingface_hub.utils import are_progress_bars_disabled

    seen: list[tuple[str, bool]] = []
    real_download, real_commit = huggingface_hub.hf_hub_download, HfApi.create_commit

    def download(*args, **kwargs):
        seen.append(("download", are_progress_bars_disabled()))
        return real_download(*args, **kwargs)

    def commit(self, *args, **kwargs):
        seen.append(("commit", are_progress_bars_disabled()))
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(HfApi, "create_commit", commit)
    assert not are_progress_bars_disabled()
    code, out, err = run_cli(["push", str(run_dir), "--repo-id", REPO, "--endpoint", hub_server.endpoint,
                              "--token", TEST_TOKEN, "--json"], capsys)
    assert code == 0, err
    rev = json.loads(out)["revision"]
    code, _, err = run_cli(["pull", f"hf-hub:{REPO}@{rev}", "--endpoint", hub_server.endpoint, "--cache-dir",
                            str(hf_cache)], capsys)
    assert code == 0, err
    assert {what for what, _ in seen} == {"download", "commit"} and all(off for _, off in seen), seen
    assert not are_progress_bars_disabled()  # restored for the rest of the process
    assert "it/s" not in err and "%|" not in err


def test_card_says_how_many_cpu_threads_a_bit_for_bit_rerun_needs(run_dir):
    cfg = json.loads((run_dir / "config.json").read_text())
    report = json.loads((run_dir / "eval.json").read_text())
    threads = cfg["robustzoo"]["machine"]["torch_threads"]
    text = cards.render_run_card(cfg, report, repo_id=REPO, files={"model.safetensors": "0" * 64})
    assert f"Trained on the CPU with {threads} torch thread" in text and f"`OMP_NUM_THREADS={threads}`" in text
    cfg["robustzoo"]["machine"] = {"device": "cuda", "torch_threads": 16}
    text = cards.render_run_card(cfg, report, repo_id=REPO, files={"model.safetensors": "0" * 64})
    assert "Trained on cuda." in text and "OMP_NUM_THREADS" not in text
    del cfg["robustzoo"]["machine"]  # a run from before the field: no sentence
    text = cards.render_run_card(cfg, report, repo_id=REPO, files={"model.safetensors": "0" * 64})
    assert "Trained on" not in text
