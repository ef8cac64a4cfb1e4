"""Tiny digits models for the evaluation and health tests (trained once per session, ~3 s).

An MLP on the 8x8 digits trains in seconds on a CPU, so the tests can use a plainly
adversarially trained model, an undefended one, and deliberately masked versions of them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 0.1  # the digits budget (DatasetSpec 'digits')
ALPHA = 0.015  # its evaluation step


class DigitsMLP(nn.Module):
    """64 → 128 → 10 MLP on [0,1] images (no normalisation needed: digits mean 0, std 1)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size=(8, 8), **_: object):
        super().__init__()
        h, w = input_size
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * h * w, 128), nn.ReLU(),
                                 nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScaledLogits(nn.Module):
    """Masking (a): logits × a huge constant saturate the softmax, so CE gradients vanish."""

    def __init__(self, model: nn.Module, scale: float = 1e4):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


class Quantised(nn.Module):
    """Masking (b): round the input to 4 grey levels first (gradient exactly zero)."""

    def __init__(self, model: nn.Module, levels: int = 4):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.levels - 1
        return self.model(torch.round(x * k) / k)


class NoisyLogits(nn.Module):
    """A randomised model: fresh noise on every forward pass (ε = 0 must catch it)."""

    def __init__(self, model: nn.Module, sigma: float = 3.0):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out + self.sigma * torch.randn_like(out)


def digits():
    """Splits of the embedded digits dataset (test: 360 images)."""
    from robustzoo.data import load_splits
    from robustzoo.plugins import registry

    return load_splits(registry("datasets").get("digits"))


@functools.cache
def _trained(adversarial: bool, epochs: int) -> dict[str, torch.Tensor]:
    from robustzoo.attacks import pgd

    torch.manual_seed(0)
    model = DigitsMLP()
    train = digits().train
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for x, y, _ in train.batches(64, shuffle=True, generator=g):
            if adversarial:  # Madry PGD-7 AT, attack in eval mode (no BatchNorm anyway)
                model.eval()
                x = pgd(model, x, y, eps=EPS, alpha=0.025, steps=7)
                model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def trained_mlp(adversarial: bool = True, epochs: int = 10) -> DigitsMLP:
    """A fresh copy of the (cached) trained MLP, in eval mode."""
    model = DigitsMLP()
    model.load_state_dict(_trained(adversarial, epochs))
    return model.eval()


def _register_architectures(register):
    register("digits_mlp", DigitsMLP, description="test MLP for 8x8 digits")


def register_mlp() -> None:
    """Make 'digits_mlp' loadable (the conftest fixture resets plugins after each test)."""
    from types import SimpleNamespace

    from robustzoo import hookimpl, plugins

    if "digits_mlp" not in plugins.registry("architectures"):
        plugin = SimpleNamespace(register_architectures=hookimpl(_register_architectures))
        plugins.register_plugin(plugin, name="eval-test-mlp")


def write_run(out: Path, model: nn.Module, eps: float = EPS) -> Path:
    """A run directory (config.json + model.safetensors) holding ``model`` as digits_mlp."""
    from robustzoo import runs

    register_mlp()
    out.mkdir(parents=True, exist_ok=True)
    cfg = runs.model_config("digits_mlp", 10, (1, 8, 8), (0.0,), (1.0,),
                            {"dataset": "digits", "objective": "at", "threat_model": {"eps": eps, "norm": "linf"},
                             "config": {"seed": 0, "objective": "at"}})
    runs.write_json(out / runs.CONFIG_FILE, cfg)
    runs.save_weights(out / runs.MODEL_FILE, model.state_dict(), {"architecture": "digits_mlp"})
    return out


class NoisyInput(nn.Module):
    """A randomised defence: x + U(−0.03, 0.03) noise on every forward pass (the issue's model)."""

    def __init__(self, model: nn.Module, radius: float = 0.03):
        super().__init__()
        self.model, self.radius = model, radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + (torch.rand_like(x) * 2 - 1) * self.radius)


def nan_mlp() -> DigitsMLP:
    """The trained MLP with every weight NaN (the issue's degenerate model)."""
    model = trained_mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return model
