# LifeMonitor, serverless. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Chalice takes the Lambda runtime from the interpreter that runs it: prefer 3.12/3.13
# (3.11 is deprecated on Lambda); pyenv shims that cannot run are skipped.
PYTHON ?= $(shell for p in python3.12 python3.13 $$HOME/.pyenv/versions/3.12*/bin/python3 \
	$$HOME/.pyenv/versions/3.13*/bin/python3 python3; do \
	if $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	echo $$p; break; fi; done)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
STAGE ?= dev
PYTEST_ARGS ?=

export PYTHONUNBUFFERED := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install install-dev chromium run migrate admin test lint format package bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 not found (3.12+ preferred)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip<26.3"

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt chalice==1.34.0
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed ## create .venv and install the runtime dependencies

install-dev: $(VENV)/.installed-dev chromium ## install the development and test dependencies too

# The browser tests (tests/web/browser) drive Debian's chromium through Playwright; never
# `playwright install`, which downloads a browser. Installed as root, only when missing;
# elsewhere those tests are skipped and say why.
chromium: ## install Debian's chromium for the browser tests (as root, only when missing)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends chromium; } \
		|| echo "chromium could not be installed: the browser tests will be skipped"; \
	else \
		echo "chromium is missing and this is not root: the browser tests will be skipped" \
			"(as root: apt-get install chromium)"; \
	fi

migrate: install ## migrate the database (DATABASE_URL, else the embedded .data/ one) to head
	$(PY) -m chalicelib.admin db upgrade

run: migrate ## serve the API on http://127.0.0.1:8000 (HOST, PORT) with chalice local
	$(PY) -m infra.local --host $(HOST) --port $(PORT) --stage $(STAGE) --no-autoreload

admin: install ## run an admin command: make admin ARGS="registry list"
	$(PY) -m chalicelib.admin $(ARGS)

test: install-dev ## run the whole test suite (real PostgreSQL; starts a throwaway one if needed)
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

lint: install-dev ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check chalicelib tests infra bench app.py migrations

format: install-dev ## format the code with ruff
	$(PY) -m ruff format chalicelib tests infra bench app.py migrations

package: install-dev ## build the CloudFormation package for STAGE into out/STAGE (pip needs PyPI unless cached)
	PATH=$(abspath $(VENV))/bin:$$PATH infra/package.sh $(STAGE) out/$(STAGE)

bench: install-dev ## run the benchmarks under bench/ (figures go to bench/RESULTS.md by hand)
	$(PY) bench/coldstart.py

clean: ## remove the venv, build output and caches (keeps .data/)
	rm -rf $(VENV) out vendor .pytest_cache .ruff_cache test-output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
