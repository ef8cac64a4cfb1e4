"""Plugin manager: built-ins first, then each entry point on its own.

A plugin that fails to import prints one warning naming it and is skipped, and so does a
plugin whose hooks fail pluggy's validation (a misspelt hook such as ``register_objective``,
an argument the hook does not have), an entry of the wrong kind (a string registered as an
objective) and a name a plugin registers when an earlier plugin (the built-ins come first)
has taken it: one broken package never takes the CLI down, ``--help`` included. Each registry is built on first use, from every
plugin's hook of its kind, so a command pays only for the kinds it reads (``list recipes``
imports no torch). Environment switches:

* ``ROBUSTZOO_STRICT_PLUGINS=1`` re-raises the import error (or the duplicate name) instead;
* ``ROBUSTZOO_DISABLE_PLUGINS=a,b`` skips the named entry points;
* ``ROBUSTZOO_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from ._version import __version__
from .errors import NotFoundError, RobustzooError, close_matches, did_you_mean, first_sentence
from .recipes import Recipe
from .registry import Registry
from .zoo import ZooEntry

GROUP = "robustzoo"
BUILTIN_MODULES = ("robustzoo.builtins",)
KINDS = ("datasets", "architectures", "attacks", "objectives", "recipes", "zoo")


@dataclass
class PluginInfo:
    """What ``robustzoo plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    registered: dict[str, list[str]] = field(default_factory=dict)


#: kind -> how the arguments of a plugin's ``register(...)`` call become the entry, for kinds
#: whose hook takes a shorthand (architectures: ``register(name, factory, **info)``; zoo: a
#: dict). The module that defines an entry type declares it (:func:`declare_entry_type`), so
#: this module imports none of the pieces above it.
_ENTRY_TYPES: dict[str, Callable[..., Any]] = {}

#: kind -> what its entries must be: a check returning None for a good entry, else what was
#: expected ('a DatasetSpec'). Declared by the module that defines the type
#: (:func:`declare_entry_check`); kinds without one need an entry with a ``name``.
_ENTRY_CHECKS: dict[str, Callable[[Any], str | None]] = {}

_pm: pluggy.PluginManager | None = None
_registries: dict[str, Registry[Any]] = {}  # kind -> registry, each built on first use
_dists: dict[str, tuple[str, str]] = {}


