"""Deferred imports: a package's names loaded on first use, and post-import hooks.

``import robustzoo`` and loading the plugins must stay light (no torch, no timm): ``robustzoo
--help`` answers in well under a second. Two tools keep them so:

* :func:`lazy_exports` lets a package's ``__init__`` hand on names of its submodules without
  importing them (PEP 562 module ``__getattr__``): the method plugins export their objective
  and losses this way;
* :func:`when_imported` runs a function right after a module is imported, without importing
  it: the nets are registered with timm when, and only when, timm itself is imported, by
  whoever imports it, so ``timm.create_model("preact_resnet18")`` works once robustzoo is
  imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

Callback = Callable[[ModuleType], None]


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<names[name]>`` when ``name`` is first used.

    Example (a plugin's ``__init__.py``)::

        __getattr__ = lazy_exports(__name__, {"TRADES": "objective", "trades_loss": "losses"})

    ``from robustzoo_trades import trades_loss`` then imports ``robustzoo_trades.losses`` (and
    torch) at that moment, not when the plugin is loaded.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once the top-level module ``name`` has been imported.

    At once when it is imported already; otherwise after the module's code has run, on the
    first ``import name`` (or ``import name.sub``) anywhere in the process. ``callback`` must
    not raise: its exception would fail the user's import.
    """
    if name in sys.modules:
        callback(sys.modules[name])
        return
    sys.meta_path.insert(0, _Finder(name, callback))


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``name`` with the other finders and wraps its loader; then steps aside."""

    def __init__(self, name: str, callback: Callback) -> None:
        self.name = name
        self.callback = callback

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        # Once only: the next lookup (importlib.util.find_spec just below, and any later
        # import) goes to the real finders.
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, self.callback)
        return spec


class _Loader(importlib.abc.Loader):
    """The module's own loader, plus the callback after the module has executed."""

    def __init__(self, loader: Any, callback: Callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # The module sees its real loader (importlib.resources and pkgutil ask it for files).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
