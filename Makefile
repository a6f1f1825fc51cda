# commonforge: two commands on a fresh machine.
#   make demo   set up .venv from the hashed lock, build forge-small end to end, print what to run next
#   make test   set up .venv from the hashed lock, run make lint, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv lock clean-venv

venv: $(STAMP)

# The venv is (re)built whenever the lock or the project metadata changes. torch goes in
# first, alone and hash-checked: its pin (2.13.0+cpu) names the CPU wheel, so nothing can
# drag in a multi-GB CUDA build. Everything else is installed with --require-hashes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk '/^torch==/{p=1;print;next} p&&/^    --hash/{print;next} {p=0}' requirements.lock > $(VENV)/torch.lock
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(VENV)/torch.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/commonforge demo

# ruff (lint, import order) and mypy, as configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The whole suite (the fast lane without building or serving a model: pytest -m "not slow").
test: $(STAMP) lint
	$(BIN)/python -m pytest -x -q --timeout=1800 --durations=15

# Regenerate the hashed lock after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m venv /tmp/commonforge-lockenv && /tmp/commonforge-lockenv/bin/pip install --quiet pip-tools
	/tmp/commonforge-lockenv/bin/pip-compile --generate-hashes --extra dev --allow-unsafe -o requirements.lock pyproject.toml
	$(PYTHON) .ci/lock_extras.py requirements.lock

clean-venv:
	rm -rf $(VENV)
