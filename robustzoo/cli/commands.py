"""The built-in commands: train, eval, list, plugins, env."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table

from .. import files
from .._version import __version__
from ..config import MAX_EPOCHS, MAX_STEPS  # plain data (robustzoo.settings), no torch
from ..errors import (
    Interrupted,
    NotFoundError,
    RobustzooError,
    StorageError,
    UsageError,
    did_you_mean,
)
from ..plugins import plugin_infos, registry
from ..ui import RichProgress, attacks_for_skipped_checks, health_table, results_table, sweep_table

# The engines (train, eval, hub, distributed, objectives, runs) are imported inside
# the commands that use them: they import torch, timm or huggingface_hub, which take seconds,
# and `robustzoo --help` or `robustzoo list` should not wait for them.

class Choice(click.Choice):
    """click.Choice whose error names the close match (`list attackz` -> did you mean 'attacks')."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            hint = did_you_mean(str(value), [str(c) for c in self.choices])
            if not hint:
                raise
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}{hint}", param, ctx)


# Piped output (scripts, CI logs) gets a wide table instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else 160
stdout = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)

CONTEXT = dict(help_option_names=["-h", "--help"], max_content_width=100)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="robustzoo")
def cli() -> None:
    """robustzoo: train, evaluate and publish adversarially robust image classifiers.

    \b
    Examples:
      robustzoo train                                  # PGD AT on the embedded digits data
      robustzoo train --objective trades --dataset fashion-mnist --subset 5000 --epochs 2
      robustzoo eval runs/at-digits-... --attacks clean,fgsm,pgd20,pgd100,cw
      robustzoo list objectives
      robustzoo env                                    # paste this into bug reports

    Add --debug anywhere to see a traceback instead of a one-line error.
    """


def parse_extra_options(args: list[str]) -> dict[str, str]:
    """Turn leftover ``--beta 6 --loss=mix`` tokens into objective settings."""
    out_: dict[str, str] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise UsageError(f"unexpected argument {tok!r}; objective settings go as --key value or --set key=value")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        else:
            value = "true"
        out_[key.replace("-", "_")] = value
        i += 1
    return out_


def _emit_json(data: Any, target: str | None) -> None:
    text = json.dumps(data, indent=2, default=str)
    if target in (None, "-"):
        click.echo(text)
    else:
        write_file(target, text + "\n", "--json")


def write_file(path: str, text: str, option: str) -> None:
    """Write an output file a user named (files.check_output_file), saying so when it replaced one."""
    existed = files.check_output_file(path, option)
    files.write_text(path, text)
    err.print(files.replaced_note(path, existed))


def _set_keys_epilog() -> str:
    """The ``--set`` keys with their meaning and range, for ``train --help`` (from config.SCHEMA)."""
    from ..config import SCHEMA  # torch-free: the schema is plain data (robustzoo.settings)

    width = max(map(len, SCHEMA)) + 2
    lines = [f"  {k:<{width}}{r.meaning}: {r.describe()}" for k, r in SCHEMA.items() if not r.option]
    return ("\b\n--set KEY=VALUE takes these keys, and those of the options above (--set eps=8/255 is --eps "
            "8/255);\neach value is checked for type and range before any data is loaded:\n" + "\n".join(lines) + "\n\nThe objective's own settings (--set beta=6 or "
            "--beta 6): `robustzoo list objectives NAME`.")


@cli.command(context_settings=dict(CONTEXT, ignore_unknown_options=True, allow_extra_args=True),
             epilog=_set_keys_epilog())
@click.option("--recipe", help="named configuration (see `robustzoo list recipes`)")
@click.option("--objective", "-o", help="training objective (default at; see `robustzoo list objectives`)")
@click.option("--dataset", "-d", help="dataset (default digits)")
@click.option("--arch", "-a", help="architecture, or any timm model as timm/<name>")
@click.option("--attack", help="training attack of the objective (at: pgd|fgsm|cw; calibrated: cent|cw)")
@click.option("--eps", help="L-inf budget on the [0,1] scale, e.g. 0.1 or 8/255")
@click.option("--alpha", help="PGD step size on the [0,1] scale")
@click.option("--steps", type=int, help=f"PGD steps of the training attack (1 to {MAX_STEPS})")
@click.option("--epochs", type=int, help=f"training epochs (1 to {MAX_EPOCHS}; default: the dataset's or recipe's)")
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--subset", type=int, help="train on N images only (quick runs); the validation split shrinks to "
              "N/10 and the final evaluation uses at most N test images (a seeded subset)")
