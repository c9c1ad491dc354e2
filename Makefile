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
BENCH ?= coldstart

export PYTHONUNBUFFERED := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install install-dev chromium run migrate admin test lint format package bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

# Without STAGE on the command line (or in the environment) the command runs here, on
# DATABASE_URL or the embedded database; with it, on the deployed stage's admin function.
admin: install ## run an admin command: make admin ARGS="registry list" [STAGE=prod: on AWS]
ifeq ($(origin STAGE),file)
	$(PY) -m chalicelib.admin $(ARGS)
else
	$(PY) -m infra.remote_admin --stage $(STAGE) -- $(ARGS)
endif

test: install-dev lint-infra ## run the whole test suite (real PostgreSQL; starts a throwaway one if needed)
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto $(PYTEST_ARGS)

lint: install-dev ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check chalicelib tests infra bench devtools app.py migrations

format: install-dev ## format the code with ruff
	$(PY) -m ruff format chalicelib tests infra bench devtools app.py migrations

package: install-dev ## build the CloudFormation package for STAGE into out/STAGE (offline once `make wheels` ran)
	PATH=$(abspath $(VENV))/bin:$$PATH WHEELHOUSE=$(abspath $(WHEELHOUSE)) infra/package.sh $(STAGE) out/$(STAGE)

bench: install ## run benchmarks: BENCH="coldstart refresh api" (runtime deps only; figures go to bench/RESULTS.md by hand)
	@for b in $(BENCH); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

clean: ## remove the venv, build output and caches (keeps .data/)
	rm -rf $(VENV) out vendor .pytest_cache .ruff_cache test-output
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- the local stack (infra/stack.py; `python -m infra.stack --help`) -------------------------
# Ports: PORT (API, 8000), AWS_PORT (4566), SEEK_PORT (3000), JENKINS_PORT (8080), PG_PORT
# (5433); STACK_AWS=auto|docker|localstack|moto; REFRESH_RATE (seconds, default app.py's).
STACK := $(PY) -m infra.stack
SERVICE ?=

.PHONY: start start-dev start-testing start-aux-services stop-aux-services run-tests tests \
	stop stop-dev stop-testing stop-all down clean-stack status logs test-localstack

start: install-dev ## the local stack: AWS emulated, PostgreSQL, WorkflowHub, Jenkins, API, runner
	@$(STACK) start

start-dev: install ## the embedded default (as make run) in the background, with autoreload
	@$(STACK) start-dev

start-testing: install-dev ## the testing environment: a test database, WorkflowHub and Jenkins
	@$(STACK) start-testing

start-aux-services: install-dev ## start the auxiliary services only: WorkflowHub and Jenkins
	@$(STACK) start --only jenkins,seek

stop-aux-services: ## stop WorkflowHub and Jenkins
	@$(STACK) stop --only jenkins,seek

run-tests: install-dev ## run the test suite (against the testing environment if started)
	@$(STACK) run-tests $(PYTEST_ARGS)

tests: install-dev ## start the testing environment, run the tests, stop it
	@$(STACK) start-testing && { $(STACK) run-tests $(PYTEST_ARGS); rc=$$?; \
		$(STACK) stop-testing; exit $$rc; }

stop: ## stop the local stack (make start)
	@$(STACK) stop

stop-dev: ## stop the embedded default started by make start-dev
	@$(STACK) stop-dev

stop-testing: ## stop the testing environment
	@$(STACK) stop-testing

stop-all: ## stop everything the targets above started
	@$(STACK) stop-all

down: ## stop everything and forget its state (keeps the databases and volumes)
	@$(STACK) down

clean-stack: ## stop everything, drop the stack's database and volumes, remove .stack/
	@if [ -x $(PY) ]; then $(STACK) clean; fi

clean: clean-stack

status: ## what runs, with pids and ports
	@$(STACK) status

logs: ## the logs of the stack's services (SERVICE=api|runner|aws|seek|jenkins|…)
	@$(STACK) logs $(SERVICE)

test-localstack: install-dev ## the stack smoke test against real LocalStack (no Docker)
	LM_TEST_LOCALSTACK=1 $(PY) -m pytest $(PYTEST_ARGS) tests/infra/test_stack.py

