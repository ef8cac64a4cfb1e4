"""Shared fixtures: tiny trained runs on the embedded digits data."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
# The Hub client would otherwise call huggingface.co for telemetry even with endpoint=.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def at_run(tmp_path_factory):
    """A 1-epoch Madry AT run on 400 digits (shared, read-only: copy before changing it)."""
    from robustzoo.testing import train_tiny

    run_dir, _ = train_tiny(tmp_path_factory.mktemp("runs") / "at", "at", epochs=2)
    return run_dir


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch):
    """Every test starts with plugin state built from the current environment."""
    from robustzoo import plugins

    yield
    plugins.reset()
