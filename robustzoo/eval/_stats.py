"""Statistics of accuracies measured on a finite sample of test examples.

Every accuracy robustzoo reports comes with the number of examples it was measured on and
a 95% interval: with n = 1,000 an accuracy of 50% is only known to about ±3 points, so two
attacks (or two models) that differ by less are not told apart by the number alone.
"""

from __future__ import annotations

import math
from typing import Any


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / n`` (as fractions)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_tail(k: int, n: int, p: float) -> float:
    """Exact ``P(X >= k)`` for ``X ~ Binomial(n, p)`` (summed in log space, so n = 10,000 is fine)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar test on paired outcomes: ``P(X >= b)``, ``X ~ Binomial(b + c, 1/2)``.

    ``b`` and ``c`` are the discordant pairs: examples where only the first, respectively only
    the second, of two attacks run on the same examples left the example robust. Under the
    null hypothesis (the two attacks are equally strong) a discordant example is equally
    likely to go either way; a small p-value says the first attack leaves more examples
    robust than chance explains. Concordant examples carry no information and are ignored.
    """
    return binomial_tail(int(b), int(b) + int(c), 0.5)


def paired_counts(first: Any, second: Any) -> tuple[int, int]:
    """Discordant pairs of two per-example "still correct" bool vectors on the same examples.

    Returns:
        ``(first_only, second_only)``: examples robust under the first attack but broken by
        the second, and the reverse.
    """
    a, b = first.bool(), second.bool()
    return int((a & ~b).sum()), int((b & ~a).sum())


def smallest_sign_count(alpha: float) -> int:
    """Fewest discordant pairs, all in one direction, that give ``mcnemar_exact < alpha``."""
    return max(1, math.floor(math.log2(1.0 / alpha)) + 1)