# ---------------------------------------------------------------------------------------------
# AWS: infrastructure lint, wheel cache, deploy (docs/aws.md); backup and restore
# (docs/backup.md); local HTTPS (docs/https.md)
# ---------------------------------------------------------------------------------------------
FILE ?=
ARTIFACTS ?=
PARAMS ?=
WHEELHOUSE ?= wheelhouse
LAMBDA_PLATFORMS := manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64

NGINX_PORT ?= 8443
API_PORT ?= $(PORT)
CERT_DOMAINS ?= localhost seek lm
CERTS_DIR ?= certs
NGINX_DIR ?= .run/nginx
HTTPS_ENV = CERT_DOMAINS="$(CERT_DOMAINS)" CERTS_DIR="$(CERTS_DIR)" NGINX_PORT="$(NGINX_PORT)" \
	API_PORT="$(API_PORT)" NGINX_DIR="$(NGINX_DIR)"

.PHONY: lint-infra wheels deploy deploy-stateful invoke-admin backup restore
.PHONY: certs start-nginx stop-nginx status-nginx

lint-infra: install-dev ## IAM policies up to date + cfn-lint of every packaged stage and stateful.yaml
	PYTHON=$(abspath $(PY)) infra/lint.sh

wheels: install-dev ## fill the wheel cache $(WHEELHOUSE)/ for Lambda (needs PyPI once; then `make package` is offline)
	$(PY) -m pip download -q -r requirements.txt -d $(WHEELHOUSE) --only-binary=:all: \
		$(foreach p,$(LAMBDA_PLATFORMS),--platform $(p)) --implementation cp \
		--python-version $$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	@ls $(WHEELHOUSE)/*.whl | wc -l | xargs -I{} echo "{} wheels in $(WHEELHOUSE)/"

deploy: install-dev ## package and deploy STAGE with CloudFormation (ARTIFACTS=bucket, PARAMS="K=V ..."); migrates before traffic shifts
	@test -n "$(ARTIFACTS)" || { echo "usage: make deploy STAGE=prod ARTIFACTS=<s3 bucket> [PARAMS=\"ExternalServerUrl=https://...\"]"; exit 2; }
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m infra.deploy --stage $(STAGE) --artifacts $(ARTIFACTS) \
		$(foreach p,$(PARAMS),--param $(p))

deploy-stateful: install ## deploy STAGE's stateful stack (VPC, database, queue, bucket): PARAMS="EnableRdsProxy=true ..."
	$(PY) -m infra.deploy --stateful --stage $(STAGE) $(foreach p,$(PARAMS),--param $(p))

invoke-admin: install ## invoke app.admin locally exactly as Lambda does: make invoke-admin ARGS="db current"
	$(PY) -c 'import json, shlex, sys; print(json.dumps({"args": shlex.split(sys.argv[1])}))' "$(ARGS)" | \
		$(PY) -m infra.invoke admin - --stage $(STAGE)

backup: install ## back up database, crates and the stage's secrets: make backup [FILE=x.tar]
	$(PY) -m chalicelib.admin backup $(FILE) $(ARGS)

restore: install ## restore a backup into DATABASE_URL: make restore FILE=x.tar [ARGS=--clean]
	@test -n "$(FILE)" || { echo "usage: make restore FILE=backup.tar [ARGS=--clean]"; exit 2; }
	$(PY) -m chalicelib.admin restore $(FILE) $(ARGS)

certs: ## self-signed certificate for CERT_DOMAINS ("localhost seek lm") in CERTS_DIR (certs/)
	$(HTTPS_ENV) infra/https.sh certs

start-nginx: ## nginx TLS proxy https://localhost:$(NGINX_PORT) -> API on API_PORT (installs nginx if missing)
	$(HTTPS_ENV) infra/https.sh start

stop-nginx: ## stop the nginx TLS proxy
	$(HTTPS_ENV) infra/https.sh stop

status-nginx: ## is the nginx TLS proxy running?
	$(HTTPS_ENV) infra/https.sh status
