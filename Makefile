# Everything sets itself up from nothing but Python and make: a .venv with the package
# (editable) and its dev extras, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-quick docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m bindpool demo

# Every benchmark, full size: JSON in benchmarks/results/, tables and plots in docs/.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# The same, smaller: under two minutes.
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
