# redis-storm: `make demo` and `make test` work from a clean clone on Debian with Python 3.11.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := redis-server redis-sentinel prometheus prometheus-redis-exporter prometheus-alertmanager
SANITY_ROOT ?= $(CURDIR)/.sandbox/sanity/ansible_collections/fintech/redis_storm
SANITY_BUILD := $(CURDIR)/.sandbox/sanity-build
# The oldest Python tests/config.yml declares for modules, from pyenv or PATH.
OLDEST_MODULE_PYTHON := 3.9
OLDEST_MODULE_PYTHON_BIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/$(OLDEST_MODULE_PYTHON).*/bin/python$(OLDEST_MODULE_PYTHON)) \
  $(shell command -v python$(OLDEST_MODULE_PYTHON)))
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
APT_LOCK_TIMEOUT ?= 600
APT_OPTIONS ?=
INSTALL_DEBS = env APT_LOCK_TIMEOUT=$(APT_LOCK_TIMEOUT) APT_OPTIONS="$(APT_OPTIONS)" tools/install-debs.sh
DEMO_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup kube debs demo test lint ladder sanity ansible-units unit integration e2e chaos matrix bench build clean

help:
	@echo "make demo   set up, raise a storm in the sandbox, run the incident through stormctl, print the report"
	@echo "make test   set up and run every check (lint, sanity, unit, integration, end to end)"
	@echo "make chaos  seeded incidents with faults, each checked and rolled back (CHAOS_RUNS=N, CHAOS_SEED=S)"
	@echo "make matrix  the compatibility tests on every supported ansible-core; writes the README table"
	@echo "make bench  benchmarks (prints numbers), then $(BENCH_CHAOS_RUNS) chaos incidents"

setup: $(VENV)/.installed debs $(GET_PIP) kube

# The control plane's binaries (etcd, kube-apiserver, kube-controller-manager, kubectl, metrics-server),
# built from sandbox/kube into ~/.cache/redis-storm/kube/<versions>/; a no-op when that cache is complete.
kube: $(VENV)/.installed
	$(BIN)/python -m stormctl.sandbox.kube.build

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %s): install python3.11 and run make again, or PYTHON=python3.11 make" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Debian packages for the real services; installed when missing (waiting up to APT_LOCK_TIMEOUT seconds for
# another apt run, such as unattended-upgrades), or the exact command to run is printed.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then $(INSTALL_DEBS) $$missing; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo $(INSTALL_DEBS) $$missing; \
	  else echo "missing Debian packages:$$missing. Run: sudo apt-get update && sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	fi

# ansible-test bootstraps pip in its venvs with a script it downloads; ensurepip does the same offline.
$(GET_PIP):
	@mkdir -p $(dir $@)
	@printf '%s\n' 'import subprocess, sys' \
	  'args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]' \
	  'subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])' \
	  'if args: subprocess.check_call([sys.executable, "-m", "pip", "install", *args])' > $@

lint: setup
	$(BIN)/python tools/ladder.py --check
	$(BIN)/ruff check src plugins extensions tests bench tools
	$(BIN)/mypy src plugins extensions
	$(BIN)/ansible-lint

# Write every copy of the rung list (module_utils, role vars, JSON schemas, AWX surveys, docs) from meta/ladder.yml.
ladder: $(VENV)/.installed
	$(BIN)/python tools/ladder.py

# ansible-test sanity runs on the collection as built (what galaxy.yml's build_ignore leaves), unpacked where
# ansible-test wants it (it reads the real working directory), with tests/config.yml: every test on the venv's
# Python, then compile and import on the oldest module Python tests/config.yml declares.
sanity: setup
	@[ -x "$(OLDEST_MODULE_PYTHON_BIN)" ] || { echo "python$(OLDEST_MODULE_PYTHON) is needed for the modules' import test:" \
	  "pyenv install $(OLDEST_MODULE_PYTHON), or make sanity OLDEST_MODULE_PYTHON_BIN=/path/to/python$(OLDEST_MODULE_PYTHON)" >&2; exit 1; }
	rm -rf $(SANITY_ROOT) $(SANITY_BUILD) && mkdir -p $(SANITY_ROOT)
	$(BIN)/ansible-galaxy collection build --output-path $(SANITY_BUILD) >/dev/null
	tar -xzf $(SANITY_BUILD)/fintech-redis_storm-*.tar.gz -C $(SANITY_ROOT)
	cp --parents tests/config.yml $(SANITY_ROOT)
	cd $(SANITY_ROOT) && git init -q && git add -A && \
	  $(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --requirements --color no && \
	  PATH=$(dir $(OLDEST_MODULE_PYTHON_BIN)):$$PATH $(CURDIR)/$(BIN)/ansible-test sanity --test compile --test import \
	    --requirements --color no --python $(OLDEST_MODULE_PYTHON)

# The collection's own unit tests (those that import nothing but the collection) under ansible-test units,
# in the unpacked build make sanity leaves.
ansible-units: sanity
	rm -rf $(SANITY_ROOT)/tests/unit && mkdir -p $(SANITY_ROOT)/tests/unit/plugins/module_utils
	cp $$(grep -l 'ansible_collections\.fintech' tests/unit/test_*.py | xargs grep -L '^from tests\.\|^from stormctl\|^import stormctl') \
	  $(SANITY_ROOT)/tests/unit/plugins/module_utils/
	cp tests/unit/requirements.txt $(SANITY_ROOT)/tests/unit/
	cd $(SANITY_ROOT) && git add -A && $(CURDIR)/$(BIN)/ansible-test units --python 3.11 --requirements --color no

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup
	$(BIN)/pytest tests/e2e

test: setup lint sanity ansible-units
	$(BIN)/pytest tests --durations=25

# The compatibility tests on every supported ansible-core (tests/fixtures/compat.py); the README's table from the result.
matrix: setup
	STORM_ANSIBLE_CORES=all $(BIN)/pytest tests/integration/test_ansible_core_compat.py --junitxml=.sandbox/matrix.xml; \
	  status=$$?; $(BIN)/python tools/support_table.py README.md .sandbox/matrix.xml; exit $$status

# Seeded incidents with faults (CHAOS_RUNS=N of them, CHAOS_SEED=S to replay one); prints `N of N consistent`.
chaos: setup
	$(BIN)/pytest tests/e2e/test_chaos.py -s -p no:cacheprovider

# The benchmarks, then the chaos run at its full count (BENCH_CHAOS_RUNS=0 leaves it out).
BENCH_CHAOS_RUNS ?= 100
bench: setup
	$(BIN)/python -m bench
	if [ "$(BENCH_CHAOS_RUNS)" -gt 0 ]; then CHAOS_RUNS=$(BENCH_CHAOS_RUNS) $(BIN)/pytest tests/e2e/test_chaos.py -s -p no:cacheprovider; fi

# DEMO_ARGS passes extra stormctl options (the end-to-end test runs the demo with --json).
demo: setup
	$(BIN)/stormctl drill market-open $(DEMO_ARGS)

build: setup
	$(BIN)/ansible-galaxy collection build --force --output-path build/

clean:
	-$(BIN)/stormctl sandbox down 2>/dev/null
	rm -rf $(VENV) .sandbox build reports artifacts .pytest_cache .mypy_cache .ruff_cache
