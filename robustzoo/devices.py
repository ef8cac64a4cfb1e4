"""Which device a command runs on: ``--device auto|cpu|cuda|cuda:N``."""

from __future__ import annotations

import torch

from .errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU.

    Raises:
        UsageError: an unknown device name, or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        # torch also parses "meta", "xla", ...: none of them can run an evaluation here.
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                             f"(cuda:0 to cuda:{count - 1}); pick one of them or use --device cuda")
    return dev
