"""The record of a run's evaluations: ``RUN_DIR/eval.json``.

Evaluations of one run accumulate: a later ``robustzoo eval`` with the same ε, n and seed
adds its attacks to the record (replacing rows of the same attack) instead of overwriting
what an earlier one measured; a record made with another ε, n or seed is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runs import write_json
from . import _health


def merge_eval(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Merge ``report`` into an existing eval.json with the same ε, n and seed, else replace it."""
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        if old and all(old.get(k) == report.get(k) for k in ("eps", "n", "seed")):
            mine = {r["attack"] for r in report["results"]}
            kept = [r for r in old.get("results", []) if r["attack"] not in mine]
            merged = dict(old)
            merged.update({k: v for k, v in report.items() if k != "results"})
            merged["results"] = kept + report["results"]
            if "worst_case" in old and "worst_case" in report:
                merged["worst_case"] = report["worst_case"] if len(report["worst_case"]["attacks"]) >= len(
                    old["worst_case"]["attacks"]) else old["worst_case"]
            if kept and "health" in report:
                # The kept rows come from an earlier call: re-check all rows together
                # (accuracies only: per-example flags of both calls are not at hand here).
                _health.apply(merged, probes=report["health"].get("probes"))
            report = merged
    write_json(path, report)
    return report
