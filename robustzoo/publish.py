"""``robustzoo zoo publish``: from a zoo entry's recipe to a pinned, published zoo entry.

For each chosen entry of the zoo index (``robustzoo/zoo/index.json``):

1. **train** its recipe into ``RUNS_DIR/<name>`` — resumable: an interrupted run continues
   from its last finished epoch, a finished one is not trained again;
2. **evaluate** it with the canonical protocol: standard AutoAttack (suite ``autoattack``:
   clean + AutoAttack) on the whole test set, with the gradient-masking health checks;
   skipped when the run's evaluation record already holds it;
3. **push** the run to ``ORG/<name>`` with its model card and ``robustbench.json`` (one commit);
4. **verify** the published commit by pulling it back with every sha256 pinned, and write
   the card (the pushed README.md, byte for byte) to ``model_cards/<name>.md``;
5. **pin** the entry in the index: status ``published``, repo, commit, the sha256 of every
   file, the results and their counts — written atomically (temp file, then rename).

An entry that is already published is skipped unless ``republish``. ``train_overrides`` and
``n`` exist for smoke tests (tiny epochs, a few test images); when used they are recorded in
the entry's ``evaluation.overrides``, so a pinned entry never hides that it is not the
canonical protocol.

This is the face layer's workflow (it drives the trainer, the Python API's evaluation and the
Hub client) and reports progress through a callback; it prints nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import runs
from .errors import NotFoundError, RunError, UsageError, did_you_mean
from .zoo import ZooEntry, validate_entry

CANONICAL_SUITE = "autoattack"
Progress = Callable[[str, str], None]


def default_index_path() -> Path:
    """The zoo index shipped with the package (the checkout's file in an editable install)."""
    return Path(str(resources.files("robustzoo").joinpath("zoo/index.json")))


@dataclass
class PublishResult:
    """What ``zoo publish`` did for one entry.

    Attributes:
        name: the zoo alias.
        action: 'published', or 'skipped' (already published).
        run_dir: the run that was trained and evaluated.
        trained: 'trained', 'resumed' or 'done before'.
        evaluated: 'evaluated' or 'done before'.
        entry: the pinned index entry (as written).
    """

    name: str
    action: str
    run_dir: str = ""
    trained: str = ""
    evaluated: str = ""
    repo_id: str = ""
    revision: str = ""
    card: str = ""
    entry: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_index(path: str | Path) -> dict[str, Any]:
    """The zoo index file (``{"format", "comment", "entries": [...]}``)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"zoo index {path} does not exist; pass --index robustzoo/zoo/index.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"zoo index {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise RunError(f"zoo index {path} has no 'entries' list")
    return data


def write_index(path: str | Path, data: Mapping[str, Any]) -> None:
    """Atomically rewrite the index (UTF-8 kept as is: ε, ∞ are not escaped)."""
    runs.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def pin_entry(index_path: str | Path, entry: Mapping[str, Any]) -> None:
    """Replace the entry of the same name in the index file, re-read just before writing so
    that entries pinned by an earlier step of the same command are kept."""
    data = read_index(index_path)
    names = [e.get("name") for e in data["entries"]]
    if entry["name"] not in names:
        raise NotFoundError(f"zoo index {index_path} has no entry {entry['name']!r} any more")
    data["entries"][names.index(entry["name"])] = dict(entry)
    write_index(index_path, data)


def _select(data: Mapping[str, Any], names: Sequence[str], every: bool) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in data["entries"] if isinstance(e, dict) and "name" in e}
    if every:
        return [e for e in by_name.values() if e.get("status") != "published"]
    if not names:
        raise UsageError("name the zoo entries to publish (see `robustzoo list zoo`), or pass --all")
    chosen = []
    for n in names:
        if n not in by_name:
            raise NotFoundError(f"the zoo index has no entry {n!r}{did_you_mean(n, by_name)}; see "
                                f"`robustzoo list zoo`")
        chosen.append(by_name[n])
    return chosen


def _training_state(run_dir: Path, epochs: int) -> str:
    """'new', 'resume' or 'done' for the run directory of an entry."""
    if not (run_dir / runs.CONFIG_FILE).is_file():
        return "new"
    rows = runs.read_metrics(run_dir)  # a damaged line: one error naming the file and the line
    if rows and rows[-1].get("epoch") == epochs and (run_dir / runs.MODEL_FILE).is_file():
        return "done"
    if (run_dir / runs.RESUME_FILE).is_file():
        return "resume"
    return "empty"


def train_entry(entry: ZooEntry, run_dir: Path, *, overrides: Mapping[str, Any], data_dir: str | None,
                device: str | None) -> str:
    """Train (or resume) the entry's recipe in ``run_dir``; returns what was done."""
    from .plugins import registry
    from .train import Trainer, build_config, config_from_run, resolve

    if entry.recipe.startswith("robustzoo train "):
        raise UsageError(f"zoo entry {entry.name!r} names a training command, not a recipe; `zoo publish` "
                         f"trains recipes (register one, or train and push the run by hand: docs/zoo.md)")
    registry("recipes").get(entry.recipe)  # a one-line error naming close matches
    cfg = build_config(None, entry.recipe, dict(overrides), data_dir=data_dir, device=device)
    wanted = resolve(cfg).config
    state = _training_state(run_dir, wanted.epochs)
    if state in ("resume", "done"):
        have = config_from_run(run_dir)
        if have.recipe != entry.recipe:
            raise RunError(f"{run_dir} holds a run of {have.recipe or have.objective!r}, not of recipe "
                           f"{entry.recipe!r}; move it away or pass another --runs-dir")
        if state == "done":
            return "done before"
        if device:
            have.device = device
        Trainer(have, run_dir, resume=True).fit()
        return "resumed"
    if state == "empty":
        # config.json written, no epoch finished: nothing trained to keep; start afresh.
        (run_dir / runs.CONFIG_FILE).unlink()
    Trainer(cfg, run_dir).fit()
    return "trained"


def _test_size(run_dir: Path, data_dir: str | None) -> int:
    """The size of the test set a publication evaluates: the whole test split (no validation
    split is drawn, so a run trained with any ``val_size`` or ``subset`` is evaluated the same),
    which must be the dataset's canonical test set (``DatasetSpec.test_size``)."""
    from .data import load_test
    from .plugins import registry

    cfg = runs.read_config(run_dir)
    rz = cfg["robustzoo"]
    spec = registry("datasets").get(rz["dataset"])
    where = data_dir or rz.get("config", {}).get("data_dir")
    n = len(load_test(spec, data_dir=where))
    if spec.test_size and n != spec.test_size:
        raise RunError(f"the {rz['dataset']} test set{f' under {where}' if where else ''} has {n:,} images, not "
                       f"the dataset's {spec.test_size:,}; a published number is measured on the whole test set: "
                       f"point --data-dir at the complete dataset")
    return n


def canonical_done(report: Mapping[str, Any] | None, n: int) -> bool:
    """True when an evaluation record holds clean and standard AutoAttack on ``n`` images."""
    if not report:
        return False
    by = {r.get("attack"): r for r in report.get("results", []) if isinstance(r, Mapping)}
    return all(a in by and int(by[a].get("n", -1)) == n for a in ("clean", "autoattack"))


def evaluate_entry(run_dir: Path, *, n: int | None, data_dir: str | None, device: str | None) -> str:
    """Run the canonical evaluation unless the run's record already holds it."""
    from .api import evaluate

    want = n if n is not None else _test_size(run_dir, data_dir)
    if canonical_done(runs.eval_record(run_dir), want):
        return "done before"
    evaluate(run_dir, suite=CANONICAL_SUITE, n=n, data_dir=data_dir, device=device or "auto")
    if not canonical_done(runs.eval_record(run_dir), want):
        raise RunError(f"{run_dir}/eval.json does not hold clean and AutoAttack on {want} images after "
                       f"the evaluation; check it with `robustzoo eval {run_dir} --suite autoattack`")
    return "evaluated"


def pinned_entry(index_entry: Mapping[str, Any], zoo_entry: Mapping[str, Any],
                 overrides: Mapping[str, Any], n: int | None) -> dict[str, Any]:
    """The index entry after publishing: what defines it (settings, recipe, description) from
    the index, what was published and measured from the push."""
    out = {k: v for k, v in index_entry.items() if k != "measured"}
    for key in ("status", "repo_id", "revision", "files", "results", "evaluation", "threat_model"):
        out[key] = zoo_entry[key]
    if overrides or n is not None:
        out["evaluation"] = dict(out["evaluation"], overrides={
            "train": {k: str(v) for k, v in overrides.items()}, "n": n})
    return ZooEntry.from_dict(out).to_dict()


def publish_entries(names: Sequence[str] = (), *, org: str, every: bool = False,
                    index_path: str | Path | None = None, runs_dir: str | Path = "runs/zoo",
                    cards_dir: str | Path = "model_cards", endpoint: str | None = None,
                    token: str | None = None, cache_dir: str | Path | None = None, private: bool = False,
                    data_dir: str | None = None, device: str | None = None,
                    train_overrides: Mapping[str, Any] | None = None, n: int | None = None,
                    republish: bool = False, progress: Progress | None = None) -> list[PublishResult]:
    """Train, evaluate, push and pin the chosen zoo entries (see the module docstring).

    Args:
        names: zoo aliases in the index; ``every`` takes all unpublished ones.
        org: Hub organisation (or user) the repos are created under: ``ORG/<alias>``.
        index_path: the zoo index file to read entries from and pin them in.
        runs_dir: where the run directories live (``<runs_dir>/<alias>``).
        cards_dir: where the published cards are written (``<cards_dir>/<alias>.md``).
        endpoint, token, cache_dir, private: as for ``robustzoo push`` / ``pull``.
        data_dir, device: as for ``robustzoo train``.
        train_overrides: ``--set`` pairs applied over the recipe (smoke tests).
        n: evaluate on the first ``n`` test images instead of all (smoke tests).
        republish: publish entries that are published already.
        progress: ``progress(alias, message)`` for each step.

    Raises:
        UsageError, NotFoundError, RunError, HubError, IntegrityError: one-line errors; entries
        pinned before the failing one stay pinned.
    """
    from . import hub
    from .plugins import registry

    say = progress or (lambda name, msg: None)
    index_path = Path(index_path) if index_path else default_index_path()
    chosen = _select(read_index(index_path), names, every)
    overrides = dict(train_overrides or {})
    known = {kind: registry(kind).list() for kind in ("architectures", "datasets", "objectives", "recipes")}
    results = []
    for raw in chosen:
        problems = validate_entry(raw, known)
        if problems:
            raise RunError(f"{problems[0]} (in {index_path})")
        entry = ZooEntry.from_dict(raw)
        if entry.published and not republish:
            say(entry.name, f"already published at {entry.repo_id}@{entry.revision[:12]}; skipped "
                            f"(--republish publishes it again)")
            results.append(PublishResult(entry.name, "skipped", entry=dict(raw)))
            continue
        run_dir = Path(runs_dir) / entry.name
        say(entry.name, f"training recipe {entry.recipe} in {run_dir}")
        trained = train_entry(entry, run_dir, overrides=overrides, data_dir=data_dir, device=device)
        say(entry.name, f"training: {trained}; evaluating with standard AutoAttack on "
                        f"{'the whole test set' if n is None else f'{n} test images'}")
        evaluated = evaluate_entry(run_dir, n=n, data_dir=data_dir, device=device)
        repo_id = f"{org}/{entry.name}"
        say(entry.name, f"evaluation: {evaluated}; pushing to {repo_id}")
        # --n (a smoke test) evaluates part of the test set: push marks the card partial, and the
        # entry records the override, instead of refusing the protocol.
        pushed = hub.push(run_dir, repo_id, endpoint=endpoint, token=token, private=private, alias=entry.name,
                          license=entry.license, allow_partial=n is not None)
        say(entry.name, f"pushed {repo_id}@{pushed.revision[:12]}; pulling it back to verify every sha256")
        pins = {f: v["sha256"] for f, v in pushed.files.items()}
        local = hub.pull_model(f"hf-hub:{repo_id}@{pushed.revision}", endpoint=pushed.endpoint, token=token,
                               cache_dir=cache_dir, verify=True, expect_sha256=pins)
        card_path = Path(cards_dir) / f"{entry.name}.md"
        with runs.atomic_path(card_path) as tmp:  # the pushed README.md, byte for byte
            tmp.write_bytes((local.path / hub.CARD_FILE).read_bytes())
        new = pinned_entry(raw, pushed.zoo_entry, overrides, n)
        problems = validate_entry(new, known)
        if problems:  # never write an entry the index would refuse
            raise RunError(f"the pinned entry fails the zoo checks: {problems[0]}")
        pin_entry(index_path, new)
        say(entry.name, f"pinned in {index_path}: {repo_id}@{pushed.revision}")
        results.append(PublishResult(entry.name, "published", run_dir=str(run_dir), trained=trained,
                                     evaluated=evaluated, repo_id=repo_id, revision=pushed.revision,
                                     card=str(card_path), entry=new))
    return results
