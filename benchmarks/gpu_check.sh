#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md, "The GPU check"): on a machine with one H100 or
# H200, in under 8 minutes (budgets per phase: benchmarks/gpu_check.py), every figure into one
# JSON file.
#
#   bash benchmarks/gpu_check.sh --prepare             # HERE, before the tree travels (network):
#                                                       # .gpu_check/ = Fashion-MNIST + wheels + commit
#   bash benchmarks/gpu_check.sh [OUT.json] [options]  # THERE: every phase
#   bash benchmarks/gpu_check.sh out.json --phases compile,fat_compaction   # rerun what was cut
#   bash benchmarks/gpu_check.sh out.json --data-dir DIR   # Fashion-MNIST IDX files or CIFAR-10 in DIR
#   GPU_CHECK_DATA_DIR=DIR bash benchmarks/gpu_check.sh    # the same
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh out.json    # tiny sizes on the CPU (the tests')
#   bash benchmarks/gpu_check.sh --dry-run                 # say what would run, run nothing
#
# OUT.json defaults to $OUT/gpu_check.json when $OUT is set, else ./gpu_check.json. Options are
# those of benchmarks/gpu_check.py (--help lists them, the phases and their budgets).
#
# Python: $PYTHON, else python3 (what the GPU image documents), else python. Nothing is
# installed into it: the checkout runs from PYTHONPATH, and the wheels the image lacks
# (.gpu_check/wheels: pyautoattack==0.2.0, see gpu_check.py's help) are installed into a
# private folder ($GPU_CHECK_SITE, default /tmp/gpu_check_site) when pyautoattack is not found.
set -euo pipefail
START="$(date +%s)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PAYLOAD="$ROOT/.gpu_check"

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif command -v python3 >/dev/null 2>&1; then
    PY=python3
elif command -v python >/dev/null 2>&1; then
    PY=python
else
    echo "gpu_check: no python3 or python on PATH; set PYTHON=/path/to/python" >&2
    exit 2
fi
# The checkout's code wins over any other installed copy (the method plugins included).
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"

DRY=0
case "${1:-}" in
    --prepare)
        shift
        exec "$PY" "$ROOT/benchmarks/gpu_check.py" --prepare "$@" ;;
    --dry-run)
        DRY=1
        shift ;;
esac

OUT_JSON="${OUT:+$OUT/}gpu_check.json"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    OUT_JSON="$1"
    shift
fi
SMOKE="${GPU_CHECK_SMOKE:-0}"
EXTRA=()
if [ "$SMOKE" != "0" ]; then EXTRA+=(--smoke); fi

WHEELS=()
if [ -d "$PAYLOAD/wheels" ]; then
    for w in "$PAYLOAD"/wheels/*.whl; do
        if [ -f "$w" ]; then WHEELS+=("$w"); fi
    done
fi
NEED_WHEELS=0
# find_spec, not import: pyautoattack imports torch (seconds)
if [ "${#WHEELS[@]}" -gt 0 ] && ! "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('pyautoattack') is None)" \
        >/dev/null 2>&1; then
    NEED_WHEELS=1
fi
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"

if [ "$DRY" = "1" ]; then
    echo "python: $PY ($(command -v "$PY" || echo "$PY"))"
    echo "wheels: ${#WHEELS[@]} in $PAYLOAD/wheels; install into $SITE: $([ "$NEED_WHEELS" = 1 ] && echo yes || echo no)"
    echo "data: ${GPU_CHECK_DATA_DIR:-$([ -d "$PAYLOAD/fashion-mnist" ] && echo "$PAYLOAD/fashion-mnist" || echo none)} (--data-dir overrides)"
    if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then COMMIT_FROM=git
    elif [ -f "$PAYLOAD/commit.json" ]; then COMMIT_FROM="$PAYLOAD/commit.json"
    else COMMIT_FROM="unknown (no .git, no --prepare)"; fi
    echo "commit: $COMMIT_FROM"
    echo "run: $PY $ROOT/benchmarks/gpu_check.py --out $OUT_JSON --started $START ${EXTRA[*]+${EXTRA[*]}} $*"
    exit 0
fi

if [ "$NEED_WHEELS" = "1" ]; then
    echo "gpu_check: installing ${#WHEELS[@]} wheel(s) from $PAYLOAD/wheels into $SITE" >&2
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${WHEELS[@]}" >&2
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
exec "$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT_JSON" --started "$START" ${EXTRA[@]+"${EXTRA[@]}"} "$@"
