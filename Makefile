# Two commands for a fresh clone:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-slow-env lint env browser

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: env
	$(PY) trainer/run.py

lint: env
	$(VENV)/bin/ruff check .

# The browser tier (tests/e2e/test_study_browser.py) drives Debian's chromium + chromedriver:
# installed here when missing and apt-get can; otherwise that test skips and says why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver) || echo "browser: chromium not installed; its test will skip"; \
	else echo "browser: no apt-get here; the browser test will skip"; fi

test: lint browser
	@start=$$(date +%s); \
	$(PY) -m pytest -q --timeout=900; rc=$$?; \
	echo "test suite wall time: $$(( $$(date +%s) - start )) s"; exit $$rc

# ImageReward's isolated environment, built from PyPI as its Ray runtime_env would be, and the
# rehearsal of the real path that uses it (minutes; not part of `make test`).
test-slow-env: env
	$(PY) -m pytest -q -m slow_env