def _env_list(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def strict() -> bool:
    """True when ``ROBUSTZOO_STRICT_PLUGINS`` asks for plugin errors to be raised."""
    return os.environ.get("ROBUSTZOO_STRICT_PLUGINS", "") not in ("", "0")


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is not None:
        return _pm
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
        _dists[modname] = ("robustzoo", __version__)
    disabled = _env_list("ROBUSTZOO_DISABLE_PLUGINS")
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure must not kill the CLI
            if strict():
                raise
            # One line on stderr (not warnings.warn: its once-per-location filter would
            # hide the message when the manager is rebuilt in the same process).
            sys.stderr.write(
                f"warning: robustzoo plugin {ep.name!r} failed to load and was skipped: "
                f"{type(exc).__name__}: {exc} (ROBUSTZOO_STRICT_PLUGINS=1 re-raises; "
                f"ROBUSTZOO_DISABLE_PLUGINS={ep.name} silences)\n")
            continue
        dist = ep.dist
        _dists[ep.name] = (dist.name, dist.version) if dist else ("?", "?")
        problem = _register_checked(pm, plugin, ep.name)
        if problem is not None:
            if strict():
                raise PluginError(problem)
            warn_plugin(problem, ep.name)
    pm.check_pending()  # the built-ins' hooks (a third party's were checked one by one above)
    if os.environ.get("ROBUSTZOO_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda s: sys.stderr.write(s))
        pm.enable_tracing()
    _pm = pm
    return pm


def _register_checked(pm: pluggy.PluginManager, plugin: object, name: str) -> str | None:
    """Register ``plugin`` if pluggy accepts every hook of it; else register nothing and say why.

    Two faults make pluggy refuse a plugin: a hook argument the specification lacks (raised
    by ``register``) and a hook name that is no hook (``check_pending``, which would fail
    every later command, ``--help`` included).
    """
    who = f"plugin {name!r}{_dist_of(name)}"
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        hook = next((h for h in _hook_names() if f"'{h}'" in str(exc)), None)
        if hook is None:
            first = first_sentence(exc)
            return f"{who} was skipped: {first} (the hooks and their arguments: docs/plugins.md)"
        spec = getattr(pm.hook, hook).spec
        impl = getattr(plugin, hook, None)
        try:
            mine = ", ".join(inspect.signature(impl).parameters) if impl is not None else "?"
        except (TypeError, ValueError):
            mine = "?"
        return (f"{who} was skipped: its hook {hook}({mine}) does not match robustzoo's "
                f"{hook}({', '.join(spec.argnames) if spec else ''}) (the hooks and their arguments: "
                f"docs/plugins.md)")
    except ValueError as exc:  # pluggy: the same plugin object or name twice
        return f"{who} was skipped: {exc}"
    unknown = sorted(hc.name for hc in pm.get_hookcallers(plugin) or [] if not hc.has_spec())
    if unknown:
        pm.unregister(plugin)
        near = close_matches(unknown[0], _hook_names(), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return (f"{who} was skipped: it implements {unknown[0]}, which is not a robustzoo hook{hint} "
                f"(the hooks: docs/plugins.md)")
    return None


def _hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("register_")]


class PluginError(RobustzooError):
    """A plugin that pluggy refuses (under ROBUSTZOO_STRICT_PLUGINS=1; otherwise a warning)."""


def register_plugin(plugin: ModuleType | object, name: str, distribution: str = "local",
                    version: str = "0") -> None:
    """Register a plugin object at run time (tests, notebooks) and rebuild the registries."""
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    _dists[name] = (distribution, version)
    _registries.clear()


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`."""
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _registries.clear()


def reset() -> None:
    """Forget the plugin manager and registries (tests use this after changing the env)."""
    global _pm
    _pm = None
    _registries.clear()


def declare_entry_type(kind: str, make: Callable[..., Any]) -> None:
    """Declare how ``register(entry, *args, **info)`` calls of ``kind`` become its entries.

    ``make`` receives the arguments of the call and returns the entry (an entry passes
    through unchanged). Declared once, at import, by the module that defines the type:
    :mod:`robustzoo.models` for architectures (the built-in plugin imports it before any
    registry is built).
    """
    _ENTRY_TYPES[kind] = make


def declare_entry_check(kind: str, check: Callable[[Any], str | None]) -> None:
    """Declare what an entry of ``kind`` must be: ``check(entry)`` returns None when it is
    one, else what was expected ('an Objective subclass'). A plugin's entry that fails it is
    skipped with one warning, so it cannot break ``robustzoo list`` for everyone."""
    _ENTRY_CHECKS[kind] = check


def instance_of(cls: type, what: str) -> Callable[[Any], str | None]:
    """An entry check: ``isinstance(entry, cls)``, else ``what``."""
    return lambda entry: None if isinstance(entry, cls) else what


def _zoo_entry(entry: Any, *args: Any, **info: Any) -> Any:
    return ZooEntry.from_dict(entry) if isinstance(entry, dict) else entry


declare_entry_type("zoo", _zoo_entry)
declare_entry_check("zoo", instance_of(ZooEntry, "a ZooEntry (or a dict of its keys)"))
declare_entry_check("recipes", instance_of(Recipe, "a robustzoo.recipes.Recipe"))


def _wrong_kind(kind: str, entry: Any) -> str | None:
    """What ``entry`` should have been, when it is not an entry of ``kind`` (else None)."""
    check = _ENTRY_CHECKS.get(kind)
    if check is not None:
        return check(entry)
    name = getattr(entry, "name", None)
    return None if isinstance(name, str) and name else "an entry with a name"


def _build(kind: str, pm: pluggy.PluginManager) -> Registry[Any]:
    reg: Registry[Any] = Registry(kind)
    caller = getattr(pm.hook, f"register_{kind}")
    trace = os.environ.get("ROBUSTZOO_TRACE_PLUGINS")
    # Call each implementation ourselves so every entry records the plugin that added it, in
    # the order the plugins were registered (pluggy's list; it calls them in reverse): the
    # built-ins first, so a later plugin cannot take their names.
    for impl in caller.get_hookimpls():
        owner = impl.plugin_name

        def register(entry: Any, factory: Any = None, _owner: str = owner, **info: Any) -> None:
            # Looked up per call: the built-in hook imports the piece that declares the type.
            make = _ENTRY_TYPES.get(kind)
            if make is not None:
                entry = make(entry, factory, **info)
            expected = _wrong_kind(kind, entry)
            if expected is not None:
                shown = repr(entry) if len(repr(entry)) <= 60 else repr(entry)[:57] + "..."
                problem = (f"plugin {_owner!r}{_dist_of(_owner)} registers {shown} ({type(entry).__name__}) in "
                           f"register_{kind}, which takes {expected}; skipped it")
                if strict():
                    raise PluginError(problem)
                warn_plugin(problem, _owner)
                return
            name = entry.name
            if name in reg and not strict():
                # One line, as for a plugin that fails to import; the first registration stays.
                warn_plugin(f"plugin {_owner!r}{_dist_of(_owner)} registers {kind[:-1]} {name!r}, "
                            f"which {reg.owner(name)!r}{_dist_of(reg.owner(name))} registered first; "
                            f"skipped it", _owner)
                return
            reg.add(name, entry, owner=_owner)  # DuplicateNameError under ROBUSTZOO_STRICT_PLUGINS

        if trace:
            sys.stderr.write(f"robustzoo: {owner}.register_{kind}()\n")
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a bad plugin must not break every command
            if strict() or owner in BUILTIN_MODULES:
                raise
            warn_plugin(f"plugin {owner!r}{_dist_of(owner)} failed to register its {kind}: "
                        f"{type(exc).__name__}: {exc}", owner)
    return reg


def _dist_of(plugin: str) -> str:
    dist = _dists.get(plugin)
    return f" ({dist[0]} {dist[1]})" if dist and plugin not in BUILTIN_MODULES else ""


def warn_plugin(message: str, plugin: str) -> None:
    """One warning line on stderr about ``plugin``, with the two switches that change it."""
    # stderr, not warnings.warn: its once-per-location filter would hide repeats across rebuilds.
    sys.stderr.write(f"warning: {message} (ROBUSTZOO_STRICT_PLUGINS=1 raises instead; "
                     f"ROBUSTZOO_DISABLE_PLUGINS={plugin} silences)\n")


def registries() -> dict[str, Registry[Any]]:
    """All registries, each built once from every loaded plugin."""
    return {kind: registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry[Any]:
    """One registry by kind ('datasets', 'architectures', 'attacks', ...), built on first use."""
    if kind not in KINDS:
        raise NotFoundError(f"unknown registry {kind!r}{did_you_mean(kind, KINDS)}; "
                            f"choose one of {', '.join(KINDS)}")
    if kind not in _registries:
        _registries[kind] = _build(kind, get_plugin_manager())
    return _registries[kind]


def plugin_infos() -> list[PluginInfo]:
    """Each loaded plugin with its distribution, version and what it registered."""
    pm = get_plugin_manager()
    regs = registries()
    out = []
    for name, plugin in pm.list_name_plugin():
        dist, version = _dists.get(name, ("?", "?"))
        info = PluginInfo(name=name, distribution=dist, version=version,
                          module=getattr(plugin, "__name__", type(plugin).__name__))
        for kind, reg in regs.items():
            names = [n for n in reg.list() if reg.owner(n) == name]
            if names:
                info.registered[kind] = names
        out.append(info)
    return out
