# Entry points for developers and CI.  Every target that runs Python first
# runs `setup`, which is idempotent and takes ~0.1 s once the machine is ready.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV   := .venv
PYTHON := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
LINTED := xdpguard tests bench scripts

# The ClassBench rule sets and traces (bench/data/README.md says which files
# and where they come from): $CLASSBENCH_DIR when set, else the checkout's
# bench/data/classbench/, else a classbench/ data directory kept next to the
# checkout (../shared/data/classbench) or at /work/shared/data/classbench,
# where our build and CI machines keep it.  The
# tests and benchmarks that use them skip, saying so, when none has the files.
CLASSBENCH_DIR ?= $(firstword $(wildcard $(CURDIR)/bench/data/classbench/acl1_1k $(abspath $(CURDIR)/../shared/data/classbench)/acl1_1k $(abspath $(CURDIR)/../../shared/data/classbench)/acl1_1k /work/shared/data/classbench/acl1_1k))
ifneq ($(CLASSBENCH_DIR),)
export CLASSBENCH_DIR := $(patsubst %/acl1_1k,%,$(CLASSBENCH_DIR))
endif

.PHONY: setup test unit netns lint demo bench bench-quick clean install-systemd

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
	$(PYTHON) scripts/import_cycles.py
	$(PYTHON) scripts/lazy_imports.py

demo: setup
	$(PYTHON) -m xdpguard.demo

# matplotlib (the `bench` extras) draws docs/img/bench-peers.png; installed on
# first use, editable like `setup`'s install so the venv keeps using this tree.
BENCH_DEPS := $(PYTHON) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q --disable-pip-version-check -e '.[bench]'

bench: setup
	$(BENCH_DEPS)
	$(PYTHON) -m bench.run

bench-quick: setup
	$(BENCH_DEPS)
	$(PYTHON) -m bench.run --quick

# The boot-restore unit, with ExecStart pointing at this checkout's venv.
# DESTDIR=/some/root installs into a staging root and leaves the host's
# systemd alone; otherwise the unit is enabled when systemd is PID 1.
UNIT     := xdpguard-restore.service
UNIT_DIR := $(DESTDIR)/etc/systemd/system
install-systemd:
	@bin="$(CURDIR)/$(VENV)/bin/xdpguard"; \
	[[ -x "$$bin" ]] || { echo "install-systemd: $$bin not found; run \`make setup\` first" >&2; exit 1; }; \
	install -d "$(UNIT_DIR)"; \
	sed "s|^ExecStart=/usr/local/bin/xdpguard |ExecStart=$$bin |" deploy/systemd/$(UNIT) > "$(UNIT_DIR)/$(UNIT).tmp"; \
	grep -q "^ExecStart=$$bin restore" "$(UNIT_DIR)/$(UNIT).tmp" || { echo "install-systemd: could not render ExecStart" >&2; exit 1; }; \
	chmod 0644 "$(UNIT_DIR)/$(UNIT).tmp"; mv "$(UNIT_DIR)/$(UNIT).tmp" "$(UNIT_DIR)/$(UNIT)"; \
	echo "installed $(UNIT_DIR)/$(UNIT) (ExecStart=$$bin restore)"; \
	if [[ -n "$(DESTDIR)" ]]; then \
		echo "DESTDIR set: not reloading or enabling systemd"; \
	elif [[ -d /run/systemd/system ]]; then \
		systemctl daemon-reload && systemctl enable $(UNIT) && echo "enabled $(UNIT)"; \
	else \
		echo "systemd is not running here (PID 1 is $$(cat /proc/1/comm)): installed the file only; run \`systemctl enable $(UNIT)\` on a systemd host"; \
	fi

# Build and tool caches only; `rm -rf .venv` to rebuild the environment.
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
