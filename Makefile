# redis-storm: `make demo` and `make test` work from a clean clone on Debian with Python 3.11.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := redis-server prometheus prometheus-redis-exporter prometheus-alertmanager
SANITY_ROOT ?= $(CURDIR)/.sandbox/sanity/ansible_collections/fintech/redis_storm
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
DEMO_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup kube debs demo test lint sanity unit integration e2e bench build clean

help:
	@echo "make demo   set up, raise a storm in the sandbox, run the incident through stormctl, print the report"
	@echo "make test   set up and run every check (lint, sanity, unit, integration, end to end)"
	@echo "make bench  benchmarks (prints numbers)"

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

# Debian packages for the real services; installed when missing, or the exact command to run is printed.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then echo "installing:$$missing"; \
	    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
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
	$(BIN)/ruff check src plugins tests bench
	$(BIN)/mypy src plugins
	# its syntax check loads the default inventory, the sandbox's, which stops a run when no sandbox is up
	ANSIBLE_INVENTORY_UNPARSED_FAILED=false $(BIN)/ansible-lint

# ansible-test reads the real working directory, so it runs on an export of the tree.
sanity: setup
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	git ls-files -co --exclude-standard -z | grep -zv '^collections/' | xargs -0 cp --parents -t $(SANITY_ROOT)
	cd $(SANITY_ROOT) && git init -q && git add -A && \
	  $(CURDIR)/$(BIN)/ansible-test sanity --test validate-modules --python 3.11 --requirements \
	    --color no plugins/

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

e2e: setup
	$(BIN)/pytest tests/e2e

test: setup lint sanity
	$(BIN)/pytest tests --durations=25

bench: setup
	$(BIN)/python -m bench

# DEMO_ARGS passes extra stormctl options (the end-to-end test runs the demo with --json).
demo: setup
	$(BIN)/stormctl drill market-open $(DEMO_ARGS)

build: setup
	$(BIN)/ansible-galaxy collection build --force --output-path build/

clean:
	-$(BIN)/stormctl sandbox down 2>/dev/null
	rm -rf $(VENV) .sandbox build reports artifacts .pytest_cache .mypy_cache .ruff_cache
