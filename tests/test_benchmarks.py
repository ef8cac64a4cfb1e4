"""The benchmark scripts run, and measure what they say (tiny settings)."""

from __future__ import annotations

import json

from eval_helpers import trained_mlp, write_run
from helpers import load_script


def test_autoattack_overhead_times_both_on_the_same_examples(tmp_path, capsys):
    bench = load_script("benchmarks/autoattack_overhead.py")
    run = write_run(tmp_path / "run", trained_mlp(adversarial=False))
    out = tmp_path / "aa.json"
    assert bench.main(["--run", str(run), "--n", "6", "--repeats", "2", "--square-queries", "10",
                       "--eps", "0.2", "--with-health", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["seconds"]) == {"A", "B", "C"} and all(len(v) == 2 for v in data["seconds"].values())
    assert len(set(data["robust_correct"]["A"]) | set(data["robust_correct"]["B"])) == 1
    assert data["ratio_wrapper_over_direct"] > 0 and data["cpu_ratio_wrapper_over_direct"] > 0
    assert "ratio B/A" in capsys.readouterr().out
