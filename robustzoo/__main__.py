"""``python -m robustzoo`` (also what torchrun launches)."""

from .cli import main

main()
