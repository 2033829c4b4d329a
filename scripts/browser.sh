#!/usr/bin/env bash
# Debian's chromium, for the test that opens the evaluation report in a real browser with no
# network (tests/app/test_evaluate.py). Called by `make setup`; seconds when it is there already.
# Installs it with apt where that is possible (root, apt-get); otherwise says how.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    printf '\n==> [setup %s] install chromium (apt) for the report test\n' "$(date +%H:%M:%S)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
    exit 0
fi
echo "chromium is missing: install Debian's chromium (sudo apt-get install chromium) for the" \
     "report test; the app itself does not need it" >&2
