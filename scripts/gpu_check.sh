#!/usr/bin/env bash
# The one prepared GPU check (issue 34): run in ONE device call, e.g.
#
#     bash scripts/gpu_check.sh            # on the lent machine, $OUT set by the device tool
#     bash scripts/gpu_check.sh --smoke    # here, on the CPU: every stage runs or says why not
#
# 1. (GPU only) scripts/gpu_setup.sh with WHEEL_OUT=$OUT, so a compiled mmcv wheel comes back in
#    $OUT/mmcv-cuda/<KEY>/; a prebuilt one it installed is copied to $OUT too;
# 2. bench/gpu_check.py: each stage appends one JSON line to $OUT/check.jsonl as soon as it ends,
#    under a deadline of its own, so a run cut short keeps what it measured.
# Options after --smoke go to bench/gpu_check.py. PY picks the Python (default: .venv's here,
# python3 there); SKIP_SETUP=1 skips step 1 (a machine already set up).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench/out}"
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1
SMOKE=0
for arg in "$@"; do [[ "$arg" == --smoke ]] && SMOKE=1; done
if [[ "$SMOKE" == 1 ]]; then
    PY="${PY:-.venv/bin/python}"
else
    PY="${PY:-python3}"
    SITE="${SITE:-/tmp/site}"
    if [[ -z "${SKIP_SETUP:-}" ]]; then
        started=$SECONDS
        WHEEL_OUT="$OUT" SITE="$SITE" PY="$PY" bash scripts/gpu_setup.sh 2>&1 | tee "$OUT/gpu_setup.log"
        echo "{\"stage\": \"gpu_setup\", \"status\": \"ok\", \"seconds\": $((SECONDS - started))}" >> "$OUT/check.jsonl"
    fi
    for wheel in "${SITE%/}".mmcv-*/mmcv-*.whl; do  # the wheel installed, compiled or prebuilt
        [[ -e "$wheel" ]] && cp "$wheel" "$OUT/"
    done
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" bench/gpu_check.py --out "$OUT" "$@"
