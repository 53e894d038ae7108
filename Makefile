# Two set-up commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYTHONHASHSEED ?= 0

.PHONY: install demo lint test test-e2e test-slow clean protos bench docs k8s-check reliability reliability-quick

$(BIN)/python:
	bash scripts/system-deps.sh
	$(PY) -m venv $(VENV)

# Re-install when the project metadata changes. The robot client package comes first in the same
# command: the main package depends on it and it is not on PyPI.
$(STAMP): pyproject.toml packages/w2a-client/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e packages/w2a-client -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MUJOCO_GL=egl $(BIN)/w2a demo

# the lint gate first (rules in pyproject.toml), then the tests
test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

test-e2e: $(STAMP)
	MUJOCO_GL=egl $(BIN)/python -m pytest -q -m slow tests/e2e

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Benchmarks over real servers on loopback; JSON lands in reports/.
bench: $(STAMP)
	mkdir -p reports
	$(BIN)/w2a bench policy --json --robots 16 > reports/bench_policy.json
	$(BIN)/w2a bench weights --json > reports/bench_weights.json
	$(BIN)/w2a bench world-model --json > reports/bench_world_model.json
	$(BIN)/w2a bench trainer --json > reports/bench_trainer.json
	$(BIN)/w2a bench scale --json > reports/bench_scale.json
	cat reports/bench_*.json

docs: $(STAMP)
	$(BIN)/python scripts/gen_config_docs.py

k8s-check: $(STAMP)
	PATH=$(abspath $(VENV))/bin:$$PATH $(BIN)/python scripts/k8s_check.py

reliability: $(STAMP)
	MUJOCO_GL=egl $(BIN)/python -m pytest -q -p no:logging -m reliability tests/reliability

reliability-quick: $(STAMP)
	W2A_RELIABILITY_QUICK=1 MUJOCO_GL=egl $(BIN)/python -m pytest -q -p no:logging -m reliability tests/reliability
