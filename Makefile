# Two commands matter: `make run` (install + serve the demo) and `make test` (install + full suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch; an unpinned torch can pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip
PYTEST_ARGS ?=

.PHONY: run test lint format bench system-deps clean

run: $(VENV)/.installed
	$(BIN)/latentmap serve --demo

test: $(VENV)/.installed-test system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --headless $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_encode.py --quick
	$(BIN)/python bench/bench_reduce.py --quick
	$(BIN)/python bench/bench_knn.py --quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	touch $@

# Debian packages the browser and worker tests need (installed when missing and when we may).
system-deps:
	bash .ci/system-deps.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