@click.option("--data-dir", type=click.Path(), help="where dataset files live")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="any config or objective setting")
@click.option("--out", type=click.Path(), help="run directory (default runs/<objective>-<dataset>-<time>)")
@click.option("--resume", type=click.Path(), help="continue the run in this directory")
@click.option("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="print the final evaluation as JSON on stdout")
@click.option("--precision", type=Choice(["auto", "bf16", "fp32"]),
              help="auto = bf16 autocast on CUDA, fp32 on CPU; fp32 = exact (TF32 off)")
@click.option("--compile", "compile_mode", is_flag=False, flag_value="reduce-overhead", metavar="[MODE]",
              help="torch.compile the model: --compile = reduce-overhead (CUDA graphs); or default, "
                   "max-autotune, off")
@click.option("--nproc", type=click.IntRange(min=1), help="train with N processes (DDP, one GPU each) via torchrun")
@click.pass_context
def train(ctx: click.Context, recipe, objective, dataset, arch, attack, eps, alpha, steps, epochs,
          batch_size, lr, subset, data_dir, sets, out, resume, device, seed, as_json, precision,
          compile_mode, nproc) -> None:
    """Train a model; ends with a table of clean and robust test accuracy.

    Objective settings can be given as --set key=value or directly as --key value.

    \b
    Examples:
      robustzoo train
      robustzoo train --objective trades --beta 6 --epochs 5
      robustzoo train --objective calibrated --attack cw --dataset fashion-mnist --subset 5000 --epochs 2
      robustzoo train --recipe cat-cw-wrn34 --data-dir data --set epochs=1
      robustzoo train --resume runs/at-digits-20260101-120000
      robustzoo train --recipe at-prn18 --data-dir data --compile --nproc 2   # docs/performance.md
    """
    for opt, value in (("--out", out), ("--resume", resume), ("--data-dir", data_dir)):
        if value is not None and not str(value).strip():
            raise UsageError(f"{opt} is empty (an unset shell variable?); give a directory"
                             + (", or leave --out out for runs/<objective>-<dataset>-<time>" if opt == "--out" else ""))
    # deferred: these import torch (see the top of this module)
    from .. import distributed
    from ..config import parse_set_options
    from ..train import Trainer, build_config, config_from_run, default_out_dir, resolve

    world = distributed.env_info().world_size
    if nproc is not None and world > 1 and nproc != world:
        raise UsageError(f"--nproc {nproc} disagrees with WORLD_SIZE={world} set by torchrun; drop --nproc")
    if nproc is not None and nproc > 1 and world == 1:
        args = _relaunch_args(ctx)
        if not resume:  # check settings here (one-line errors) and fix the run directory
            pairs = parse_set_options(sets)
            pairs.update(parse_extra_options(ctx.args))
            if attack:
                pairs["attack"] = attack
            cfg = resolve(build_config(objective, recipe, pairs, dataset=dataset, arch=arch, eps=eps, alpha=alpha,
                                       steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, subset=subset,
                                       data_dir=data_dir, device=device, seed=seed, precision=precision,
                                       compile=compile_mode)).config
            distributed.per_process_batch_size(cfg.batch_size, nproc)
            target = Path(out) if out else default_out_dir(cfg)
            files.check_run_dir(target, "--out", create_parent=not out)
            if not out:
                files.make_dir(target.parent)  # robustzoo's own runs/: the processes check --out
                args = ["train", f"--out={target}", *args[1:]]
        err.print(f"launching {nproc} processes: {' '.join(distributed.launch_command(nproc, args)[2:])}")
        code = distributed.launch(nproc, args)
        if code:
            raise click.exceptions.Exit(code)
        return
    bars = RichProgress()  # draws on the first task; only rank 0 reports tasks
    if resume:
        given = [n for n, v in dict(recipe=recipe, objective=objective, dataset=dataset, arch=arch, attack=attack,
                                    eps=eps, alpha=alpha, steps=steps, epochs=epochs, batch_size=batch_size,
                                    lr=lr, subset=subset, seed=seed, out=out).items() if v is not None]
        if given or sets or ctx.args:
            what = given[0].replace("_", "-") if given else "set"
            raise UsageError(f"--resume continues a run with its saved settings; drop --{what} (to change "
                             f"settings, start a new run with `robustzoo train --out DIR`)")
        cfg = config_from_run(resume)
        if data_dir:  # where the files live, not what is computed: a moved dataset may be found again
            cfg.data_dir = data_dir
        if device:
            cfg.device = device
        if compile_mode:
            cfg.compile = compile_mode
        if precision:
            cfg.precision = precision
        trainer = Trainer(cfg, resume, resume=True, progress=bars)
        run_dir = Path(resume)
    else:
        pairs = parse_set_options(sets)
        pairs.update(parse_extra_options(ctx.args))
        if attack:
            pairs["attack"] = attack
        cfg = build_config(objective, recipe, pairs, dataset=dataset, arch=arch, eps=eps, alpha=alpha,
                           steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, subset=subset,
                           data_dir=data_dir, device=device, seed=seed, precision=precision,
                           compile=compile_mode)
        run_dir = Path(out) if out else default_out_dir(cfg)
        # Before the data loads: a missing folder, a file or a folder of other files is refused.
        files.check_run_dir(run_dir, "--out", create_parent=not out)
        trainer = Trainer(cfg, run_dir, progress=bars)
        run_dir = trainer.out  # under torchrun: rank 0's choice
    c = trainer.cfg
    if trainer.dist.is_main:
        procs = f" × {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
        err.print(f"training [bold]{c.objective}[/bold] on {c.dataset} ({len(trainer.train_data)} images) with "
                  f"{c.arch}, ε={c.eps:.4g}, {c.epochs} epochs, on {trainer.device}{procs} ({c.precision}"
                  f"{', compiled' if c.compile != 'off' else ''}) → {run_dir}")
        from ..runs import read_metrics  # deferred, as at the top (torch is loaded by now)

        done = read_metrics(run_dir)[-1:] if resume else []
        if done and int(done[0].get("epoch", 0)) >= c.epochs:
            err.print(f"training had finished (epoch {c.epochs} of {c.epochs}): only the final evaluation of the best "
                      f"checkpoint runs again (more attacks: robustzoo eval {run_dir})", soft_wrap=True)
    try:
        with bars:
            report = trainer.fit()
    except KeyboardInterrupt:
        raise Interrupted(interrupted_training(run_dir, c.epochs)) from None
    except StorageError as exc:  # a full disk mid-run: say what is kept and how to go on
        raise StorageError(f"{exc}; {kept_training(run_dir, c.epochs)}") from None
    if report is None:  # a rank other than 0: rank 0 reports
        return
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), **report}, indent=2))
    else:
        stdout.print(results_table(report, title=f"{c.objective} on {c.dataset} (test, best epoch "
                                               f"{report.get('best_epoch')})"))
        # The next evaluation also runs what the final evaluation's skipped health checks need.
        attacks = ["clean", "fgsm", "pgd20", "pgd100", "cw"]
        attacks += [a for a in attacks_for_skipped_checks(report) if a not in attacks]
        stdout.print(f"run directory: {run_dir}   next: robustzoo eval {run_dir} --attacks {','.join(attacks)}")


