"""The plugin hooks: the only place robustzoo declares what a plugin may provide.

Every hook is a verb that receives a ``register`` callable; plugins never touch a global
registry. A plugin package needs one entry point in the ``robustzoo`` group and one or more
functions decorated with :data:`robustzoo.hookimpl`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("robustzoo")
hookimpl = pluggy.HookimplMarker("robustzoo")


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register datasets: ``register(DatasetSpec(...))``."""


@hookspec
def register_architectures(register: Callable[..., None]) -> None:
    """Register model factories: ``register(name, factory, **info)``.

    ``factory(num_classes, in_chans, input_size, mean, std, **kwargs) -> nn.Module``; the
    module takes images in [0,1] and normalises them itself.
    """


@hookspec
def register_attacks(register: Callable[..., None]) -> None:
    """Register evaluation attacks: ``register(AttackSpec(...))``."""


@hookspec
def register_objectives(register: Callable[..., None]) -> None:
    """Register training objectives: ``register(ObjectiveClass)`` (see ``robustzoo.objectives``)."""


@hookspec
def register_recipes(register: Callable[..., None]) -> None:
    """Register named training configurations: ``register(Recipe(...))``."""


@hookspec
def register_zoo(register: Callable[..., None]) -> None:
    """Register pretrained zoo entries: ``register(ZooEntry(...))`` or a dict of the same keys."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``robustzoo`` click group: ``@cli.command()``."""
