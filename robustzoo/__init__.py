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


def _verified_hub_weights(hf_hub_id: str, cache_dir: str | None) -> str:
    # Local import for startup time: huggingface_hub loads only when a model is pulled.
    from .hub import verified_weights

    return verified_weights(hf_hub_id, cache_dir)


# timm.create_model("hf-hub:...") of robustzoo's nets checks the weights as `robustzoo pull` does.
_timm_bridge.set_weights_verifier(_verified_hub_weights)

# Bound after the imports: loading the submodule robustzoo.evaluate (.train imports it) sets
# the package attribute of the same name, and the function is the public API.
evaluate = _api.evaluate

__all__ = ["__version__", "hookimpl", "train", "evaluate", "load", "list_names"]
