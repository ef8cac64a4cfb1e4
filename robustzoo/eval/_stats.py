"""Statistics of accuracies measured on a finite sample of test examples.

Every accuracy robustzoo reports comes with the number of examples it was measured on and
a 95% interval: with n = 1,000 an accuracy of 50% is only known to about ±3 points, so two
attacks (or two models) that differ by less are not told apart by the number alone.
"""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n`` (as fractions)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
