# Conveyor's entry points. `make run` starts everything on this machine; `make test` runs the
# suite (what CI runs). Both first run scripts/bootstrap.sh, which installs what is missing.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DATA := $(CURDIR)/.data
PYTEST_ARGS ?=

# Every Procfile process; when the user's environment names an S3 endpoint, the embedded S3
# server (`s3`) is not started and the rest use that endpoint.
PROCESSES := $(shell sed -n 's/^\([A-Za-z0-9_-]*\):.*/\1/p' Procfile)
ifdef S3_ENDPOINT_URL
RUN_PROCESSES := $(filter-out s3,$(PROCESSES))
else
RUN_PROCESSES := $(PROCESSES)
endif

# .env fills what the environment leaves unset (the environment wins, as in services/config.py).
WITH_ENV := $(BIN)/dotenv -f $(CURDIR)/.env run --no-override --

.PHONY: help run test lint lock chaos bench bootstrap bootstrap-venv

help:
	@echo "make run    set up, migrate, then run S3, API, workers, beat, Flower and the demo (Ctrl-C stops)"
	@echo "make test   set up, run ruff and mypy, then the test suite (what .ci/run runs)"
	@echo "make lint   ruff check, ruff format --check, mypy"
	@echo "make lock   compile requirements*.lock (every package pinned, with hashes) from requirements*.txt"
	@echo "make chaos  the long fault-injection scenarios (pytest -m chaos, CHAOS_LONG=1)"
	@echo "make bench  run every bench/*.py"

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-venv:
	@bash scripts/bootstrap.sh --no-services

run: bootstrap .env secret-key
	@mkdir -p $(DATA)/s3
	$(WITH_ENV) $(BIN)/alembic upgrade head
ifdef S3_ENDPOINT_URL
	$(WITH_ENV) $(BIN)/flask --app api setup-bucket
endif
	PATH="$(BIN):$$PATH" $(WITH_ENV) $(BIN)/honcho start --env /dev/null $(RUN_PROCESSES)

# A .env written before CONVEYOR_SECRET_KEY existed gets one (it derives every tenant's webhook
# secret and the playback tokens; CONVEYOR_WEBHOOK_SECRET no longer signs anything).
.PHONY: secret-key
secret-key: .env
	@grep -q '^CONVEYOR_SECRET_KEY=' .env || { \
	  echo "CONVEYOR_SECRET_KEY=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(48))')" >> .env; \
	  echo "added CONVEYOR_SECRET_KEY to .env"; }

# Written once, on the first `make run`, with fresh secrets; edit it freely afterwards.
# With a user-given S3 endpoint, neither the endpoint nor S3 keys are written: they come from
# the user's environment (or boto3's own credential chain).
.env: | bootstrap
	@umask 077; \
	secret() { $(BIN)/python -c 'import secrets, sys; print(secrets.token_urlsafe(int(sys.argv[1])))' "$$1"; }; \
	{ \
	  echo "# Written by 'make run' on $$(date -u +%Y-%m-%d); see .env.example for every setting."; \
	  echo "DATABASE_URL=$${DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/conveyor}"; \
	  echo "REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0}"; \
	  echo "WORKSPACE_URL=s3://conveyor-work/work"; \
	  if [ -z "$${S3_ENDPOINT_URL:-}" ]; then \
	    echo "S3_ENDPOINT_URL=http://127.0.0.1:8333"; \
	    echo "AWS_ACCESS_KEY_ID=conveyor"; \
	    echo "AWS_SECRET_ACCESS_KEY=$$(secret 30)"; \
	  fi; \
	  echo "CONVEYOR_SECRET_KEY=$$(secret 48)"; \
	  echo "FLOWER_BASIC_AUTH=admin:$$(secret 18)"; \
	  echo "LOG_LEVEL=INFO"; \
	} > $@.tmp
	@mv $@.tmp $@
	@echo "wrote .env with fresh secrets (the Flower login is FLOWER_BASIC_AUTH in it)"

# Lint first: a type error or an unformatted file fails in seconds, not after the suite.
test: bootstrap
	$(MAKE) --no-print-directory lint-only
	$(BIN)/pytest $(PYTEST_ARGS)

lint: bootstrap-venv
	$(MAKE) --no-print-directory lint-only

.PHONY: lint-only
lint-only:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The locks are compiled from the direct requirements, for the Python the images and CI run.
# The runtime lock (the images) and the dev lock (make run, make test) agree on every version
# they share: the dev lock is compiled under the runtime lock's pins.
UV_COMPILE := $(BIN)/uv pip compile --python-version 3.11 --generate-hashes --quiet
lock: bootstrap-venv
	$(UV_COMPILE) requirements.txt -o requirements.lock
	$(UV_COMPILE) requirements-dev.txt --constraint requirements.lock -o requirements-dev.lock

chaos: bootstrap
	CHAOS_LONG=1 $(BIN)/pytest -m chaos $(PYTEST_ARGS)

# Every bench/*.py that is a script (harness and helpers are not) runs in turn; each appends
# its own markdown section to bench/results.md, and a script that does not gets its output
# there in a code block. One failing bench does not stop the others; make fails at the end.
bench:
	@bash scripts/bootstrap.sh --bench
	@shopt -s nullglob; results=bench/results.md; status=0; \
	{ echo "# Benchmark results"; echo; \
	  echo "Written by \`make bench\` on $$(date -u '+%Y-%m-%d %H:%M UTC'); host: $$(nproc) cores," \
	       "$$(awk '/MemTotal/ {printf "%.0f GiB", $$2 / 1048576}' /proc/meminfo), load average $$(cut -d' ' -f1 /proc/loadavg)."; \
	  echo; } > $$results; \
	for script in bench/*.py; do \
	  grep -q '^if __name__ == "__main__":' "$$script" || continue; \
	  module=$${script%.py}; module=$${module//\//.}; \
	  echo "== $$script"; before=$$(wc -c < $$results); output=$$(mktemp); \
	  if BENCH_RESULTS=$(CURDIR)/$$results PYTHONPATH="$(CURDIR)" $(BIN)/python -m $$module 2>&1 | tee $$output; then \
	    code=0; else code=$$?; status=1; fi; \
	  if [ $$code -ne 0 ] || [ "$$(wc -c < $$results)" -eq "$$before" ]; then \
	    { echo "## $$script"; echo; [ $$code -eq 0 ] || echo "**failed with exit status $$code**"; echo; \
	      echo '```text'; { grep -v '^{"' $$output || true; } | tail -n 60; echo '```'; echo; } >> $$results; \
	  fi; \
	  rm -f $$output; \
	done; \
	echo "wrote $$results"; exit $$status
