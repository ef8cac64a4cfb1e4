"""The plugin's command, ``robustzoo viz masks``: defined without torch (``robustzoo --help``
lists it at once); the figure code (:mod:`.viz`) loads when the command runs."""

from __future__ import annotations

from typing import Any

import click


def add_commands(cli: Any) -> None:
    """Add ``robustzoo viz masks`` (creating the ``viz`` group unless another plugin did)."""
    group = cli.commands.get("viz") if hasattr(cli, "commands") else None
    if group is None:
        @cli.group("viz")
        def viz() -> None:
            """Pictures of trained runs."""

        group = viz
    elif not isinstance(group, click.Group):
        raise RuntimeError("another plugin registered a 'viz' command that is not a group")

    @group.command("masks")
    @click.argument("run_dir", type=click.Path())
    @click.option("--out", default="masks.png", show_default=True, type=click.Path(),
                  help="PNG file to write")
    @click.option("--n", "n", default=8, show_default=True, type=int, help="number of test images")
    @click.option("--seed", default=0, show_default=True, type=int, help="image choice and attack start")
    @click.option("--data-dir", type=click.Path(), help="where the dataset files live")
    @click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda")
    def masks(run_dir, out, n, seed, data_dir, device) -> None:
        """Save natural / adversarial / mask / calibrated images of a Calibrated AT run.

        \b
        Example:
          robustzoo viz masks runs/calibrated-digits-... --out masks.png --n 8
        """
        from robustzoo.devices import resolve_device  # deferred, as the figure code: imports torch

        from .viz import mask_figure

        info = mask_figure(run_dir, out, n=n, seed=seed, data_dir=data_dir, device=resolve_device(device))
        w, h = info["size_px"]
        again = "; replaced the file that was there" if info["replaced"] else ""
        click.echo(f"wrote {info['path']} ({w}x{h} px; mean mask {info['mask_mean']:.3f}{again})")
