# lmgym: two commands on a fresh machine.
#   make demo   set up .venv and run the main job on the embedded default model
#   make test   set up .venv, then lint (ruff), type-check (mypy) and run the test suite
#
# Both install the exact versions recorded in constraints.txt (the lock), so a fresh machine
# reproduces CI. `make lock` regenerates the lock from the newest releases pyproject.toml allows;
# `make test-latest` runs the suite on those newest releases without touching the lock, and
# `make test-floors` on the oldest supported ones (constraints-floors.txt), and
# `make test-rllib-gym` on the gymnasium release that RLlib (the [ray] extra) pins.
#
# torch is installed first, pinned, so that a CPU-only machine does not pull several GB of CUDA
# packages through a transitive unpinned `torch`. Override it elsewhere, e.g.
#   make test TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124'

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_SPEC ?= pip==26.3
CONSTRAINTS ?= constraints.txt
DEMO_ARGS ?=
# Two pytest workers (pytest-xdist): the suite's learning checks and CLI smoke runs are
# CPU-bound on one torch thread each, so two processes use both cores of a 2-core machine.
# "worksteal": a worker that finishes its share takes tests queued on the other, so one long
# learning check does not leave a core idle at the end.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

# pip is pinned (PIP_SPEC): asking PyPI whether a newer one exists only costs time (and waits
# for a network timeout on an offline machine). pip still byte-compiles what it installs: where
# PYTHONDONTWRITEBYTECODE is set (as on the machine this was measured on), nothing else writes
# the .pyc files, and every test process would compile torch afresh (measured: importing torch,
# SB3 and transformers took 39 s instead of 14 s in a venv installed with --no-compile).
export PIP_DISABLE_PIP_VERSION_CHECK := 1

BIN := $(VENV)/bin
STAMP := $(VENV)/.lmgym-installed
CONSTRAINT_FLAGS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: setup demo test lint typecheck pytest test-latest test-floors test-rllib-gym lock bench clean pretrain \
	wheel-check

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet '$(PIP_SPEC)'
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install $(CONSTRAINT_FLAGS) -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/lmgym demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check lmgym tests benchmarks examples
	$(BIN)/ruff format --check lmgym tests benchmarks examples

typecheck: setup
	$(BIN)/mypy lmgym

pytest: setup
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# mypy is single-threaded: it runs beside the suite instead of before it, so the second core is
# not idle for its minute. Either failing fails `make test`.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck pytest

# The suite on the newest releases pyproject.toml allows (how the next break is found before
# users find it), in its own venv, reinstalled every time.
test-latest:
	rm -rf .venv-latest
	$(MAKE) pytest VENV=.venv-latest CONSTRAINTS=

# The suite on the oldest releases lmgym claims to support.
test-floors:
	rm -rf .venv-floors
	$(MAKE) pytest VENV=.venv-floors CONSTRAINTS=constraints-floors.txt

# The suite on the gymnasium that RLlib pins (pip install 'lmgym[ray]' installs that one), the
# rest of the lock unchanged.
RLLIB_GYMNASIUM ?= 1.2.2

test-rllib-gym:
	rm -rf .venv-rllib-gym
	sed 's/^gymnasium==.*/gymnasium==$(RLLIB_GYMNASIUM)/' constraints.txt > .constraints-rllib-gym.txt
	$(MAKE) pytest VENV=.venv-rllib-gym CONSTRAINTS=.constraints-rllib-gym.txt

# Regenerate constraints.txt from the newest allowed releases (torch stays with TORCH_SPEC).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet '$(PIP_SPEC)'
	.venv-lock/bin/python -m pip install --quiet $(TORCH_SPEC)
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# make test / make demo install exactly these (regenerate with: make lock)."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i '^torch=='; } > constraints.txt
	rm -rf .venv-lock

bench: setup
	mkdir -p bench-results
	for script in benchmarks/*.py; do \
		$(BIN)/python $$script --json bench-results/$$(basename $$script .py).json || exit 1; \
	done

# Build the wheel into dist/, install it with torch into a fresh venv outside the repository
# (lmgym's dependencies pinned by the lock), and smoke-test it there: the embedded model must
# come from the wheel, not from the source tree. About 2.5 minutes; not part of `make test`.
WHEEL_SMOKE := import gymnasium as gym, lmgym; \
	env = gym.make("LMBandit-v0"); env.reset(seed=0); env.step(env.action_space.sample()); \
	print("lmgym", lmgym.__version__, "from", lmgym.__file__)

wheel-check:
	rm -rf dist build
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/builder"; \
	"$$tmp/builder/bin/python" -m pip install --quiet '$(PIP_SPEC)' 'build>=1.2,<2'; \
	"$$tmp/builder/bin/python" -m build --wheel --outdir dist .; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet '$(PIP_SPEC)'; \
	"$$tmp/venv/bin/python" -m pip install --quiet $(TORCH_SPEC); \
	"$$tmp/venv/bin/python" -m pip install --quiet $(CONSTRAINT_FLAGS) dist/lmgym-*.whl; \
	cd "$$tmp"; \
	"$$tmp/venv/bin/python" -c '$(WHEEL_SMOKE)'; \
	"$$tmp/venv/bin/lmgym" --help > /dev/null; \
	echo "wheel-check: $$(ls $(CURDIR)/dist) installs and runs in a clean venv"
	rm -rf build

# Re-train the shipped default model (about 10 minutes on 2 CPU cores).
pretrain: setup
	$(BIN)/python -m lmgym.models.pretrain --out lmgym/models/default

clean:
	rm -rf $(VENV) .venv-latest .venv-floors .venv-rllib-gym .constraints-rllib-gym.txt .venv-lock build *.egg-info .pytest_cache .mypy_cache .ruff_cache
