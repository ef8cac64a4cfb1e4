"""The whole evaluation: attacks with per-example outcomes, suites, the ε sweep, statistics,
gradient-masking health checks and the record of a run's evaluations.

It imports the pieces (attacks, data, objectives, runs), the registries and the device
switches of :mod:`robustzoo.fast`, never the training loop, the Python API or the command
line; it reports progress through :class:`robustzoo.progress.Progress` and never prints.
One concern a file, behind this face:

* ``_evaluate`` — run attacks over examples, keep per-example flags, build eval.json;
* ``_flagstore`` — the saved per-example flags that let an evaluation resume;
* ``_suites`` — named attack lists (quick, paper, autoattack) and ``--eps-sweep`` parsing;
* ``_sweep`` — robust accuracy against ε, and its plot;
* ``_stats`` — intervals of accuracies;
* ``_health`` — the gradient-masking checks and their probes;
* ``_record`` — merging a report into ``RUN_DIR/eval.json``.
"""

from __future__ import annotations

from ._evaluate import (
    ATTACK_OPTIONS,
    AttackResult,
    evaluate_model,
    parse_attack_options,
    run_attack,
    run_keyed,
)
from ._flagstore import FLAGS_FILE, FlagStore, model_fingerprint
from ._health import THRESHOLDS as HEALTH_THRESHOLDS
from ._health import apply as apply_health
from ._health import assess as assess_health
from ._health import flagged_checks, run_probes
from ._record import merge_eval
from ._stats import wilson_interval
from ._suites import SUITES, Suite, get_suite, parse_eps_list
from ._suites import resolve as resolve_suite
from ._sweep import plot_sweep, run_sweep

__all__ = [
    "ATTACK_OPTIONS", "AttackResult", "evaluate_model", "parse_attack_options", "run_attack", "run_keyed",
    "FLAGS_FILE", "FlagStore", "model_fingerprint",
    "HEALTH_THRESHOLDS", "apply_health", "assess_health", "flagged_checks", "run_probes",
    "merge_eval", "wilson_interval",
    "SUITES", "Suite", "get_suite", "parse_eps_list", "resolve_suite",
    "plot_sweep", "run_sweep",
]
