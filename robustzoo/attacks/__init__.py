"""Attacks: functional PGD/FGSM/CW used by training, and registry specs used by evaluation."""

from __future__ import annotations

from .core import (
    AttackContext,
    AttackSpec,
    attack_bn_mode,
    ce_loss,
    cw_loss,
    cw_margin,
    fgsm,
    pgd,
    project,
)

__all__ = ["AttackContext", "AttackSpec", "attack_bn_mode", "ce_loss", "cw_loss", "cw_margin", "fgsm", "pgd",
           "project"]
