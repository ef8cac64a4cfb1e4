"""The ``robustzoo`` command line (click + rich).

Errors a user can cause end as one line on stderr and a non-zero exit code; ``--debug``
(anywhere on the line, or ROBUSTZOO_DEBUG=1) shows the traceback instead. A command whose
``--json`` output goes to stdout also prints ``{"error": ..., "type": ...}`` there on
failure, so a script reading stdout always gets a JSON object. Ctrl-C says what was kept and
how to continue (training, evaluation) and exits with 130.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import click

from ..errors import Interrupted, RobustzooError
from ..files import os_error
from ..plugins import get_plugin_manager, strict, warn_plugin
from .commands import cli
from .zoo_commands import register as _register_zoo_commands

# leaderboard, export robustbench, zoo publish: their own module, added to the same group.
_register_zoo_commands(cli)

_commands_added = False


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"warning: {message}\n")


def add_plugin_commands() -> None:
    """Let plugins add commands (``register_commands(cli)``), once per process.

    A command name that is taken (by robustzoo or an earlier plugin) keeps its first owner:
    the later plugin's command is dropped with one warning, as a plugin that fails to load.
    """
    global _commands_added
    if _commands_added:
        return
    _commands_added = True
    owners = dict.fromkeys(cli.commands, "robustzoo")
    pm = get_plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():  # in registration order
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:  # noqa: BLE001 - a bad plugin must not break the CLI
            if strict():
                raise
            warn_plugin(f"plugin {impl.plugin_name!r} failed to add commands: {type(exc).__name__}: {exc}",
                        impl.plugin_name)
        for name, command in before.items():
            if cli.commands.get(name) is not command:
                if strict():
                    raise RobustzooError(f"plugin {impl.plugin_name!r} replaces the command {name!r} of "
                                         f"{owners[name]!r}")
                cli.commands[name] = command
                warn_plugin(f"plugin {impl.plugin_name!r} adds a command {name!r}, which {owners[name]!r} "
                            f"added first; skipped it", impl.plugin_name)
        owners.update(dict.fromkeys(set(cli.commands) - set(owners), impl.plugin_name))


def json_on_stdout(args: list[str]) -> bool:
    """True when ``args`` ask the command for JSON on stdout (``--json``, or ``--json -`` for eval)."""
    cmd: click.Command = cli
    for tok in args:
        if not isinstance(cmd, click.Group) or tok not in cmd.commands:
            break
        cmd = cmd.commands[tok]
    opt = next((p for p in cmd.params if isinstance(p, click.Option) and "--json" in p.opts), None)
    if opt is None:
        return False
    for i, tok in enumerate(args):
        if tok == "--json":
            return opt.is_flag or args[i + 1:i + 2] == ["-"]
        if tok.startswith("--json="):
            return not opt.is_flag and tok == "--json=-"
    return False


def _fail(message: str, kind: str, code: int, as_json: bool, prefix: str = "error") -> None:
    sys.stderr.write(f"{prefix}: {message}\n" if message != prefix else f"{prefix}\n")
    if as_json:
        click.echo(json.dumps({"error": message, "type": kind}))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``robustzoo`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("ROBUSTZOO_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    warnings.showwarning = _one_line_warning
    as_json = False
    try:
        add_plugin_commands()
        as_json = json_on_stdout(args)
        rv = cli.main(args=args, prog_name="robustzoo", standalone_mode=False)
        # Without standalone mode click returns the code of a click.exceptions.Exit instead of
        # exiting with it (`train --nproc` failures raise one): pass it on.
        if isinstance(rv, int) and rv != 0:
            sys.exit(rv)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort outside the commands that say what they kept.
        why = "interrupted" if isinstance(exc.__context__, KeyboardInterrupt) else "aborted"
        _fail(why, "Interrupted", 130, as_json, prefix=why)
    except click.ClickException as exc:
        if as_json:
            click.echo(json.dumps({"error": exc.format_message(), "type": type(exc).__name__}))
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        _fail(str(exc), "Interrupted", exc.exit_code, as_json, prefix="interrupted")
    except RobustzooError as exc:
        if debug:
            raise
        _fail(str(exc), type(exc).__name__, exc.exit_code, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", "Interrupted", 130, as_json, prefix="interrupted")
    except OSError as exc:  # the OS refused a path the commands did not translate (a cache, ...)
        if debug:
            raise
        _fail(str(os_error(exc, None, "access")), "StorageError", 1, as_json)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"{type(exc).__name__}: {msg} (rerun with --debug for the traceback; report bugs with the "
              f"output of `robustzoo env`)", type(exc).__name__, 1, as_json)
