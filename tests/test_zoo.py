"""The zoo index: every entry against the schema, the registries and its model card."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from robustzoo import cards
from robustzoo.plugins import registry
from robustzoo.zoo import SCHEMA, ZooEntry, validate_entry

ROOT = Path(__file__).resolve().parents[1]
INDEX = json.loads(resources.files("robustzoo").joinpath("zoo/index.json").read_text(encoding="utf-8"))
RAW = {e["name"]: e for e in INDEX["entries"]}

# The aliases design.md promises (docs/zoo.md explains the naming scheme).
PROMISED = ("cat-cw-wrn34", "cat-cent-wrn34", "cat-cent-prn18", "cat-cw-prn18", "customized-mix-wrn34",
            "trades-wrn34", "fat-trades-wrn34", "mart-wrn34", "at-prn18", "cat-cw-cnn-fmnist")
ARCH_TOKENS = {"wrn34_10": "wrn34", "wrn28_10": "wrn28", "preact_resnet18": "prn18", "cnn_mnist": "cnn",
               "smallcnn": "smallcnn"}
DATASET_SUFFIX = {"cifar10": "", "cifar100": "-cifar100", "fashion-mnist": "-fmnist", "mnist": "-mnist"}


def known_names() -> dict[str, list[str]]:
    return {kind: registry(kind).list() for kind in ("architectures", "datasets", "objectives", "recipes")}


def test_index_lists_the_promised_aliases_and_registers_them():
    assert set(PROMISED) <= set(RAW)
    reg = registry("zoo")
    for name in RAW:
        assert name in reg and reg.owner(name) == "robustzoo.builtins"


@pytest.mark.parametrize("name", sorted(RAW))
def test_entry_matches_the_schema(name):
    raw = RAW[name]
    assert validate_entry(raw) == []  # the raw JSON: also no unknown keys
    entry = registry("zoo").get(name)
    assert validate_entry(entry) == []
    assert entry.to_dict() == {k: raw[k] for k in SCHEMA if k in raw}  # nothing dropped on registration


@pytest.mark.parametrize("name", sorted(RAW))
def test_entry_names_registered_things(name):
    entry = registry("zoo").get(name)
    objectives = registry("objectives")
    if entry.method not in objectives:
        pytest.skip(f"the plugin providing objective {entry.method!r} is not installed")
    assert validate_entry(entry, known_names()) == []
    recipe = registry("recipes").get(entry.recipe)
    # The recipe reproduces exactly this entry.
    assert recipe.objective == entry.method
    assert recipe.settings["arch"] == entry.architecture and recipe.settings["dataset"] == entry.dataset
    assert float(recipe.settings["eps"]) == pytest.approx(entry.threat_model["eps"])
    defaults = objectives.get(entry.method).defaults
    for key, value in entry.settings.items():
        assert key in defaults, f"{key!r} is not a setting of objective {entry.method!r}"
        assert recipe.settings[key] == value
    assert entry.paper == (objectives.get(entry.method).paper or "")


@pytest.mark.parametrize("name", sorted(RAW))
def test_entry_follows_the_naming_scheme(name):
    entry = registry("zoo").get(name)
    tail = f"-{ARCH_TOKENS[entry.architecture]}{DATASET_SUFFIX[entry.dataset]}"
    assert name.endswith(tail), f"{name} should end with {tail} (<method>[-<variant>]-<arch>[-<dataset>])"
    method_token = {"calibrated": "cat", "customized": "customized"}.get(entry.method, entry.method)
    assert name.startswith(method_token + "-")


@pytest.mark.parametrize("name", sorted(RAW))
def test_entry_has_a_matching_card(name):
    entry = registry("zoo").get(name)
    path = ROOT / entry.card
    assert path.is_file(), f"missing {entry.card}; run `python -m robustzoo.cards model_cards`"
    text = path.read_text(encoding="utf-8")
    meta = cards.front_matter(text)
    rz = meta["robustzoo"]
    assert rz["alias"] == entry.name
    assert (rz["architecture"], rz["dataset"], rz["method"]) == (entry.architecture, entry.dataset, entry.method)
    assert meta["library_name"] == "robustzoo" and meta["pipeline_tag"] == "image-classification"
    assert entry.method in meta["tags"]
    if entry.published:
        card = ModelCard(text)
        assert card.data.eval_results, "a published card carries its results as model-index"
        assert rz["sha256"]["model.safetensors"] == entry.files["model.safetensors"]
    else:
        assert rz["status"] == "unpublished"
        assert "**Not yet published.**" in text
        assert "model-index" not in meta and "eval_results" not in meta
        # Up to date with the entry (regenerate with `python -m robustzoo.cards model_cards`).
        assert text == cards.render_entry_card(entry)


CARDS = sorted(p.relative_to(ROOT).as_posix() for p in [*(ROOT / "model_cards").glob("*.md"),
                                                         *(ROOT / "model_cards" / "runs").glob("*.md")]
               if p.name != "template.md")


def _code_blocks(text: str) -> str:
    return "\n".join(text.split("```")[1::2])


@pytest.mark.parametrize("card", CARDS)
def test_a_card_says_published_only_with_a_pinned_commit_and_sha256(card):
    """model_cards/*.md and model_cards/runs/*.md tell the truth: 'published' only for a zoo
    entry pinned to a commit and the sha256 of every file (and then the card is the pushed
    README.md itself); every other card names no repo, offers no `robustzoo pull`, and says how
    to train the model, what it scored (if anything) and with which command."""
    import hashlib

    text = (ROOT / card).read_text(encoding="utf-8")
    rz = cards.front_matter(text)["robustzoo"]
    code = _code_blocks(text)
    if rz["status"] == "published":
        entry = registry("zoo").get(rz["alias"]) if rz.get("alias") in registry("zoo") else None
        assert entry is not None and entry.published, f"{card} says published but no zoo entry pins it"
        assert validate_entry(entry) == []
        assert card == entry.card
        assert hashlib.sha256((ROOT / card).read_bytes()).hexdigest() == entry.files["README.md"]
        assert rz["sha256"] == {f: h for f, h in entry.files.items() if f != "README.md"}
        return
    assert rz["status"] == "unpublished"
    assert not rz.get("repo_id"), f"{card} is unpublished but names repo {rz.get('repo_id')!r}"
    assert "robustzoo pull" not in code and "hf-hub:" not in code
    assert "robustzoo train" in code or "fmnist_zoo.py train" in code, f"{card} does not say how to train it"
    meta = cards.front_matter(text)
    has_numbers = "model-index" in meta or "measured" in rz
    if has_numbers:
        assert "robustzoo eval" in text or "fmnist_zoo.py eval" in code, f"{card} gives numbers without the command"
    if card.startswith("model_cards/runs/"):
        assert "**Not published.**" in text and not rz.get("alias")


@pytest.mark.parametrize("name", sorted(n for n, e in RAW.items() if e.get("measured")))
def test_measured_numbers_come_from_a_run_recorded_in_the_repo(name):
    """An unpublished entry's 'measured' block is a real run's, copied from the card that
    records it (model_cards/runs/, regenerated from the run directories by docs/make_results.py)."""
    m = RAW[name]["measured"]
    source = cards.front_matter((ROOT / m["source"]).read_text(encoding="utf-8"))["robustzoo"]
    assert m["counts"] == {a: [r["correct"], r["n"]] for a, r in source["results"].items()}
    entry = registry("zoo").get(name)
    assert source["method"] == entry.method and source["architecture"] == entry.architecture
    assert source["dataset"] == entry.dataset
    assert source["threat_model"]["eps"] == pytest.approx(entry.eps)
    for key, value in entry.settings.items():
        assert source["method_settings"][key] == value, f"{m['source']} was trained with another {key}"
    assert m["health"] == source["health"]["status"]
    assert "reduced" in m["protocol"] and "fmnist_zoo.py" in m["train"]


def test_every_card_belongs_to_an_entry():
    names = {p.stem for p in (ROOT / "model_cards").glob("*.md")} - {"template"}
    assert names == set(RAW)


def test_card_template_is_the_shipped_one():
    assert (ROOT / "model_cards" / "template.md").read_text(encoding="utf-8") == cards.load_template()


def test_eps_that_differs_from_the_benchmarks_is_noted():
    """The index mixes ε = 0.031 (TRADES', MART's and FAT's code) with 8/255: said on each card."""
    for name, raw in RAW.items():
        text = (ROOT / raw["card"]).read_text(encoding="utf-8")
        if raw["dataset"] == "cifar10" and raw["threat_model"]["eps"] == 0.031:
            assert "ε = 0.031 ≈ 7.9/255 instead of 8/255" in text, name
        else:
            assert "instead of 8/255" not in text, name


def test_unpublished_entries_name_the_command_that_publishes_them():
    for name, raw in RAW.items():
        if raw["status"] != "published":
            assert f"robustzoo zoo publish {name} --org ORG" in (ROOT / raw["card"]).read_text(encoding="utf-8")


BAD = [
    ({"revision": "abc"}, "40-hex"),
    ({"files": {"model.safetensors": "x" * 64, "config.json": "0" * 64}}, "64 lower-case hex"),
    ({"files": {"config.json": "0" * 64}}, "must pin model.safetensors"),
    ({"files": {"config.json": "0" * 64, "model.safetensors": "0" * 64, "pytorch_model.bin": "0" * 64}},
     "is not one of"),
    ({"results": {"clean": 0.9}}, "besides 'clean'"),
    ({"results": {"clean": 90.1, "pgd20": 0.5}}, "accuracy fraction"),
    ({"repo_id": "not-a-repo"}, "not org/name"),
    ({"card": "cards/x.md"}, "card must be"),
    ({"threat_model": {"norm": "linf", "eps": 8}}, "(0, 1]"),
    ({"extra": 1}, "unknown key"),
    ({"status": "maybe"}, "status"),
    ({"recipe": "Not A Recipe"}, "neither a recipe name"),
    ({"evaluation": {"counts": {"clean": [7, 10], "pgd20": [5, 10]}}}, "is not 7/10"),
    ({"evaluation": {"counts": {"clean": [80, 100]}}}, "no counts for pgd20"),
    ({"measured": {"protocol": "x"}}, "drop 'measured'"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_validate_entry_catches_bad_published_entries(change, message):
    good = dict(RAW["at-prn18"], status="published", repo_id="org/at-prn18", revision="a" * 40,
                files={"config.json": "0" * 64, "model.safetensors": "1" * 64},
                results={"clean": 0.8, "pgd20": 0.5})
    assert validate_entry(good) == []
    bad = dict(good, **change)
    problems = validate_entry(bad)
    assert problems and any(message in p for p in problems), problems


def test_unpublished_entries_carry_no_numbers():
    bad = dict(RAW["at-prn18"], results={"clean": 0.8})
    assert any("must leave 'results' empty" in p for p in validate_entry(bad))
    measured = dict(RAW["at-cnn-fmnist"]["measured"])
    assert validate_entry(dict(RAW["at-prn18"], measured=measured)) == []
    wrong = dict(measured, counts=dict(measured["counts"], clean=[1, 2]))
    assert any("is not 1/2" in p for p in validate_entry(dict(RAW["at-prn18"], measured=wrong)))
    assert any("missing 'source'" in p for p in validate_entry(dict(
        RAW["at-prn18"], measured={k: v for k, v in measured.items() if k != "source"})))
    assert any("no evaluation of its own" in p for p in validate_entry(dict(
        RAW["at-prn18"], evaluation={"counts": {}})))
    command = dict(RAW["at-prn18"], recipe="robustzoo train --objective at --set epochs=3")
    assert validate_entry(command, known_names()) == []  # a full command names no recipe
    missing = {k: v for k, v in RAW["at-prn18"].items() if k != "recipe"}
    assert any("missing 'recipe'" in p for p in validate_entry(missing))
    assert any("not a registered architecture" in p
               for p in validate_entry(dict(RAW["at-prn18"], architecture="resnet9000"), known_names()))


def test_list_zoo_shows_every_entry(capsys):
    from robustzoo.cli import main

    main(["list", "zoo", "--json"])
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(RAW) <= set(by_name)
    assert by_name["cat-cw-wrn34"]["status"] == "not published"
    assert by_name["cat-cw-wrn34"]["recipe"] == "cat-cw-wrn34"
    assert by_name["cat-cw-wrn34"]["eps"] == "8/255"


def test_zoo_entry_from_dict_round_trips():
    entry = ZooEntry.from_dict(RAW["cat-cw-wrn34"])
    assert not entry.published and entry.eps == pytest.approx(8 / 255)
    assert ZooEntry.from_dict(entry.to_dict()) == entry
