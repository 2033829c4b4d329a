# Train MMDetection 3 — the README's commands. Each target runs `setup` first when needed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= artifacts/demo_project
ARGS ?=
# The local app answers this machine only; HOST=0.0.0.0 exposes it, and then every route (the page
# included: its Editor runs configs, which are Python) needs the token in the URL it prints.
HOST ?= 127.0.0.1

.PHONY: setup train app test test-fast test-image-torch lint format probe bench bench-gpu gpu-wheels check-image-deps clean

setup:
	@bash scripts/setup.sh
	@bash scripts/browser.sh

DEMO_PROJECT = $(PY) -m src.cli demo-project $(DEMO_DIR) --images 128 --seed 0

# Generate the demo project (photo-like sizes; reused when it is already there) and train
# RTMDet-tiny from scratch on CPU: about 3 minutes on 2 cores, about 7 on the slowest seen; its
# outcome per CPU instruction set: bench/demo.py (docs/benchmarks.md).
train: setup
	$(DEMO_PROJECT)
	$(PY) -m src.cli train --project $(DEMO_DIR) --model rtmdet_tiny_8xb32-300e_coco --from-scratch \
		--epochs 24 --val-interval 12 --batch-size 8 --val-batch-size 4 --input-size 224 --lr 0.008 --seed 0 --device cpu $(ARGS)

# Serve the app locally on the demo project (http://localhost:8000). The page loads the platform's
# widget scripts from the internet; offline, the server and its HTTP API still work.
app: setup
	$(DEMO_PROJECT)
	PROJECT_DIR=$(DEMO_DIR) SLY_APP_DATA_DIR=$(CURDIR)/artifacts/app_data \
		TEAM_FILES_DIR=$(CURDIR)/artifacts/team_files \
		$(VENV)/bin/python -m uvicorn src.web.main:app --host $(HOST) --port 8000

# The whole suite, slow end-to-end tests included (what CI runs), in two workers (pytest-xdist):
# a test file stays on one worker; files with slow tests start first (tests/conftest.py).
# WORKERS=0 runs it in this one process.
WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# Before every commit: the tests that neither train nor are slow (tests/tiers.py marks those that
# train), in a random order (pytest-randomly) so that no test leans on another's leftovers; the
# order's seed is printed first, and `make test-fast SEED=N` replays it.
test-fast: setup
	@seed=$${SEED:-$$RANDOM}; echo "test order seed: $$seed (make test-fast SEED=$$seed replays it)"; \
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m "not slow and not train" -p randomly \
		--randomly-seed=$$seed

# Opt-in, not in CI: the checkpoint, resume, serving and ONNX export tests under the production image's torch
# (2.1.2, numpy 1.x: docker/requirements-overrides.txt), in a second venv. The first run downloads
# torch 2.1.2 from PyPI and compiles mmcv's ops against it (see docs/development.md for the times).
IMAGE_VENV := .venv-image-torch
test-image-torch:
	mkdir -p .cache && python3.11 docker/image_requirements.py > .cache/requirements-image.txt
	VENV_DIR=$(CURDIR)/$(IMAGE_VENV) TORCH_SPEC=torch==2.1.2 REQUIREMENTS=.cache/requirements-image.txt \
		bash scripts/setup.sh
	$(IMAGE_VENV)/bin/python -m pytest -q tests/runs/test_checkpoints.py tests/engine/test_resume.py \
		tests/runs/test_serving_contract.py tests/engine/test_onnx_export.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench docker
	$(VENV)/bin/ruff format --check src tests bench docker

format: setup
	$(VENV)/bin/ruff format src tests bench docker
	$(VENV)/bin/ruff check --fix src tests bench docker

check-image-deps: setup
	bash scripts/check_image_deps.sh

# Which zoo models train, validate and predict here, on the real-world-shaped project (the table in docs/images.md).
probe: setup
	$(PY) -m src.cli demo-project artifacts/real_world_project --real-world
	$(PY) -m src.cli probe --project artifacts/real_world_project $(ARGS)

bench: setup
	$(PY) bench/mmcv_build.py
	$(PY) bench/dataset_prep.py
	$(PY) bench/overhead.py
	$(PY) bench/ui_latency.py
	$(PY) bench/evaluation.py
	$(PY) bench/memory.py
	$(PY) bench/consecutive_runs.py
	$(PY) bench/sync.py

bench-gpu: setup  # on a CUDA machine; elsewhere it says so and exits 0
	$(PY) bench/gpu.py

# For bench/gpu.py on a bare GPU machine (Python 3.12, torch + CUDA, nvcc, no network): the wheels
# to carry there, into .whl/, mmcv with its CUDA ops for that image included (compiled here once:
# about 30 min on 2 cores, kept in .cache/gpu-mmcv/; SKIP_GPU_MMCV=1 leaves it out).
# There: bash scripts/gpu_setup.sh && PYTHONPATH=/tmp/site python3 bench/gpu.py
gpu-wheels: setup
	bash scripts/gpu_wheels.sh

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
