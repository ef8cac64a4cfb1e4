"""The whole evaluation: attacks with per-example outcomes, suites, the ε sweep, statistics,
gradient-masking health checks and the record of a run's evaluations.

It imports the pieces (attacks, data, objectives, runs), the registries and the device
switches of :mod:`robustzoo.fast` (and :mod:`robustzoo.distributed`'s rank and world size), never the training loop, the Python API or the command
line; it reports progress through :class:`robustzoo.progress.Progress` and never prints.
One concern a file, behind this face:

* ``_evaluate`` — run attacks over examples, keep per-example flags, build eval.json;
* ``_flagstore`` — the saved per-example flags that let an evaluation resume;
* ``_shard`` — one evaluation run by several processes (torchrun), the same outcome for any number;
* ``_suites`` — named attack lists (quick, paper, autoattack) and ``--eps-sweep`` parsing;
* ``_sweep`` — robust accuracy against ε, and its plot;
* ``_stats`` — intervals of accuracies and exact paired tests (McNemar, binomial tails);
* ``_health`` — the degenerate-model, randomness and gradient-masking checks and their probes;
* ``_record`` — the run's history ``RUN_DIR/evals/``, the canonical ``RUN_DIR/eval.json``,
  what may be published and what a card leads with.
"""

from __future__ import annotations

from ._evaluate import (
    ATTACK_OPTIONS,
    AttackOption,
    AttackResult,
    check_budget,
    custom_settings,
    evaluate_model,
    examples_block,
    mark_precision,
    parse_attack_options,
    run_attack,
    run_keyed,
)
from ._flagstore import FLAGS_FILE, FlagStore, model_fingerprint
from ._health import THRESHOLDS as HEALTH_THRESHOLDS
from ._health import apply as apply_health
from ._health import assess as assess_health
from ._health import degenerate_probe, exact_forwards, flagged_checks, randomness_probe, run_probes
from ._record import (
    HISTORY_DIR,
    NO_HEALTH,
    PUBLISHABLE_N,
    SAMPLE_RULE,
    canonical_problems,
    canonical_rank,
    choose_canonical,
    custom_rows,
    custom_text,
    describe,
    headline,
    health_status,
    history,
    history_problems,
    migrate,
    partial_problems,
    protocol_key,
    publishable,
    read_canonical,
    record_id,
    whole_test_set,
    why_no_record,
    write_record,
)
from ._shard import Shard
from ._stats import binomial_tail, mcnemar_exact, wilson_interval
from ._suites import SUITES, Suite, get_suite, parse_eps_list
from ._suites import resolve as resolve_suite
from ._sweep import plot_sweep, run_sweep

__all__ = [
    "ATTACK_OPTIONS", "AttackOption", "AttackResult", "check_budget", "custom_settings", "evaluate_model", "examples_block", "mark_precision", "parse_attack_options",
    "run_attack", "run_keyed",
    "FLAGS_FILE", "FlagStore", "model_fingerprint", "Shard",
    "HEALTH_THRESHOLDS", "apply_health", "assess_health", "degenerate_probe", "flagged_checks",
    "randomness_probe", "run_probes", "exact_forwards",
    "HISTORY_DIR", "NO_HEALTH", "PUBLISHABLE_N", "SAMPLE_RULE", "canonical_problems", "canonical_rank",
    "choose_canonical", "custom_rows", "custom_text", "describe", "headline", "health_status", "history",
    "history_problems", "migrate", "partial_problems", "protocol_key", "publishable", "read_canonical",
    "record_id", "whole_test_set", "why_no_record", "write_record",
    "binomial_tail", "mcnemar_exact", "wilson_interval",
    "SUITES", "Suite", "get_suite", "parse_eps_list", "resolve_suite",
    "plot_sweep", "run_sweep",
]
