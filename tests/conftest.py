"""Shared fixtures: tiny trained runs on the embedded digits data."""

from __future__ import annotations

import os

import pytest

# One thread per test process (xdist runs two): tiny models gain nothing from more, and two
# processes x two threads on two cores thrash. Set before torch is imported; subprocesses inherit.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
# The Hub client would otherwise call huggingface.co for telemetry even with endpoint=.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def at_run(tmp_path_factory):
    """A 3-epoch Madry AT run on the digits (shared, read-only: copy before changing it)."""
    from robustzoo.testing import train_tiny

    # All 1,287 training digits for 3 epochs: a model clearly above chance (~4 s on a CPU).
    run_dir, _ = train_tiny(tmp_path_factory.mktemp("runs") / "at", "at", subset=None, epochs=3)
    return run_dir


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Every test starts with plugin state built from the current environment."""
    from robustzoo import plugins

    yield
    plugins.reset()
