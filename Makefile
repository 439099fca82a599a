# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment .venv/ first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo test test-all test-slow lint bench venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

## the main job: the whole study on the built-in synthetic cohort (CPU, < 10 min)
demo: $(STAMP)
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
