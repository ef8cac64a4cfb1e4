"""Evaluation: accuracy under each attack, with the number of examples and a Wilson interval.

Every attack runs on the model in eval mode on [0,1] inputs. Per-example correctness is kept
for each attack, so the worst case over attacks is exact (an example counts as robust only if
every attack failed on it), and it is saved (:class:`robustzoo.eval.FlagStore`) so an
interrupted evaluation resumes where it stopped.

Which examples an attack runs on:

* an example the model already gets wrong is not attacked (it is not robust by definition);
* **standalone** (default): every attack runs on all correctly classified examples, so each
  row is that attack's own number, comparable with papers, and the health checks can compare
  attacks;
* **cascade** (``cascade=True``): an attack runs only on the examples every earlier attack
  failed on; its row is then the running worst case up to it (marked ``"cascaded": true``).
  Faster; the last row equals the worst case;
* a composite attack (AutoAttack) always cascades its components internally, as its authors
  define it; each component's running accuracy is listed under ``components``.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..attacks import AttackContext
from ..attacks.autoattack import AA_VERSIONS, capture_notes
from ..data import TensorData, select_examples
from ..data.core import to_device_async
from ..errors import UsageError, did_you_mean
from ..fast import FastModel, autocast_dtype, channels_last
from ..plugins import registry
from ..progress import Progress
from . import _health
from ._flagstore import FlagStore, model_fingerprint
from ._record import SAMPLE_RULE, custom_settings
from ._stats import wilson_interval
from ._sweep import run_sweep


@dataclass
class AttackResult:
    """Accuracy of one attack, with its per-example outcomes."""

    attack: str
    correct: int
    n: int
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    flags: torch.Tensor | None = None  # per-example: still correct after this attack
    attacked: torch.Tensor | None = None  # per-example: the attack ran on it
    kind: str = "white-box"
    cascaded: bool = False
    after: list[str] = field(default_factory=list)
    components: list[AttackResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False
    reused: str | None = None  # the key of the row of this evaluation whose outcome it shares
    custom: dict[str, Any] = field(default_factory=dict)  # settings that differ from the standard

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.n)
        out = {"attack": self.attack, "accuracy": round(self.accuracy, 6), "correct": self.correct,
               "n": self.n, "ci95": [round(lo, 6), round(hi, 6)], "settings": self.settings,
               "seconds": round(self.seconds, 3), "kind": self.kind}
        if self.cascaded:
            out["cascaded"] = True
            out["after"] = [a for a in self.after if a != "clean"]
        if self.components:
            out["components"] = [{k: v for k, v in c.to_dict().items() if k not in ("settings", "kind")}
                                 for c in self.components]
        if self.notes:
            out["notes"] = list(self.notes)
        if self.resumed:
            out["resumed"] = True
        if self.reused:
            out["reused"] = self.reused
        if self.attack != "clean":
            out["standard"] = not self.custom
            if self.custom:
                out["custom"] = dict(self.custom)
        return out


def check_budget(eps: float, alpha: float) -> None:
    """ε in [0, 1] and α > 0, both finite (ε = 0 is allowed here: the attacks then equal clean).

    Raises:
        UsageError: naming the value and the range (ε and α are on the [0,1] pixel scale).
    """
    try:
        eps, alpha = float(eps), float(alpha)
    except (TypeError, ValueError):
        raise UsageError(f"ε {eps!r} and α {alpha!r} must be numbers on the [0,1] pixel scale") from None
    if not (math.isfinite(eps) and 0.0 <= eps <= 1.0):
        raise UsageError(f"ε = {eps} is outside [0, 1]; it is on the [0,1] pixel scale (8/255 = 0.0314)")
    if not (math.isfinite(alpha) and 0.0 < alpha <= 1.0):
        raise UsageError(f"step size α = {alpha} must be in (0, 1] on the [0,1] pixel scale: α = 0 would "
                         "leave every PGD step where it started")


#: Default evaluation batch on the CPU (and any device but CUDA).
EVAL_BATCH = 256
#: Default evaluation batch on CUDA: at 256 a PreAct ResNet-18 attack step is a few hundred
#: small kernels (launch-bound on an H100); 512 doubles the work per launch and keeps an
#: exact-fp32 WRN-34-10 PGD step (~34 MB of saved activations per image) within 24 GB.
#: Provisional until a GPU has run benchmarks/gpu_check.sh: its ``eval_batch`` phase times
#: PGD-20 at 256, 512 and 1024 and reports the batch to set here (docs/performance.md).
CUDA_EVAL_BATCH = 512


def default_eval_batch(device: str | torch.device) -> int:
    """The evaluation batch when none is given: :data:`CUDA_EVAL_BATCH` on CUDA, else 256."""
    return CUDA_EVAL_BATCH if torch.device(device).type == "cuda" else EVAL_BATCH


def _batch_seed(seed: int, start: int) -> int:
    """A seed per batch (by its first example), so a resumed attack redraws the same noise."""
    return (int(seed) * 1_000_003 + int(start)) % (2**63 - 1)


def run_attack(model: nn.Module, data: TensorData, spec: Any, ctx: AttackContext,
               batch_size: int = EVAL_BATCH, progress: Progress | None = None, only: torch.Tensor | None = None, *,
               resume: tuple[torch.Tensor, torch.Tensor] | None = None, checkpoint: Any = None,
               label: str | None = None, checkpoint_interval: float = 0.0, offset: int = 0) -> AttackResult:
    """Run one registered attack over ``data``; returns per-example correctness.

    The outcomes stay on the data's device while the attack runs: which examples of a batch
    to attack is decided on the host (``only``, ``resume``), their positions are sent to the
    device, and nothing is read back until a checkpoint or the end, so batches follow one
    another without a host sync.

    Args:
        only: optional bool mask; examples outside it are not attacked and count as wrong
            (used to attack only what is still robust).
        resume: ``(flags, done)`` from an interrupted run: batches whose examples are all
            ``done`` are skipped and keep their flags.
        checkpoint: ``checkpoint(flags, attacked, done)`` (CPU tensors), called after a batch
            when ``checkpoint_interval`` seconds have passed since the last call (0: after
            every batch); each call reads the outcomes back from the device.
        label: the task's name in ``progress`` events (default: the attack's name).
        offset: position of ``data``'s first example among the examples the attack runs on
            (a sharded evaluation runs each batch on its own): the batches' seeds follow it.
    """
    model.eval()
    n = len(data)
    dev = data.x.device
    attacked = torch.ones(n, dtype=torch.bool) if only is None else only.detach().cpu().bool().clone()
    flags = torch.zeros(n, dtype=torch.bool, device=dev)  # on the device until read back
    done = torch.zeros(n, dtype=torch.bool)
    if resume is not None:
        flags, done = resume[0].to(dev).bool().clone(), resume[1].clone().bool()
    t0 = time.perf_counter()
    last_checkpoint = time.monotonic()
    bs = spec.batch_size or batch_size
    task = (progress.task_start(label or spec.name, total=n, completed=int(done.sum()))
            if progress is not None else None)
    completed = int(done.sum())
    start = 0
    with capture_notes() as notes:
        for x, y, _ in data.batches(bs):
            sl = slice(start, start + len(y))
            start += len(y)
            if done[sl].all():
                continue
            todo = attacked[sl] & ~done[sl]  # host-side masks: deciding costs no sync
            if todo.any():
                torch.manual_seed(_batch_seed(ctx.seed, offset + sl.start))
                if todo.all():
                    xs, ys, rows = x, y, None
                else:  # positions computed on the host, gathered on the device
                    rows = to_device_async(todo.nonzero().squeeze(1), x.device)
                    xs, ys = x.index_select(0, rows), y.index_select(0, rows)
                if spec.any_layout and isinstance(model, FastModel) and model.channels_last:
                    # once per batch: x + δ then has the model's layout at every attack step,
                    # instead of a layout copy (and its backward) in each forward
                    xs = channels_last(xs)
                x_adv = xs if spec.name == "clean" else spec.run(model, xs, ys, ctx)
                with torch.no_grad():
                    ok = model(x_adv).argmax(1) == ys
                if rows is None:
                    flags[sl] = ok
                else:
                    flags.index_copy_(0, rows + sl.start, ok)
            done[sl] = True
            completed += len(y)
            if task is not None:
                progress.task_update(task, completed)
            if checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_interval:
                checkpoint(flags.cpu(), attacked, done)
                last_checkpoint = time.monotonic()
    if task is not None:
        progress.task_end(task)
    flags = flags.cpu()  # the one read-back of an uninterrupted attack
    return AttackResult(attack=spec.name, correct=int(flags.sum()), n=n, settings=spec.settings(ctx),
                        seconds=time.perf_counter() - t0, flags=flags, attacked=attacked,
                        kind=getattr(spec, "kind", "white-box"), notes=list(notes))


def run_keyed(model: nn.Module, data: TensorData, spec: Any, ctx: AttackContext, store: FlagStore,
              key: str, only: torch.Tensor | None, after: list[str], batch_size: int = 256,
              progress: Progress | None = None, label: str | None = None, shard: Any = None) -> AttackResult:
    """:func:`run_attack` with its outcome saved under ``key`` and reused when it matches.

    The examples to attack (``only``) are gathered into full batches first, as AutoAttack's
    ``run_standard_evaluation`` gathers the still-robust points: no batch is half empty
    because its other examples were already broken, and with the same batch size an
    AutoAttack component sees exactly the batches the authors' code gives it.

    Saved outcomes are reused only when they were made with the same batch size (``block``
    in the flag store): batches of another size hold other examples, which see other noise.
    ``shard`` (:class:`robustzoo.eval.Shard`) shares the batches out among the processes of
    a torchrun job; every rank then returns the outcomes of all examples.
    """
    settings = spec.settings(ctx)
    block = spec.batch_size or batch_size
    saved = store.get(key, settings, after)
    if saved is not None and saved[3].get("block") != block:
        saved = None  # recomputed, never mixed with batches of another size
    if shard is not None:
        saved = shard.agree(key, settings, after, block, only, len(data), saved)
    prev_seconds = 0.0
    resume = None
    if saved is not None:
        flags, attacked, done, entry = saved
        prev_seconds = float(entry.get("seconds", 0.0))
        if entry.get("complete"):
            return AttackResult(attack=spec.name, correct=int(flags.sum()), n=len(data), settings=settings,
                                seconds=prev_seconds, flags=flags, attacked=attacked,
                                kind=getattr(spec, "kind", "white-box"), notes=entry.get("notes", []),
                                resumed=True)
        resume = (flags, done)
    t0 = time.perf_counter()

    def checkpoint(flags: torch.Tensor, attacked: torch.Tensor, done: torch.Tensor) -> None:
        store.put(key, settings, after, flags, attacked, done, complete=False, force=False,
                  seconds=prev_seconds + time.perf_counter() - t0, block=block)

    n = len(data)
    mask = only.detach().cpu().bool() if only is not None else None
    # Partial outcomes are read back only as often as the store may save them, and never
    # for a store that keeps nothing on disk.
    on_disk = store.path is not None
    runner = run_attack if shard is None else shard.run_attack
    if mask is None or bool(mask.all()):
        res = runner(model, data, spec, ctx, batch_size, progress, only=only, resume=resume,
                         checkpoint=checkpoint if on_disk else None, label=label,
                         checkpoint_interval=store.min_interval)
    else:
        rows = mask.nonzero().flatten()

        def scatter(sub: torch.Tensor, outside: bool) -> torch.Tensor:
            out = torch.full((n,), outside, dtype=torch.bool)
            out[rows] = sub.detach().cpu().bool()
            return out

        def checkpoint_rows(flags: torch.Tensor, attacked: torch.Tensor, done: torch.Tensor) -> None:
            # Examples outside ``only`` are final (not robust) from the start.
            checkpoint(scatter(flags, False), mask.clone(), scatter(done, True))

        sub_resume = (resume[0][rows], resume[1][rows]) if resume is not None else None
        res = runner(model, data.take(rows.to(data.x.device)), spec, ctx, batch_size, progress,
                         resume=sub_resume, checkpoint=checkpoint_rows if on_disk else None, label=label,
                         checkpoint_interval=store.min_interval)
        res.flags, res.attacked, res.n = scatter(res.flags, False), mask.clone(), n
    res.seconds += prev_seconds
    res.resumed = resume is not None
    # ``ranks``: each process's share of the work (batches, busy seconds) when sharded.
    ranks = {"ranks": shard.stats} if shard is not None and shard.stats else {}
    store.put(key, settings, after, res.flags, res.attacked, torch.ones(len(data), dtype=torch.bool),
              complete=True, seconds=res.seconds, notes=res.notes, block=block, **ranks)
    return res


def examples_block(data: TensorData, of: int, seed: int, split_is_subset: bool = False,
                   test_size: int | None = None) -> dict[str, Any]:
    """Which examples an evaluation used: count, seed, the rule that regenerates them, a hash.

    ``index_sha256`` is the sha256 of the examples' rows in the dataset's test set
    (little-endian int64): with the rule (:data:`robustzoo.eval.SAMPLE_RULE`) anyone can
    regenerate them from ``of``, ``n`` and ``seed`` and check them against it.
    ``split_is_subset``: the split itself is a seeded subset of the test set (``--subset``),
    so ``n == of`` is not the whole test set. ``test_size``: the dataset's canonical test size
    (:attr:`robustzoo.data.DatasetSpec.test_size`), kept so a smaller test split is never
    taken for the whole test set.
    """
    rows = data.index.detach().cpu().to(torch.int64).contiguous()
    digest = hashlib.sha256(rows.numpy().astype("<i8").tobytes()).hexdigest()
    out = {"n": len(data), "of": int(of), "seed": int(seed), "rule": SAMPLE_RULE, "index_sha256": digest}
    if split_is_subset:
        out["split_is_subset"] = True
    if test_size is not None:
        out["test_size"] = int(test_size)
    return out


def _components(spec: Any, ctx: AttackContext) -> tuple[str, ...] | None:
    """The components a composite attack (AutoAttack) runs under ``ctx``, or None."""
    run = spec.run
    if hasattr(run, "components_for"):
        return tuple(run.components_for(ctx))
    comps = getattr(run, "components", None)
    return tuple(comps) if comps else None


def evaluate_model(model: nn.Module, data: TensorData, attacks: list[str], *, eps: float, alpha: float,
                   num_classes: int, n: int | None = None, seed: int = 0, batch_size: int | None = None,
                   device: str | torch.device = "cpu", progress: Progress | None = None, cascade: bool = False,
                   flags_path: str | Path | None = None, options: dict[str, Any] | None = None,
                   health: bool = True, eps_sweep: list[float] | None = None,
                   sweep_attack: str | None = None, checkpoint_interval: float = 10.0,
                   test_size: int | None = None, shard: Any = None) -> dict[str, Any]:
    """Evaluate ``model`` under each named attack; returns the eval.json dictionary.

    Args:
        attacks: registered attack names, in order ('clean' adds the clean row).
        n, seed: evaluate the first ``n`` of a seeded permutation of ``data`` (None: all); the
            report's ``examples`` names them (count, rule, hash of their indices).
        batch_size: examples per attack batch (None: :func:`default_eval_batch` of ``device``).
        progress: receives a task per attack, and a note when saved outcomes are not
            reused (:class:`robustzoo.progress.Progress`; None: silent).
        cascade: attack only what every earlier attack failed on (see the module docstring).
        flags_path: where per-example outcomes are saved and resumed from (None: not saved).
        options: attack options put in ``AttackContext.options`` (kappa, square_queries, ...).
        health: run the gradient-masking checks (:func:`robustzoo.eval.apply_health`) and mark
            suspect rows.
        eps_sweep: also measure accuracy at each of these ε (:func:`robustzoo.eval.run_sweep`)
            with ``sweep_attack`` (default: the first non-clean attack, else pgd20).
        checkpoint_interval: seconds between mid-attack saves of ``flags_path``.
        test_size: the dataset's canonical test size, recorded in ``examples`` (publishing
            counts only that many examples as the whole test set).
        shard: this process's :class:`robustzoo.eval.Shard` of an evaluation run by several
            processes (torchrun): each attack's batches are shared out, and every rank
            returns the same report. Give ``flags_path`` and ``progress`` to rank 0 only.

    An attack whose outcome on the same examples, with the same settings, this evaluation
    already has (APGD-CE standalone and as AutoAttack's first component, in either order) is
    not run twice: the row shares the outcome (``"reused"`` names the row it came from).
    """
    batch_size = default_eval_batch(device) if batch_size is None else batch_size
    reg = registry("attacks")
    names = list(dict.fromkeys(attacks))
    if not names:
        raise UsageError("no attacks to run; name at least one, e.g. attacks=['clean', 'pgd20'] "
                         "(--attacks clean,pgd20)")
    check_budget(eps, alpha)
    if batch_size < 1:
        raise UsageError(f"batch size {batch_size} must be at least 1")
    options = parse_attack_options(dict(options or {}))  # the API's dict goes through the same rules
    specs = [reg.get(a) for a in names]  # fail fast on a misspelled name
    for s in specs:
        for c in getattr(s.run, "components", ()) or ():
            reg.get(c)
    if eps_sweep:
        sweep_name = sweep_attack or next((a for a in names if a != "clean"), "pgd20")
        sweep_spec = reg.get(sweep_name)
    of = len(data)
    # A split whose rows are not 0..of-1 was drawn from the test set (load_splits' subset).
    split_is_subset = not torch.equal(data.index.detach().cpu(), torch.arange(of))
    data = select_examples(data, n, seed).to(device)
    ctx = AttackContext(eps=eps, alpha=alpha, num_classes=num_classes, seed=seed, device=str(device),
                        options=dict(options or {}))
    model = model.to(device).eval()
    fingerprint = model_fingerprint(model)
    header = {"model": fingerprint if flags_path is not None else None, "eps": eps,
              "alpha": alpha, "seed": seed, "n": len(data), "norm": ctx.norm, "num_classes": num_classes,
              "autocast": autocast_dtype(device)}  # bf16 outcomes are never resumed as fp32 ones
    # Attack options (kappa, square_queries, ...) are not in the header: each attack's settings,
    # which name the options it uses, are compared entry by entry instead.
    store = FlagStore(flags_path, header, data.index, min_interval=checkpoint_interval)
    if store.discarded and progress is not None:
        progress.note(f"{flags_path}: not reused ({store.discarded}); evaluating afresh (the file is replaced "
                      f"by this evaluation's outcomes; its records in evals/ are kept)")
    # Randomness first (a few forward passes): AutoAttack's version depends on it, as the
    # authors' own check_randomized advises version='rand' (EoT) for a randomised model.
    wants_aa = any(_components(s, ctx) for s in specs)
    sample = _probe_sample(data, seed) if health or wants_aa else None
    randomness = None
    if health or (wants_aa and ctx.options.get("aa_version", "auto") == "auto"):
        randomness = _health.randomness_probe(model, sample[0], sample[1], seed=seed, batch_size=batch_size)
    aa_version = ctx.options.get("aa_version", "auto")
    aa_auto = aa_version == "auto"
    if aa_auto:
        aa_version = "rand" if randomness and randomness["randomised"] else "standard"
    if aa_version not in AA_VERSIONS:
        raise UsageError(f"aa_version {aa_version!r} is not one of {', '.join(AA_VERSIONS)} or auto")
    # The standard an attack is compared with: its settings with no options, except that the
    # AutoAttack version the randomness probe chose is the authors' protocol for this model.
    std_ctx = replace(ctx, options={"aa_version": aa_version} if aa_auto else {})
    clean_spec = reg.get("clean")
    results: list[AttackResult] = []
    # Outcomes of this call by (attack, settings): an attack on the same examples is run once.
    ran: list[tuple[str, dict[str, Any], torch.Tensor, str, AttackResult]] = []

    def run_once(spec: Any, actx: AttackContext, key: str, only: torch.Tensor | None, after: list[str],
                 label: str | None = None) -> AttackResult:
        settings = spec.settings(actx)
        mask = only if only is not None else torch.ones(len(data), dtype=torch.bool)
        for name, sett, o, k, r in ran:
            if name == spec.name and sett == settings and torch.equal(o, mask):
                shared = replace(r, flags=r.flags.clone(), attacked=r.attacked.clone(), seconds=0.0,
                                 notes=list(r.notes), reused=k, components=[])
                store.put(key, settings, after, shared.flags, shared.attacked,
                          torch.ones(len(data), dtype=torch.bool), complete=True, seconds=0.0,
                          notes=shared.notes, block=spec.batch_size or batch_size)
                return shared
        res = run_keyed(model, data, spec, actx, store, key, only, after, batch_size, progress, label=label,
                        shard=shard)
        ran.append((spec.name, settings, mask.clone(), key, res))
        return res

    clean = run_once(clean_spec, ctx, "clean", None, [])
    running = clean.flags.clone()
    chain = ["clean"]
    for spec in specs:
        if spec.name == "clean":
            results.append(clean)
            continue
        only = running if cascade else clean.flags
        after = list(chain) if cascade else ["clean"]
        key = spec.name if not cascade or len(after) == 1 else f"{spec.name}<{'+'.join(after[1:])}"
        sctx = replace(ctx, options=dict(ctx.options, aa_version=aa_version)) if _components(spec, ctx) else ctx
        comps = _components(spec, sctx)
        if comps:
            cctx = spec.run.component_context(sctx) if hasattr(spec.run, "component_context") else sctx
            sub_only, sub_after, parts = only, list(after), []
            for c in comps:
                ckey = f"{key}/{c}"
                r = run_once(reg.get(c), cctx, ckey, sub_only, sub_after, label=f"{spec.name}: {c}")
                r.flags = r.flags & sub_only
                r.correct = int(r.flags.sum())
                parts.append(r)
                sub_only, sub_after = r.flags, sub_after + [ckey]
            res = AttackResult(attack=spec.name, correct=int(sub_only.sum()), n=len(data),
                               settings=spec.settings(sctx), seconds=sum(p.seconds for p in parts),
                               flags=sub_only.clone(), attacked=only.clone(), kind=spec.kind,
                               components=parts, notes=[m for p in parts for m in p.notes],
                               resumed=all(p.resumed for p in parts))
        else:
            res = run_once(spec, ctx, key, only, after)
        res.cascaded = cascade and len(after) > 1
        res.after = after
        res.custom = custom_settings(spec.settings(sctx), spec.settings(std_ctx))
        results.append(res)
        if cascade:
            running = running & res.flags
            chain.append(key)
    sweep_rows = None
    if eps_sweep:
        run = partial(run_keyed, model, data, store=store, batch_size=batch_size, progress=progress, shard=shard)
        sweep_rows = run_sweep(run, sweep_spec, ctx, list(eps_sweep), clean.flags)
    probes = None
    if health:
        # ε = 0 probe: the cheapest PGD-family attack of the list, else FGSM (one step; running
        # a 100-iteration APGD or an unlisted PGD-20 at ε = 0 would cost more than every other
        # probe together, and randomness has its own check).
        cheap = {s.name: s for s in specs if s.kind == "white-box" and not _components(s, ctx)}
        probe_spec = next((cheap[a] for a in ("fgsm", "pgd", "pgd20", "cw", "pgd100") if a in cheap),
                          reg.get("fgsm"))
        probes = _probes(model, sample, ctx, probe_spec, batch_size)
        probes["randomness"] = randomness
    robust = [r for r in results if r.attack != "clean"]
    out: dict[str, Any] = {"eps": eps, "alpha": alpha, "n": len(data), "seed": seed,
                           "num_classes": num_classes, "mode": "cascade" if cascade else "standalone",
                           "model": fingerprint, "examples": examples_block(data, of, seed, split_is_subset, test_size),
                           # the batches' size decides which examples share noise (docs/evaluation.md)
                           "batch_size": batch_size, "results": [r.to_dict() for r in results]}
    if ctx.options:
        out["options"] = dict(ctx.options)
    custom = {r.attack: r.custom for r in results if r.custom}
    out["standard"] = not custom
    if custom:
        out["custom_settings"] = custom
    if any(_components(s, ctx) for s in specs):
        # Which AutoAttack ran, and why: a switch to the rand version is never silent.
        why = ("chosen by the randomness probe: " + ("the model is randomised" if aa_version == "rand" else
               "the model is deterministic") if aa_auto else "set by --set aa_version")
        out["autoattack_version"] = {"version": aa_version, "chosen": "auto" if aa_auto else "option",
                                     "reason": why}
    if robust:
        worst = torch.stack([r.flags for r in robust]).all(0)
        lo, hi = wilson_interval(int(worst.sum()), len(data))
        out["worst_case"] = {"accuracy": round(float(worst.float().mean()), 6), "correct": int(worst.sum()),
                             "n": len(data), "ci95": [round(lo, 6), round(hi, 6)],
                             "attacks": [r.attack for r in robust]}
    if sweep_rows is not None:
        out["eps_sweep_attack"] = sweep_spec.name
        out["eps_sweep"] = sweep_rows
    if flags_path is not None:
        out["flags_file"] = Path(flags_path).name
        reused = [r.attack for r in results if r.resumed]
        if reused:
            out["resumed"] = reused
    if health:
        _health.apply(out, {r.attack: r.flags for r in results}, probes)
    return out


def mark_precision(report: dict[str, Any], precision: str, drift: dict[str, Any] | None = None) -> None:
    """Record which precision produced each number (and the drift that allowed bf16)."""
    report["precision"] = precision
    for r in report.get("results", []):
        r["precision"] = precision
    if drift is not None:
        report["precision_check"] = drift


def _probe_sample(data: TensorData, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of the evaluated examples for the health probes (at most probe_n)."""
    sample = select_examples(data, int(_health.THRESHOLDS["probe_n"]), seed + 1)
    x, y, _ = next(iter(sample.batches(len(sample))))
    return x, y


def _probes(model: nn.Module, sample: tuple[torch.Tensor, torch.Tensor], ctx: AttackContext, spec: Any,
            batch_size: int) -> dict[str, Any]:
    """The health probes on the probe sample."""
    x, y = sample
    with capture_notes() as notes:  # the ε = 0 probe may be an AutoAttack component
        out = _health.run_probes(model, x, y, ctx, spec, batch_size=batch_size)
    out["degenerate"] = _health.degenerate_probe(model, x, y, batch_size=batch_size)
    if notes:
        out["notes"] = notes
    return out


@dataclass(frozen=True)
class AttackOption:
    """One attack option of ``robustzoo eval --set KEY=VALUE``: its type, range and meaning.

    A value outside the range is refused where it enters (the command line or the API), so
    no setting can turn an attack into a no-op (zero restarts, queries or EoT samples) or
    put NaN into a record; the same bounds hold for the matching train settings. The maxima
    catch typos (an extra zero that would run for days), far above any published protocol.
    """

    type: type
    help: str
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()

    def check(self, key: str, value: Any) -> Any:
        """``value`` converted to the option's type; UsageError naming key, value and range."""
        what = f"--set {key}={value!r}"
        try:
            v = self.type(value)
        except (TypeError, ValueError):
            raise UsageError(f"{what} is not a valid {self.type.__name__}{self._range()}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"{what} is not a finite number{self._range()}")
        if (self.minimum is not None and v < self.minimum) or (self.maximum is not None and v > self.maximum):
            raise UsageError(f"{what} is out of range{self._range()}")
        if self.choices and v not in self.choices:
            raise UsageError(f"{what}{did_you_mean(str(v), self.choices)}; choose one of "
                             f"{', '.join(self.choices)}")
        return v

    def _range(self) -> str:
        if self.minimum is None and self.maximum is None:
            return ""
        bounds = [f"{op} {int(b) if self.type is int else f'{b:g}'}"
                  for op, b in ((">=", self.minimum), ("<=", self.maximum)) if b is not None]
        return f" (allowed: a {'whole number' if self.type is int else 'number'} {' and '.join(bounds)})"


#: Options an evaluation passes to the attacks (``--set KEY=VALUE`` on ``robustzoo eval``).
ATTACK_OPTIONS: dict[str, AttackOption] = {
    # κ < 0 would stop the CW attack while the margin is still positive (never misclassify).
    "kappa": AttackOption(float, "CW∞ margin κ of the 'cw' attack (default 50; >= 0)", minimum=0.0),
    "square_queries": AttackOption(int, "Square Attack query budget, also inside autoattack (default 5000; "
                                        "1 to 1000000)", minimum=1, maximum=1_000_000),
    "apgd_restarts": AttackOption(int, "restarts of apgd-ce / apgd-dlr (default 1, AutoAttack standard; "
                                       "1 to 1000: 0 would run nothing)", minimum=1, maximum=1000),
    "cw_rand_init": AttackOption(str, "start of the 'cw' attack: none (default, as pgd20/pgd100) or uniform",
                                 choices=("none", "uniform")),
    "eot_iter": AttackOption(int, "gradient samples per APGD step, Expectation over Transformation "
                                  "(default 1; 1 to 1000)", minimum=1, maximum=1000),
    "aa_version": AttackOption(str, "AutoAttack version: auto (default: rand when the model is randomised), "
                                    "standard or rand", choices=("auto", *AA_VERSIONS)),
}


def parse_attack_options(pairs: dict[str, Any] | list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Typed, range-checked attack options from ``KEY=VALUE`` strings (or a dict).

    Unknown keys, values of the wrong type, non-finite numbers and values that would make an
    attack a no-op are UsageErrors naming the key, the value and the allowed range.
    """
    if not isinstance(pairs, dict):
        items = {}
        for p in pairs:
            if "=" not in p:
                raise UsageError(f"--set {p!r} is not KEY=VALUE (e.g. --set square_queries=1000)")
            k, v = p.split("=", 1)
            items[k.strip().replace("-", "_")] = v.strip()
        pairs = items
    out: dict[str, Any] = {}
    for k, v in pairs.items():
        if k not in ATTACK_OPTIONS:
            raise UsageError(f"unknown attack option {k!r}{did_you_mean(k, ATTACK_OPTIONS)}; "
                             f"known: {', '.join(ATTACK_OPTIONS)}")
        out[k] = ATTACK_OPTIONS[k].check(k, v)
    return out