def interrupted_training(run_dir: Path, epochs: int) -> str:
    """What a Ctrl-C during training kept in ``run_dir``, and the command that continues it."""
    from ..runs import CONFIG_FILE, read_metrics  # deferred, as at the top (torch is loaded by now)

    try:
        rows = read_metrics(run_dir)  # one row per finished epoch
    except RobustzooError:  # damaged by hand meanwhile: the resume command still applies
        rows = []
    done = rows[-1].get("epoch", len(rows)) if rows else 0
    resume = f"`robustzoo train --resume {run_dir}`"
    if not (run_dir / CONFIG_FILE).is_file():
        return f"training had not started; nothing was written to {run_dir}"
    if done == 0:
        return (f"no epoch had finished, so no weights were kept ({run_dir} holds the settings); "
                f"start it again with {resume}")
    if done >= epochs:
        return (f"all {epochs} epochs had finished and are kept in {run_dir}; the final evaluation was "
                f"cut short: {resume} runs it")
    return (f"kept epoch {done} of {epochs} in {run_dir} (last.safetensors and the optimiser state; "
            f"model.safetensors is the best so far); continue with {resume}")


def kept_training(run_dir: Path, epochs: int) -> str:
    """After a failed write: the epochs kept in ``run_dir`` and the command that continues."""
    from ..runs import CONFIG_FILE, read_metrics  # deferred, as at the top (torch is loaded by now)

    if not (run_dir / CONFIG_FILE).is_file():
        return "nothing was written"
    try:
        done = len(read_metrics(run_dir))
    except RobustzooError:
        done = 0
    if not done:
        return f"no epoch was kept; then start it again with `robustzoo train --resume {run_dir}`"
    return (f"epochs 1-{done} of {epochs} are kept in {run_dir}; then continue with "
            f"`robustzoo train --resume {run_dir}`")


