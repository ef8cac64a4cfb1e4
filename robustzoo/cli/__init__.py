"""The ``robustzoo`` command line (click + rich).

Errors a user can cause end as one line on stderr and a non-zero exit code; ``--debug``
(anywhere on the line, or ROBUSTZOO_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from ..errors import RobustzooError
from ..plugins import get_plugin_manager
from .commands import cli
from .zoo_commands import register as _register_zoo_commands

# leaderboard, export robustbench, zoo publish: their own module, added to the same group.
_register_zoo_commands(cli)

_commands_added = False


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {message}\n")


def add_plugin_commands() -> None:
    """Let plugins add commands (``register_commands(cli)``), once per process."""
    global _commands_added
    if _commands_added:
        return
    _commands_added = True
    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001 - a bad plugin must not break the CLI
            if os.environ.get("ROBUSTZOO_STRICT_PLUGINS", "") not in ("", "0"):
                raise
            sys.stderr.write(f"warning: plugin {impl.plugin_name!r} failed to add commands: {exc}\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``robustzoo`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ROBUSTZOO_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    warnings.showwarning = _one_line_warning
    try:
        add_plugin_commands()
        cli.main(args=args, prog_name="robustzoo", standalone_mode=False)
    except click.exceptions.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except RobustzooError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; a training run continues with `robustzoo train --resume RUN_DIR`\n")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback; "
                         f"report bugs with the output of `robustzoo env`)\n")
        sys.exit(1)
