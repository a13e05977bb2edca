# jobshelf: one entry point for set-up, tests and benchmarks. Works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXAMPLES := $(wildcard serializers/*/pyproject.toml)
STAMP := $(VENV)/.jobshelf-installed

.PHONY: test lint pytest bench fuzz clean

## make test: create .venv, install jobshelf with its test extras and the example serializers,
## then lint (ruff, mypy --strict) and run the test suite against embedded real servers.
test: lint pytest

$(STAMP): pyproject.toml $(EXAMPLES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]' $(foreach p,$(dir $(EXAMPLES)),-e ./$(p))
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks serializers
	$(PY) -m mypy --strict src

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## make fuzz: the long fuzz run (100,000 inputs per property; opt-in, about a quarter of an hour).
fuzz: $(STAMP)
	JOBSHELF_FUZZ_EXAMPLES=$(or $(EXAMPLES),100000) $(PY) -m pytest -q -p no:randomly tests/test_fuzz.py

## make bench [QUICK=1] [ARGS="--server nx"]: benchmarks on the embedded SecantusDB server.
bench: $(STAMP)
	$(PY) -m benchmarks $(if $(QUICK),--quick) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
