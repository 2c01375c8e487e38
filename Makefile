# Two commands for a fresh clone:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) on first use. `make check` is the inner loop:
# ruff, the unit tests and the end-to-end tests that start no Ray cluster.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# ImageReward's isolated environment (its pins clash with the core's): the real-path tests use it.
IMAGEREWARD_VENV ?= .venv-imagereward
export RGLCD_IMAGEREWARD_VENV := $(abspath $(IMAGEREWARD_VENV))
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: rehearse-cluster demo test check lint env imagereward-env browser

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# A virtualenv over .venv's packages with reward_service/scorers/imagereward-requirements.txt
# on top, as Ray's runtime_env `pip` or the Docker image builds it (a PyPI install, minutes,
# once; rebuilt when the pins change).
imagereward-env: $(IMAGEREWARD_VENV)/pins.json

$(IMAGEREWARD_VENV)/pins.json: reward_service/scorers/imagereward-requirements.txt $(VENV)/.installed
	$(PY) -m orchestration.rehearsal.imagereward_env $(IMAGEREWARD_VENV)
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

# Tests marked `ray` (tests/ray, and the end-to-end tests that start a cluster) or `slow` are
# left out; `make test` runs them.
check: env
	@start=$$(date +%s); \
	$(VENV)/bin/ruff check . && $(PY) -m pytest -q -m "not ray and not slow" --timeout=300 tests/unit tests/e2e; \
	rc=$$?; echo "check wall time: $$(( $$(date +%s) - start )) s"; exit $$rc

# The full suite: every tier (what .ci/run runs), then the three-node rehearsal in a pytest
# process of its own, once the suite's Ray cluster is gone (side by side, the two clusters
# outgrow this machine's memory).
test: lint browser imagereward-env
	@start=$$(date +%s); \
	$(PY) -m pytest -q --timeout=900 -m "not cluster_rehearsal"; rc=$$?; \
	echo "suite without the rehearsal: $$(( $$(date +%s) - start )) s"; \
	$(PY) -m pytest -q -p no:cacheprovider --timeout=2400 -m cluster_rehearsal \
	  tests/e2e/test_rehearse_real_path.py; rrc=$$?; \
	echo "test suite wall time: $$(( $$(date +%s) - start )) s"; [ $$rc -eq 0 ] && [ $$rrc -eq 0 ]

# The three-node rehearsal without a shared disk (root; tests/e2e/test_rehearse_real_path.py).
rehearse-cluster: env imagereward-env
	$(PY) -m pytest -q --timeout=2400 -m cluster_rehearsal tests/e2e/test_rehearse_real_path.py
