#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md, "The GPU check"): from a fresh checkout on a
# machine with one H100 or H200, in under 8 minutes, every figure into one JSON file.
#
#   bash benchmarks/gpu_check.sh [OUT.json] [options of benchmarks/gpu_check.py]
#   bash benchmarks/gpu_check.sh out.json --data-dir /data    # CIFAR-10 there: drift on CIFAR-10
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh out.json   # tiny sizes on the CPU (the tests')
#
# OUT.json defaults to $OUT/gpu_check.json when $OUT is set, else ./gpu_check.json.
# Install: the checkout itself, editable and without dependencies (the machine may have no
# network; torch, timm and the rest must be installed). GPU_CHECK_NO_INSTALL=1 or a smoke run
# skips it; the checkout is then used from PYTHONPATH.
set -euo pipefail
START="$(date +%s)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_JSON="${1:-${OUT:+$OUT/}gpu_check.json}"
if [ $# -gt 0 ]; then shift; fi
PY="${PYTHON:-python}"
SMOKE="${GPU_CHECK_SMOKE:-0}"
if [ "$SMOKE" = "0" ] && [ "${GPU_CHECK_NO_INSTALL:-0}" = "0" ]; then
    "$PY" -m pip install --quiet --no-deps --no-build-isolation -e "$ROOT" >&2 \
        || echo "gpu_check: 'pip install -e .' failed; using the checkout from PYTHONPATH" >&2
fi
# The checkout's code wins over any other installed copy (the method plugins included).
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
EXTRA=()
if [ "$SMOKE" != "0" ]; then EXTRA+=(--smoke); fi
exec "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT_JSON" --started "$START" ${EXTRA[@]+"${EXTRA[@]}"} "$@"
