# Two commands on a fresh clone: `make run` and `make test`. Both create .venv when missing.
PY        ?= python3.11
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
RUN_DIR   ?= .runs/demo
SCALE     ?= small
SEED      ?= 0

.PHONY: help setup run test lint format typecheck bench bench-hpo lock clean

help:
	@echo "make run    - generate the synthetic '$(SCALE)' workspace, train, and print FAR@100% recall vs zero-shot"
	@echo "make test   - run the test suite (GPU and cluster tests are skipped)"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmark: training throughput vs a bare PyTorch loop"
	@echo "make bench-hpo - benchmark: TPE + pruning vs random search (epochs, far_pct)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/automl-deft quickstart $(RUN_DIR) --scale $(SCALE) --seed $(SEED)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

bench-hpo: $(STAMP)
	$(BIN)/python benchmarks/hpo_pruning.py

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf $(VENV) .runs .pytest_cache .ruff_cache .mypy_cache