def _relaunch_args(ctx: click.Context) -> list[str]:
    """``train`` plus the options given on this command line (except --nproc), for torchrun."""
    args = [ctx.command.name or "train"]
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name == "nproc":
            continue
        if ctx.get_parameter_source(p.name) not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        opt = max(p.opts, key=len)
        value = ctx.params[p.name]
        if p.is_flag and not isinstance(p.flag_value, str):
            if value:
                args.append(opt)
        else:
            args += [f"{opt}={v}" for v in (value if p.multiple else [value])]
    return args + list(ctx.args)


@cli.command("eval")
@click.argument("model")
@click.option("--suite", help="named attack set: quick (clean,pgd20,apgd-dlr on 1,000), paper, autoattack")
@click.option("--attacks", help="comma-separated attack names (default clean,pgd20,cw; see `robustzoo list attacks`)")
@click.option("--n", type=click.IntRange(min=1), help="evaluate on N test images (seeded choice; default: "
              "the suite's, else all)")
@click.option("--eps", help="override the run's ε (on the [0,1] scale, e.g. 8/255)")
@click.option("--seed", type=int, default=0, show_default=True, help="chooses the N images and seeds the attacks")
@click.option("--cascade/--full", default=False, show_default=True,
              help="--cascade attacks only what earlier attacks missed (rows become running worst cases); "
                   "--full gives each attack's standalone number")
