# Two commands on a fresh clone: `make run` and `make test`. Both create .venv when missing.
PY        ?= python3.11
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
RUN_DIR   ?= .runs/demo
SCALE     ?= small
SEED      ?= 0
RUN_CONFIG ?= configs/embedded.yaml
IMAGE      ?= ghcr.io/automl-deft/automl-deft:0.1.0
BASE_IMAGE ?=
DOCKER     ?= docker
FAULTS_N      ?= 3
FAULTS_TARGET ?= deft

.PHONY: help setup run quickstart test lint format typecheck bench bench-hpo bench-mining bench-predict faults lock clean image

help:
	@echo "make run    - synthetic '$(SCALE)' workspace, then all three phases through kfp.local (AutoML → DEFT → AutoML)"
	@echo "make quickstart - synthetic workspace, one training, FAR@100% recall vs zero-shot (~2 min)"
	@echo "make test   - run the test suite (GPU and cluster tests are skipped)"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmark: training throughput vs a bare PyTorch loop"
	@echo "make bench-hpo - benchmark: TPE + pruning vs random search (epochs, far_pct)"
	@echo "make bench-mining - benchmark: mining search time for 10k/100k/1M pool embeddings"
	@echo "make bench-predict - benchmark: per-pair CPU latency, torch vs TorchScript vs ONNX packages"
	@echo "make faults - kill/resume campaign: $(FAULTS_N) random SIGKILL/SIGTERM + resume of '$(FAULTS_TARGET)' (deft|run|both), result identical to an uninterrupted run? (~6 min)"
	@echo "make image IMAGE=ghcr.io/<org>/automl-deft:<tag> - build the component image"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	@test -f $(RUN_DIR)/specs/baseline_spec.yaml || \
		$(BIN)/automl-deft demo-workspace $(RUN_DIR) --scale $(SCALE) --seed $(SEED)
	$(BIN)/automl-deft run $(RUN_DIR) -c $(RUN_CONFIG) --yes

quickstart: $(STAMP)
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

bench-mining: $(STAMP)
	$(BIN)/python benchmarks/mining_search.py

bench-predict: $(STAMP)
	$(BIN)/python benchmarks/predict_latency.py

faults: $(STAMP)
	$(BIN)/python benchmarks/fault_campaign.py --n $(FAULTS_N) --target $(FAULTS_TARGET)

image:
	$(DOCKER) build -f docker/Dockerfile -t $(IMAGE) \
		--build-arg SOURCE="$$(git remote get-url origin 2>/dev/null || echo unknown)" \
		--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) .

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf $(VENV) .runs .pytest_cache .ruff_cache .mypy_cache
