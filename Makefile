# lmgym: two commands on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded default model
#   make test   set up .venv, then lint (ruff), type-check (mypy) and run the test suite
#
# torch is installed first, pinned, so that a CPU-only machine does not pull several GB of CUDA
# packages through a transitive unpinned `torch`. Override it elsewhere, e.g.
#   make test TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124'

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=
# Two pytest workers (pytest-xdist): the suite's learning checks and CLI smoke runs are
# CPU-bound on one torch thread each, so two processes use both cores of a 2-core machine.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.lmgym-installed

.PHONY: setup demo test lint typecheck pytest bench clean pretrain

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/lmgym demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check lmgym tests benchmarks examples
	$(BIN)/ruff format --check lmgym tests benchmarks examples

typecheck: setup
	$(BIN)/mypy lmgym

pytest: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

bench: setup
	mkdir -p bench-results
	for script in benchmarks/*.py; do \
		$(BIN)/python $$script --json bench-results/$$(basename $$script .py).json || exit 1; \
	done

# Re-train the shipped default model (about 10 minutes on 2 CPU cores).
pretrain: setup
	$(BIN)/python -m lmgym.models.pretrain --out lmgym/models/default

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
