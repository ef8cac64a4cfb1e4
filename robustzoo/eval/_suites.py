"""Named evaluation suites: which attacks, on how many test images by default.

=============  ==================================================  ===============
suite          attacks                                             default n
=============  ==================================================  ===============
``quick``      clean, pgd20, apgd-dlr                              1,000
``paper``      clean, fgsm, pgd20, pgd100, cw, square              whole test set
``autoattack`` clean, autoattack (standard)                        whole test set
=============  ==================================================  ===============

``quick`` pairs PGD on CE with APGD on the scale-invariant DLR loss, so the gradient-masking
check ``pgd_vs_apgd`` always has something to compare; ``paper`` is the protocol of the
Calibrated AT paper (Tables 1–3); ``autoattack`` is the RobustBench protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotFoundError, UsageError, did_you_mean
from ..objectives import parse_number


@dataclass(frozen=True)
class Suite:
    """A named list of attacks and the number of test images it uses by default (None: all)."""

    name: str
    attacks: tuple[str, ...]
    n: int | None
    description: str


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("quick", ("clean", "pgd20", "apgd-dlr"), 1000,
          "fast sanity check: PGD-20 on CE next to APGD-DLR, 1,000 test images"),
    Suite("paper", ("clean", "fgsm", "pgd20", "pgd100", "cw", "square"), None,
          "the Calibrated AT paper's protocol (natural, FGSM, PGD-20, PGD-100, CW∞, Square-5000)"),
    Suite("autoattack", ("clean", "autoattack"), None,
          "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square-5000), the RobustBench protocol"),
)}

#: Without --suite or --attacks: clean, PGD-20 on CE and CW∞ on the logit margin, as at the end of
#: training, so the CE-versus-margin health check always runs.
DEFAULT_ATTACKS = ("clean", "pgd20", "cw")


def get_suite(name: str) -> Suite:
    """A suite by name; an unknown name is a NotFoundError naming the close matches."""
    if name not in SUITES:
        raise NotFoundError(f"unknown suite {name!r}{did_you_mean(name, SUITES)}; choose one of "
                            f"{', '.join(SUITES)} or give --attacks a,b")
    return SUITES[name]


def resolve(suite: str | None, attacks: str | list[str] | tuple[str, ...] | None,
            n: int | None) -> tuple[list[str], int | None]:
    """The attack list and example count for ``--suite`` / ``--attacks`` / ``--n``.

    ``--n`` wins over a suite's default; without either option the attacks are clean, pgd20.
    """
    if suite and attacks:
        raise UsageError("give either --suite or --attacks, not both")
    if suite:
        s = get_suite(suite)
        return list(s.attacks), (n if n is not None else s.n)
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
        if not attacks:
            raise UsageError("no attacks given; e.g. --attacks clean,pgd20")
    return list(attacks or DEFAULT_ATTACKS), n


def parse_eps_list(text: str | list[float] | tuple[float, ...]) -> list[float]:
    """Parse '0,2/255,4/255,8/255' into sorted unique floats on the [0,1] scale."""
    if isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
    else:
        values = []
        for tok in str(text).split(","):
            if not tok.strip():
                continue
            values.append(parse_number(tok.strip(), "--eps-sweep value"))
    if not values:
        raise UsageError("--eps-sweep needs at least one ε, e.g. 0,2/255,4/255,8/255")
    for v in values:
        if not 0 <= v <= 1:
            raise UsageError(f"--eps-sweep value {v:g} is outside [0, 1]; ε is on the [0,1] pixel scale")
    return sorted(set(values))