@click.option("--eps-sweep", metavar="LIST", help="also measure accuracy at each ε, e.g. 0,2/255,4/255,8/255")
@click.option("--plot", type=click.Path(), help="write the accuracy-vs-ε plot of --eps-sweep to this PNG")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="attack option: kappa, cw_rand_init, square_queries, apgd_restarts, eot_iter, aa_version")
@click.option("--no-health", is_flag=True, help="skip the gradient-masking checks (the report is then never published nor preferred to a checked one)")
@click.option("--no-resume", is_flag=True, help="ignore RUN_DIR/eval_flags.safetensors and start afresh")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="examples per attack batch  [default: 256; 512 on CUDA]")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", type=click.Path())
@click.option("--dataset", help="test set of a model that records none (a timm export of a fine-tune)")
@click.option("--revision", help="Hub revision (commit sha) for hub models")
@click.option("--endpoint", help="Hub endpoint URL")
@click.option("--cache-dir", type=click.Path(), help="Hugging Face cache directory")
@click.option("--json", "json_out", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
@click.option("--precision", type=Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto = fp32 = exact fp32 on every device (TF32 off); bf16 only after --check-precision "
                   "measured every attack within 0.1 points")
@click.option("--check-precision", is_flag=True,
              help="instead of evaluating, measure bf16 against fp32 for these attacks and save the check "
                   "in RUN_DIR/precision_check.json (what --precision bf16 needs)")
@click.option("--allow-custom", is_flag=True,
              help="let a report with non-standard attack settings (--set) become the canonical record; "
                   "cards and RobustBench records then say so")
@click.option("--nproc", type=click.IntRange(min=1), help="evaluate with N processes (one GPU each, or CPU "
              "processes) via torchrun; the same numbers as one process")
@click.pass_context
def eval_cmd(ctx, model, suite, attacks, n, eps, seed, cascade, eps_sweep, plot, sets, no_health, no_resume,
             batch_size, device, data_dir, dataset, revision, endpoint, cache_dir, json_out, precision,
             check_precision, allow_custom, nproc) -> None:
    """Evaluate MODEL (run directory, zoo alias, hf-hub:org/name, or a timm export of a
    robustzoo net: a save_for_hf folder or push_to_hf_hub repo) on its test set.

    Prints accuracy with 95% intervals per attack, the worst case per example, and a
    gradient-masking health report; suspect numbers are marked. For a run directory the
    per-example outcomes are saved, so an interrupted evaluation resumes (docs/evaluation.md).

    \b
    Examples:
      robustzoo eval runs/at-digits-... --suite quick
      robustzoo eval runs/at-digits-... --suite paper --json results.json
      robustzoo eval runs/at-digits-... --suite autoattack --n 1000
      robustzoo eval runs/at-digits-... --attacks clean,pgd20,square --set square_queries=1000
      robustzoo eval runs/at-digits-... --eps-sweep 0,0.05,0.1,0.2 --plot curve.png
      robustzoo eval runs/cat-cw-wrn34 --suite autoattack --nproc 4   # 4 GPUs, same numbers as 1
      robustzoo eval my-finetune/ --dataset fashion-mnist --suite quick   # a timm save_for_hf folder
    """
    # deferred: these import torch (see the top of this module)
    from .. import distributed
    from ..api import evaluate
    from ..eval import parse_attack_options
    from ..objectives import parse_number

    env = distributed.env_info()
    if nproc is not None and env.world_size > 1 and nproc != env.world_size:
        raise UsageError(f"--nproc {nproc} disagrees with WORLD_SIZE={env.world_size} set by torchrun; drop --nproc")
    eps_v = None if eps is None else parse_number(eps, "--eps")
    # Output paths are checked before hours of attacks, not after (files.check_output_file).
    replaced = {opt: files.check_output_file(path, opt) for opt, path in (("--plot", plot), ("--json", json_out))
                if path not in (None, "-")}
    if check_precision:
        _check_precision_cmd(model, suite, attacks, n, seed, batch_size, device, data_dir, revision, endpoint,
                             cache_dir, json_out)
        return
    if nproc is not None and nproc > 1 and env.world_size == 1:
        _launch_eval(ctx, model, nproc, suite, attacks, n, sets, eps_sweep, device, revision, endpoint, cache_dir)
        return
    try:
        with RichProgress() as bars:
            report = evaluate(model, attacks, n=n, eps=eps_v, seed=seed, batch_size=batch_size, device=device,
                              data_dir=data_dir, progress=bars, revision=revision, endpoint=endpoint,
                              cache_dir=cache_dir, suite=suite, cascade=cascade,
                              options=parse_attack_options(sets), eps_sweep=eps_sweep, plot=plot,
                              health=not no_health, resume=not no_resume, precision=precision,
                              allow_custom=allow_custom, dataset=dataset)
    except KeyboardInterrupt:
        if env.rank and distributed.record_failure("interrupted"):
            # sys.exit, not click's Exit: click returns that one's code from main(standalone_mode=False)
            sys.exit(130)  # rank 0 says what was kept
        raise Interrupted(_interrupted_eval(model)) from None
    except StorageError as exc:  # a full disk after some attacks: their outcomes are on disk
        raise StorageError(f"{exc}; {_kept_eval(model)}") from None
    except Exception as exc:
        # Under `eval --nproc` a rank other than 0 hands its one-line error to the launcher,
        # which prints the first failure only (docs/evaluation.md, "Distributed evaluation").
        if env.rank and not os.environ.get("ROBUSTZOO_DEBUG") and distributed.record_failure(_one_line(exc)):
            sys.exit(getattr(exc, "exit_code", 1))
        raise
    if env.rank:  # rank 0 prints and writes
        return
    if plot:
        err.print(files.replaced_note(plot, replaced["--plot"]))
    if n is not None and n > report["n"]:
        err.print(f"note: --n {n:,} is more than the {report['n']:,} test images; all of them were evaluated",
                  soft_wrap=True)
    _say_record(model, report)
    if json_out == "-":
        _emit_json(report, "-")
        return
    if json_out:  # before the tables: `robustzoo eval ... | head` must not cost the file
        _emit_json(report, json_out)
    stdout.print(results_table(report, title=f"{model} ({report['dataset']} test, ε={report['eps']:.4g})"))
    if report.get("health"):
        stdout.print(health_table(report))
        ran = [r["attack"] for r in report["results"]]
        extra = attacks_for_skipped_checks(report)
        if extra:
            err.print(f"to run the skipped checks: robustzoo eval {model} --attacks {','.join(ran + extra)}"
                      + (f" --n {report['n']}" if n else ""), soft_wrap=True)
    if report.get("eps_sweep"):
        stdout.print(sweep_table(report))


def _one_line(exc: BaseException) -> str:
    """An exception as the CLI's one-line error message (without the 'error: ' prefix)."""
    from ..errors import RobustzooError

    if isinstance(exc, RobustzooError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def _launch_eval(ctx: click.Context, model: str, nproc: int, suite: str | None, attacks: str | None,
                 n: int | None, sets: tuple[str, ...], eps_sweep: str | None, device: str, revision: str | None,
                 endpoint: str | None, cache_dir: str | None) -> None:
    """``eval --nproc N``: check what can be checked once, then run the command in N processes."""
    import torch  # deferred, as at the top (loaded by now)

    from .. import distributed
    from ..api import resolve_model_dir
    from ..devices import resolve_device
    from ..eval import parse_attack_options, parse_eps_list, resolve_suite

    names, _ = resolve_suite(suite, attacks, n)
    for a in names:
        registry("attacks").get(a)
    parse_attack_options(sets)
    if eps_sweep:
        parse_eps_list(eps_sweep)
    dev = resolve_device(device)
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise UsageError(f"--nproc {nproc} needs {nproc} GPUs; {torch.cuda.device_count()} are visible "
                         f"(use --nproc {torch.cuda.device_count()}, or --device cpu)")
    resolve_model_dir(model, revision=revision, endpoint=endpoint, cache_dir=cache_dir)  # a Hub model: pulled once
    args = _relaunch_args(ctx)
    args.insert(1, model)
    err.print(f"launching {nproc} processes: torchrun {' '.join(distributed.here_command(nproc, args))}", soft_wrap=True)
    failure = distributed.launch_here(nproc, args, debug=bool(os.environ.get("ROBUSTZOO_DEBUG")))
    if failure is None:
        return
    if failure.printed:  # rank 0 said what went wrong (or Ctrl-C: what was kept)
        sys.exit(failure.exitcode)
    from ..errors import RobustzooError
    from ..eval import FLAGS_FILE

    flags = Path(model) / FLAGS_FILE
    kept = (f"the outcomes saved so far are kept in {flags}: run the same command again, with any --nproc, "
            f"to resume" if flags.is_file() else "nothing had been saved")
    raise RobustzooError(f"{failure.describe()}; {kept}")


def _say_record(model: str, report: dict[str, Any]) -> None:
    """Which history record an evaluation wrote, and which record eval.json now holds."""
    rec = report.get("record")
    if not rec:
        return
    run = Path(model)
    if rec.get("migrated"):
        err.print(f"kept the earlier {run / 'eval.json'} as {run / 'evals' / rec['migrated']}.json", soft_wrap=True)
    err.print(f"wrote {run / rec['path']}", soft_wrap=True)
    if rec.get("canonical") is None:
        err.print(f"no canonical record: this evaluation may not be one ({'; '.join(rec.get('not_canonical') or [])}) "
                  f"and no other of these weights may; {run / 'eval.json'} is absent (docs/evaluation.md)",
                  soft_wrap=True)
        return
    if rec["is_canonical"]:
        why = "this evaluation"
    elif rec.get("not_canonical"):
        why = "kept: this evaluation may not be canonical: " + "; ".join(rec["not_canonical"])
    else:
        why = "kept: a stronger protocol (docs/evaluation.md)"
    err.print(f"canonical record {run / 'eval.json'} = {rec['canonical_path']} ({why})", soft_wrap=True)


def _check_precision_cmd(model, suite, attacks, n, seed, batch_size, device, data_dir, revision, endpoint,
                         cache_dir, json_out) -> None:
    """``robustzoo eval MODEL --check-precision``: bf16 against fp32, saved for --precision bf16."""
    from ..api import check_precision
    from ..eval import resolve_suite

    names, n = resolve_suite(suite, attacks, n)
    with RichProgress() as bars:
        rep = check_precision(model, names, n=n if n is not None else 1000, seed=seed, batch_size=batch_size,
                              device=device, data_dir=data_dir, progress=bars, revision=revision,
                              endpoint=endpoint, cache_dir=cache_dir)
    if json_out:
        _emit_json(rep, json_out)
        if json_out == "-":
            return
    t = Table(title=f"{model}: bf16 against fp32 on {rep['n']} test images ({rep['device']})")
    for col in ("attack", "fp32", "bf16", "drift (points)"):
        t.add_column(col, justify="left" if col == "attack" else "right")
    for r in rep["results"]:
        t.add_row(r["attack"], f"{100 * r['fp32']:.2f}%", f"{100 * r['bf16']:.2f}%", f"{r['drift_points']:+.2f}")
    t.caption = (f"tolerance {rep['tolerance_points']:g} points, resolution {rep['resolution_points']:g} "
                 f"(one example): " + ("bf16 allowed (--precision bf16)" if rep["ok"] else "bf16 refused"))
    stdout.print(t)
    if rep.get("recorded"):
        err.print(f"wrote {rep['recorded']}", soft_wrap=True)


def _kept_eval(model: str) -> str:
    """After a failed write: whether finished attacks were kept, and how to go on."""
    from ..eval import FLAGS_FILE  # deferred, as at the top (torch is loaded by now)

    flags = Path(model) / FLAGS_FILE
    if Path(model).is_dir() and flags.is_file():
        return (f"the per-example outcomes of the finished attacks are kept in {flags}: then run the same "
                f"command again, it resumes from them")
    return "then run the same command again"


def _interrupted_eval(model: str) -> str:
    from ..eval import FLAGS_FILE  # deferred, as at the top (torch is loaded by now)

    flags = Path(model) / FLAGS_FILE
    if flags.is_file():
        return (f"the per-example outcomes of every finished batch are kept in {flags}; run the same "
                f"command again to resume from them (--no-resume starts afresh)")
    if Path(model).is_dir():
        return "no batch had finished, so nothing was kept; run the same command again"
    return (f"nothing was kept ({model} is not a run directory, whose evaluations keep their per-example "
            f"outcomes); run the same command again")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub repo to publish to (created if missing)")
@click.option("--endpoint", help="Hub endpoint URL (default HF_ENDPOINT or huggingface.co)")
@click.option("--token", help="write token (default: the one stored by `hf auth login`, for huggingface.co only)")
@click.option("--private", is_flag=True, help="create the repo private")
@click.option("--alias", help="zoo alias to record in the card and the suggested zoo entry")
@click.option("--license", "license_", default="apache-2.0", show_default=True, help="licence of the weights")
@click.option("--allow-partial", is_flag=True,
              help="publish an evaluation that is not a real protocol; the card says so")
@click.option("--allow-custom", is_flag=True,
              help="publish an evaluation whose attacks used non-standard settings; the card and the "
                   "RobustBench record say which")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (includes a zoo entry)")
def push(run_dir, repo_id, endpoint, token, private, alias, license_, allow_partial, allow_custom,
         as_json) -> None:
    """Publish an evaluated RUN_DIR to the Hub in one commit.

    Uploads model.safetensors, aux.safetensors (if any), config.json and a model card rendered
    from config.json and eval.json (the canonical record); prints the commit sha and the
    sha256 of every file (pin them in the zoo index). The record must be a real protocol:
    clean and PGD-20/100, APGD or AutoAttack on the whole test set or at least 1,000 images
    (--allow-partial publishes anything, marked partial; docs/zoo.md).

    \b
    Examples:
      robustzoo eval runs/cat-cw-wrn34 --suite paper
      robustzoo push runs/cat-cw-wrn34 --repo-id my-org/cat-cw-wrn34 --alias cat-cw-wrn34
    """
    from ..hub import push as push_run  # deferred: imports torch

    res = push_run(run_dir, repo_id, endpoint=endpoint, token=token, private=private, alias=alias,
                   license=license_, allow_partial=allow_partial, allow_custom=allow_custom)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    t = Table(title=f"{res.repo_id} @ {res.revision}")
    for col in ("file", "bytes", "sha256"):
        t.add_column(col, justify="right" if col == "bytes" else "left", no_wrap=col == "sha256")
    for name, info in res.files.items():
        t.add_row(name, str(info["size"]), info["sha256"])
    stdout.print(t)
    if "robustbench.json" not in res.files:
        err.print(f"note: no robustbench.json: RobustBench ranks by standard AutoAttack, which {run_dir}/eval.json "
                  f"lacks; run `robustzoo eval {run_dir} --suite autoattack` and push again")
    stdout.print(f"commit: {res.revision}\nurl: {res.commit_url}\n"
                 f"next: robustzoo pull hf-hub:{res.repo_id}@{res.revision}   (to add it to the zoo, "
                 f"copy the zoo_entry that --json prints into the index: docs/zoo.md)")


@cli.command()
@click.argument("name")
@click.option("--revision", help="branch, tag or commit sha (zoo aliases are pinned already)")
@click.option("--endpoint", help="Hub endpoint URL (default HF_ENDPOINT or huggingface.co)")
@click.option("--cache-dir", type=click.Path(), help="Hugging Face cache directory (default HF_HUB_CACHE)")
@click.option("--token", help="access token for private repos")
@click.option("--expect-sha256", "expect", multiple=True, metavar="[FILE=]SHA256",
              help="refuse the pull unless FILE (default model.safetensors) has this sha256; repeatable")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def pull(name, revision, endpoint, cache_dir, token, expect, as_json) -> None:
    """Download NAME into the Hugging Face cache, check it, print the local folder.

    NAME is a zoo alias (cat-cw-wrn34), hf-hub:org/name[@revision] or org/name. Every file is
    checked against the hash the server announced and against the sha256 list in the model
    card of the same commit; zoo aliases also against the sha256 pinned in the zoo index, and
    --expect-sha256 pins files from a script. The weights are loaded once (safetensors only,
    strictly into the named architecture). Pinned revisions work offline from the cache.

    \b
    Examples:
      robustzoo pull cat-cw-wrn34
      robustzoo pull hf-hub:my-org/cat-cw-wrn34@0123456789abcdef0123456789abcdef01234567
      robustzoo pull hf-hub:my-org/cat-cw-wrn34@<sha> --expect-sha256 <sha256 of model.safetensors>
    """
    from ..hub import pull_model  # deferred: imports torch

    _refuse_local_path(name)
    pins = dict(e.split("=", 1) if "=" in e else ("model.safetensors", e) for e in expect)
    res = pull_model(name, revision=revision, endpoint=endpoint, cache_dir=cache_dir, token=token, verify=True,
                     expect_sha256=pins)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    if res.offline:
        err.print(f"offline: using the cached commit {res.revision[:12]} of {res.repo_id}")
    for fname, digest in res.files.items():
        err.print(f"{fname}  sha256 {digest}  ({res.checked[fname]})")
    click.echo(str(res.path))


def _refuse_local_path(name: str) -> None:
    """`pull` takes Hub names; a local path (one that exists, or whose first folder does, as
    runs/ in runs/at-digitz-1) is said to be one before anything asks the Hub."""
    from .. import runs

    p = Path(name)
    if name.startswith("hf-hub:") or not (p.exists() or (len(p.parts) > 1 and Path(p.parts[0]).is_dir())):
        return
    if (p / runs.CONFIG_FILE).is_file():
        raise UsageError(f"{name} is a local run directory: it needs no pull; use it as it is "
                         f"(`robustzoo eval {name}`), or name a Hub model as hf-hub:ORG/NAME")
    raise NotFoundError(runs.missing_run_dir(name, "pull takes a zoo alias or hf-hub:ORG/NAME[@REVISION]"))


KINDS = ("datasets", "architectures", "attacks", "objectives", "recipes", "zoo")


def _describe(kind: str, name: str, entry: Any) -> dict[str, Any]:
    if kind == "datasets":
        return {"name": name, "classes": entry.num_classes, "shape": "x".join(map(str, entry.shape)),
                "eps": round(entry.eps, 5), "arch": entry.default_arch, "description": entry.description}
    if kind == "architectures":
        return {"name": name, "input": entry.input_size, "params": entry.params, "description": entry.description}
    if kind == "attacks":
        return {"name": name, "kind": entry.kind, "threat": entry.threat_model, "description": entry.description}
    if kind == "objectives":
        return {"name": name, "settings": ", ".join(f"{k}={v}" for k, v in entry.defaults.items()),
                "description": entry.description}
    if kind == "recipes":
        return {"name": name, "objective": entry.objective, "dataset": entry.settings.get("dataset", ""),
                "arch": entry.settings.get("arch", ""), "source": entry.source}
    eps = entry.threat_model.get("eps")
    return {"name": name, "status": "published" if entry.published else "not published",
            "repo": f"{entry.repo_id}@{entry.revision[:7]}" if entry.published else "",
            "arch": entry.architecture, "dataset": entry.dataset,
            "eps": f"{round(eps * 255)}/255" if eps and abs(eps * 255 - round(eps * 255)) < 1e-6 else eps,
            "method": entry.method,
            "results": ", ".join(f"{k} {100 * v:.1f}" for k, v in entry.results.items()) or "—",
            "recipe": entry.recipe}


@cli.command("list")
@click.argument("kind", type=Choice(KINDS))
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_cmd(kind: str, pattern: str | None, as_json: bool) -> None:
    """List registered names of KIND, optionally matching a wildcard PATTERN.

    \b
    Examples:
      robustzoo list objectives
      robustzoo list attacks 'pgd*'
      robustzoo list recipes cat --json
    """
    reg = registry(kind)
    rows = [dict(_describe(kind, n, reg.get(n)), plugin=reg.owner(n)) for n in reg.list(pattern)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        err.print(f"no {kind} match {pattern!r}; `robustzoo list {kind}` shows all")
        return
    t = Table(title=f"{kind}" + (f" matching {pattern!r}" if pattern else ""))
    for col in rows[0]:
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    stdout.print(t)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json: bool) -> None:
    """List loaded plugins: distribution, version and what each registered."""
    infos = plugin_infos()
    if as_json:
        click.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    t = Table(title="plugins")
    for col in ("plugin", "distribution", "version", "registered"):
        t.add_column(col, overflow="fold")
    for i in infos:
        reg = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.registered.items()) or "(commands only)"
        t.add_row(i.name, i.distribution, i.version, reg)
    stdout.print(t)


def env_info() -> dict[str, Any]:
    """Versions, device and plugins, for bug reports."""
    from importlib.metadata import version

    import torch  # deferred: only this command needs it (the device); the rest are versions

    cuda = torch.cuda.is_available()
    return {
        "robustzoo": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **{dist: version(dist) for dist in ("timm", "huggingface_hub", "safetensors")},
        "plugins": {i.name: f"{i.distribution} {i.version}" for i in plugin_infos()},
        "env": {k: v for k, v in os.environ.items() if k.startswith(("ROBUSTZOO_", "HF_HUB_", "HF_ENDPOINT"))},
    }


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def env(as_json: bool) -> None:
    """Print versions, device and plugins (paste this into bug reports)."""
    info = env_info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    t = Table(title="robustzoo env", show_header=False)
    t.add_column("key")
    t.add_column("value", overflow="fold")
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = ", ".join(map(str, v)) or "-"
        t.add_row(k, str(v))
    stdout.print(t)
