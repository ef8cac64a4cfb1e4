"""Plugin manager: built-ins first, then each entry point on its own.

A plugin that fails to import prints one warning naming it and is skipped, so one broken
package never takes the CLI down. Environment switches:

* ``ROBUSTZOO_STRICT_PLUGINS=1`` re-raises the import error instead;
* ``ROBUSTZOO_DISABLE_PLUGINS=a,b`` skips the named entry points;
* ``ROBUSTZOO_TRACE_PLUGINS=1`` prints every hook call to stderr.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .registry import Registry

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


_pm: pluggy.PluginManager | None = None
_registries: dict[str, Registry[Any]] | None = None
_dists: dict[str, tuple[str, str]] = {}


def _env_list(var: str) -> set[str]:
    return {s.strip() for s in os.environ.get(var, "").split(",") if s.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm
    if _pm is not None:
        return _pm
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    import importlib

    from . import __version__

    for modname in BUILTIN_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
        _dists[modname] = ("robustzoo", __version__)
    disabled = _env_list("ROBUSTZOO_DISABLE_PLUGINS")
    strict = os.environ.get("ROBUSTZOO_STRICT_PLUGINS", "") not in ("", "0")
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure must not kill the CLI
            if strict:
                raise
            # One line on stderr (not warnings.warn: its once-per-location filter would
            # hide the message when the manager is rebuilt in the same process).
            sys.stderr.write(
                f"warning: robustzoo plugin {ep.name!r} failed to load and was skipped: "
                f"{type(exc).__name__}: {exc} (ROBUSTZOO_STRICT_PLUGINS=1 re-raises; "
                f"ROBUSTZOO_DISABLE_PLUGINS={ep.name} silences)\n")
            continue
        pm.register(plugin, name=ep.name)
        dist = ep.dist
        _dists[ep.name] = (dist.name, dist.version) if dist else ("?", "?")
    pm.check_pending()
    if os.environ.get("ROBUSTZOO_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda s: sys.stderr.write(s))
        pm.enable_tracing()
    _pm = pm
    return pm


def register_plugin(plugin: ModuleType | object, name: str, distribution: str = "local",
                    version: str = "0") -> None:
    """Register a plugin object at run time (tests, notebooks) and rebuild the registries."""
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    _dists[name] = (distribution, version)
    global _registries
    _registries = None


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin`."""
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    global _registries
    _registries = None


def reset() -> None:
    """Forget the plugin manager and registries (tests use this after changing the env)."""
    global _pm, _registries
    _pm = None
    _registries = None


def _build(kind: str, pm: pluggy.PluginManager) -> Registry[Any]:
    reg: Registry[Any] = Registry(kind)
    caller = getattr(pm.hook, f"register_{kind}")
    trace = os.environ.get("ROBUSTZOO_TRACE_PLUGINS")
    # Call each implementation ourselves so every entry records the plugin that added it.
    for impl in reversed(caller.get_hookimpls()):
        owner = impl.plugin_name

        def register(entry: Any, factory: Any = None, _owner: str = owner, **info: Any) -> None:
            if kind == "architectures":
                from .models import ArchitectureSpec

                if not isinstance(entry, ArchitectureSpec):
                    entry = ArchitectureSpec(name=entry, factory=factory, **info)
            elif kind == "zoo" and isinstance(entry, dict):
                from .zoo import ZooEntry

                entry = ZooEntry.from_dict(entry)
            name = entry if isinstance(entry, str) else entry.name
            reg.add(name, entry, owner=_owner)

        if trace:
            sys.stderr.write(f"robustzoo: {owner}.register_{kind}()\n")
        impl.function(register=register)
    return reg


def registries() -> dict[str, Registry[Any]]:
    """All registries, built once from every loaded plugin."""
    global _registries
    if _registries is None:
        pm = get_plugin_manager()
        _registries = {kind: _build(kind, pm) for kind in KINDS}
    return _registries


def registry(kind: str) -> Registry[Any]:
    """One registry by kind ('datasets', 'architectures', 'attacks', ...)."""
    from .errors import NotFoundError, did_you_mean

    regs = registries()
    if kind not in regs:
        raise NotFoundError(f"unknown registry {kind!r}{did_you_mean(kind, regs)}; "
                            f"choose one of {', '.join(KINDS)}")
    return regs[kind]


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
