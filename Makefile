# jobshelf: one entry point for set-up, tests and benchmarks. Works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXAMPLES := $(wildcard serializers/*/pyproject.toml)
STAMP := $(VENV)/.jobshelf-installed

.PHONY: test lint pytest bench fuzz test-pythons clean

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

## make fuzz [FUZZ_EXAMPLES=N]: the long fuzz run, opt-in: every test marked `fuzz` (tests/test_fuzz.py
## and any other), N inputs per property (default 100,000), passed as JOBSHELF_FUZZ_EXAMPLES.
FUZZ_EXAMPLES ?= 100000
fuzz: $(STAMP)
	JOBSHELF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:randomly -m fuzz tests serializers

## make bench [QUICK=1] [ARGS="--server nx"]: benchmarks on the embedded SecantusDB server.
bench: $(STAMP)
	$(PY) -m benchmarks $(if $(QUICK),--quick) $(ARGS)

## make test-pythons [PYTHONS="3.9 3.13"]: the test suite on each Python version pyproject.toml lists,
## one after another, each in its own .venv-X.Y (pythonX.Y on PATH, or ~/.pyenv/versions/X.Y.*).
test-pythons:
	.ci/test-pythons $(PYTHONS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .hypothesis
