"""pytest fixtures for testing Hub publishing and zoo entries against a local Hub server.

Load them in your test suite's top-level ``conftest.py``::

    pytest_plugins = ["robustzoo.testing.fixtures"]

(or bind them in one test module: ``hub_server = robustzoo.testing.fixtures.hub_server``); also
``zoo_plugin`` and ``recipe_plugin`` register zoo entries and recipes for one test. Then::

    def test_my_run_publishes(hub_server, hf_cache, tmp_path):
        from robustzoo import hub
        from robustzoo.testing import train_tiny

        run_dir, _ = train_tiny(tmp_path / "run", "my-objective")
        res = hub.push(run_dir, "me/tiny", endpoint=hub_server.endpoint, token="test")
        local = hub.pull(f"hf-hub:me/tiny@{res.revision}", endpoint=hub_server.endpoint,
                         cache_dir=hf_cache)

``huggingface_hub`` reads its settings once, at import; these fixtures patch the
``huggingface_hub.constants`` that matter for the duration of a test (Xet and telemetry off,
offline mode off unless :func:`hub_offline` is used), and the server stops at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .. import plugins
from ..hookspecs import hookimpl
from .hub_server import HubServer

TEST_TOKEN = "robustzoo-test-token"


@pytest.fixture
def hub_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point huggingface_hub at nothing but explicit endpoints: no Xet, no telemetry, online."""
    import huggingface_hub  # deferred: slow to import, and only these fixtures need it

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub_server(hub_client_settings: None, tmp_path: Path) -> Iterator[HubServer]:
    """A running :class:`HubServer` (its storage under ``tmp_path/hub``); fails the test if the
    server itself raised."""
    server = HubServer(tmp_path / "hub").start()
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == [], server.errors[0]


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """An empty Hugging Face cache folder for this test (pass it as ``cache_dir=``)."""
    path = tmp_path / "hf-cache"
    path.mkdir()
    return path


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE=1`` semantics for this test (the constant huggingface_hub reads)."""
    import huggingface_hub  # deferred: slow to import, and only these fixtures need it

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


class _ZooPlugin:
    """A throwaway plugin that registers zoo entries."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries

    @hookimpl
    def register_zoo(self, register: Callable[..., None]) -> None:
        for entry in self.entries:
            register(entry)


class _RecipePlugin:
    """A throwaway plugin that registers recipes."""

    def __init__(self, recipes: list[Any]) -> None:
        self.recipes = recipes

    @hookimpl
    def register_recipes(self, register: Callable[..., None]) -> None:
        for recipe in self.recipes:
            register(recipe)


@pytest.fixture
def zoo_plugin() -> Iterator[Callable[..., None]]:
    """``zoo_plugin(entry, ...)`` registers zoo entries (ZooEntry or dicts) for this test."""
    names: list[str] = []

    def register(*entries: Any) -> None:
        name = f"test-zoo-{len(names)}"
        plugins.register_plugin(_ZooPlugin(list(entries)), name=name)
        names.append(name)

    yield register
    for name in names:
        plugins.unregister_plugin(name)


@pytest.fixture
def recipe_plugin() -> Iterator[Callable[..., None]]:
    """``recipe_plugin(Recipe(...), ...)`` registers recipes for this test (e.g. tiny stand-ins
    of a zoo entry's recipe, for ``robustzoo zoo publish``)."""
    from .. import plugins

    names: list[str] = []

    def register(*recipes: Any) -> None:
        name = f"test-recipes-{len(names)}"
        plugins.register_plugin(_RecipePlugin(list(recipes)), name=name)
        names.append(name)

    yield register
    for name in names:
        plugins.unregister_plugin(name)
