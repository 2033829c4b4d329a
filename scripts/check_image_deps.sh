#!/usr/bin/env bash
# Resolve the Docker image's pin set (torch 2.1.2 + docker/image_requirements.py) with pip against
# the package registry, without installing anything: catches a pin the image cannot install.
# Needs the registry (not run by `make test`); `make check-image-deps` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile)"
.venv/bin/python docker/image_requirements.py > /tmp/requirements-image.txt
# the machine-wide pip constraints (if any) cap torch for this machine, not for the image
PIP_CONSTRAINT=/dev/null .venv/bin/python -m pip install --dry-run --ignore-installed --quiet \
    --report /tmp/image-deps-report.json "torch==${TORCH_VERSION}" -r /tmp/requirements-image.txt
.venv/bin/python - <<'PY'
import json
report = json.load(open("/tmp/image-deps-report.json"))
pins = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
print(f"image pin set resolves: {len(pins)} packages, torch {pins['torch']}, numpy {pins['numpy']}")
PY
