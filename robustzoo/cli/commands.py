"""The built-in commands: train, eval, list, plugins, env."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import UsageError

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
        from ..runs import write_text

        write_text(target, text + "\n")
        err.print(f"wrote {target}")


@cli.command(context_settings=dict(CONTEXT, ignore_unknown_options=True, allow_extra_args=True))
@click.option("--recipe", help="named configuration (see `robustzoo list recipes`)")
@click.option("--objective", "-o", help="training objective (default at; see `robustzoo list objectives`)")
@click.option("--dataset", "-d", help="dataset (default digits)")
@click.option("--arch", "-a", help="architecture, or any timm model as timm/<name>")
@click.option("--attack", help="training attack of the objective (at: pgd|fgsm|cw; calibrated: cent|cw)")
@click.option("--eps", help="L-inf budget on the [0,1] scale, e.g. 0.1 or 8/255")
@click.option("--alpha", help="PGD step size on the [0,1] scale")
@click.option("--steps", type=int, help="PGD steps of the training attack")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float)
@click.option("--subset", type=int, help="train on N images only (quick runs)")
@click.option("--data-dir", type=click.Path(), help="where dataset files live")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="any config or objective setting")
@click.option("--out", type=click.Path(), help="run directory (default runs/<objective>-<dataset>-<time>)")
@click.option("--resume", type=click.Path(), help="continue the run in this directory")
@click.option("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="print the final evaluation as JSON on stdout")
@click.pass_context
def train(ctx: click.Context, recipe, objective, dataset, arch, attack, eps, alpha, steps, epochs,
          batch_size, lr, subset, data_dir, sets, out, resume, device, seed, as_json) -> None:
    """Train a model; ends with a table of clean and robust test accuracy.

    Objective settings can be given as --set key=value or directly as --key value.

    \b
    Examples:
      robustzoo train
      robustzoo train --objective trades --beta 6 --epochs 5
      robustzoo train --objective calibrated --attack cw --dataset fashion-mnist --subset 5000 --epochs 2
      robustzoo train --recipe cat-cw-wrn34 --data-dir data --set epochs=1
      robustzoo train --resume runs/at-digits-20260101-120000
    """
    from ..config import parse_set_options
    from ..evaluate import results_table
    from ..train import Trainer, build_config, config_from_run, default_out_dir

    if resume:
        given = [n for n, v in dict(recipe=recipe, objective=objective, dataset=dataset, arch=arch, out=out).items() if v]
        if given or sets or ctx.args:
            raise UsageError(f"--resume continues a run with its saved settings; drop --{given[0] if given else 'set'}")
        cfg = config_from_run(resume)
        if device:
            cfg.device = device
        trainer = Trainer(cfg, resume, resume=True)
        run_dir = Path(resume)
    else:
        pairs = parse_set_options(sets)
        pairs.update(parse_extra_options(ctx.args))
        if attack:
            pairs["attack"] = attack
        cfg = build_config(objective, recipe, pairs, dataset=dataset, arch=arch, eps=eps, alpha=alpha,
                           steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, subset=subset,
                           data_dir=data_dir, device=device, seed=seed)
        run_dir = Path(out) if out else default_out_dir(cfg)
        trainer = Trainer(cfg, run_dir)
    c = trainer.cfg
    err.print(f"training [bold]{c.objective}[/bold] on {c.dataset} ({len(trainer.train_data)} images) with "
              f"{c.arch}, ε={c.eps:.4g}, {c.epochs} epochs, on {trainer.device} → {run_dir}")
    report = trainer.fit()
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), **report}, indent=2))
    else:
        stdout.print(results_table(report, title=f"{c.objective} on {c.dataset} (test, best epoch "
                                               f"{report.get('best_epoch')})"))
        stdout.print(f"run directory: {run_dir}   next: robustzoo eval {run_dir} --attacks clean,fgsm,pgd20,pgd100,cw")


@cli.command("eval")
@click.argument("model")
@click.option("--attacks", default="clean,pgd20", show_default=True, help="comma-separated attack names")
@click.option("--n", type=int, help="evaluate on N test images (seeded choice)")
@click.option("--eps", help="override the run's ε (on the [0,1] scale, e.g. 8/255)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", type=click.Path())
@click.option("--revision", help="Hub revision (commit sha) for hub models")
@click.option("--endpoint", help="Hub endpoint URL")
@click.option("--cache-dir", type=click.Path(), help="Hugging Face cache directory")
@click.option("--json", "json_out", metavar="FILE", help="also write the results as JSON ('-' for stdout)")
def eval_cmd(model, attacks, n, eps, seed, batch_size, device, data_dir, revision, endpoint, cache_dir,
             json_out) -> None:
    """Evaluate MODEL (run directory, zoo alias or hf-hub:org/name) on its test set.

    \b
    Examples:
      robustzoo eval runs/at-digits-... --attacks clean,fgsm,pgd20,pgd100,cw
      robustzoo eval runs/at-digits-... --n 200 --json results.json
    """
    from ..api import evaluate
    from ..evaluate import results_table
    from ..objectives import parse_number

    eps_v = None
    if eps is not None:
        try:
            eps_v = parse_number(eps)
        except ValueError:
            raise UsageError(f"--eps {eps!r} is not a number (e.g. 0.1 or 8/255)") from None
    report = evaluate(model, attacks, n=n, eps=eps_v, seed=seed, batch_size=batch_size, device=device,
                      data_dir=data_dir, show_progress=True, revision=revision, endpoint=endpoint,
                      cache_dir=cache_dir)
    if json_out == "-":
        _emit_json(report, "-")
        return
    stdout.print(results_table(report, title=f"{model} ({report['dataset']} test, ε={report['eps']:.4g})"))
    if json_out:
        _emit_json(report, json_out)


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
    return {"name": name, "repo": entry.repo_id or "(not published)", "arch": entry.architecture,
            "dataset": entry.dataset, "method": entry.method,
            "results": ", ".join(f"{k} {100 * v:.1f}" for k, v in entry.results.items()),
            "recipe": entry.recipe}


@cli.command("list")
@click.argument("kind", type=click.Choice(KINDS))
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
    from ..plugins import registry

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
    from dataclasses import asdict

    from ..plugins import plugin_infos

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
    import huggingface_hub
    import safetensors
    import timm
    import torch

    from .. import __version__
    from ..plugins import plugin_infos

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
        "timm": timm.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "safetensors": safetensors.__version__,
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
