"""robustzoo: train, evaluate and publish adversarially robust image classifiers.

The public API mirrors the command line::

    import robustzoo
    run_dir, report = robustzoo.train("at", dataset="digits", epochs=5)
    model = robustzoo.load(run_dir)
    report = robustzoo.evaluate(run_dir, attacks=["clean", "pgd20"])

Nothing is printed unless asked (``show_progress=True``); see :mod:`robustzoo.api`. The
layers behind this face and who may import whom: docs/architecture.md.

``import robustzoo`` is light: torch, timm and huggingface_hub load when a function needs
them (the API functions below load :mod:`robustzoo.api` on first use), so ``robustzoo
--help`` answers at once. The nets are still in timm's registry whenever timm is imported
after robustzoo (:func:`robustzoo.lazy.when_imported`).
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any

from ._version import __version__
from .hookspecs import hookimpl
from .lazy import lazy_exports, when_imported

#: Functions of robustzoo.api handed on here; robustzoo.api (torch and all) loads on first use.
_API = ("train", "evaluate", "load", "list_names")
__getattr__ = lazy_exports(__name__, {name: "api" for name in _API})


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """The package module, which keeps ``robustzoo.train`` the API function.

    Importing the submodule robustzoo.train (the training loop) sets the package attribute of
    the same name to the module; when that happens after ``import robustzoo`` (robustzoo.api
    loads lazily, above), the function would be lost. The submodule stays importable
    (``from robustzoo.train import Trainer``); only the attribute is kept.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def _verified_hub_weights(hf_hub_id: str, cache_dir: str | None) -> str:
    # Local import for startup time: huggingface_hub loads only when a model is pulled.
    from .hub import verified_weights

    return verified_weights(hf_hub_id, cache_dir)


def _on_timm_import(timm: types.ModuleType) -> None:
    """Register the nets with timm, whose weights for ``hf-hub:`` names are checked as `robustzoo
    pull` checks them. Runs right after timm is imported (a failure must not fail that import)."""
    try:
        from .models import timm_bridge  # deferred: imports torch, which timm has loaded already

        timm_bridge.set_weights_verifier(_verified_hub_weights)
        timm_bridge.register_with_timm()
    except Exception as exc:  # noqa: BLE001 - the user's `import timm` must still work
        warnings.warn(f"robustzoo could not register its nets with timm: {type(exc).__name__}: {exc}",
                      stacklevel=2)


when_imported("timm", _on_timm_import)

__all__ = ["__version__", "hookimpl", "train", "evaluate", "load", "list_names"]
