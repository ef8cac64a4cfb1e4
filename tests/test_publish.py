"""`robustzoo zoo publish` end to end: tiny digits stand-ins of zoo recipes, trained, evaluated
with standard AutoAttack, pushed to the local Hub-protocol server, verified and pinned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import run_cli

from robustzoo import hub
from robustzoo.recipes import Recipe
from robustzoo.testing import fixtures
from robustzoo.testing.fixtures import TEST_TOKEN
from robustzoo.zoo import ZooEntry, validate_entry

hub_client_settings = fixtures.hub_client_settings
hub_server = fixtures.hub_server
hf_cache = fixtures.hf_cache
zoo_plugin = fixtures.zoo_plugin
recipe_plugin = fixtures.recipe_plugin

# Digits-sized stand-ins of zoo recipes: a second of training each on a CPU. They learn the
# digits (clean accuracy well above chance) without robustness, so AutoAttack at ε = 0.3
# breaks every image within its first attack and its later attacks have nothing left to do:
# the canonical evaluation runs in well under a second. (AutoAttack's cost is set by its
# iterations whenever an image survives, whatever n is.)
COMMON = dict(dataset="digits", arch="cnn_mnist", eps=0.3, alpha=0.05, batch_size=32, lr=0.003, eval_n=64)
STANDINS = [
    Recipe("standin-erm-cnn-digits", "erm", dict(COMMON, epochs=2, subset=600), source="test stand-in"),
    Recipe("standin-erm-seed1-cnn-digits", "erm", dict(COMMON, epochs=1, seed=1), source="test stand-in"),
]


def _entry(recipe: Recipe) -> dict:
    return {"name": recipe.name, "status": "unpublished", "repo_id": "", "revision": "", "files": {},
            "architecture": "cnn_mnist", "dataset": "digits", "threat_model": {"norm": "linf", "eps": 0.3},
            "method": recipe.objective, "settings": {}, "results": {}, "recipe": recipe.name,
            "card": f"model_cards/{recipe.name}.md", "description": "a stand-in", "license": "apache-2.0"}


@pytest.fixture
def zoo_dir(tmp_path, recipe_plugin) -> Path:
    recipe_plugin(*STANDINS)
    index = {"format": "1", "comment": "test", "entries": [_entry(r) for r in STANDINS]}
    (tmp_path / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    (tmp_path / "cards").mkdir()
    return tmp_path




def _args(zoo_dir: Path, hub_server, hf_cache, *extra: str) -> list[str]:
    return ["zoo", "publish", *extra, "--org", "robustzoo-test", "--index", str(zoo_dir / "index.json"),
            "--runs-dir", str(zoo_dir / "runs"), "--cards-dir", str(zoo_dir / "cards"),
            "--endpoint", hub_server.endpoint, "--token", TEST_TOKEN, "--cache-dir", str(hf_cache),
            "--device", "cpu", "--n", "24"]


def test_zoo_publish_trains_evaluates_pushes_and_pins(zoo_dir, hub_server, hf_cache, zoo_plugin, capsys):
    from robustzoo.plugins import registry
    from robustzoo.train import Trainer, build_config

    first, second = (r.name for r in STANDINS)
    # An interrupted run: one of its two epochs done. zoo publish resumes it.
    cfg = build_config(None, first, {}, device="cpu")
    assert Trainer(cfg, zoo_dir / "runs" / first).fit(until_epoch=1) is None

    code, out, err = run_cli(_args(zoo_dir, hub_server, hf_cache, first, second, "--json"), capsys)
    assert code == 0, err
    done = {r["name"]: r for r in json.loads(out)}
    assert [r["action"] for r in done.values()] == ["published", "published"]
    assert done[first]["trained"] == "resumed" and done[second]["trained"] == "trained"
    assert f"{second}: pinned in" in err  # progress on stderr
    metrics = (zoo_dir / "runs" / first / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [1, 2]  # resumed, not restarted

    index = json.loads((zoo_dir / "index.json").read_text())
    known = {k: registry(k).list() for k in ("architectures", "datasets", "objectives", "recipes")}
    for raw in index["entries"]:
        name = raw["name"]
        assert validate_entry(raw, known) == []
        assert raw["status"] == "published" and raw["revision"] == done[name]["revision"]
        assert raw["repo_id"] == f"robustzoo-test/{name}" and raw["description"] == "a stand-in"
        assert set(raw["files"]) == {"config.json", "model.safetensors", "README.md", "robustbench.json"}
        # The results are those of the run's canonical evaluation: clean and AutoAttack, n = 24.
        report = json.loads((zoo_dir / "runs" / name / "eval.json").read_text())
        by = {r["attack"]: r for r in report["results"]}
        assert by["autoattack"]["n"] == by["clean"]["n"] == 24
        assert {a: raw["results"][a] for a in ("clean", "autoattack")} == {
            a: by[a]["accuracy"] for a in ("clean", "autoattack")}
        assert raw["evaluation"]["counts"]["autoattack"] == [by["autoattack"]["correct"], 24]
        assert raw["evaluation"]["overrides"] == {"train": {}, "n": 24}  # not the canonical protocol
        # The card next to the index is the pushed README, byte for byte.
        card = (zoo_dir / "cards" / f"{name}.md").read_bytes()
        assert hashlib.sha256(card).hexdigest() == raw["files"]["README.md"]
        assert b"status: published" in card
        # The RobustBench record went into the repo, with the AutoAttack number.
        path = hub.pull(f"hf-hub:{raw['repo_id']}@{raw['revision']}", endpoint=hub_server.endpoint,
                        cache_dir=hf_cache)
        rb = json.loads((path / "robustbench.json").read_text())
        assert rb["autoattack_acc"] == f"{100 * by['autoattack']['accuracy']:.2f}"
        assert rb["clean_acc"] == f"{100 * by['clean']['accuracy']:.2f}" and rb["eps"] == "0.3"

    # The pinned entries pull by alias, every file checked against its pin.
    zoo_plugin(*index["entries"])
    pulled = hub.pull_model(first, endpoint=hub_server.endpoint, cache_dir=hf_cache, verify=True)
    assert pulled.revision == done[first]["revision"]
    assert all(c.startswith("pinned sha256") for c in pulled.checked.values())
    assert ZooEntry.from_dict(index["entries"][0]).published

    # Again: nothing to do. With --republish: no training, no evaluation, and the same bytes
    # pushed again make no new commit (huggingface_hub skips an empty one): the pin holds.
    code, out, err = run_cli(_args(zoo_dir, hub_server, hf_cache, first, "--json"), capsys)
    assert code == 0, err
    assert [r["action"] for r in json.loads(out)] == ["skipped"]
    code, out, err = run_cli(_args(zoo_dir, hub_server, hf_cache, first, "--republish", "--json"), capsys)
    assert code == 0, err
    (again,) = json.loads(out)
    assert (again["action"], again["trained"], again["evaluated"]) == ("published", "done before", "done before")
    assert again["revision"] == done[first]["revision"]
    assert json.loads((zoo_dir / "index.json").read_text()) == index


def test_zoo_publish_errors_are_one_line(zoo_dir, hub_server, hf_cache, capsys):
    code, _, err = run_cli(_args(zoo_dir, hub_server, hf_cache, "standin-erm-cnn-digit"), capsys)
    assert code != 0 and "Traceback" not in err
    assert "no entry 'standin-erm-cnn-digit'" in err and "standin-erm-cnn-digits" in err
    code, _, err = run_cli(_args(zoo_dir, hub_server, hf_cache), capsys)
    assert code != 0 and "--all" in err
    assert hub_server.requests == []  # refused before anything was trained or uploaded
