"""robustzoo: train, evaluate and publish adversarially robust image classifiers.

The public API mirrors the command line::

    import robustzoo
    run_dir, report = robustzoo.train("at", dataset="digits", epochs=5)
    model = robustzoo.load(run_dir)
    report = robustzoo.evaluate(run_dir, attacks=["clean", "pgd20"])
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import api as _api  # noqa: E402
from .api import list_names, load  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .models import timm_bridge as _timm_bridge  # noqa: E402,F401  (registers nets in timm)
from .train import train  # noqa: E402

# Bound after the imports: loading the submodule robustzoo.evaluate (.train imports it) sets
# the package attribute of the same name, and the function is the public API.
evaluate = _api.evaluate

__all__ = ["__version__", "hookimpl", "train", "evaluate", "load", "list_names"]
