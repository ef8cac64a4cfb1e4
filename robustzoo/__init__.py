"""robustzoo: train, evaluate and publish adversarially robust image classifiers.

The public API mirrors the command line::

    import robustzoo
    run_dir, report = robustzoo.train("at", dataset="digits", epochs=5)
    model = robustzoo.load(run_dir)
    report = robustzoo.evaluate(run_dir, attacks=["clean", "pgd20"])

Nothing is printed unless asked (``show_progress=True``); see :mod:`robustzoo.api`. The
layers behind this face and who may import whom: docs/architecture.md.
"""

from __future__ import annotations

from ._version import __version__
from .api import evaluate, list_names, load, train
from .hookspecs import hookimpl
from .models import timm_bridge as _timm_bridge  # registers the nets in timm


def _verified_hub_weights(hf_hub_id: str, cache_dir: str | None) -> str:
    # Local import for startup time: huggingface_hub loads only when a model is pulled.
    from .hub import verified_weights

    return verified_weights(hf_hub_id, cache_dir)


# timm.create_model("hf-hub:...") of robustzoo's nets checks the weights as `robustzoo pull` does.
_timm_bridge.set_weights_verifier(_verified_hub_weights)

__all__ = ["__version__", "hookimpl", "train", "evaluate", "load", "list_names"]
