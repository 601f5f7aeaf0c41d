# Everything sets itself up from nothing but Python and make: a .venv with the package
# (editable) and its dev extras, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-quick clean

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

bench: $(STAMP)
	$(BIN)/python -m benchmarks.table
	$(BIN)/python -m benchmarks.throughput

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.table --quick
	$(BIN)/python -m benchmarks.throughput --quick

demo: $(STAMP)
	$(BIN)/python -m bindpool demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
