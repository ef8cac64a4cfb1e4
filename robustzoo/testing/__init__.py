"""Test helpers shipped with robustzoo, for the core's tests and for plugin authors.

* :func:`train_tiny` trains a run on a few hundred digits in seconds;
* :func:`check_objective` runs the objective contract (train, save, resume, load, eval);
* :class:`robustzoo.testing.hub_server.HubServer` is a Hub-protocol server on 127.0.0.1;
* :mod:`robustzoo.testing.fixtures` holds pytest fixtures around it (``hub_server``,
  ``hf_cache``, ``hub_offline``, ``zoo_plugin``, ``recipe_plugin``): ``pytest_plugins = ["robustzoo.testing.fixtures"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The helpers import torch and the training loop inside their bodies, so that a pytest run
# that loads ``robustzoo.testing.fixtures`` (this package) does not pay for them at collection.

TINY = dict(dataset="digits", subset=400, epochs=1, batch_size=64, steps=3, val_steps=2,
            eval_n=64, seed=0)


def train_tiny(out: str | Path, objective: str = "at", **settings: Any) -> tuple[Path, dict[str, Any]]:
    """Train ``objective`` on 400 digits for one epoch with 3-step PGD into ``out``."""
    from ..api import train  # deferred: torch (see above)

    merged = dict(TINY)
    merged.update(settings)
    return train(objective, out=out, **merged)


def check_objective(name: str, workdir: str | Path, **settings: Any) -> dict[str, Any]:
    """The contract every objective must meet; raises AssertionError on a violation.

    Trains two epochs straight and one epoch + ``--resume``; both must end with identical
    classifier weights, extra modules and state tensors; the run must load and evaluate.
    """
    import torch  # deferred, as the imports below (see above)

    from ..api import evaluate, load
    from ..config import TrainConfig
    from ..runs import AUX_FILE, LAST_FILE, read_weights
    from ..train import Trainer, build_config

    workdir = Path(workdir)
    opts = dict(TINY, epochs=2)
    opts.update(settings)
    fields = set(TrainConfig.__dataclass_fields__)
    cfg = build_config(name, None, {k: v for k, v in opts.items() if k not in fields},
                       **{k: v for k, v in opts.items() if k in fields})
    full = Trainer(cfg, workdir / "full")
    report = full.fit()
    part = Trainer(cfg, workdir / "part")
    assert part.fit(until_epoch=1) is None
    resumed = Trainer(cfg, workdir / "part", resume=True)
    resumed.fit()
    a, _ = read_weights(workdir / "full" / LAST_FILE)
    b, _ = read_weights(workdir / "part" / LAST_FILE)
    for k in a:
        assert torch.equal(a[k], b[k]), f"resume changed weight {k}"
    sa = {k: v for k, v in full.aux_tensors().items()}
    sb = {k: v for k, v in resumed.aux_tensors().items()}
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float().cpu(), sb[k].float().cpu()), f"resume changed {k}"
    if sa:
        assert (workdir / "full" / AUX_FILE).is_file(), "extra modules/state were not saved"
    model = load(workdir / "full")
    assert not model.training
    ev = evaluate(workdir / "full", ["clean", "fgsm"], n=32, write=False)
    assert ev["n"] == 32
    return report
