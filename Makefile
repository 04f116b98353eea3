# Entry points for developers and CI.  Every target that runs Python first
# runs `setup`, which is idempotent and takes ~0.1 s once the machine is ready.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV   := .venv
PYTHON := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LINTED := xdpguard tests bench

.PHONY: setup test unit netns lint demo bench bench-quick clean

setup:
	@bash scripts/setup.sh

# pytest's exit code fails the recipe whatever it is, including 5 ("no tests
# collected"): a suite that silently stopped collecting is a failure.
test: setup
	$(PYTEST) -q tests/unit tests/netns

unit: setup
	$(PYTEST) -q tests/unit

netns: setup
	$(PYTEST) -q tests/netns

lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy xdpguard

demo: setup
	$(PYTHON) -m xdpguard.demo

bench: setup
	$(PYTHON) -m bench.run

bench-quick: setup
	$(PYTHON) -m bench.run --quick

# Build and tool caches only; `rm -rf .venv` to rebuild the environment.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
