# Everything sets itself up from nothing but Python and make, in one .venv, rebuilt when
# pyproject.toml changes. Two sets: the demo's (the package and rich: seconds to install) and
# the development set for test, lint, docs, bench and dist (which includes the demo's).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
DEV := $(VENV)/.installed
DEMO := $(VENV)/.demo-installed

.PHONY: test lint demo bench bench-quick docs dist clean

$(DEV): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev]'
	touch $(DEV) $(DEMO)

$(DEMO): pyproject.toml
	@echo "make demo: first run, setting up $(VENV) with bindpool and rich only (make test adds the rest)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[cli]'
	touch $(DEMO)

test: $(DEV)
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(DEMO)
	$(BIN)/python -m bindpool demo

# Every benchmark, full size: JSON in benchmarks/results/, tables and plots in docs/.
bench: $(DEV)
	$(BIN)/python -m benchmarks.run

# The same, smaller: under two minutes.
bench-quick: $(DEV)
	$(BIN)/python -m benchmarks.run --quick

# NO_MKDOCS_2_WARNING: Material for MkDocs' own switch for its end-of-life banner, which it
# prints on every build; the build itself is unchanged.
docs: $(DEV)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The sdist, then the wheel built from the unpacked sdist (python -m build does both, in a
# clean build environment): a file the sdist lacks fails here, not for whoever builds from
# it. `pip wheel` would make the wheel alone, straight from the checkout.
dist: $(DEV)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) site dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
