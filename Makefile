# Train MMDetection 3 — the README's commands. Each target runs `setup` first when needed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= artifacts/demo_project
ARGS ?=

.PHONY: setup train test test-fast lint format bench clean

setup:
	@bash scripts/setup.sh

# Generate the demo project and train RTMDet-tiny from scratch on CPU (about 5 minutes on 2 cores).
train: setup
	$(PY) -m src.cli demo-project $(DEMO_DIR) --images 160 --seed 0
	$(PY) -m src.cli train --project $(DEMO_DIR) --model rtmdet_tiny_8xb32-300e_coco --from-scratch \
		--epochs 20 --val-interval 5 --batch-size 8 --input-size 256 --lr 0.004 --seed 0 --device cpu $(ARGS)

# The whole suite, slow end-to-end tests included (what CI runs).
test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: setup
	$(PY) bench/dataset_prep.py
	$(PY) bench/overhead.py

clean:
	rm -rf artifacts .pytest_cache .ruff_cache
