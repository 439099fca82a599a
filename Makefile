# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment .venv/ first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the demo needs the package only: no test tools, browsers or deployment runtimes
STAMP_RUN := $(VENV)/.installed-run
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
# The demo's install skips pip's byte-compilation of every installed module (~15,000
# files, most never imported by the demo: a minute or more of CPU on a 2-core machine);
# Python compiles the modules the demo imports on first use and caches them.
PIP_RUN := $(PIP) --no-compile
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test test-all test-slow lint bench venv system-deps clean

venv: $(STAMP)

$(STAMP_RUN): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_RUN) -e .
	touch $(STAMP_RUN)

$(STAMP): $(STAMP_RUN)
	$(PIP) -e '.[test]'
	touch $(STAMP)

## the main job: the whole study on the built-in synthetic cohort (CPU, < 5 min)
demo: $(STAMP_RUN)
	$(BIN)/mammolens demo --out demo_out

## system packages the integration tests use (PostgreSQL, Orthanc + DICOMweb, Chromium)
system-deps:
	@if [ -x scripts/system-deps.sh ]; then scripts/system-deps.sh; fi

## the default test suite (fast; services started by the tests themselves)
test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## everything, slow tests included
test-all: $(STAMP) system-deps
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

## the benchmarks (bench/run_all.py; results in bench/results/); BENCH_ARGS=--quick for minutes
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo_out .pytest_cache
